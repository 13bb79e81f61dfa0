//! The worker's provided buffer ring: a fixed set of equally sized receive buffers the kernel picks from
//! for multishot receives, so that idle connections own no buffer at all.
//!
//! Lifetime rule: the ring memory and the buffer memory are mapped here and stay mapped while any
//! [`RecvBuf`] handle or the owning ring exists (`Rc`), and are never unmapped before the io_uring that
//! uses them is dropped (the worker drops its `Ring` first). A buffer handed out by [`BufRing::take`] is
//! owned by the caller until it is given back with [`BufRing::recycle`], which re-publishes it to the
//! kernel at once. This module must never hand out the same buffer twice.

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::ring::Ring;
use super::sys::Mapping;

struct Region {
    entries: Mapping,
    buffers: Mapping,
}

/// One received buffer, lent by the ring until it is recycled.
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
        // wrote it before posting the completion and does not touch it again until `recycle` re-publishes
        // it; this handle is the only one for buffer `id`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// The provided buffer ring of one worker (buffer group `group`).
pub struct BufRing {
    region: Rc<Region>,
    group: u16,
    count: u16,
    buf_size: usize,
    /// Local copy of the tail we publish to the kernel.
    tail: u16,
}

impl BufRing {
    /// Maps `count` (a power of two, at most 32768) buffers of `buf_size` bytes and registers them with
    /// `ring` as buffer group `group`.
    pub fn new(ring: &Ring, group: u16, count: u16, buf_size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768",
            ));
        }
        let entries = Mapping::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(count as usize * buf_size)?;
        // SAFETY: the entries mapping is page aligned, sized for `count` entries, zero-filled (a valid
        // empty ring, tail 0), and outlives the registration: `BufRing` unregisters nothing itself but the
        // `Region` is only dropped after the ring that uses it (see the module's lifetime rule).
        unsafe {
            ring.inner().submitter().register_buf_ring_with_flags(
                entries.ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        let mut this = BufRing {
            region: Rc::new(Region { entries, buffers }),
            group,
            count,
            buf_size,
            tail: 0,
        };
        for id in 0..count {
            this.publish(id);
        }
        this.commit();
        Ok(this)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Takes buffer `id`, which the kernel filled with `len` bytes.
    pub fn take(&mut self, id: u16, len: usize) -> RecvBuf {
        assert!(
            id < self.count && len <= self.buf_size,
            "buffer id or length out of range"
        );
        // SAFETY: `id < count` so the offset stays inside the buffer mapping.
        let ptr = unsafe { self.region.buffers.ptr().add(id as usize * self.buf_size) };
        RecvBuf {
            region: Rc::clone(&self.region),
            id,
            ptr,
            len,
        }
    }

    /// Gives a buffer back to the kernel.
    pub fn recycle(&mut self, buf: RecvBuf) {
        self.publish(buf.id);
        self.commit();
    }

    /// Gives a buffer back by id, for a completion that carried a buffer we did not read (a connection
    /// already gone).
    pub fn recycle_id(&mut self, id: u16) {
        if id < self.count {
            self.publish(id);
            self.commit();
        }
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
