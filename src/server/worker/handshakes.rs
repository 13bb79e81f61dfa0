//! TLS handshake work on a thread of the worker's own: a client's first flight (its ClientHello) costs a
//! key exchange and a signature, about 0.2 ms, and a worker that did that work itself was always runnable
//! under a flood of handshakes, so the scheduler let its established connections wait for its next turn on
//! a core (several milliseconds on a loaded box) behind the flood. Here the worker hands the connection's
//! TLS state and its first flight to its handshake thread and goes back to its ring; it sleeps when it has
//! nothing else to do and wakes for its connections as an idle server does. The thread's answers come back
//! through a channel and one doorbell (a `MSG_RING` on the worker's ring) until the worker drains them.
//! Started from the worker's thread, it inherits the worker's CPU (pinned unless `--no-pin`): a worker
//! and its handshakes share one core, as before, and the scheduler gives that core to the woken worker
//! ahead of the busy thread more readily than it gave an always-busy worker its next turn. The thread
//! also runs [`HANDSHAKE_NICE`] nice levels below the worker, so that on a contended core established
//! connections come first: at an equal weight the worker, woken thousands of times a second under a
//! flood, waited on average 71-78 us for the core per wakeup (most of it behind this thread), at nice +10
//! 27-34 us (the `tls_flood` drill, `/proc/PID/task/TID/schedstat`; docs/RELIABILITY.md).
//!
//! Owns the thread, its two channels and its doorbell; `tls_io` decides what goes away and what to do with
//! what comes back. Must never touch a connection: the thread only runs rustls over the state it was given,
//! which the worker does not use while it is away (the connection is marked, see
//! `Connection::tls_away`). At most [`HANDSHAKES_AWAY`] states are away at once: the rest waits in the
//! worker's backlog, where a client that leaves before its turn still costs nothing.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::reactor::ring::DoorbellRing;
use crate::reactor::send::BufferPool;
use crate::reactor::{Op, UserData, NO_CONNECTION};
use crate::server::tls::{RecvOutcome, TlsState};

/// TLS states a worker has away at once: about 1.6 ms of handshake work queued, enough to keep the thread
/// busy between two turns of a busy worker, and few enough that a flood's abandoned clients mostly leave
/// while their first flight still waits in the worker's backlog (and cost nothing).
pub(super) const HANDSHAKES_AWAY: usize = 8;

/// How many nice levels the handshake thread runs below its worker. The scheduler's weight falls by
/// about 1.25x per level: at +10 the thread gets about a tenth of a core its worker keeps busy, and the
/// whole core whenever the worker sleeps, so an idle worker's handshake rate is unchanged.
pub(super) const HANDSHAKE_NICE: i32 = 10;

/// A TLS state on its way to or from the handshake thread.
///
/// `TlsState` is not `Send` only because its ciphertext queue (`SendQueue`) keeps raw pointers for the
/// kernel (its iovec array and message header, pointing into the queue's own allocations).
pub(super) struct Moving(Box<TlsState>);

// SAFETY: the state moves whole, owned by one thread at a time (the worker, then the handshake thread,
// then the worker), through a channel that hands it over. The raw pointers inside its ciphertext queue
// point only into that queue's own heap allocations, which move with it, and no send in flight refers to
// them while it moves: a state leaves the worker only with no ciphertext queue at all (`Moving::new`
// refuses one that has one), and the handshake thread never submits a send; the queue it fills (the
// server's flight) is submitted by the worker after the state is back.
unsafe impl Send for Moving {}

impl Moving {
    /// The state of a connection that has sent nothing yet over TLS (no ciphertext queue); `Err` with
    /// the state otherwise.
    pub(super) fn new(tls: Box<TlsState>) -> Result<Moving, Box<TlsState>> {
        if tls.out.is_some() {
            return Err(tls);
        }
        Ok(Moving(tls))
    }

    pub(super) fn into_inner(self) -> Box<TlsState> {
        self.0
    }
}

/// A connection's TLS state and the ciphertext it received, for the handshake thread.
pub(super) struct Job {
    pub key: u32,
    pub generation: u32,
    pub tls: Moving,
    pub input: Vec<u8>,
}

/// The state back from the handshake thread with what rustls made of the input.
pub(super) struct Done {
    pub key: u32,
    pub generation: u32,
    pub tls: Moving,
    pub result: Result<RecvOutcome, rustls::Error>,
    /// Plaintext that followed the handshake records in the same input (rarely any).
    pub plain: Vec<u8>,
}

