//! Bodies of the fuzz targets in `fuzz/`, callable from ordinary tests so every crash found becomes a
//! regression test that runs on stable. Each function panics only when an invariant is broken.
