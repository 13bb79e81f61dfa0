//! Chooses the permessage-deflate backend by measurement. The pattern is the default mode's: raw deflate with
//! a sync flush (its `00 00 ff ff` tail removed, RFC 7692 section 7.2.1), no context takeover, one
//! compressor and one inflater reused for every message and reset after each. Candidates: flate2 on zlib-rs,
//! stock zlib (libz-sys, built from source), zlib-ng (libz-ng-sys, only with `--features bench-zlib-ng`: its
//! build needs cmake), miniz_oxide (flate2's default backend) and libdeflater (whole buffers only).
//!
//! Before the timings it prints, per backend: the compression ratio on the data set, the heap bytes one
//! compressor and one inflater hold (glibc's `mallinfo2`, so C and Rust allocations alike), and whether a
//! stream compressed with a 9-bit window is readable by a 9-bit inflater (it is not when the window setting
//! is ignored). The data set is JSON generated deterministically: ticks (~64 B), chat batches (~1 KiB) and
//! event pages (~16 KiB).
//!
//! `nice -n 5 cargo bench --bench deflate [--features bench-zlib-ng]`

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use ringws::protocol::deflate::DeflateConfig;
use std::fmt::Write as _;
use std::time::Duration;

/// The sync flush's tail, removed by the sender and appended by the receiver (RFC 7692 section 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const LEVEL: u8 = DeflateConfig::DEFAULT_LEVEL;
const MESSAGES_PER_SIZE: usize = 16;

/// One backend, used the way the codec would use it.
trait Backend {
    /// Compresses one message into `out` (sized by the caller), returns the length without the tail, and
    /// resets.
    fn compress(&mut self, input: &[u8], out: &mut [u8]) -> usize;
    /// Inflates one message (tail not included) into `out`, returns the length, and resets.
    fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> usize;
    /// Resets the compressor alone (what a reset costs on top of the work); `false` when it keeps no state.
    fn reset_compressor(&mut self) -> bool;
}

fn strip_tail(out: &[u8], len: usize) -> usize {
    assert!(len >= 4 && out[len - 4..len] == TAIL, "no sync-flush tail");
    len - 4
}

mod flate2_backend {
    use super::*;
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

    pub struct Flate2 {
        compress: Compress,
        decompress: Decompress,
    }

    impl Flate2 {
        pub fn new(window_bits: u8) -> Self {
            Flate2 {
                compress: Compress::new_with_window_bits(
                    Compression::new(LEVEL.into()),
                    false,
                    window_bits,
                ),
                decompress: Decompress::new_with_window_bits(false, window_bits),
            }
        }
    }

    impl Backend for Flate2 {
        fn compress(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            let before = self.compress.total_out();
            self.compress
                .compress(input, out, FlushCompress::Sync)
                .unwrap();
            assert_eq!(self.compress.total_in() as usize, input.len());
            let len = (self.compress.total_out() - before) as usize;
            self.compress.reset();
            strip_tail(out, len)
        }

        fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            let d = &mut self.decompress;
            d.decompress(input, out, FlushDecompress::Sync).unwrap();
            let written = d.total_out() as usize;
            d.decompress(&TAIL, &mut out[written..], FlushDecompress::Sync)
                .unwrap();
            assert_eq!(d.total_in() as usize, input.len() + 4);
            let len = d.total_out() as usize;
            d.reset(false);
            len
        }

        fn reset_compressor(&mut self) -> bool {
            self.compress.reset();
            true
        }
    }
}

mod miniz_backend {
    use super::*;
    use miniz_oxide::deflate::core::{
        compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
    };
    use miniz_oxide::inflate::stream::{inflate, InflateState};
    use miniz_oxide::{DataFormat, MZFlush};

    pub struct Miniz {
        compressor: Box<CompressorOxide>,
        inflater: Box<InflateState>,
    }

    impl Miniz {
        /// `window_bits` only selects raw deflate (by its sign): miniz_oxide always uses a 32 KiB window.
        pub fn new(window_bits: u8) -> Self {
            let flags = create_comp_flags_from_zip_params(LEVEL.into(), -i32::from(window_bits), 0);
            Miniz {
                compressor: Box::new(CompressorOxide::new(flags)),
                inflater: InflateState::new_boxed(DataFormat::Raw),
            }
        }
    }

