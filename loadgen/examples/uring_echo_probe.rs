//! A measurement probe, not part of the load generator: a closed-loop echo client on io_uring (one ring,
//! one thread, one recv and at most one send in flight per connection, one `io_uring_enter` per loop),
//! doing the same per-message work as `ringws-loadgen echo` (masked frames, `MessageReader`, every byte
//! of every echo compared). It prints its CPU time per message so that the epoll engine's cost can be
//! compared with io_uring's on the same server, same run (see docs/LOADGEN.md, "Design").
//!
//! Usage: `uring_echo_probe IP:PORT CONNECTIONS SECONDS SIZE DEPTH`

use io_uring::{opcode, types, IoUring};
use ringws::protocol::frame::{encode_frame, OpCode};
use ringws::protocol::handshake::{
    accept_key, build_client_request, encode_key, validate_server_response,
};
use ringws::protocol::message::{Event, MessageReader, ReaderLimits, Role};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const RECV_BUFFER: usize = 64 * 1024;
const OP_RECV: u64 = 0;
const OP_SEND: u64 = 1;

struct Conn {
    stream: TcpStream,
    reader: MessageReader,
    recv_buf: Vec<u8>,
    /// Frames waiting for the next send.
    out: Vec<u8>,
    /// Frames of the send in flight; never touched (so never moved) while the kernel reads them.
    sending: Vec<u8>,
    sending_pos: usize,
    send_in_flight: bool,
    in_flight: VecDeque<Instant>,
    next_seq: u64,
    recv_seq: u64,
}

