//! Heap bytes one permessage-deflate compressor (and inflater) holds after one 1 KiB message, for the
//! windows and memory levels a context-takeover mode could use: zlib-rs (flate2's backend; its safe API
//! takes a memory level) and stock zlib (libz-sys). Heap = glibc `mallinfo2` in-use plus mmapped bytes,
//! averaged over 100 live instances.

use std::mem::MaybeUninit;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush};

const INSTANCES: usize = 100;

fn heap() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

fn message() -> Vec<u8> {
    (0..1024)
        .map(|i| br#"{"id":12,"user":"carol"},"#[i % 25])
        .collect()
}

fn zlib_rs_deflate(bits: i32, mem_level: i32) -> usize {
    let msg = message();
    let before = heap();
    let mut keep = Vec::new();
    for _ in 0..INSTANCES {
        let config = DeflateConfig {
            level: 6,
            window_bits: -bits,
            mem_level,
            ..Default::default()
        };
        let mut deflate = Deflate::new_with_config(config);
        let mut out = vec![0u8; 2048];
        deflate
            .compress(&msg, &mut out, DeflateFlush::SyncFlush)
            .unwrap();
        keep.push(deflate);
    }
    (heap() - before) / INSTANCES
}

fn zlib_rs_inflate(bits: u8) -> usize {
    let msg = message();
    let mut compressed = vec![0u8; 2048];
    let mut deflate = Deflate::new(6, false, bits);
    deflate
        .compress(&msg, &mut compressed, DeflateFlush::SyncFlush)
        .unwrap();
    compressed.truncate(deflate.total_out() as usize);
    let before = heap();
    let mut keep = Vec::new();
    for _ in 0..INSTANCES {
        let mut inflate = Inflate::new(false, bits);
        let mut out = vec![0u8; 2048];
        inflate
            .decompress(&compressed, &mut out, InflateFlush::SyncFlush)
            .unwrap();
        keep.push(inflate);
    }
    (heap() - before) / INSTANCES
}

fn stock_zlib_deflate(bits: i32, mem_level: i32) -> usize {
    use libz_sys::*;
    let msg = message();
    let mut out = vec![0u8; 4096];
    let before = heap();
    let mut keep: Vec<Box<MaybeUninit<z_stream>>> = Vec::new();
    for _ in 0..INSTANCES {
        // zlib reads zalloc/zfree/opaque as null (its defaults) from the zeroed stream; the stream is boxed
        // so that it never moves while zlib holds pointers into it.
        let mut stream = Box::new(MaybeUninit::<z_stream>::zeroed());
        // SAFETY: `stream` is a zeroed z_stream at a fixed address, initialised by deflateInit2_ before any
        // other use; next_in/next_out point into `msg` and `out`, which outlive the call.
        unsafe {
            let s = stream.as_mut_ptr();
            let size = std::mem::size_of::<z_stream>() as i32;
            let rc = deflateInit2_(
                s,
                6,
                Z_DEFLATED,
                -bits,
                mem_level,
                Z_DEFAULT_STRATEGY,
                zlibVersion(),
                size,
            );
            assert_eq!(rc, Z_OK);
            (*s).next_in = msg.as_ptr() as *mut u8;
            (*s).avail_in = msg.len() as u32;
            (*s).next_out = out.as_mut_ptr();
            (*s).avail_out = out.len() as u32;
            assert_eq!(deflate(s, Z_SYNC_FLUSH), Z_OK);
        }
        keep.push(stream);
    }
    let per = (heap() - before) / INSTANCES;
    for mut stream in keep {
        // SAFETY: each stream was initialised by deflateInit2_ above and is ended once.
        unsafe { deflateEnd(stream.as_mut_ptr()) };
    }
    per
}

fn main() {
    for (bits, mem_level) in [(15, 8), (11, 8), (9, 8), (15, 1), (11, 1), (9, 1)] {
        println!(
            "zlib-rs 0.6.8 compressor, window {bits}, memLevel {mem_level}: {} bytes",
            zlib_rs_deflate(bits, mem_level)
        );
    }
    for bits in [15, 9] {
        println!(
            "zlib-rs 0.6.8 inflater, window {bits}: {} bytes",
            zlib_rs_inflate(bits)
        );
    }
    for (bits, mem_level) in [(15, 8), (9, 8), (11, 1), (9, 1)] {
        println!(
            "stock zlib compressor, window {bits}, memLevel {mem_level}: {} bytes",
            stock_zlib_deflate(bits, mem_level)
        );
    }
}
