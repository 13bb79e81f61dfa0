//! A measurement probe, not a load generator: the cheapest closed-loop echo client this project knows how
//! to write, to show the kernel's floor under `ringws-loadgen`'s CPU per message (docs/BENCHMARKS.md,
//! "Load generator efficiency"). It checks nothing: every connection sends the same prebuilt masked frame,
//! counts echoed bytes, and sends one new frame per whole echo that came back, keeping DEPTH in flight. One
//! io_uring (single issuer, deferred task work), one recv and at most one send in flight per connection,
//! one `io_uring_enter` per loop. Binary frames of SIZE <= 125 bytes only (2-byte server header).
//!
//! Usage: `echo_floor IP:PORT CONNECTIONS SECONDS SIZE DEPTH`; prints echoes, CPU seconds (getrusage) and
//! microseconds of CPU per echo.

use io_uring::{opcode, squeue, types, IoUring};
use ringws::protocol::frame::{encode_frame, OpCode};
use ringws::protocol::handshake::{
    accept_key, build_client_request, encode_key, validate_server_response,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const RECV_BUFFER: usize = 64 * 1024;
const OP_RECV: u64 = 0;
const OP_SEND: u64 = 1;

struct Conn {
    stream: TcpStream,
    recv_buf: Vec<u8>,
    /// Frames waiting for the next send.
    out: Vec<u8>,
    /// Frames of the send in flight; not touched (so never moved) while the kernel reads them.
    sending: Vec<u8>,
    sending_pos: usize,
    send_in_flight: bool,
    bytes_received: u64,
    echoes: u64,
}

fn open(addr: &str, i: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&(i as u64 + 1).to_ne_bytes());
    let key = encode_key(random);
    let mut request = Vec::new();
    build_client_request(
        &mut request,
        addr,
        "/",
        std::str::from_utf8(&key).unwrap(),
        &[],
    );
    stream.write_all(&request).expect("handshake write");
    let accept = accept_key(&key);
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).expect("handshake read");
        assert!(n > 0, "server closed during handshake");
        response.extend_from_slice(&chunk[..n]);
        if let Some((consumed, _)) = validate_server_response(&response, &accept, &[]).expect("101")
        {
            assert_eq!(
                consumed,
                response.len(),
                "no frames before the first message"
            );
            return stream;
        }
    }
}

fn push(ring: &mut IoUring, entry: squeue::Entry) {
    // SAFETY: every buffer an entry points at lives in `conns`, which outlives the ring's use of it
    // (the process exits with operations in flight, which the kernel cancels): receive buffers are never
    // resized, and a send buffer is not touched until its completion arrives.
    while unsafe { ring.submission().push(&entry) }.is_err() {
        ring.submit().expect("submit");
    }
}

fn recv(conn: &mut Conn, i: usize) -> squeue::Entry {
    let fd = types::Fd(conn.stream.as_raw_fd());
    opcode::Recv::new(fd, conn.recv_buf.as_mut_ptr(), RECV_BUFFER as u32)
        .build()
        .user_data((i as u64) << 1 | OP_RECV)
}

fn send(conn: &mut Conn, i: usize) -> squeue::Entry {
    let fd = types::Fd(conn.stream.as_raw_fd());
    let rest = &conn.sending[conn.sending_pos..];
    opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data((i as u64) << 1 | OP_SEND)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: echo_floor IP:PORT CONNECTIONS SECONDS SIZE DEPTH");
        std::process::exit(2);
    }
    let addr = &args[1];
    let connections: usize = args[2].parse().expect("connections");
    let seconds: f64 = args[3].parse().expect("seconds");
    let size: usize = args[4].parse().expect("size");
    let depth: u64 = args[5].parse().expect("depth");
    assert!(size <= 125, "SIZE must be at most 125 bytes");
    let echo_len = 2 + size as u64;
    let mut frame = Vec::new();
    let payload = vec![b'x'; size];
    encode_frame(
        &mut frame,
        true,
        OpCode::Binary,
        &payload,
        Some([1, 2, 3, 4]),
    );

    let mut conns: Vec<Conn> = (0..connections)
        .map(|i| Conn {
            stream: open(addr, i),
            recv_buf: vec![0; RECV_BUFFER],
            out: Vec::new(),
            sending: Vec::new(),
            sending_pos: 0,
            send_in_flight: false,
            bytes_received: 0,
            echoes: 0,
        })
        .collect();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8192)
        .expect("io_uring");
    let (user0, sys0) = cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    for (i, conn) in conns.iter_mut().enumerate() {
        for _ in 0..depth {
            conn.sending.extend_from_slice(&frame);
        }
        conn.send_in_flight = true;
        let entry = send(conn, i);
        push(&mut ring, entry);
        let entry = recv(conn, i);
        push(&mut ring, entry);
    }
    let mut completions = Vec::with_capacity(8192);
    let mut echoes = 0u64;
    while Instant::now() < deadline {
        ring.submit_and_wait(1).expect("submit_and_wait");
        completions.clear();
        completions.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        for &(user_data, result) in &completions {
            let i = (user_data >> 1) as usize;
            assert!(
                result > 0,
                "connection {i}: op {} result {result}",
                user_data & 1
            );
            let conn = &mut conns[i];
            let n = result as u64;
            if user_data & 1 == OP_RECV {
                conn.bytes_received += n;
                let done = conn.bytes_received / echo_len;
                for _ in conn.echoes..done {
                    conn.out.extend_from_slice(&frame);
                }
                echoes += done - conn.echoes;
                conn.echoes = done;
                let entry = recv(conn, i);
                push(&mut ring, entry);
            } else {
                conn.sending_pos += n as usize;
                if conn.sending_pos < conn.sending.len() {
                    let entry = send(conn, i);
                    push(&mut ring, entry);
                    continue;
                }
                conn.sending.clear();
                conn.sending_pos = 0;
                conn.send_in_flight = false;
            }
            if !conn.send_in_flight && !conn.out.is_empty() {
                std::mem::swap(&mut conn.out, &mut conn.sending);
                conn.send_in_flight = true;
                let entry = send(conn, i);
                push(&mut ring, entry);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (user1, sys1) = cpu();
    let cpu_s = (user1 - user0) + (sys1 - sys0);
    println!(
        "echo floor: {echoes} echoes in {elapsed:.2}s ({:.0}/s), CPU {cpu_s:.3}s (user {:.3}s, sys {:.3}s) = \
         {:.3} us per echo",
        echoes as f64 / elapsed,
        user1 - user0,
        sys1 - sys0,
        cpu_s * 1e6 / echoes.max(1) as f64
    );
    std::process::exit(0);
}

fn cpu() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}
