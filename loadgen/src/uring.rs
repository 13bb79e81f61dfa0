//! The io_uring engine: one ring per worker thread (SINGLE_ISSUER | DEFER_TASKRUN when the kernel has
//! them), sockets held as direct descriptors (the ring's fixed-file table, not the process's descriptor
//! table: each worker's ring can hold as many as the open-file limit), `IORING_OP_CONNECT`, one multishot
//! receive per connection into a provided buffer ring, at most one send in flight per connection, and one
//! `io_uring_enter` per loop iteration (submit everything queued, wait for a completion or the next timer).
//!
//! Memory rules (all `unsafe` of the engine is here, each block says why it is sound):
//! - A provided buffer is the worker's from the completion that names it until `recycle` publishes it
//!   back; it is never published twice.
//! - A send's bytes (`Slot::sending`) are not touched, moved or freed while the send is in flight.
//! - A socket's slot (its fixed-file index) is reused only once every operation that names it has
//!   completed (`Slot::ops` is zero, the ring's own close included); closing first cancels them
//!   (`ASYNC_CANCEL` of each pending operation).
//! - The buffer memory and the sends' buffers are freed only after every operation has completed; if
//!   some never do (a teardown timed out), they are leaked rather than freed under the kernel.
//!
//! It never interprets the bytes it moves and never allocates per message.

use crate::engine::{Chunk, Engine, EngineConfig, IoEvent};
use crate::net;
use io_uring::types::{BufRingEntry, CancelBuilder, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringws::reactor::sys::Mapping;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};

const OP_CONNECT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CANCEL: u64 = 4;
const OP_CLOSE: u64 = 5;
const OP_LAST_WORDS: u64 = 6;
const BUFFER_GROUP: u16 = 0;
/// Lateness allowed on timed wake-ups: the kernel's default timer slack for a normal task, which
/// `epoll_pwait2` applies by itself (so both engines wake alike). A timer that is late by up to this much
/// lets one wake-up serve several open-loop sends; they keep their intended send times, so the lateness
/// shows in the measured latency. Without it the io_uring engine took 3x the timer interrupts of epoll at
/// 20,000 open-loop messages/s, and more CPU per message.
const TIMER_SLACK_NS: u64 = 50_000;
/// Size of one provided receive buffer.
pub const BUFFER_SIZE: usize = 16 * 1024;

fn user_data(op: u64, sock: u32) -> u64 {
    (op << 32) | sock as u64
}

