//! WebSocket payload masking (RFC 6455 section 5.3): XOR of a payload with a repeating 4-byte key, in place
//! or while copying it elsewhere (`extend_unmasked`: the unmask and the copy into an assembly buffer in one
//! pass over the received bytes).
//!
//! Owns the SIMD kernels (AVX2 and SSE2 on x86_64, NEON on aarch64) of both forms, their one-time runtime
//! selection, and the byte-at-a-time reference loop every kernel must match exactly. `phase` is the index
//! into `key` of `buf[0]`, so a payload split across several buffers is unmasked piece by piece with the
//! running offset.
//!
//! This module must never fail, never read outside its source nor write outside its destination, and never
//! allocate except in `extend_unmasked`, which reserves room in the caller's `Vec` (none when the caller
//! reserved it). It is the only place of the protocol layer allowed to use `unsafe` (SIMD loads and stores,
//! the length of a `Vec` whose new bytes a kernel wrote), each block carrying a `// SAFETY:` line.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Signature shared by every masking kernel: `(buf, key, phase)`.
pub type MaskFn = fn(&mut [u8], [u8; 4], usize);

/// Signature shared by every copying kernel: `(dst, src, key, phase)` writes every byte of `dst` with the
/// byte of `src` at the same index, masked; `dst` and `src` have the same length (the kernels panic
/// otherwise).
pub type CopyMaskFn = fn(&mut [MaybeUninit<u8>], &[u8], [u8; 4], usize);

/// Below this length the word-at-a-time loop is used directly: the indirect call and SIMD setup would cost
/// more than they save.
const SMALL: usize = 32;

/// Below this length (and from `SMALL`) x86_64 calls the SSE2 kernel directly (part of the baseline, so no
/// dispatch); from here on the runtime-selected kernel (AVX2 where present) pays for its indirect call.
#[cfg(target_arch = "x86_64")]
const MEDIUM: usize = 256;

/// XORs `buf` in place with `key`, starting at `key[phase % 4]`. Uses the fastest kernel this CPU supports
/// (selected once, then one load per call). Applying it twice restores the input.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    if buf.len() < SMALL {
        apply_mask_word(buf, key, phase);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if buf.len() < MEDIUM {
        x86::apply_mask_sse2(buf, key, phase);
        return;
    }
    let kernel = KERNEL.get_or_init(select_kernel);
    (kernel.1)(buf, key, phase);
}

/// Appends `src` masked with `key` (from `key[phase % 4]`) to `dst`: the same bytes as copying `src` and
/// then applying `apply_mask` to the copy, in one pass. Reserves room for `src` if `dst` has too little.
#[inline]
pub fn extend_unmasked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], phase: usize) {
    dst.reserve(src.len());
    let old = dst.len();
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    if src.len() < SMALL {
        copy_mask_word(spare, src, key, phase);
    } else {
        #[cfg(target_arch = "x86_64")]
        if src.len() < MEDIUM {
            x86::copy_mask_sse2(spare, src, key, phase);
        } else {
            (COPY_KERNEL.get_or_init(select_copy_kernel).1)(spare, src, key, phase);
        }
        #[cfg(not(target_arch = "x86_64"))]
        (COPY_KERNEL.get_or_init(select_copy_kernel).1)(spare, src, key, phase);
    }
    // SAFETY: `reserve` made room for `src.len()` bytes past `old`, and every copying kernel writes each
    // byte of the `spare` slice it is given (pinned by `every_copy_kernel_matches_copy_then_mask`), so
    // `old + src.len()` bytes are initialized and within the capacity.
    unsafe { dst.set_len(old + src.len()) }
}

/// The exact reference: one byte at a time. Also the "byte-at-a-time loop" baseline of the benchmarks.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(phase + i) & 3];
    }
}

