//! The token path of `--auth-jwt-*`: arbitrary bytes split into an `Authorization` value and a request
//! path (with its `?token=`), read and verified as an upgrade's token would be (HS256 and ES256 keys).
//! Must never panic; every input is a grant or an `AuthFailure`.
#![no_main]

use std::sync::OnceLock;

use ringws::app::auth::Auth;

/// An EC P-256 public key (any valid one: the target looks for panics, not for accepted tokens).
const ES256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAAQZzEfFrsEYsKXZOSn/AVCsi04G
wOxkcJQ12uGHgZBjM3efELcY90I/NWmGhGxY4t3a7cklWMr4AJ/lwjK21A==
-----END PUBLIC KEY-----
";

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        Auth::hs256(b"fuzz-secret")
            .with_public_key_pem(ES256_PUBLIC.as_bytes())
            .expect("a valid key")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // [flag][authorization bytes] 0 [path bytes]: flag bit 0 says whether the header is present.
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let (header, path) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&rest[..0], rest),
    };
    let path = String::from_utf8_lossy(path);
    let authorization = (flag & 1 == 1).then_some(header);
    let _ = auth().check(authorization, &path);
    let _ = auth().verify(&path);
});