    impl Backend for Miniz {
        fn compress(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            let (status, consumed, len) =
                compress(&mut self.compressor, input, out, TDEFLFlush::Sync);
            assert_eq!((status, consumed), (TDEFLStatus::Okay, input.len()));
            self.compressor.reset();
            strip_tail(out, len)
        }

        fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            let first = inflate(&mut self.inflater, input, out, MZFlush::Sync);
            assert_eq!(first.bytes_consumed, input.len());
            let second = inflate(
                &mut self.inflater,
                &TAIL,
                &mut out[first.bytes_written..],
                MZFlush::Sync,
            );
            assert!(second.status.is_ok() && second.bytes_consumed == 4);
            self.inflater.reset(DataFormat::Raw);
            first.bytes_written + second.bytes_written
        }

        fn reset_compressor(&mut self) -> bool {
            self.compressor.reset();
            true
        }
    }
}

mod libdeflate_backend {
    use super::*;
    use libdeflater::{CompressionLvl, Compressor, Decompressor};

    /// After the receiver's tail: an empty stored block with BFINAL set, so libdeflate (which only takes a
    /// complete stream) sees one.
    const FINAL_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

    /// Whole buffers only: a message is compressed in one call, and inflating needs the whole compressed
    /// message in one buffer (copied here, as a message spanning several receives would be) and an output
    /// buffer as large as the limit. It ends its output with a final block instead of a sync flush (RFC 7692
    /// section 7.2.3.5 allows that without context takeover).
    pub struct Libdeflate {
        compressor: Compressor,
        decompressor: Decompressor,
        scratch: Vec<u8>,
    }

    impl Libdeflate {
        pub fn new() -> Self {
            Libdeflate {
                compressor: Compressor::new(CompressionLvl::new(LEVEL.into()).unwrap()),
                decompressor: Decompressor::new(),
                scratch: Vec::new(),
            }
        }
    }

    impl Backend for Libdeflate {
        fn compress(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            self.compressor.deflate_compress(input, out).unwrap()
        }

        fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> usize {
            self.scratch.clear();
            self.scratch.extend_from_slice(input);
            self.scratch.extend_from_slice(&TAIL);
            self.scratch.extend_from_slice(&FINAL_BLOCK);
            self.decompressor
                .deflate_decompress(&self.scratch, out)
                .unwrap()
        }

        fn reset_compressor(&mut self) -> bool {
            false
        }
    }
}