/// The provided buffer ring of one worker: `count` buffers of `BUFFER_SIZE` bytes.
struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let entries = Mapping::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(count as usize * BUFFER_SIZE)?;
        // SAFETY: the entries mapping is page aligned, holds `count` zeroed entries (an empty ring, tail
        // 0) and stays mapped as long as the ring may use it (it is dropped after the ring, or leaked).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.ptr() as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        let mut this = BufRing {
            entries,
            buffers,
            count,
            tail: 0,
        };
        for id in 0..count {
            this.publish(id);
        }
        this.commit();
        Ok(this)
    }

    fn publish(&mut self, id: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        let base = self.entries.ptr() as *mut BufRingEntry;
        // SAFETY: `index < count`, so the entry lies inside the entries mapping; the kernel reads only
        // entries between its head and the published tail, and this one is past the tail until `commit`.
        let entry = unsafe { &mut *base.add(index) };
        // SAFETY: `id < count`, so the address stays inside the buffer mapping.
        let addr = unsafe { self.buffers.ptr().add(id as usize * BUFFER_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn commit(&mut self) {
        let base = self.entries.ptr() as *const BufRingEntry;
        // SAFETY: `base` is the first entry of the live ring mapping, whose reserved field is the ring's
        // tail; the kernel reads it concurrently, so it is stored with release ordering through an
        // `AtomicU16` of the same size and alignment.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn bytes(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(id < self.count && len <= BUFFER_SIZE);
        // SAFETY: buffer `id` lies inside the buffer mapping; the kernel filled it before posting the
        // completion that named it and does not touch it again until `recycle` publishes it; the worker
        // holds at most one chunk at a time, and `&mut self` makes this borrow exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.buffers.ptr().add(id as usize * BUFFER_SIZE), len)
        }
    }

    fn recycle(&mut self, id: u16) {
        if id < self.count {
            self.publish(id);
            self.commit();
        }
    }

    /// Keeps the memory mapped for good (operations may still use it).
    fn leak(&mut self) {
        self.entries.leak();
        self.buffers.leak();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Free,
    Connecting,
    Open,
    /// Closed by the worker; waiting for its operations to complete before closing the descriptor.
    Closing,
}

/// One socket; its index is its direct descriptor (fixed-file table index).
struct Slot {
    owner: u32,
    state: State,
    /// Operations in flight naming this slot (a multishot receive counts until its last completion).
    ops: u32,
    /// A multishot receive is armed (never two: their bytes could interleave).
    recv_armed: bool,
    send_in_flight: bool,
    sending: Vec<u8>,
    pos: usize,
}

/// What the ring was created with.
#[derive(Clone, Copy, Debug)]
pub struct RingSetup {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buffers: u16,
}

pub struct UringEngine {
    // Field order matters: the ring is dropped (torn down) before the memory it may point into.
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The connect targets; connects point at them, so they live at stable addresses (a boxed slice,
    /// never changed).
    targets: Box<[libc::sockaddr_in]>,
    cqes: Vec<(u64, i32, u32)>,
    next: usize,
    /// Sockets whose receive stopped for want of buffers: re-armed before the next submit.
    rearm: Vec<u32>,
    no_buffers: u64,
    sockets: usize,
    /// Slots closing (operations still in flight).
    closing: usize,
    /// Size of the fixed-file table (most sockets at once).
    table: u32,
    setup: RingSetup,
}

/// A size from the environment (tests only; unset in normal runs).
fn knob(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

fn smaller_pow2(n: usize, lo: usize, hi: usize) -> usize {
    n.next_power_of_two().clamp(lo, hi)
}

impl UringEngine {
    pub fn new(config: &EngineConfig) -> io::Result<UringEngine> {
        if std::env::var_os("RINGWS_LOADGEN_FAIL_URING").is_some() {
            // Test hook: behave as a kernel where io_uring is disabled.
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let targets = config
            .targets
            .iter()
            .map(|&target| net::target_sockaddr(target))
            .collect::<io::Result<Box<[_]>>>()?;
        // Test knobs: tiny queues and few buffers make CQ overflow and ENOBUFS happen on purpose.
        let sq = knob("RINGWS_LOADGEN_URING_SQ")
            .unwrap_or_else(|| smaller_pow2(config.connections * 2, 256, 4096))
            as u32;
        let cq = knob("RINGWS_LOADGEN_URING_CQ")
            .unwrap_or_else(|| smaller_pow2(config.connections * 4, 1024, 65536))
            .max(sq as usize) as u32;
        let mut last_err = None;
        let mut built = None;
        // Flag by flag: SINGLE_ISSUER | DEFER_TASKRUN, then SINGLE_ISSUER | COOP_TASKRUN, then none;
        // SUBMIT_ALL with the first two (an entry that fails at submission does not hold back the rest).
        for (single_issuer, defer_taskrun, coop_taskrun) in [
            (true, true, false),
            (true, false, true),
            (false, false, false),
        ] {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq);
            if single_issuer {
                builder.setup_submit_all();
            }
            if single_issuer {
                builder.setup_single_issuer();
            }
            if defer_taskrun {
                builder.setup_defer_taskrun();
            }
            if coop_taskrun {
                builder.setup_coop_taskrun();
            }
            match builder.build(sq) {
                Ok(ring) => {
                    built = Some((ring, single_issuer, defer_taskrun));
                    break;
                }
                Err(err) => last_err = Some(err),
            }
        }
        let Some((ring, single_issuer, defer_taskrun)) = built else {
            return Err(last_err.unwrap_or_else(|| io::Error::other("io_uring setup failed")));
        };
        // Direct descriptors: the connections, the slots still closing, and some slack; the kernel caps
        // a table at the open-file limit.
        let table = (config.connections as u64 * 2 + 64).min(net::open_file_limit()) as u32;
        ring.submitter().register_files_sparse(table)?;
        let buffers = knob("RINGWS_LOADGEN_URING_BUFFERS")
            .unwrap_or_else(|| smaller_pow2(config.connections, 256, 1024))
            .clamp(1, 32768)
            .next_power_of_two() as u16;
        let bufs = BufRing::new(&ring, buffers)?;
        let setup = RingSetup {
            single_issuer,
            defer_taskrun,
            sq_entries: ring.params().sq_entries(),
            cq_entries: ring.params().cq_entries(),
            buffers,
        };
        Ok(UringEngine {
            ring,
            bufs,
            slots: Vec::with_capacity(config.connections),
            free: Vec::new(),
            targets,
            cqes: Vec::with_capacity(cq as usize),
            next: 0,
            rearm: Vec::new(),
            no_buffers: 0,
            sockets: 0,
            closing: 0,
            table,
            setup,
        })
    }

    /// How the ring was set up, for the report.
    pub fn describe(&self) -> String {
        let s = self.setup;
        let mut flags = Vec::new();
        if s.single_issuer {
            flags.push("SINGLE_ISSUER");
        }
        if s.defer_taskrun {
            flags.push("DEFER_TASKRUN");
        } else if s.single_issuer {
            flags.push("COOP_TASKRUN");
        }
        format!(
            // Nothing that differs between workers (their descriptor tables follow their share of the
            // connections), so that one run shows one engine line.
            "io_uring ({}; sq {}, cq {}, direct descriptors, {} x {} KiB receive buffers)",
            flags.join(" | "),
            s.sq_entries,
            s.cq_entries,
            s.buffers,
            BUFFER_SIZE / 1024
        )
    }

    /// Queues one entry, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay valid, unmoved and untouched by us until its (last)
    /// completion is reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: forwarded from the caller's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Queue full: hand what is queued to the kernel (no wait) and retry.
            let _ = self.ring.submit();
        }
    }

    /// Queues an operation on `sock` that references no memory of ours, counting it in the slot's
    /// operations.
    fn push_simple(&mut self, entry: squeue::Entry, op: u64, sock: u32) {
        self.slots[sock as usize].ops += 1;
        // SAFETY: callers pass only entries that reference no user memory (cancel, close).
        unsafe { self.push(entry.user_data(user_data(op, sock))) }
    }

    fn arm_recv(&mut self, sock: u32) {
        let slot = &mut self.slots[sock as usize];
        if slot.recv_armed {
            return;
        }
        slot.recv_armed = true;
        slot.ops += 1;
        let entry = opcode::RecvMulti::new(Fixed(sock), BUFFER_GROUP)
            .build()
            .user_data(user_data(OP_RECV, sock));
        // SAFETY: the receive writes only into provided buffers, which stay mapped while any operation
        // may use them (module memory rules); no other memory is referenced.
        unsafe { self.push(entry) }
    }

    /// Submits the unsent part of the slot's `sending`.
    fn push_send(&mut self, sock: u32) {
        let slot = &mut self.slots[sock as usize];
        slot.ops += 1;
        slot.send_in_flight = true;
        let rest = &slot.sending[slot.pos..];
        let entry = opcode::Send::new(Fixed(sock), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(OP_SEND, sock));
        // SAFETY: `sending` is neither touched nor freed while `send_in_flight` is set (`send` and
        // `close` check it; a slot is reused only when `ops` is zero; teardown leaks it otherwise), and
        // moving the `Slot` (the vector of slots growing) does not move the heap bytes.
        unsafe { self.push(entry) }
    }

    fn release_slot(&mut self, sock: u32) {
        let slot = &mut self.slots[sock as usize];
        debug_assert_eq!(slot.ops, 0);
        slot.state = State::Free;
        slot.sending.clear();
        slot.pos = 0;
        slot.send_in_flight = false;
        slot.recv_armed = false;
        self.free.push(sock);
        self.sockets -= 1;
        self.closing -= 1;
    }

    /// Turns one completion into an event for the worker, if it has one.
    fn complete(&mut self, user_data: u64, res: i32, flags: u32) -> Option<IoEvent> {
        let sock = user_data as u32;
        let op = user_data >> 32;
        let more = cqueue::more(flags);
        let buf = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(sock as usize) else {
            if let Some(id) = buf {
                self.bufs.recycle(id);
            }
            return None;
        };
        if !(op == OP_RECV && more) {
            debug_assert!(slot.ops > 0, "completion for a slot with no operation");
            slot.ops = slot.ops.saturating_sub(1);
        }
        if op == OP_SEND || op == OP_LAST_WORDS {
            slot.send_in_flight = false;
        }
        if op == OP_RECV && !more {
            slot.recv_armed = false;
        }
        match slot.state {
            State::Free | State::Closing => {
                if let Some(id) = buf {
                    self.bufs.recycle(id);
                }
                if slot.state == State::Closing && slot.ops == 0 {
                    self.release_slot(sock);
                }
                None
            }
            State::Connecting | State::Open => {
                let owner = slot.owner;
                match op {
                    OP_CONNECT => {
                        if res == 0 {
                            slot.state = State::Open;
                            self.arm_recv(sock);
                            Some(IoEvent::Connected(owner))
                        } else {
                            Some(IoEvent::ConnectFailed(owner, -res))
                        }
                    }
                    OP_RECV => {
                        if res > 0 {
                            let Some(id) = buf else {
                                return Some(IoEvent::Failed(owner, libc::EIO));
                            };
                            if !more {
                                self.arm_recv(sock);
                            }
                            Some(IoEvent::Data(
                                owner,
                                Chunk {
                                    buf: id,
                                    len: res as u32,
                                },
                            ))
                        } else if res == 0 {
                            Some(IoEvent::Eof(owner))
                        } else if res == -libc::ENOBUFS {
                            // Every buffer is lent out: re-arm once the worker gave them back.
                            self.no_buffers += 1;
                            self.rearm.push(sock);
                            None
                        } else {
                            Some(IoEvent::Failed(owner, -res))
                        }
                    }
                    OP_SEND => {
                        if res > 0 {
                            slot.pos += res as usize;
                            if slot.pos < slot.sending.len() {
                                self.push_send(sock);
                                Some(IoEvent::Sent {
                                    owner,
                                    bytes: res as u32,
                                    idle: false,
                                })
                            } else {
                                slot.sending.clear();
                                slot.pos = 0;
                                Some(IoEvent::Sent {
                                    owner,
                                    bytes: res as u32,
                                    idle: true,
                                })
                            }
                        } else {
                            let errno = if res == 0 { libc::EPIPE } else { -res };
                            Some(IoEvent::Failed(owner, errno))
                        }
                    }
                    _ => None,
                }
            }
        }
    }

    fn enter(&mut self, timeout_ns: u64) -> io::Result<()> {
        for k in 0..self.rearm.len() {
            let sock = self.rearm[k];
            if self.slots[sock as usize].state == State::Open {
                self.arm_recv(sock);
            }
        }
        self.rearm.clear();
        let timeout_ns = if timeout_ns == 0 {
            0
        } else {
            timeout_ns + TIMER_SLACK_NS
        };
        let ts = Timespec::new()
            .sec(timeout_ns / 1_000_000_000)
            .nsec((timeout_ns % 1_000_000_000) as u32);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) => {}
            Err(err) => return Err(err),
        }
        self.cqes.clear();
        self.next = 0;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        Ok(())
    }
}

