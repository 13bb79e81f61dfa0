//! What a run counts: one fixed array of counters per worker (plain `u64`s on the hot path, published to
//! the coordinator as relaxed atomics a few hundred times a second) and latency histograms (HdrHistogram,
//! nanoseconds) handed over once a second.
//!
//! A message is counted as received only after it was received and validated; every other outcome has its
//! own error counter. Nothing here locks or allocates per message.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident = $label:literal, $error:literal;)*) => {
        /// Every counter of a run. Gauges (`Open`) are summed like the others.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($name,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$name,)*];
            pub const COUNT: usize = Counter::ALL.len();

            /// The name used in reports and JSON.
            pub fn label(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }

            /// Whether this counter counts a failure (listed under "errors" in reports).
            pub fn is_error(self) -> bool {
                match self { $(Counter::$name => $error,)* }
            }
        }
    };
}

counters! {
    Sent = "sent", false;
    Received = "received", false;
    BytesSent = "bytes_sent", false;
    BytesReceived = "bytes_received", false;
    // Data messages as the application sees them (before compression, after inflating).
    PayloadBytesSent = "payload_bytes_sent", false;
    PayloadBytesReceived = "payload_bytes_received", false;
    // --deflate: connections whose server agreed, and data messages that went compressed each way.
    DeflateAgreed = "deflate_agreed", false;
    CompressedSent = "compressed_messages_sent", false;
    CompressedReceived = "compressed_messages_received", false;
    ConnectAttempts = "connect_attempts", false;
    Connected = "connected", false;
    Open = "open", false;
    Reconnects = "reconnects", false;
    PingsSent = "pings_sent", false;
    PongsReceived = "pongs_received", false;
    PingsAnswered = "pings_answered", false;
    Published = "published", false;
    Delivered = "delivered", false;
    Duplicates = "duplicates", true;
    OutOfOrder = "out_of_order", true;
    PublisherEchoes = "publisher_echoes", false;
    VerifyReceived = "verify_received", false;
    ChurnCycles = "churn_cycles", false;
    ChurnBehind = "churn_behind_schedule", false;
    Mismatch = "payload_mismatch", true;
    WrongType = "wrong_message_type", true;
    Unexpected = "unexpected_message", true;
    Lost = "lost_in_flight", true;
    ConnectRefused = "connect_refused", true;
    ConnectTimeout = "connect_timeout", true;
    AddrNotAvailable = "addr_not_available", true;
    FdLimit = "fd_limit", true;
    ConnectOther = "connect_other", true;
    HandshakeRejected503 = "handshake_http_503", true;
    HandshakeRejectedOther = "handshake_http_other", true;
    HandshakeInvalid = "handshake_invalid", true;
    // wss://: the TLS handshake failed (certificate not trusted or not for the host, no common version,
    // the server does not speak TLS, or the connection ended during the TLS handshake).
    TlsHandshake = "tls_handshake", true;
    // wss://: a TLS error after the handshake (bad record, fatal alert).
    TlsError = "tls_error", true;
    TlsHandshakes12 = "tls12_handshakes", false;
    TlsHandshakes13 = "tls13_handshakes", false;
    ProtocolViolation = "protocol_violation", true;
    ClosedByServer = "closed_by_server", true;
    // The close code of each connection the server closed (counted in closed_by_server too).
    ServerClose1000 = "server_close_1000", false;
    ServerClose1001 = "server_close_1001", false;
    ServerClose1002 = "server_close_1002", false;
    ServerClose1003 = "server_close_1003", false;
    ServerClose1007 = "server_close_1007", false;
    ServerClose1008 = "server_close_1008", false;
    ServerClose1009 = "server_close_1009", false;
    ServerClose1011 = "server_close_1011", false;
    ServerClose1013 = "server_close_1013", false;
    // Another code, or a close frame without one.
    ServerCloseOther = "server_close_other", false;
    Reset = "connection_reset", true;
    Eof = "connection_eof", true;
    IoError = "io_error", true;
    RecvNoBuffers = "recv_no_buffers", false;
    // Most sockets a worker held at once (summed over workers): connections plus those still closing.
    SocketsMax = "sockets_max", false;
    // Sockets whose operations had not completed when the worker stopped (kept, never freed).
    SocketsLeft = "sockets_left_at_exit", true;
}