/// The zlib C API, for stock zlib (libz-sys) and zlib-ng (libz-ng-sys), which share it.
macro_rules! zlib_c_backend {
    ($module:ident, $ffi:ident, $name:literal) => {
        mod $module {
            use super::*;
            use std::os::raw::c_int;
            use $ffi as ffi;

            const Z_OK: c_int = 0;
            const Z_SYNC_FLUSH: c_int = 2;
            #[allow(dead_code)] // the window check runs on stock zlib only
            const Z_BUF_ERROR: c_int = -5;
            const Z_DEFLATED: c_int = 8;
            const DEFAULT_MEM_LEVEL: c_int = 8;

            unsafe extern "C" fn zalloc(
                _opaque: ffi::voidpf,
                items: ffi::uInt,
                size: ffi::uInt,
            ) -> ffi::voidpf {
                // SAFETY: plain malloc, as zlib's default allocator; zlib checks for null.
                unsafe { libc::malloc(items as usize * size as usize) }
            }

            unsafe extern "C" fn zfree(_opaque: ffi::voidpf, address: ffi::voidpf) {
                // SAFETY: `address` came from `zalloc` above.
                unsafe { libc::free(address) }
            }

            fn new_stream() -> Box<ffi::z_stream> {
                Box::new(ffi::z_stream {
                    next_in: std::ptr::null_mut(),
                    avail_in: 0,
                    total_in: 0,
                    next_out: std::ptr::null_mut(),
                    avail_out: 0,
                    total_out: 0,
                    msg: std::ptr::null_mut(),
                    state: std::ptr::null_mut(),
                    zalloc,
                    zfree,
                    opaque: std::ptr::null_mut(),
                    data_type: 0,
                    adler: 0,
                    reserved: 0,
                })
            }

            /// One initialised stream, boxed (zlib keeps a pointer to it), ended on drop.
            pub struct Stream {
                stream: Box<ffi::z_stream>,
                compresses: bool,
            }

            impl Stream {
                /// A raw deflate compressor (`mem_level` `None`: zlib's default 8).
                pub fn deflater(window_bits: u8, mem_level: Option<u8>) -> Stream {
                    let mut stream = new_stream();
                    // SAFETY: a fresh stream with valid allocators, boxed so it stays at one address
                    // until `deflateEnd` in `drop`; the version string and size are the library's own.
                    let rc = unsafe {
                        ffi::deflateInit2_(
                            &mut *stream,
                            LEVEL.into(),
                            Z_DEFLATED,
                            -c_int::from(window_bits),
                            mem_level.map_or(DEFAULT_MEM_LEVEL, c_int::from),
                            0,
                            ffi::zlibVersion(),
                            std::mem::size_of::<ffi::z_stream>() as c_int,
                        )
                    };
                    assert_eq!(rc, Z_OK);
                    Stream {
                        stream,
                        compresses: true,
                    }
                }

                /// A raw deflate inflater.
                pub fn inflater(window_bits: u8) -> Stream {
                    let mut stream = new_stream();
                    // SAFETY: as in `deflater`, ended by `inflateEnd` in `drop`.
                    let rc = unsafe {
                        ffi::inflateInit2_(
                            &mut *stream,
                            -c_int::from(window_bits),
                            ffi::zlibVersion(),
                            std::mem::size_of::<ffi::z_stream>() as c_int,
                        )
                    };
                    assert_eq!(rc, Z_OK);
                    Stream {
                        stream,
                        compresses: false,
                    }
                }

                /// Runs `deflate` or `inflate` over `input` with a sync flush; returns (bytes written,
                /// input left, result code).
                fn run(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize, c_int) {
                    let stream = &mut *self.stream;
                    stream.next_in = input.as_ptr().cast_mut();
                    stream.avail_in = input.len() as ffi::uInt;
                    stream.next_out = out.as_mut_ptr();
                    stream.avail_out = out.len() as ffi::uInt;
                    // SAFETY: the stream was initialised by `deflater`/`inflater`; `next_in`/`next_out`
                    // point into live slices of the given lengths, and zlib never writes through `next_in`.
                    let rc = unsafe {
                        if self.compresses {
                            ffi::deflate(stream, Z_SYNC_FLUSH)
                        } else {
                            ffi::inflate(stream, Z_SYNC_FLUSH)
                        }
                    };
                    (
                        out.len() - stream.avail_out as usize,
                        stream.avail_in as usize,
                        rc,
                    )
                }

                fn reset(&mut self) {
                    // SAFETY: an initialised stream.
                    unsafe {
                        if self.compresses {
                            ffi::deflateReset(&mut *self.stream);
                        } else {
                            ffi::inflateReset(&mut *self.stream);
                        }
                    }
                }
            }

            impl Drop for Stream {
                fn drop(&mut self) {
                    // SAFETY: initialised once, ended once.
                    unsafe {
                        if self.compresses {
                            ffi::deflateEnd(&mut *self.stream);
                        } else {
                            ffi::inflateEnd(&mut *self.stream);
                        }
                    }
                }
            }

            /// A compressor and an inflater.
            pub struct Zlib {
                deflate: Stream,
                inflate: Stream,
            }

            impl Zlib {
                pub const NAME: &str = $name;

                pub fn new(window_bits: u8) -> Self {
                    Zlib {
                        deflate: Stream::deflater(window_bits, None),
                        inflate: Stream::inflater(window_bits),
                    }
                }

                /// Whether `input` (tail removed) inflates without error when every back-reference must
                /// come from the inflater's own window: the output is taken one byte per call, because
                /// within one call zlib also lets a match reach back into that call's output. Resets.
                #[allow(dead_code)] // the window check runs on stock zlib only
                pub fn inflates_within_window(&mut self, input: &[u8]) -> bool {
                    let mut byte = [0u8; 1];
                    for piece in [input, &TAIL[..]] {
                        let mut rest = piece;
                        loop {
                            let (written, left, rc) = self.inflate.run(rest, &mut byte);
                            if rc != Z_OK && rc != Z_BUF_ERROR {
                                self.inflate.reset();
                                return false;
                            }
                            rest = &rest[rest.len() - left..];
                            if rest.is_empty() && written == 0 {
                                break;
                            }
                        }
                    }
                    self.inflate.reset();
                    true
                }
            }

            impl Backend for Zlib {
                fn compress(&mut self, input: &[u8], out: &mut [u8]) -> usize {
                    let (len, left, rc) = self.deflate.run(input, out);
                    assert!(rc == Z_OK && left == 0 && len < out.len());
                    self.deflate.reset();
                    strip_tail(out, len)
                }

                fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> usize {
                    let (written, _, rc) = self.inflate.run(input, out);
                    assert_eq!(rc, Z_OK);
                    let (more, _, rc) = self.inflate.run(&TAIL, &mut out[written..]);
                    assert_eq!(rc, Z_OK);
                    self.inflate.reset();
                    written + more
                }

                fn reset_compressor(&mut self) -> bool {
                    self.deflate.reset();
                    true
                }
            }
        }
    };
}