/// The loadgen's echo header: sequence number then connection id, hex, least significant digit first.
fn payload(buf: &mut [u8], conn: usize, seq: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut header = [0u8; 24];
    for (i, byte) in header[..16].iter_mut().enumerate() {
        *byte = HEX[((seq >> (4 * i)) & 0xf) as usize];
    }
    for (i, byte) in header[16..].iter_mut().enumerate() {
        *byte = HEX[((conn as u64 >> (4 * i)) & 0xf) as usize];
    }
    let n = buf.len().min(24);
    buf[..n].copy_from_slice(&header[..n]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: uring_echo_probe IP:PORT CONNECTIONS SECONDS SIZE DEPTH");
        std::process::exit(2);
    }
    let addr = &args[1];
    let connections: usize = args[2].parse().expect("connections");
    let seconds: f64 = args[3].parse().expect("seconds");
    let size: usize = args[4].parse().expect("size");
    let depth: usize = args[5].parse().expect("depth");
    let limits = ReaderLimits::default();
    let filler: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();

    let mut conns: Vec<Conn> = (0..connections)
        .map(|i| {
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
                if let Some((consumed, _)) =
                    validate_server_response(&response, &accept, &[]).expect("101")
                {
                    assert_eq!(
                        consumed,
                        response.len(),
                        "no frames before the first message"
                    );
                    break;
                }
            }
            Conn {
                stream,
                reader: MessageReader::new(Role::Client),
                recv_buf: vec![0; RECV_BUFFER],
                out: Vec::new(),
                sending: Vec::new(),
                sending_pos: 0,
                send_in_flight: false,
                in_flight: VecDeque::new(),
                next_seq: 0,
                recv_seq: 0,
            }
        })
        .collect();

    let mut ring = IoUring::new(8192).expect("io_uring");
    let mut scratch = filler.clone();
    let mut mask_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut mask = move || {
        mask_state ^= mask_state << 13;
        mask_state ^= mask_state >> 7;
        mask_state ^= mask_state << 17;
        (mask_state as u32).to_ne_bytes()
    };
    let (cpu_user0, cpu_sys0) = cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut received = 0u64;
    let mut mismatches = 0u64;

    let push = |ring: &mut IoUring, entry: io_uring::squeue::Entry| {
        // SAFETY: every buffer referenced by an entry lives in `conns`, which outlives the ring's use of
        // it: recv buffers are never resized, and a send buffer is not touched until its completion.
        while unsafe { ring.submission().push(&entry) }.is_err() {
            ring.submit().expect("submit");
        }
    };
    for (i, conn) in conns.iter_mut().enumerate() {
        for _ in 0..depth {
            payload(&mut scratch, i, conn.next_seq);
            conn.next_seq += 1;
            conn.in_flight.push_back(Instant::now());
            encode_frame(&mut conn.out, true, OpCode::Binary, &scratch, Some(mask()));
        }
        std::mem::swap(&mut conn.out, &mut conn.sending);
        conn.send_in_flight = true;
        let fd = types::Fd(conn.stream.as_raw_fd());
        push(
            &mut ring,
            opcode::Send::new(fd, conn.sending.as_ptr(), conn.sending.len() as u32)
                .build()
                .user_data((i as u64) << 1 | OP_SEND),
        );
        push(
            &mut ring,
            opcode::Recv::new(fd, conn.recv_buf.as_mut_ptr(), RECV_BUFFER as u32)
                .build()
                .user_data((i as u64) << 1 | OP_RECV),
        );
    }
    let mut completions = Vec::with_capacity(8192);
    while Instant::now() < deadline {
        ring.submit_and_wait(1).expect("submit_and_wait");
        completions.clear();
        completions.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        let now = Instant::now();
        for &(user_data, result) in &completions {
            let i = (user_data >> 1) as usize;
            let conn = &mut conns[i];
            let fd = types::Fd(conn.stream.as_raw_fd());
            if result <= 0 {
                panic!("connection {i}: op {} result {result}", user_data & 1);
            }
            let n = result as usize;
            if user_data & 1 == OP_RECV {
                let Conn {
                    reader,
                    recv_buf,
                    in_flight,
                    recv_seq,
                    next_seq,
                    out,
                    ..
                } = conn;
                reader
                    .feed(&mut recv_buf[..n], &limits, |event| {
                        if let Event::Message {
                            payload: echoed, ..
                        } = event
                        {
                            let _sent = in_flight.pop_front();
                            payload(&mut scratch, i, *recv_seq);
                            *recv_seq += 1;
                            if echoed == &scratch[..] {
                                received += 1;
                            } else {
                                mismatches += 1;
                            }
                            payload(&mut scratch, i, *next_seq);
                            *next_seq += 1;
                            in_flight.push_back(now);
                            encode_frame(out, true, OpCode::Binary, &scratch, Some(mask()));
                        }
                    })
                    .expect("protocol");
                push(
                    &mut ring,
                    opcode::Recv::new(fd, conn.recv_buf.as_mut_ptr(), RECV_BUFFER as u32)
                        .build()
                        .user_data((i as u64) << 1 | OP_RECV),
                );
            } else {
                conn.sending_pos += n;
                if conn.sending_pos < conn.sending.len() {
                    let rest = &conn.sending[conn.sending_pos..];
                    push(
                        &mut ring,
                        opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                            .build()
                            .user_data((i as u64) << 1 | OP_SEND),
                    );
                    continue;
                }
                conn.sending.clear();
                conn.sending_pos = 0;
                conn.send_in_flight = false;
            }
            if !conn.send_in_flight && !conn.out.is_empty() {
                std::mem::swap(&mut conn.out, &mut conn.sending);
                conn.send_in_flight = true;
                push(
                    &mut ring,
                    opcode::Send::new(fd, conn.sending.as_ptr(), conn.sending.len() as u32)
                        .build()
                        .user_data((i as u64) << 1 | OP_SEND),
                );
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu_user1, cpu_sys1) = cpu();
    let cpu_s = (cpu_user1 - cpu_user0) + (cpu_sys1 - cpu_sys0);
    println!(
        "io_uring probe: {received} echoes checked in {elapsed:.2}s ({:.0}/s), {mismatches} mismatches, \
         CPU {cpu_s:.3}s = {:.3} us per echo",
        received as f64 / elapsed,
        cpu_s * 1e6 / received.max(1) as f64
    );
    // The process exits with sends and receives still in flight; the kernel cancels them.
    std::process::exit(0);
}

fn cpu() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}