/// One worker's counters (hot path: plain integers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT]);

impl Default for Counters {
    fn default() -> Counters {
        Counters([0; Counter::COUNT])
    }
}

impl Counter {
    /// The counter of a server's close frame with `code` (`None`: no code in the frame).
    pub fn server_close(code: Option<u16>) -> Counter {
        match code {
            Some(1000) => Counter::ServerClose1000,
            Some(1001) => Counter::ServerClose1001,
            Some(1002) => Counter::ServerClose1002,
            Some(1003) => Counter::ServerClose1003,
            Some(1007) => Counter::ServerClose1007,
            Some(1008) => Counter::ServerClose1008,
            Some(1009) => Counter::ServerClose1009,
            Some(1011) => Counter::ServerClose1011,
            Some(1013) => Counter::ServerClose1013,
            _ => Counter::ServerCloseOther,
        }
    }

    /// The `server_close_*` counters, in code order.
    pub const SERVER_CLOSES: &'static [Counter] = &[
        Counter::ServerClose1000,
        Counter::ServerClose1001,
        Counter::ServerClose1002,
        Counter::ServerClose1003,
        Counter::ServerClose1007,
        Counter::ServerClose1008,
        Counter::ServerClose1009,
        Counter::ServerClose1011,
        Counter::ServerClose1013,
        Counter::ServerCloseOther,
    ];
}

impl Counters {
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.0[counter as usize] += n;
    }

    #[inline]
    pub fn inc(&mut self, counter: Counter) {
        self.0[counter as usize] += 1;
    }

    #[inline]
    pub fn dec(&mut self, counter: Counter) {
        self.0[counter as usize] -= 1;
    }

    #[inline]
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    pub fn merge(&mut self, other: &Counters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    pub fn errors(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_error())
            .map(|&c| self.get(c))
            .sum()
    }
}

/// A worker's counters as the coordinator reads them (relaxed atomics, written by one thread).
pub struct SharedCounters(Vec<AtomicU64>);

impl Default for SharedCounters {
    fn default() -> SharedCounters {
        SharedCounters((0..Counter::COUNT).map(|_| AtomicU64::new(0)).collect())
    }
}

impl SharedCounters {
    pub fn publish(&self, counters: &Counters) {
        for (shared, &value) in self.0.iter().zip(counters.0.iter()) {
            shared.store(value, Ordering::Relaxed);
        }
    }

    pub fn load(&self) -> Counters {
        let mut out = Counters::default();
        for (slot, shared) in out.0.iter_mut().zip(self.0.iter()) {
            *slot = shared.load(Ordering::Relaxed);
        }
        out
    }
}

/// A latency histogram in nanoseconds: 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `value_ns`, saturating at the histogram's top instead of failing.
#[inline]
pub fn record(hist: &mut Histogram<u64>, value_ns: u64) {
    let value = value_ns.clamp(1, hist.high());
    let _ = hist.record(value);
}

/// Serializes a histogram (HdrHistogram V2 + deflate, base64) for the child -> parent pipe.
pub fn encode_histogram(hist: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serialize histogram");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_histogram(text: &str) -> Option<Histogram<u64>> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_labels_are_unique() {
        let mut labels: Vec<_> = Counter::ALL.iter().map(|c| c.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Counter::COUNT);
    }

    #[test]
    fn histogram_survives_the_pipe() {
        let mut hist = new_histogram();
        for v in [1u64, 50_000, 1_000_000, 7_000_000_000] {
            record(&mut hist, v);
        }
        let back = decode_histogram(&encode_histogram(&hist)).expect("decode");
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), hist.max());
        assert_eq!(back.value_at_quantile(0.5), hist.value_at_quantile(0.5));
    }

    #[test]
    fn errors_sum_only_error_counters() {
        let mut c = Counters::default();
        c.add(Counter::Received, 10);
        c.add(Counter::Mismatch, 2);
        c.add(Counter::Reset, 1);
        assert_eq!(c.errors(), 3);
    }
}