/// A worker's handshake thread (started at its first TLS first flight).
pub(super) struct HandshakeThread {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    /// The thread rang the worker's doorbell and the worker has not drained since: the thread rings only
    /// when it sets this, so a burst of answers makes one doorbell per drain.
    rung: Arc<AtomicBool>,
    /// Set before the worker's ring goes away: the thread no longer rings it.
    stopped: Arc<AtomicBool>,
    /// States away (sent and not yet taken back).
    away: usize,
    thread: Option<JoinHandle<()>>,
}

impl HandshakeThread {
    /// Starts the handshake thread of worker `worker`, whose ring is `ring_fd`.
    pub(super) fn spawn(worker: usize, ring_fd: RawFd) -> std::io::Result<HandshakeThread> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(HANDSHAKES_AWAY);
        let (done_tx, done) = mpsc::channel::<Done>();
        let rung = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (thread_rung, thread_stopped) = (Arc::clone(&rung), Arc::clone(&stopped));
        // Without a doorbell ring the worker still finds the answers at its next batch (its tick makes
        // one at least every tick).
        let mut doorbell = DoorbellRing::new().ok();
        let thread = std::thread::Builder::new()
            .name(format!("ringws-tls-{worker}"))
            .spawn(move || {
                if let Err(error) =
                    crate::reactor::sys::lower_current_thread_priority(HANDSHAKE_NICE)
                {
                    tracing::debug!(
                        worker,
                        "handshake thread keeps the worker's priority: {error}"
                    );
                }
                let mut pool = BufferPool::default();
                for mut job in job_rx {
                    let mut plain = Vec::new();
                    let result = job.tls.0.receive(&mut job.input, &mut pool, &mut plain);
                    let answer = Done {
                        key: job.key,
                        generation: job.generation,
                        tls: job.tls,
                        result,
                        plain,
                    };
                    if done_tx.send(answer).is_err() {
                        break;
                    }
                    if !thread_rung.swap(true, Ordering::AcqRel)
                        && !thread_stopped.load(Ordering::Acquire)
                    {
                        if let Some(ring) = doorbell.as_mut() {
                            let wake = UserData::new(NO_CONNECTION, 0, Op::Doorbell);
                            // A failure (the worker's completion queue full) is left to its tick.
                            let _ = ring.ring(ring_fd, 0, wake.encode());
                        }
                    }
                }
            })?;
        Ok(HandshakeThread {
            jobs: Some(jobs),
            done,
            rung,
            stopped,
            away: 0,
            thread: Some(thread),
        })
    }

    /// Whether another state may go away now.
    pub(super) fn has_room(&self) -> bool {
        self.away < HANDSHAKES_AWAY
    }

    /// States away.
    pub(super) fn away(&self) -> usize {
        self.away
    }

    /// Hands `job` to the thread; gives it back when the thread cannot take it (it has
    /// [`HANDSHAKES_AWAY`] already, or it ended).
    pub(super) fn send(&mut self, job: Job) -> Result<(), Job> {
        if !self.has_room() {
            return Err(job);
        }
        let Some(jobs) = self.jobs.as_ref() else {
            return Err(job);
        };
        match jobs.try_send(job) {
            Ok(()) => {
                self.away += 1;
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Before draining: answers after this ring the doorbell again.
    pub(super) fn answer_doorbell(&self) {
        self.rung.store(false, Ordering::Release);
    }

    /// The next state back from the thread, if any.
    pub(super) fn take_done(&mut self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.away -= 1;
        Some(done)
    }
}

impl Drop for HandshakeThread {
    /// Ends the thread after the jobs it holds (at most [`HANDSHAKES_AWAY`] handshakes); the states it
    /// gives back are dropped with the channel.
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for HandshakeThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeThread")
            .field("away", &self.away)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value (field 19 of `stat`) of this process's thread named `name`, if there is one.
    fn thread_nice(name: &str) -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command (which is in parentheses) start with the state, field 3.
            let rest = &stat[stat.rfind(')')? + 2..];
            return rest.split(' ').nth(19 - 3)?.parse().ok();
        }
        None
    }

    #[test]
    fn the_handshake_thread_runs_below_its_worker() {
        // SAFETY: plain syscalls on this thread.
        let ours = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        };
        // A worker index no other test uses: the thread's name is `ringws-tls-4242`.
        let thread = HandshakeThread::spawn(4242, -1).expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut nice = None;
        while std::time::Instant::now() < deadline {
            nice = thread_nice("ringws-tls-4242");
            if nice == Some((ours + HANDSHAKE_NICE).min(19)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(nice, Some((ours + HANDSHAKE_NICE).min(19)));
        drop(thread);
    }
}