/// Portable fallback: eight bytes at a time through `u64` words, byte loop for the tail.
pub fn apply_mask_word(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let rotated = rotate_key(key, phase);
    let word = u32::from_ne_bytes(rotated) as u64;
    let word = word | (word << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let value = u64::from_ne_bytes(bytes) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // Whole 8-byte chunks keep the phase, so the tail starts at `rotated[0]`.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= rotated[i & 3];
    }
}

/// Portable copying fallback: eight bytes at a time through `u64` words, byte loop for the tail.
pub fn copy_mask_word(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4], phase: usize) {
    assert_eq!(
        dst.len(),
        src.len(),
        "source and destination lengths differ"
    );
    let rotated = rotate_key(key, phase);
    let word = u32::from_ne_bytes(rotated) as u64;
    let word = word | (word << 32);
    let mut out = dst.chunks_exact_mut(8);
    let mut from = src.chunks_exact(8);
    for (o, chunk) in (&mut out).zip(&mut from) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let value = (u64::from_ne_bytes(bytes) ^ word).to_ne_bytes();
        for (slot, byte) in o.iter_mut().zip(value) {
            slot.write(byte);
        }
    }
    // Whole 8-byte chunks keep the phase, so the tail starts at `rotated[0]`.
    let tail = out.into_remainder().iter_mut().zip(from.remainder());
    for (i, (slot, byte)) in tail.enumerate() {
        slot.write(byte ^ rotated[i & 3]);
    }
}

/// The key as seen from `buf[0]`: `rotate_key(key, p)[i] == key[(p + i) % 4]`.
#[inline]
fn rotate_key(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [key[p], key[(p + 1) & 3], key[(p + 2) & 3], key[(p + 3) & 3]]
}

static KERNEL: OnceLock<(&'static str, MaskFn)> = OnceLock::new();

/// Name of the kernel `apply_mask` uses on this CPU for large buffers ("avx2", "sse2", "neon" or "word";
/// on x86_64, buffers of 32 to 255 bytes always take SSE2 and shorter ones the word loop).
pub fn selected_kernel() -> &'static str {
    KERNEL.get_or_init(select_kernel).0
}

