//! The compressor of a context-takeover connection (`--compression context`): stock zlib through
//! `libz-sys`, because it takes a memory level (zlib-rs keeps a 128 KiB hash table whatever the level; stock
//! zlib at memLevel 1 holds 9.2 KB at 9 bits and 15.4 KB at 11, measured by `scripts/deflate/context_cost`).
//!
//! It owns one zlib deflate stream (raw deflate, `deflateInit2(level, Z_DEFLATED, -window_bits, mem_level,
//! Z_DEFAULT_STRATEGY)`), boxed so that it never moves (zlib keeps a pointer back to it) and ended on drop.
//! Each message is compressed with a sync flush and its `00 00 ff ff` tail stripped; the window is kept
//! between messages. A message whose result is not smaller goes plain, and then the stream is reset: the
//! message is already in the compressor's window but the peer never inflated it, so a kept window would
//! refer the next message to bytes the peer does not have. After a reset the next message starts a fresh
//! run of blocks that refers to nothing before it, which any inflater that kept its window reads.
//!
//! This is the only module with FFI into zlib; every `unsafe` block says why it is sound. Never panics,
//! never logs; allocates only zlib's state (at creation) and the output it is asked for.

use std::mem::MaybeUninit;

use libz_sys::{
    deflate, deflateEnd, deflateInit2_, deflateReset, uInt, z_stream, zlibVersion, Z_BUF_ERROR,
    Z_DEFAULT_STRATEGY, Z_DEFLATED, Z_OK, Z_SYNC_FLUSH,
};

use super::TAIL;

/// zlib could not make a deflate stream (out of memory, or settings it refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextInitError(pub i32);

impl std::fmt::Display for ContextInitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zlib deflateInit2 failed with code {}", self.0)
    }
}

impl std::error::Error for ContextInitError {}

/// A raw-deflate compressor that keeps its window between messages.
pub struct ContextCompressor {
    /// Initialised by `deflateInit2_` in `new` and only ever reached through raw pointers (a `z_stream`
    /// holds non-nullable function pointers that zlib, not Rust, fills in, so no reference to it is made).
    stream: Box<MaybeUninit<z_stream>>,
}

impl std::fmt::Debug for ContextCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextCompressor").finish_non_exhaustive()
    }
}

// SAFETY: the stream is owned by this value alone (no shared pointers into it leave this module) and zlib
// keeps no thread-local state, so moving the owner to another thread is sound.
unsafe impl Send for ContextCompressor {}

impl ContextCompressor {
    /// A compressor at `level` (0..=9), with a window of `window_bits` (9..=15) and zlib memory level
    /// `mem_level` (1..=9); each is clamped into its range.
    pub fn new(
        level: u8,
        window_bits: u8,
        mem_level: u8,
    ) -> Result<ContextCompressor, ContextInitError> {
        let mut stream = Box::new(MaybeUninit::<z_stream>::zeroed());
        let s = stream.as_mut_ptr();
        // SAFETY: `s` points to a zeroed z_stream in a box that is never moved out of; zeroed zalloc, zfree
        // and opaque are what zlib reads as "use malloc/free" (it checks them as null pointers before
        // filling them in). `zlibVersion()` and the struct size let zlib check the header matches.
        let rc = unsafe {
            deflateInit2_(
                s,
                i32::from(level.min(9)),
                Z_DEFLATED,
                -i32::from(window_bits.clamp(9, 15)),
                i32::from(mem_level.clamp(1, 9)),
                Z_DEFAULT_STRATEGY,
                zlibVersion(),
                std::mem::size_of::<z_stream>() as i32,
            )
        };
        if rc != Z_OK {
            // deflateInit2 frees what it allocated when it fails: nothing to end.
            return Err(ContextInitError(rc));
        }
        Ok(ContextCompressor { stream })
    }