impl Engine for UringEngine {
    fn connect(&mut self, owner: u32, target: usize, source: Option<Ipv4Addr>) -> io::Result<u32> {
        if self.free.is_empty() && self.slots.len() as u32 >= self.table {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let fd = net::open_socket(source)?;
        let sock = match self.free.pop() {
            Some(sock) => sock,
            None => {
                self.slots.push(Slot {
                    owner: 0,
                    state: State::Free,
                    ops: 0,
                    recv_armed: false,
                    send_in_flight: false,
                    sending: Vec::new(),
                    pos: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        // The socket moves into the ring's table; the process's descriptor is closed at once.
        let installed = self.ring.submitter().register_files_update(sock, &[fd]);
        net::close(fd);
        if let Err(err) = installed {
            self.free.push(sock);
            return Err(err);
        }
        let slot = &mut self.slots[sock as usize];
        slot.owner = owner;
        slot.state = State::Connecting;
        slot.ops = 1;
        self.sockets += 1;
        let entry = opcode::Connect::new(
            Fixed(sock),
            &self.targets[target] as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
        .build()
        .user_data(user_data(OP_CONNECT, sock));
        // SAFETY: the address is in `self.targets`, a boxed slice never changed that outlives the ring.
        unsafe { self.push(entry) };
        Ok(sock)
    }

    fn send(&mut self, sock: u32, out: &mut Vec<u8>) -> io::Result<usize> {
        let slot = &mut self.slots[sock as usize];
        if slot.state != State::Open || slot.send_in_flight || out.is_empty() {
            return Ok(0);
        }
        // Nothing in flight, so `sending` is ours: it was fully sent (cleared) or never used.
        std::mem::swap(out, &mut slot.sending);
        out.clear();
        slot.pos = 0;
        self.push_send(sock);
        Ok(0)
    }

    fn unsent(&self, sock: u32) -> usize {
        self.slots
            .get(sock as usize)
            .map_or(0, |s| s.sending.len() - s.pos)
    }

    fn close(&mut self, sock: u32, last_words: &[u8]) {
        let Some(slot) = self.slots.get_mut(sock as usize) else {
            return;
        };
        if !matches!(slot.state, State::Connecting | State::Open) {
            return;
        }
        let was_open = slot.state == State::Open;
        let sending = slot.send_in_flight;
        let receiving = slot.recv_armed;
        slot.state = State::Closing;
        self.closing += 1;
        // In submission order: cancel what is in flight, send the last words (best effort, only when
        // nothing else is being sent), then close the direct descriptor. The slot is free once all of
        // these completed. Cancels name the operation (user_data): the kernel finds it with a hash
        // lookup, where a cancel by descriptor scans every pending request (quadratic when thousands of
        // connections close together).
        let mut pending = [0u64; 3];
        let mut n = 0;
        if !was_open {
            pending[n] = user_data(OP_CONNECT, sock);
            n += 1;
        }
        if receiving {
            pending[n] = user_data(OP_RECV, sock);
            n += 1;
        }
        if sending {
            pending[n] = user_data(OP_SEND, sock);
            n += 1;
        }
        for &target in &pending[..n] {
            self.push_simple(
                opcode::AsyncCancel2::new(CancelBuilder::user_data(target)).build(),
                OP_CANCEL,
                sock,
            );
        }
        if was_open && !sending && !last_words.is_empty() {
            let slot = &mut self.slots[sock as usize];
            slot.sending.clear();
            slot.sending.extend_from_slice(last_words);
            slot.pos = 0;
            slot.ops += 1;
            slot.send_in_flight = true;
            let entry = opcode::Send::new(
                Fixed(sock),
                slot.sending.as_ptr(),
                slot.sending.len() as u32,
            )
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(OP_LAST_WORDS, sock));
            // SAFETY: as in `push_send`: `sending` stays untouched until this send's completion, since
            // the slot is reused only when its operation count is back to zero.
            unsafe { self.push(entry) }
        }
        self.push_simple(opcode::Close::new(Fixed(sock)).build(), OP_CLOSE, sock);
    }

    fn wait(&mut self, timeout_ns: u64) -> io::Result<()> {
        self.enter(timeout_ns)
    }

    fn next_event(&mut self) -> Option<IoEvent> {
        while let Some(&(user_data, res, flags)) = self.cqes.get(self.next) {
            self.next += 1;
            if let Some(event) = self.complete(user_data, res, flags) {
                return Some(event);
            }
        }
        None
    }

    fn bytes(&mut self, chunk: Chunk) -> &mut [u8] {
        self.bufs.bytes(chunk.buf, chunk.len as usize)
    }

    fn recycle(&mut self, chunk: Chunk) {
        self.bufs.recycle(chunk.buf);
    }

    fn finish(&mut self, timeout_ns: u64) {
        for sock in 0..self.slots.len() as u32 {
            self.close(sock, &[]);
        }
        let deadline = crate::clock::now_ns() + timeout_ns;
        while self.closing > 0 {
            let now = crate::clock::now_ns();
            if now >= deadline || self.enter((deadline - now).min(50_000_000)).is_err() {
                break;
            }
            while self.next_event().is_some() {}
        }
    }

    fn take_no_buffer_count(&mut self) -> u64 {
        std::mem::take(&mut self.no_buffers)
    }

    fn sockets(&self) -> usize {
        self.sockets
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        if self.slots.iter().any(|s| s.ops > 0) {
            // Some operations never completed: the kernel may still use their memory after the ring is
            // gone, so it is leaked instead of freed. (Dropping the ring releases the sockets.)
            self.bufs.leak();
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
