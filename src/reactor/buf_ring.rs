//! The worker's provided buffer ring: a fixed set of equally sized receive buffers the kernel picks from
//! for multishot receives, so that idle connections own no buffer at all.
//!
//! Lifetime rule: the ring memory and the buffer memory are mapped here and stay mapped while any
//! [`RecvBuf`] handle, the owning [`BufRing`] or the [`Ring`] it is registered with exists (`Rc`); the
//! `Ring` keeps them until after its io_uring is closed, so no drop order can unmap memory the kernel may
//! still fill. A buffer is the kernel's until a completion hands it over; [`BufRing::take`] lends it
//! only against that completion (once: the completion's hand-over is moved out, and a bit per buffer
//! refuses a second loan), and [`BufRing::recycle`] takes back only a [`RecvBuf`] this ring lent and
//! re-publishes it to the kernel at once. This module must never hand out the same buffer twice, nor
//! publish one that is lent.
//!
//! Buffers are provided as they are needed, not all at once: the kernel takes buffers in ring order and
//! writes each one it takes, so every buffer in the ring is touched (made resident) as receives cycle
//! through it, even when a handful would do (a server that only ever receives handshakes and pings).
//! The ring starts with [`FIRST_PROVIDED`] buffers, and each receive that found it dry (`ENOBUFS`,
//! reported by the caller with [`BufRing::ran_dry`]) adds [`PROVIDE_CHUNK`] more, up to `count`; that
//! receive is re-armed by the caller as before. Under load the ring reaches its full count within a batch
//! or two; the hot path (`take`, `recycle`) does no extra work for it.

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::ring::{Completion, Handover, Ring};
use super::sys::Mapping;

/// Buffers a new ring provides (all of them if it has fewer): enough for handshakes and pings arriving
/// one at a time; each page the kernel writes in one stays resident.
pub const FIRST_PROVIDED: u16 = 4;

/// Buffers added for each receive that found the ring dry.
pub const PROVIDE_CHUNK: u16 = 16;

/// The memory shared with the kernel: the ring of entries and the buffers.
pub(super) struct Region {
    entries: Mapping,
    buffers: Mapping,
}

/// One received buffer, lent by the ring until it is recycled. Made only by [`BufRing::take`]:
///
/// ```compile_fail
/// fn forge(b: ringws::reactor::RecvBuf) -> ringws::reactor::RecvBuf {
///     ringws::reactor::RecvBuf { id: 0, ..b }
/// }
/// ```
///
/// Dropping one instead of recycling it loses that buffer for the ring's lifetime (it is never
/// published again), which is never unsafe.
pub struct RecvBuf {
    region: Rc<Region>,
    id: u16,
    ptr: *mut u8,
    len: usize,
}

impl RecvBuf {
    /// The received bytes, writable (the protocol unmasks in place).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let _ = &self.region;
        // SAFETY: `ptr..ptr+len` lies inside buffer `id` of the mapping kept alive by `region`; the kernel
        // wrote it before posting the completion that handed it over and does not touch it again until
        // `recycle` re-publishes it; this handle is the only one for buffer `id` (its lent bit refuses a
        // second), and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The buffer's id in its ring.
    pub fn id(&self) -> u16 {
        self.id
    }
}

/// The provided buffer ring of one worker (buffer group `group`), one per [`Ring`].
pub struct BufRing {
    region: Rc<Region>,
    /// The identity of the ring this buffer ring is registered with.
    ring: u64,
    group: u16,
    count: u16,
    buf_size: usize,
    /// Local copy of the tail we publish to the kernel.
    tail: u16,
    /// One bit per buffer: lent to a [`RecvBuf`].
    lent: Box<[u64]>,
    /// Buffers provided so far (ids `0..provided`); the others have never been published.
    provided: u16,
}