    /// Compresses `input` as the next message of this connection, appending its payload (sync flush, tail
    /// removed) to `out`. Returns `false`, with `out` as it was and the window emptied (see the module
    /// comment), when the payload would not be smaller than `input`: the message then goes plain.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(avail_in) = uInt::try_from(input.len()) else {
            // Longer than zlib takes in one call: sent plain, the window untouched.
            return false;
        };
        let start = out.len();
        // Room for a payload as long as the input plus the tail: a longer one is not worth sending.
        out.reserve(input.len() + TAIL.len());
        let spare = out.spare_capacity_mut();
        let room = spare.len().min(uInt::MAX as usize);
        let s = self.stream.as_mut_ptr();
        // SAFETY: the stream was initialised in `new` and not ended. next_in/avail_in describe `input`,
        // which zlib only reads (the `*mut` is zlib's signature); next_out/avail_out describe the spare
        // capacity of `out`, which zlib only writes. Both slices outlive the call, and zlib keeps no pointer
        // into them past it (they are overwritten before the next call). The fields are written and read
        // through the raw pointer, never through a reference.
        let (rc, avail_in_left, avail_out_left) = unsafe {
            (*s).next_in = input.as_ptr().cast_mut();
            (*s).avail_in = avail_in;
            (*s).next_out = spare.as_mut_ptr().cast::<u8>();
            (*s).avail_out = room as uInt;
            let rc = deflate(s, Z_SYNC_FLUSH);
            (rc, (*s).avail_in, (*s).avail_out)
        };
        let written = room - avail_out_left as usize;
        // SAFETY: zlib wrote `written` bytes at the start of the spare capacity (avail_out went down by
        // exactly that), so those bytes are initialised and within capacity.
        unsafe { out.set_len(start + written) };
        // Output room left over means the flush completed; Z_BUF_ERROR only says nothing was left to do.
        let flushed = (rc == Z_OK || rc == Z_BUF_ERROR)
            && avail_in_left == 0
            && avail_out_left > 0
            && out[start..].ends_with(&TAIL);
        let smaller = flushed && written - TAIL.len() < input.len();
        if smaller {
            out.truncate(out.len() - TAIL.len());
        } else {
            out.truncate(start);
            self.reset();
        }
        smaller
    }

    /// Empties the window: the next message refers to nothing sent before it.
    fn reset(&mut self) {
        // SAFETY: the stream was initialised in `new` and not ended; deflateReset keeps its allocations and
        // only clears state. It cannot fail on a valid stream, so its code is not needed.
        unsafe {
            deflateReset(self.stream.as_mut_ptr());
        }
    }
}

impl Drop for ContextCompressor {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised in `new` (a failed init never builds a ContextCompressor) and
        // is ended exactly once, here; zlib frees its state with the allocator it was made with.
        unsafe {
            deflateEnd(self.stream.as_mut_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// JSON-like text that compresses about 3:1 on its own.
    fn json(len: usize) -> Vec<u8> {
        let mut text = String::new();
        let mut x = 7u32;
        while text.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            text.push_str(&format!(
                "{{\"id\":{},\"user\":\"u{}\"}},",
                x % 100_000,
                x >> 24
            ));
        }
        text.truncate(len);
        text.into_bytes()
    }

    /// An inflater that keeps its window, as a client's is when the server keeps its context.
    struct Peer(Decompress);

    impl Peer {
        fn new() -> Peer {
            Peer(Decompress::new_with_window_bits(false, 15))
        }

        fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(1 << 20);
            let mut input = payload.to_vec();
            input.extend_from_slice(&TAIL);
            self.0
                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            out
        }
    }

    #[test]
    fn keeps_its_window_between_messages() {
        let message = json(1000);
        let mut compressor = ContextCompressor::new(6, 11, 1).unwrap();
        let mut peer = Peer::new();
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::new();
            assert!(compressor.compress(&message, &mut out));
            assert!(!out.ends_with(&TAIL));
            assert_eq!(peer.inflate(&out), message);
            sizes.push(out.len());
        }
        // The second refers back to the first whole: a few bytes.
        assert!(sizes[1] * 4 < sizes[0], "{sizes:?}");
        assert!(sizes[1] < 20, "{sizes:?}");
    }

    #[test]
    fn a_plain_message_resets_the_window() {
        let noise = super::super::test_noise(600);
        let message = json(500);
        let mut compressor = ContextCompressor::new(6, 11, 1).unwrap();
        let mut peer = Peer::new();
        let mut out = b"kept".to_vec();
        assert!(compressor.compress(&message, &mut out));
        assert_eq!(peer.inflate(&out[4..]), message);
        // Noise goes plain (the peer never inflates it) and leaves `out` as it was.
        out.truncate(4);
        assert!(!compressor.compress(&noise, &mut out));
        assert_eq!(out, b"kept");
        // The next message still inflates right at a peer that never saw the noise.
        let next: Vec<u8> = noise.iter().chain(&message).copied().collect();
        let mut out = Vec::new();
        assert!(compressor.compress(&next, &mut out));
        assert_eq!(peer.inflate(&out), next);
        let mut out = Vec::new();
        assert!(compressor.compress(&message, &mut out));
        assert_eq!(peer.inflate(&out), message);
        assert!(out.len() < 20);
    }

    #[test]
    fn window_and_levels_are_clamped_and_honoured() {
        // Out-of-range settings are clamped, not refused.
        assert!(ContextCompressor::new(12, 20, 0).is_ok());
        // A 9-bit stream is read by a 9-bit inflater that kept its window: no reference past 512 bytes.
        let mut compressor = ContextCompressor::new(6, 9, 1).unwrap();
        let mut narrow = Decompress::new_with_window_bits(false, 9);
        for len in [300, 2000, 300] {
            let message = json(len);
            let mut out = Vec::new();
            assert!(compressor.compress(&message, &mut out));
            out.extend_from_slice(&TAIL);
            let mut got = Vec::with_capacity(len + 16);
            narrow
                .decompress_vec(&out, &mut got, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(got, message);
        }
        // Empty: never smaller.
        assert!(!compressor.compress(b"", &mut Vec::new()));
    }
}