zlib_c_backend!(zlib_backend, libz_sys, "zlib");
#[cfg(feature = "bench-zlib-ng")]
zlib_c_backend!(zlib_ng_backend, libz_ng_sys, "zlib-ng");

/// Deterministic xorshift, so the data set is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SYMBOLS: &[&str] = &[
    "BTC-USD", "ETH-USD", "SOL-USD", "ETH-BTC", "DOGE-USD", "ADA-EUR",
];
const NAMES: &[&str] = &[
    "ada", "grace", "linus", "ken", "barbara", "dennis", "margaret", "alan",
];
const WORDS: &[&str] = &[
    "the", "deploy", "is", "green", "again", "who", "broke", "staging", "lunch", "at", "noon",
    "ok", "merged", "please", "review", "my", "patch", "latency", "looks", "fine", "now", "ship",
    "it", "cache", "miss", "rate", "dropped", "after", "restart", "thanks", "will", "check",
    "tomorrow", "on", "call",
];

fn tick(rng: &mut Rng) -> String {
    format!(
        r#"{{"t":"tick","s":"{}","p":{}.{:02},"ts":{}}}"#,
        rng.pick(SYMBOLS),
        1000 + rng.below(60_000),
        rng.below(100),
        1_732_900_000_000 + rng.below(10_000_000)
    )
}

fn chat(rng: &mut Rng, id: u64) -> String {
    let user = rng.pick(NAMES);
    let mut text = String::new();
    for i in 0..4 + rng.below(12) {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(rng.pick(WORDS));
    }
    format!(
        r#"{{"id":{id},"room":"ops-{}","user":{{"name":"{user}","avatar":"https://cdn.example.com/u/{user}/{:08x}.png"}},"text":"{text}","ts":{},"reactions":{}}}"#,
        rng.below(8),
        rng.next() as u32,
        1_732_900_000_000 + rng.below(10_000_000),
        rng.below(5)
    )
}

/// JSON messages of about `target` bytes: a tick for the smallest, else a batch of chat messages.
fn message(rng: &mut Rng, target: usize) -> Vec<u8> {
    if target <= 64 {
        return tick(rng).into_bytes();
    }
    let mut out = format!(
        r#"{{"type":"batch","seq":{},"messages":["#,
        rng.below(1 << 20)
    );
    let mut id = rng.below(1 << 30);
    loop {
        let next = chat(rng, id);
        id += 1 + rng.below(3);
        if out.len() + next.len() + 3 > target {
            break;
        }
        if !out.ends_with('[') {
            out.push(',');
        }
        out.push_str(&next);
    }
    out.push_str("]}");
    out.into_bytes()
}

fn data_set(target: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target as u64);
    (0..MESSAGES_PER_SIZE)
        .map(|_| message(&mut rng, target))
        .collect()
}

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (16 << 10, "16KiB")];

/// The candidates, each built with a 15-bit window.
fn backends() -> Vec<(&'static str, Box<dyn Backend>)> {
    #[cfg_attr(not(feature = "bench-zlib-ng"), allow(unused_mut))]
    let mut all: Vec<(&'static str, Box<dyn Backend>)> = vec![
        ("flate2_zlib-rs", Box::new(flate2_backend::Flate2::new(15))),
        (
            zlib_backend::Zlib::NAME,
            Box::new(zlib_backend::Zlib::new(15)),
        ),
        ("miniz_oxide", Box::new(miniz_backend::Miniz::new(15))),
        (
            "libdeflater",
            Box::new(libdeflate_backend::Libdeflate::new()),
        ),
    ];
    #[cfg(feature = "bench-zlib-ng")]
    all.insert(
        2,
        (
            zlib_ng_backend::Zlib::NAME,
            Box::new(zlib_ng_backend::Zlib::new(15)),
        ),
    );
    all
}