impl BufRing {
    /// Maps `count` (a power of two, at most 32768) buffers of `buf_size` bytes (below 4 GiB) and
    /// registers them with `ring` as buffer group `group`. A ring serves one buffer ring (a completion does not say which
    /// group its buffer came from): a second is refused (`AlreadyExists`).
    pub fn new(ring: &Ring, group: u16, count: u16, buf_size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768",
            ));
        }
        // The kernel's entries hold a 32-bit length, and the mapping's size must not wrap.
        let Some(mapped) = (count as usize)
            .checked_mul(buf_size)
            .filter(|_| buf_size > 0 && buf_size <= u32::MAX as usize)
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer size must be 1 to 4 GiB - 1 bytes, and all buffers addressable",
            ));
        };
        if ring.has_buffers() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a ring serves one buffer ring",
            ));
        }
        let entries = Mapping::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(mapped)?;
        // SAFETY: the entries mapping is page aligned, sized for `count` entries, zero-filled (a valid
        // empty ring, tail 0), and outlives the registration: the `Region` is handed to `ring` right
        // after, which keeps it until its io_uring is closed.
        unsafe {
            ring.inner().submitter().register_buf_ring_with_flags(
                entries.ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        let region = Rc::new(Region { entries, buffers });
        let kept = ring.keep_buffers(Rc::clone(&region));
        assert!(kept, "checked above: no buffer ring registered yet");
        let mut this = BufRing {
            region,
            ring: ring.id(),
            group,
            count,
            buf_size,
            tail: 0,
            lent: vec![0; (count as usize).div_ceil(64)].into_boxed_slice(),
            provided: 0,
        };
        this.provide(FIRST_PROVIDED);
        this.commit();
        Ok(this)
    }

    /// A receive found the ring dry (`ENOBUFS`): provides [`PROVIDE_CHUNK`] buffers more, if the ring has
    /// any left that were never provided. The caller re-arms the receive.
    pub fn ran_dry(&mut self) {
        if self.provided < self.count {
            self.provide(PROVIDE_CHUNK);
            self.commit();
        }
    }

    /// Publishes up to `more` buffers never provided before (not committed).
    fn provide(&mut self, more: u16) {
        let end = self.provided.saturating_add(more).min(self.count);
        for id in self.provided..end {
            self.publish(id);
        }
        self.provided = end;
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Takes the buffer `completion` handed over (the kernel filled it and lets go of it until it is
    /// recycled); `None` if it carries none (or it was taken already). A buffer id alone lends nothing:
    ///
    /// ```compile_fail
    /// fn alias(bufs: &mut ringws::reactor::BufRing) -> ringws::reactor::RecvBuf {
    ///     bufs.take(0, 64)
    /// }
    /// ```
    ///
    /// # Panics
    /// If the completion came from another ring than the one this buffer ring is registered with, or the
    /// buffer is lent already (neither happens with completions of [`Ring::drain_completions`]).
    pub fn take(&mut self, completion: &mut Completion) -> Option<RecvBuf> {
        let (id, len) = match completion.handover {
            Handover::Buffer { ring, id, len } => {
                assert_eq!(
                    ring, self.ring,
                    "a buffer handed over by another ring's completion"
                );
                (id, len)
            }
            _ => return None,
        };
        assert!(
            id < self.count && len <= self.buf_size,
            "buffer id or length out of range"
        );
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        assert!(self.lent[word] & bit == 0, "buffer {id} is lent already");
        self.lent[word] |= bit;
        completion.handover = Handover::None;
        // SAFETY: `id < count` so the offset stays inside the buffer mapping.
        let ptr = unsafe { self.region.buffers.ptr().add(id as usize * self.buf_size) };
        Some(RecvBuf {
            region: Rc::clone(&self.region),
            id,
            ptr,
            len,
        })
    }

    /// Gives a buffer back to the kernel.
    ///
    /// # Panics
    /// If `buf` was lent by another buffer ring.
    pub fn recycle(&mut self, buf: RecvBuf) {
        assert!(
            Rc::ptr_eq(&buf.region, &self.region),
            "a buffer lent by another buffer ring"
        );
        let (word, bit) = (buf.id as usize / 64, 1u64 << (buf.id % 64));
        assert!(self.lent[word] & bit != 0, "buffer {} is not lent", buf.id);
        self.lent[word] &= !bit;
        self.publish(buf.id);
        self.commit();
    }
    fn publish(&mut self, id: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        let base = self.region.entries.ptr() as *mut BufRingEntry;
        // SAFETY: `index < count`, so the entry lies inside the entries mapping; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail until `commit`.
        let entry = unsafe { &mut *base.add(index) };
        // SAFETY: `id < count` so the address stays inside the buffer mapping.
        entry
            .set_addr(unsafe { self.region.buffers.ptr().add(id as usize * self.buf_size) } as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn commit(&mut self) {
        let base = self.region.entries.ptr() as *const BufRingEntry;
        // SAFETY: `base` is the first entry of a live, page-aligned ring mapping, so its `resv` field is
        // the ring's tail; the kernel reads it atomically, so we store it with release ordering through
        // an `AtomicU16` of the same size and alignment.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::ring::testing::{socket_in_slot_zero, wait_for};
    use super::*;
    use crate::reactor::{Op, UserData};

    fn recv_ud() -> u64 {
        UserData::new(0, 1, Op::Recv).encode()
    }

    /// A completion handing over buffer `id` of `ring`'s buffer ring, as `drain_completions` mints it.
    fn handing_over(ring: &Ring, id: u16, len: usize) -> Completion {
        Completion::handed_over(
            recv_ud(),
            len as i32,
            0,
            Handover::Buffer {
                ring: ring.id(),
                id,
                len,
            },
        )
    }

    #[test]
    fn a_received_buffer_is_lent_once_against_its_completion() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        peer.write_all(b"hello").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        assert_eq!(done.result, 5);
        let id = done.buffer_id().expect("a provided buffer");
        let mut buf = bufs.take(&mut done).expect("lent against its completion");
        assert_eq!(buf.id(), id);
        assert_eq!(buf.bytes_mut(), b"hello");
        // The hand-over is spent: no second loan of the buffer from the same completion.
        assert_eq!(done.buffer_id(), None);
        assert!(bufs.take(&mut done).is_none());
        bufs.recycle(buf);
        // Given back, it is the kernel's again and comes back with the next receive.
        peer.write_all(b"again").expect("write");
        let mut done = wait_for(&mut ring, recv_ud());
        let mut buf = bufs.take(&mut done).expect("lent");
        assert_eq!(buf.bytes_mut(), b"again");
        bufs.recycle(buf);
    }

    #[test]
    fn receives_cycle_through_the_first_buffers_only_while_they_suffice() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 64, 64).expect("buffer ring");
        assert_eq!(bufs.provided, FIRST_PROVIDED);
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        // Each receive given back before the next, three laps of the first buffers: no buffer past them
        // is ever published, so the kernel never writes (touches) one.
        for round in 0..3 * FIRST_PROVIDED as usize {
            peer.write_all(b"ping").expect("write");
            let mut done = wait_for(&mut ring, recv_ud());
            assert!(done.more(), "the multishot receive goes on");
            let buf = bufs.take(&mut done).expect("lent");
            assert_eq!(buf.id(), (round % FIRST_PROVIDED as usize) as u16);
            bufs.recycle(buf);
        }
        assert_eq!(bufs.provided, FIRST_PROVIDED);
    }

    #[test]
    fn a_receive_that_finds_the_ring_dry_adds_a_chunk_of_buffers() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 64, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        // Every provided buffer received into and kept: the ring is dry.
        let mut held = Vec::new();
        for _ in 0..FIRST_PROVIDED {
            peer.write_all(b"held").expect("write");
            let mut done = wait_for(&mut ring, recv_ud());
            held.push(bufs.take(&mut done).expect("lent"));
        }
        assert!(held.iter().all(|buf| buf.id() < FIRST_PROVIDED));
        peer.write_all(b"waits").expect("write");
        let done = wait_for(&mut ring, recv_ud());
        assert_eq!(done.result, -libc::ENOBUFS);
        assert!(!done.more(), "a dry ring ends the multishot receive");
        // One chunk more, the receive re-armed: the waiting bytes land in a buffer never provided before.
        bufs.ran_dry();
        assert_eq!(bufs.provided, FIRST_PROVIDED + PROVIDE_CHUNK);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        let mut done = wait_for(&mut ring, recv_ud());
        let mut buf = bufs.take(&mut done).expect("lent");
        assert_eq!(buf.id(), FIRST_PROVIDED);
        assert_eq!(buf.bytes_mut(), b"waits");
        // Never more than the ring's count.
        for _ in 0..10 {
            bufs.ran_dry();
        }
        assert_eq!(bufs.provided, 64);
        bufs.recycle(buf);
        for buf in held {
            bufs.recycle(buf);
        }
    }

    #[test]
    fn a_ring_smaller_than_the_first_chunk_provides_all_its_buffers() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 2, 64).expect("buffer ring");
        assert_eq!(bufs.provided, 2);
        bufs.ran_dry();
        assert_eq!(bufs.provided, 2);
    }

    #[test]
    #[should_panic(expected = "buffer 2 is lent already")]
    fn a_lent_buffer_cannot_be_lent_again() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let _first = bufs.take(&mut handing_over(&ring, 2, 1)).expect("lent");
        let _second = bufs.take(&mut handing_over(&ring, 2, 1));
    }

    #[test]
    #[should_panic(expected = "another ring's completion")]
    fn a_completion_of_another_ring_lends_nothing() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let other = Ring::new(8, 16, 4).expect("io_uring");
        let mut bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let _ = bufs.take(&mut handing_over(&other, 0, 1));
    }

    #[test]
    #[should_panic(expected = "lent by another buffer ring")]
    fn recycle_takes_back_only_its_own_buffers() {
        let (ring_a, ring_b) = (Ring::new(8, 16, 4).unwrap(), Ring::new(8, 16, 4).unwrap());
        let mut a = BufRing::new(&ring_a, 0, 4, 64).expect("buffer ring");
        let mut b = BufRing::new(&ring_b, 0, 4, 64).expect("buffer ring");
        let buf = a.take(&mut handing_over(&ring_a, 1, 1)).expect("lent");
        // Buffer 1 of `b` is the kernel's: publishing it again would hand it out twice.
        b.recycle(buf);
    }

    #[test]
    fn buffer_sizes_that_would_wrap_the_mapping_are_refused() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        for buf_size in [0, usize::MAX / 16384, u32::MAX as usize + 1] {
            let err = BufRing::new(&ring, 0, 32768, buf_size)
                .err()
                .expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{buf_size}");
        }
        assert!(!ring.has_buffers());
    }

    #[test]
    fn a_ring_serves_one_buffer_ring() {
        let ring = Ring::new(8, 16, 4).expect("io_uring");
        let _bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        // A completion does not say which group its buffer came from: a second group is refused.
        let err = BufRing::new(&ring, 1, 4, 64).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn the_buffers_stay_mapped_while_the_ring_may_fill_them() {
        let mut ring = Ring::new(8, 16, 4).expect("io_uring");
        let bufs = BufRing::new(&ring, 0, 4, 64).expect("buffer ring");
        let (_ours, mut peer) = socket_in_slot_zero(&ring);
        ring.recv_multishot(0, bufs.group(), recv_ud());
        ring.submit_and_wait(0).expect("io_uring_enter");
        // The buffer ring's owner drops it first (as a struct whose fields are in the other order would).
        drop(bufs);
        // Take the freed address range's place, as the allocator's next mapping would.
        let squatter = Mapping::new(4 * 64).expect("mmap");
        // SAFETY: the mapping is `4 * 64` bytes, live and ours.
        unsafe { std::ptr::write_bytes(squatter.ptr(), b'.', 4 * 64) };
        peer.write_all(b"late bytes").expect("write");
        let done = wait_for(&mut ring, recv_ud());
        // The kernel wrote into the buffers it was given, still mapped, not into an error or other memory.
        assert_eq!(done.result, 10, "{done:?}");
        // SAFETY: as above.
        let squatted = unsafe { std::slice::from_raw_parts(squatter.ptr(), 4 * 64) };
        assert!(
            squatted.iter().all(|&b| b == b'.'),
            "the kernel wrote into other memory"
        );
    }
}