/// Every kernel this CPU can run, best last, with its name; for the equivalence tests and benchmarks.
pub fn available_kernels() -> Vec<(&'static str, MaskFn)> {
    let mut kernels: Vec<(&'static str, MaskFn)> = vec![("word", apply_mask_word)];
    #[cfg(target_arch = "x86_64")]
    {
        kernels.push(("sse2", x86::apply_mask_sse2));
        if std::is_x86_feature_detected!("avx2") {
            kernels.push(("avx2", x86::apply_mask_avx2));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            kernels.push(("neon", arm::apply_mask_neon));
        }
    }
    kernels
}

fn select_kernel() -> (&'static str, MaskFn) {
    *available_kernels()
        .last()
        .expect("the word kernel is always available")
}

static COPY_KERNEL: OnceLock<(&'static str, CopyMaskFn)> = OnceLock::new();

/// Every copying kernel this CPU can run, best last, with its name (the same names as `available_kernels`).
pub fn available_copy_kernels() -> Vec<(&'static str, CopyMaskFn)> {
    let mut kernels: Vec<(&'static str, CopyMaskFn)> = vec![("word", copy_mask_word)];
    #[cfg(target_arch = "x86_64")]
    {
        kernels.push(("sse2", x86::copy_mask_sse2));
        if std::is_x86_feature_detected!("avx2") {
            kernels.push(("avx2", x86::copy_mask_avx2));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            kernels.push(("neon", arm::copy_mask_neon));
        }
    }
    kernels
}

fn select_copy_kernel() -> (&'static str, CopyMaskFn) {
    *available_copy_kernels()
        .last()
        .expect("the word kernel is always available")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::rotate_key;
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256,
        _mm256_xor_si256, _mm_loadu_si128, _mm_set1_epi32, _mm_storeu_si128, _mm_xor_si128,
    };
    use std::mem::MaybeUninit;

    /// AVX2 copying kernel. Only reachable through `available_copy_kernels`, which checks the CPU first.
    pub(super) fn copy_mask_avx2(
        dst: &mut [MaybeUninit<u8>],
        src: &[u8],
        key: [u8; 4],
        phase: usize,
    ) {
        assert_eq!(
            dst.len(),
            src.len(),
            "source and destination lengths differ"
        );
        debug_assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: this function is only handed out by `available_copy_kernels` after
        // `is_x86_feature_detected!("avx2")` returned true, so the CPU supports the enabled feature.
        unsafe { copy_avx2(dst, src, key, phase) }
    }

    #[target_feature(enable = "avx2")]
    fn copy_avx2(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = _mm256_set1_epi32(i32::from_ne_bytes(rotated));
        let mut out = dst.chunks_exact_mut(128);
        let mut from = src.chunks_exact(128);
        for (o, block) in (&mut out).zip(&mut from) {
            let s = block.as_ptr() as *const __m256i;
            let d = o.as_mut_ptr() as *mut __m256i;
            // SAFETY: `block` and `o` are exactly 128 bytes each, so the four 32-byte unaligned loads from
            // one and stores into the other at offsets 0, 32, 64 and 96 stay inside them; `loadu`/`storeu`
            // have no alignment requirement, and storing into `MaybeUninit` bytes is always allowed.
            unsafe {
                let a = _mm256_loadu_si256(s);
                let b = _mm256_loadu_si256(s.add(1));
                let c = _mm256_loadu_si256(s.add(2));
                let e = _mm256_loadu_si256(s.add(3));
                _mm256_storeu_si256(d, _mm256_xor_si256(a, mask));
                _mm256_storeu_si256(d.add(1), _mm256_xor_si256(b, mask));
                _mm256_storeu_si256(d.add(2), _mm256_xor_si256(c, mask));
                _mm256_storeu_si256(d.add(3), _mm256_xor_si256(e, mask));
            }
        }
        let mut out = out.into_remainder().chunks_exact_mut(32);
        let mut from = from.remainder().chunks_exact(32);
        for (o, lane) in (&mut out).zip(&mut from) {
            let s = lane.as_ptr() as *const __m256i;
            let d = o.as_mut_ptr() as *mut __m256i;
            // SAFETY: `lane` and `o` are exactly 32 bytes: one unaligned 32-byte load and store stay inside.
            unsafe { _mm256_storeu_si256(d, _mm256_xor_si256(_mm256_loadu_si256(s), mask)) }
        }
        // Whole 32-byte lanes keep the phase: the tail starts at `rotated[0]`.
        super::copy_mask_word(out.into_remainder(), from.remainder(), rotated, 0);
    }

    /// SSE2 copying kernel (part of the x86_64 baseline, so always available there).
    pub(super) fn copy_mask_sse2(
        dst: &mut [MaybeUninit<u8>],
        src: &[u8],
        key: [u8; 4],
        phase: usize,
    ) {
        assert_eq!(
            dst.len(),
            src.len(),
            "source and destination lengths differ"
        );
        // SAFETY: SSE2 is part of the x86_64 baseline: every CPU this code can run on supports it.
        unsafe { copy_sse2(dst, src, key, phase) }
    }

    #[target_feature(enable = "sse2")]
    fn copy_sse2(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = _mm_set1_epi32(i32::from_ne_bytes(rotated));
        let mut out = dst.chunks_exact_mut(64);
        let mut from = src.chunks_exact(64);
        for (o, block) in (&mut out).zip(&mut from) {
            let s = block.as_ptr() as *const __m128i;
            let d = o.as_mut_ptr() as *mut __m128i;
            // SAFETY: `block` and `o` are exactly 64 bytes each, so the four 16-byte unaligned loads from
            // one and stores into the other at offsets 0, 16, 32 and 48 stay inside them; `loadu`/`storeu`
            // have no alignment requirement, and storing into `MaybeUninit` bytes is always allowed.
            unsafe {
                let a = _mm_loadu_si128(s);
                let b = _mm_loadu_si128(s.add(1));
                let c = _mm_loadu_si128(s.add(2));
                let e = _mm_loadu_si128(s.add(3));
                _mm_storeu_si128(d, _mm_xor_si128(a, mask));
                _mm_storeu_si128(d.add(1), _mm_xor_si128(b, mask));
                _mm_storeu_si128(d.add(2), _mm_xor_si128(c, mask));
                _mm_storeu_si128(d.add(3), _mm_xor_si128(e, mask));
            }
        }
        let mut out = out.into_remainder().chunks_exact_mut(16);
        let mut from = from.remainder().chunks_exact(16);
        for (o, lane) in (&mut out).zip(&mut from) {
            let s = lane.as_ptr() as *const __m128i;
            let d = o.as_mut_ptr() as *mut __m128i;
            // SAFETY: `lane` and `o` are exactly 16 bytes: one unaligned 16-byte load and store stay inside.
            unsafe { _mm_storeu_si128(d, _mm_xor_si128(_mm_loadu_si128(s), mask)) }
        }
        super::copy_mask_word(out.into_remainder(), from.remainder(), rotated, 0);
    }

    /// AVX2 kernel. Only reachable through `available_kernels`, which checks the CPU first.
    pub(super) fn apply_mask_avx2(buf: &mut [u8], key: [u8; 4], phase: usize) {
        debug_assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: this function is only handed out by `available_kernels` after
        // `is_x86_feature_detected!("avx2")` returned true, so the CPU supports the enabled feature.
        unsafe { avx2(buf, key, phase) }
    }

    #[target_feature(enable = "avx2")]
    fn avx2(buf: &mut [u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = _mm256_set1_epi32(i32::from_ne_bytes(rotated));
        let mut blocks = buf.chunks_exact_mut(128);
        for block in &mut blocks {
            let p = block.as_mut_ptr() as *mut __m256i;
            // SAFETY: `block` is exactly 128 bytes, so the four 32-byte unaligned loads and stores at
            // offsets 0, 32, 64 and 96 stay inside it; `loadu`/`storeu` have no alignment requirement.
            unsafe {
                let a = _mm256_loadu_si256(p);
                let b = _mm256_loadu_si256(p.add(1));
                let c = _mm256_loadu_si256(p.add(2));
                let d = _mm256_loadu_si256(p.add(3));
                _mm256_storeu_si256(p, _mm256_xor_si256(a, mask));
                _mm256_storeu_si256(p.add(1), _mm256_xor_si256(b, mask));
                _mm256_storeu_si256(p.add(2), _mm256_xor_si256(c, mask));
                _mm256_storeu_si256(p.add(3), _mm256_xor_si256(d, mask));
            }
        }
        let rest = blocks.into_remainder();
        let mut lanes = rest.chunks_exact_mut(32);
        for lane in &mut lanes {
            let p = lane.as_mut_ptr() as *mut __m256i;
            // SAFETY: `lane` is exactly 32 bytes: one unaligned 32-byte load and store stay inside it.
            unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), mask)) }
        }
        // Whole 32-byte lanes keep the phase: the tail starts at `rotated[0]`.
        super::apply_mask_word(lanes.into_remainder(), rotated, 0);
    }

    /// SSE2 kernel (part of the x86_64 baseline, so always available there).
    pub(super) fn apply_mask_sse2(buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: SSE2 is part of the x86_64 baseline: every CPU this code can run on supports it.
        unsafe { sse2(buf, key, phase) }
    }

    #[target_feature(enable = "sse2")]
    fn sse2(buf: &mut [u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = _mm_set1_epi32(i32::from_ne_bytes(rotated));
        let mut blocks = buf.chunks_exact_mut(64);
        for block in &mut blocks {
            let p = block.as_mut_ptr() as *mut __m128i;
            // SAFETY: `block` is exactly 64 bytes, so the four 16-byte unaligned loads and stores at offsets
            // 0, 16, 32 and 48 stay inside it; `loadu`/`storeu` have no alignment requirement.
            unsafe {
                let a = _mm_loadu_si128(p);
                let b = _mm_loadu_si128(p.add(1));
                let c = _mm_loadu_si128(p.add(2));
                let d = _mm_loadu_si128(p.add(3));
                _mm_storeu_si128(p, _mm_xor_si128(a, mask));
                _mm_storeu_si128(p.add(1), _mm_xor_si128(b, mask));
                _mm_storeu_si128(p.add(2), _mm_xor_si128(c, mask));
                _mm_storeu_si128(p.add(3), _mm_xor_si128(d, mask));
            }
        }
        let rest = blocks.into_remainder();
        let mut lanes = rest.chunks_exact_mut(16);
        for lane in &mut lanes {
            let p = lane.as_mut_ptr() as *mut __m128i;
            // SAFETY: `lane` is exactly 16 bytes: one unaligned 16-byte load and store stay inside it.
            unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), mask)) }
        }
        super::apply_mask_word(lanes.into_remainder(), rotated, 0);
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::rotate_key;
    use std::arch::aarch64::{vdupq_n_u32, veorq_u8, vld1q_u8, vreinterpretq_u8_u32, vst1q_u8};
    use std::mem::MaybeUninit;

    /// NEON copying kernel. Only reachable through `available_copy_kernels`, which checks the CPU first.
    pub(super) fn copy_mask_neon(
        dst: &mut [MaybeUninit<u8>],
        src: &[u8],
        key: [u8; 4],
        phase: usize,
    ) {
        assert_eq!(
            dst.len(),
            src.len(),
            "source and destination lengths differ"
        );
        // SAFETY: handed out by `available_copy_kernels` only after `is_aarch64_feature_detected!("neon")`.
        unsafe { copy_neon(dst, src, key, phase) }
    }

    #[target_feature(enable = "neon")]
    fn copy_neon(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_ne_bytes(rotated)));
        let mut out = dst.chunks_exact_mut(16);
        let mut from = src.chunks_exact(16);
        for (o, lane) in (&mut out).zip(&mut from) {
            // SAFETY: `lane` and `o` are exactly 16 bytes: one 16-byte load from one and store into the
            // other stay inside them; `vld1q_u8` and `vst1q_u8` need only byte alignment.
            unsafe {
                vst1q_u8(
                    o.as_mut_ptr() as *mut u8,
                    veorq_u8(vld1q_u8(lane.as_ptr()), mask),
                )
            }
        }
        super::copy_mask_word(out.into_remainder(), from.remainder(), rotated, 0);
    }

    /// NEON kernel. Only reachable through `available_kernels`, which checks the CPU first.
    pub(super) fn apply_mask_neon(buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: handed out by `available_kernels` only after `is_aarch64_feature_detected!("neon")`.
        unsafe { neon(buf, key, phase) }
    }

    #[target_feature(enable = "neon")]
    fn neon(buf: &mut [u8], key: [u8; 4], phase: usize) {
        let rotated = rotate_key(key, phase);
        let mask = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_ne_bytes(rotated)));
        let mut lanes = buf.chunks_exact_mut(16);
        for lane in &mut lanes {
            let p = lane.as_mut_ptr();
            // SAFETY: `lane` is exactly 16 bytes: one 16-byte load and store stay inside it; `vld1q_u8` and
            // `vst1q_u8` need only byte alignment.
            unsafe { vst1q_u8(p, veorq_u8(vld1q_u8(p), mask)) }
        }
        super::apply_mask_word(lanes.into_remainder(), rotated, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn scalar_matches_rfc_definition() {
        // RFC 6455 5.3: transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4).
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut data = *b"Hello";
        apply_mask_scalar(&mut data, key, 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 5.7 example payload
    }

    #[test]
    fn every_kernel_matches_scalar_at_every_length_offset_and_phase() {
        let key = [0xa1, 0x5b, 0x03, 0xfe];
        let source = pattern(300 + 64);
        for (name, kernel) in available_kernels() {
            for len in 0..300 {
                for offset in 0..33 {
                    for phase in 0..4 {
                        let mut expected = source.clone();
                        apply_mask_scalar(&mut expected[offset..offset + len], key, phase);
                        let mut actual = source.clone();
                        kernel(&mut actual[offset..offset + len], key, phase);
                        assert_eq!(
                            actual, expected,
                            "{name} len {len} offset {offset} phase {phase}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn split_buffers_continue_with_phase() {
        let key = [1, 2, 3, 4];
        let source = pattern(1000);
        let mut whole = source.clone();
        apply_mask_scalar(&mut whole, key, 0);
        for split in [1, 3, 5, 31, 32, 33, 500, 999] {
            let mut parts = source.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole, "split at {split}");
        }
    }

    #[test]
    fn every_copy_kernel_matches_copy_then_mask() {
        let key = [0xa1, 0x5b, 0x03, 0xfe];
        let source = pattern(300 + 64);
        for (name, kernel) in available_copy_kernels() {
            for len in 0..300 {
                for offset in 0..33 {
                    for phase in 0..4 {
                        let src = &source[offset..offset + len];
                        let mut expected = src.to_vec();
                        apply_mask_scalar(&mut expected, key, phase);
                        // Run over two fillings: a byte the kernel left unwritten differs in one of them.
                        for fill in [0x00, 0xff] {
                            let mut out = vec![MaybeUninit::new(fill); len + 1];
                            kernel(&mut out[..len], src, key, phase);
                            // SAFETY: every element was initialized by the `vec!` above.
                            let out: Vec<u8> =
                                out.iter().map(|b| unsafe { b.assume_init() }).collect();
                            assert_eq!(
                                &out[..len],
                                &expected[..],
                                "{name} len {len} offset {offset} phase {phase} fill {fill}"
                            );
                            assert_eq!(out[len], fill, "{name} wrote past the end");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn extend_unmasked_appends_what_unmask_in_place_gives() {
        // Every length 0-70 at every phase (mask offset), behind 0-5 bytes already in the `Vec` (so the
        // destination's alignment varies), with and without room reserved: the same bytes as a copy
        // unmasked in place with `apply_mask`.
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let source = pattern(70 + 7);
        for len in 0..=70 {
            for phase in 0..4 {
                for start in 0..7 {
                    for before in 0..6 {
                        for reserve in [false, true] {
                            let src = &source[start..start + len];
                            let mut expected = src.to_vec();
                            apply_mask(&mut expected, key, phase);
                            let mut out: Vec<u8> = Vec::new();
                            if reserve {
                                out.reserve_exact(before + len);
                            }
                            out.extend_from_slice(&source[..before]);
                            extend_unmasked(&mut out, src, key, phase);
                            assert_eq!(&out[..before], &source[..before]);
                            assert_eq!(
                                &out[before..],
                                &expected[..],
                                "len {len} phase {phase} start {start} before {before}"
                            );
                        }
                    }
                }
            }
        }
        // Large enough for the runtime-selected kernel.
        for len in [256, 1000, 4096 + 13, 65536 + 3] {
            let source = pattern(len + 3);
            let mut expected = source[3..].to_vec();
            apply_mask(&mut expected, key, 3);
            let mut out = vec![9u8];
            extend_unmasked(&mut out, &source[3..], key, 3);
            assert_eq!((out[0], &out[1..]), (9, &expected[..]), "len {len}");
        }
    }

    #[test]
    fn selects_the_best_kernel() {
        let best = available_kernels().last().unwrap().0;
        assert_eq!(selected_kernel(), best);
        assert_eq!(select_copy_kernel().0, best);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            assert_eq!(best, "avx2");
        }
    }
}