/// Heap bytes in use (glibc: arena plus mmapped blocks), for C and Rust allocations alike.
fn heap_in_use() -> usize {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

/// Heap bytes (and inline size) one value made by `make` holds, averaged over 32 of them.
fn state_bytes<T>(make: impl Fn() -> T) -> usize {
    const COUNT: usize = 32;
    let before = heap_in_use();
    let held: Vec<T> = (0..COUNT).map(|_| make()).collect();
    let after = heap_in_use();
    drop(black_box(held));
    after.saturating_sub(before) / COUNT
}

fn out_buffer(len: usize) -> Vec<u8> {
    vec![0; len + len / 8 + 64]
}

/// Ratios, state sizes and the window-bits check, printed before the timings.
fn report() -> String {
    let mut text = String::new();
    let sets: Vec<_> = SIZES.iter().map(|&(size, _)| data_set(size)).collect();
    let _ = writeln!(
        text,
        "deflate backends, level {LEVEL}, raw deflate, sync flush, reset per message"
    );
    for (i, &(_, label)) in SIZES.iter().enumerate() {
        let total: usize = sets[i].iter().map(Vec::len).sum();
        let _ = writeln!(
            text,
            "data set {label}: {} messages, mean {} bytes",
            sets[i].len(),
            total / sets[i].len()
        );
    }
    let _ = writeln!(text, "compressed size / original size (whole data set):");
    for (name, mut backend) in backends() {
        let mut line = format!("  {name:<16}");
        for set in &sets {
            let (mut before, mut after) = (0, 0);
            for message in set {
                let mut out = out_buffer(message.len());
                let len = backend.compress(message, &mut out);
                let mut back = out_buffer(message.len());
                let back_len = backend.inflate(&out[..len], &mut back);
                assert_eq!(&back[..back_len], &message[..], "{name} round trip");
                before += message.len();
                after += len;
            }
            let _ = write!(line, " {:.3}", after as f64 / before as f64);
        }
        let _ = writeln!(text, "{line}");
    }

    let _ = writeln!(
        text,
        "heap bytes per compressor / per inflater (window 15, then window 9):"
    );
    // Compressors allocate everything when made. Inflaters may allocate their window on first use (zlib
    // does), so an inflater is measured as a whole backend after one round trip minus a fresh compressor.
    type Row = (&'static str, fn(u8) -> usize, fn(u8) -> Box<dyn Backend>);
    #[cfg_attr(not(feature = "bench-zlib-ng"), allow(unused_mut))]
    let mut rows: Vec<Row> = vec![
        (
            "flate2_zlib-rs",
            |bits| {
                state_bytes(|| {
                    flate2::Compress::new_with_window_bits(
                        flate2::Compression::new(LEVEL.into()),
                        false,
                        bits,
                    )
                })
            },
            |bits| Box::new(flate2_backend::Flate2::new(bits)),
        ),
        (
            "zlib",
            |bits| state_bytes(|| zlib_backend::Stream::deflater(bits, None)),
            |bits| Box::new(zlib_backend::Zlib::new(bits)),
        ),
        (
            "miniz_oxide",
            |_| state_bytes(|| Box::new(miniz_oxide::deflate::core::CompressorOxide::new(0))),
            |bits| Box::new(miniz_backend::Miniz::new(bits)),
        ),
        (
            "libdeflater",
            |_| {
                state_bytes(|| {
                    libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(LEVEL.into()).unwrap(),
                    )
                })
            },
            |_| Box::new(libdeflate_backend::Libdeflate::new()),
        ),
    ];
    #[cfg(feature = "bench-zlib-ng")]
    rows.insert(
        2,
        (
            "zlib-ng",
            |bits| state_bytes(|| zlib_ng_backend::Stream::deflater(bits, None)),
            |bits| Box::new(zlib_ng_backend::Zlib::new(bits)),
        ),
    );
    let sample = &sets[2][0];
    for (name, compressor, backend) in rows {
        let mut cells = String::new();
        for bits in [15, 9] {
            let compressor_bytes = compressor(bits);
            let pair_bytes = state_bytes(|| {
                let mut pair = backend(bits);
                let mut out = out_buffer(sample.len());
                let len = pair.compress(sample, &mut out);
                let mut back = out_buffer(sample.len());
                pair.inflate(&out[..len], &mut back);
                pair
            });
            let _ = write!(
                cells,
                "   {compressor_bytes:>7} / {:>6}",
                pair_bytes.saturating_sub(compressor_bytes)
            );
        }
        let _ = writeln!(text, "  {name:<16}{cells}");
    }
    let zlib_mem_level_1 = state_bytes(|| zlib_backend::Stream::deflater(15, Some(1)));
    let _ = writeln!(
        text,
        "  zlib compressor, window 15, memLevel 1 (flate2 cannot set it): {zlib_mem_level_1}"
    );

    // Window bits honoured? A 9-bit window (512 bytes) may not reach a repeat 1,000 bytes back; a 9-bit zlib
    // inflater that takes no back-reference from beyond its window must read every message.
    let _ = writeln!(
        text,
        "compressed with window 9 (a 1000-byte block twice, then the 16KiB set), readable by a 9-bit inflater:"
    );
    let mut rng = Rng(7);
    let block: Vec<u8> = (0..1000).map(|_| b'a' + rng.below(26) as u8).collect();
    let far_repeat = [&block[..], &block[..]].concat();
    let mut checker = zlib_backend::Zlib::new(9);
    let candidates: Vec<(&str, Box<dyn Backend>)> = vec![
        ("flate2_zlib-rs", Box::new(flate2_backend::Flate2::new(9))),
        ("zlib", Box::new(zlib_backend::Zlib::new(9))),
        ("miniz_oxide", Box::new(miniz_backend::Miniz::new(9))),
    ];
    #[cfg(feature = "bench-zlib-ng")]
    let candidates = {
        let mut candidates = candidates;
        candidates.push(("zlib-ng", Box::new(zlib_ng_backend::Zlib::new(9))));
        candidates
    };
    for (name, mut backend) in candidates {
        let readable = std::iter::once(&far_repeat).chain(&sets[2]).all(|message| {
            let mut out = out_buffer(message.len());
            let len = backend.compress(message, &mut out);
            checker.inflates_within_window(&out[..len])
        });
        let _ = writeln!(text, "  {name:<16} {readable}");
    }
    text
}

fn compress_benches(c: &mut Criterion) {
    for &(size, label) in &SIZES {
        let set = data_set(size);
        let total: usize = set.iter().map(Vec::len).sum();
        let mut group = c.benchmark_group(format!("compress_reset/{label}"));
        group.throughput(Throughput::Bytes((total / set.len()) as u64));
        for (name, mut backend) in backends() {
            let mut out = out_buffer(size * 2);
            let mut next = 0;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let message = &set[next % set.len()];
                    next += 1;
                    black_box(backend.compress(black_box(message), &mut out))
                })
            });
        }
        group.finish();
    }
}

