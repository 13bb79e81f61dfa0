//! The io_uring reactor: one ring per worker thread, speaking io_uring's own words.
//!
//! It owns ring setup (with flag fallback), the `user_data` encoding (connection key + generation + operation), the
//! provided buffer ring for receives ([`buf_ring`]), the vectored send queue whose buffers stay alive while
//! the kernel reads them ([`send`]), listener sockets and thread setup ([`sys`]). It knows nothing of
//! WebSocket or HTTP: bytes in, bytes out. All `unsafe` of the server lives here, each block with a
//! `// SAFETY:` comment. Nothing here allocates per operation in steady state or makes a syscall other
//! than `io_uring_enter` on the hot path.
//!
//! Safe code, inside the crate or out, cannot make this module alias memory the kernel owns: what the
//! kernel hands back (a filled provided buffer, the end of a send) reaches the caller only as a one-shot
//! hand-over inside a [`Completion`] minted by [`Ring::drain_completions`], and [`BufRing::take`] and
//! [`SendQueue::complete_send`] act only on it; the ring keeps the buffer ring's memory until its io_uring
//! is closed. Each rule is stated where it is kept (`ring`, `buf_ring`, `send`); breaking one panics.

pub mod buf_ring;
pub mod ring;
pub mod send;
#[cfg(feature = "sim-ring")]
pub mod sim;
pub mod sys;

// The worker's ring and buffer ring: the kernel's, or under `sim-ring` the in-memory simulation (see
// [`sim`]) with the same signatures.
#[cfg(not(feature = "sim-ring"))]
pub use buf_ring::{BufRing, RecvBuf};
#[cfg(not(feature = "sim-ring"))]
pub use ring::Ring;
pub use ring::{Completion, RingSetup};
pub use send::{BufferPool, SendQueue};
#[cfg(feature = "sim-ring")]
pub use sim::{BufRing, RecvBuf, Ring};

/// What a submitted operation was, stored in the low byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// The multishot accept on the worker's listener (armed while the worker is below its limit).
    AcceptMulti = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// Vectored send of a connection's queue.
    Send = 3,
    /// `shutdown(2)` of a connection.
    Shutdown = 4,
    /// Close of a connection's direct descriptor.
    Close = 5,
    /// The worker's periodic tick.
    Tick = 6,
    /// A `MSG_RING` doorbell from another thread.
    Doorbell = 7,
    /// A completion to ignore: cancel requests, the listener's close.
    /// Their results carry nothing the worker acts on.
    Ignore = 8,
    /// One single-shot accept (armed one at a time in the fixed-file table's reserve, past the limit).
    AcceptOne = 9,
    /// The sending side of a doorbell, posted only when the `MSG_RING` failed; the key is the worker
    /// rung, the generation the attempt.
    DoorbellSent = 10,
    /// A connection's direct descriptor installed as a regular one, to read its peer's address for a log
    /// line (`Ring::install_fd`; the result is the new descriptor, which the worker closes).
    PeerName = 11,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::AcceptMulti,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Close,
            6 => Op::Tick,
            7 => Op::Doorbell,
            8 => Op::Ignore,
            9 => Op::AcceptOne,
            10 => Op::DoorbellSent,
            11 => Op::PeerName,
            _ => return None,
        })
    }
}

/// The decoded `user_data` of a completion: which connection (its owner's key: the server's slab key, or
/// [`NO_CONNECTION`]), which incarnation of that key (generation, 24 bits) and which operation. A
/// completion whose generation differs from the key's current one belongs to an earlier connection and
/// is dropped.
///
/// The key is not the connection's direct descriptor: that is its index in the ring's fixed-file table
/// (`file_index` in [`ring::Ring`]'s operations), chosen by the kernel at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData {
    pub key: u32,
    pub generation: u32,
    pub op: Op,
}

/// The key of operations that belong to no connection (accepts, the tick, doorbells, ignored ones).
pub const NO_CONNECTION: u32 = u32::MAX;

/// Generations wrap at 24 bits.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

impl UserData {
    pub fn new(key: u32, generation: u32, op: Op) -> UserData {
        UserData {
            key,
            generation: generation & GENERATION_MASK,
            op,
        }
    }

    /// `key` in the high 32 bits, generation in bits 8..32, op in the low byte.
    pub fn encode(self) -> u64 {
        ((self.key as u64) << 32)
            | (((self.generation & GENERATION_MASK) as u64) << 8)
            | self.op as u64
    }

    pub fn decode(raw: u64) -> Option<UserData> {
        let op = Op::from_u8((raw & 0xff) as u8)?;
        Some(UserData {
            key: (raw >> 32) as u32,
            generation: ((raw >> 8) as u32) & GENERATION_MASK,
            op,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for &(key, generation, op) in &[
            (0u32, 0u32, Op::AcceptMulti),
            (7, 1, Op::AcceptOne),
            (3, 1, Op::DoorbellSent),
            (NO_CONNECTION, GENERATION_MASK, Op::Ignore),
            (12345, 77, Op::Send),
        ] {
            let ud = UserData::new(key, generation, op);
            assert_eq!(UserData::decode(ud.encode()), Some(ud));
        }
        assert_eq!(UserData::decode(0), None);
        // Generations wrap at 24 bits.
        assert_eq!(
            UserData::new(1, GENERATION_MASK + 2, Op::Recv).generation,
            1
        );
    }
}