fn inflate_benches(c: &mut Criterion) {
    for &(size, label) in &SIZES {
        let set = data_set(size);
        let total: usize = set.iter().map(Vec::len).sum();
        // Every inflater reads the same bytes: zlib's output, as a client would send.
        let mut reference = zlib_backend::Zlib::new(15);
        let compressed: Vec<Vec<u8>> = set
            .iter()
            .map(|message| {
                let mut out = out_buffer(message.len());
                let len = reference.compress(message, &mut out);
                out.truncate(len);
                out
            })
            .collect();
        let mut group = c.benchmark_group(format!("inflate_reset/{label}"));
        group.throughput(Throughput::Bytes((total / set.len()) as u64));
        for (name, mut backend) in backends() {
            let mut out = out_buffer(size * 2);
            let mut next = 0;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let input = &compressed[next % compressed.len()];
                    next += 1;
                    black_box(backend.inflate(black_box(input), &mut out))
                })
            });
        }
        group.finish();
    }
}

/// The reset alone, after a 64-byte message (a reset-per-message compressor pays it on every message).
fn reset_benches(c: &mut Criterion) {
    let set = data_set(64);
    let mut group = c.benchmark_group("reset_only");
    for (name, mut backend) in backends() {
        if !backend.reset_compressor() {
            continue;
        }
        let mut out = out_buffer(1024);
        backend.compress(&set[0], &mut out);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(backend.reset_compressor()))
        });
    }
    group.finish();
}

fn main() {
    print!("{}", report());
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    compress_benches(&mut criterion);
    inflate_benches(&mut criterion);
    reset_benches(&mut criterion);
    criterion.final_summary();
}
