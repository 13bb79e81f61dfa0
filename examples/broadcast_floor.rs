//! The floor of a broadcast on this machine: the kernel's cost of one small frame sent to each of N
//! loopback TCP connections through io_uring, with nothing else done per connection (no WebSocket, no send
//! queue, no slab: one `send` of the same 23 bytes per direct descriptor). What ringws's broadcast costs
//! beyond this is its own; what this costs, no server on this machine avoids.
//!
//! Usage: broadcast_floor [CONNECTIONS=100000] [--threads T] [--sq ENTRIES] [--rounds R] [--recv] [--no-pin]
//! (`cargo build --release --example broadcast_floor`)
//!
//! Like `ringws serve` it runs one thread per ring, each ring's fixed-file table under the open-file limit
//! (so T defaults to what `scripts/scale/run.py` plans for ringws: ceil(N / (limit - reserve))), threads
//! pinned round-robin to the CPUs as ringws pins its workers, rings set up with SINGLE_ISSUER |
//! DEFER_TASKRUN | SUBMIT_ALL, submission queues of 2048 entries (`--sq`). Each thread opens its share of
//! the connections to a listener of its own (so that no source port range runs out): the client sockets
//! are direct descriptors of a second ring (`IORING_OP_SOCKET`, `IORING_OP_CONNECT`), the accepted ones
//! direct descriptors of the sending ring. Then, per round, every thread waits at a barrier, pushes one
//! `send` per connection (submitting whenever the submission queue is full, as ringws does) and reaps
//! the completions until all its sends have completed.
//!
//! Without `--recv` nobody waits on the client sockets (the bytes stay in their receive queues): the cost
//! is the sender's `tcp_sendmsg` plus the receiver's TCP input, which loopback runs in the sender's
//! softirq. With `--recv` every client socket has a receive armed on the client ring before the round
//! (as a client waiting in epoll or io_uring would), which adds the wake-up of a waiter to each delivery
//! and the client's receive to the same threads; the round ends when every receive has completed too.
//!
//! Prints per round: the wall time from the barrier to the last completion, the CPU time of the threads
//! (user + system, `CLOCK_THREAD_CPUTIME_ID`) and the CPU per delivery.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use ringws::reactor::sys::{
    open_file_limit, pin_current_thread, set_listen_backlog, thread_cpu_time,
};

/// The frame every connection gets: an unmasked text frame of the loadgen's verify message.
const FRAME: &[u8] = b"\x81\x15ringws-loadgen verify";
/// Sockets and connects in flight per thread during the setup.
const SETUP_IN_FLIGHT: usize = 256;
/// `user_data` tags (high byte); the low bits carry the connection's index.
const TAG_SOCKET: u64 = 1 << 56;
const TAG_CONNECT: u64 = 2 << 56;
const TAG_ACCEPT: u64 = 3 << 56;
const TAG_SEND: u64 = 4 << 56;
const TAG_RECV: u64 = 5 << 56;
const TAG_MASK: u64 = 0xff << 56;

struct Options {
    connections: usize,
    threads: usize,
    sq: u32,
    rounds: usize,
    recv: bool,
    pin: bool,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        connections: 100_000,
        threads: 0,
        sq: 2048,
        rounds: 3,
        recv: false,
        pin: true,
    };
    let number = |value: Option<String>, name: &str| -> Result<usize, String> {
        value
            .ok_or(format!("{name} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{name}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => options.threads = number(args.next(), "--threads")?,
            "--sq" => options.sq = number(args.next(), "--sq")? as u32,
            "--rounds" => options.rounds = number(args.next(), "--rounds")?,
            "--recv" => options.recv = true,
            "--no-pin" => options.pin = false,
            "-h" | "--help" => {
                return Err(
                    "usage: broadcast_floor [CONNECTIONS=100000] [--threads T] [--sq ENTRIES] \
                            [--rounds R] [--recv] [--no-pin]"
                        .into(),
                )
            }
            n => options.connections = n.parse().map_err(|e| format!("{n}: {e}"))?,
        }
    }
    let limit = open_file_limit() as usize;
    let per_ring = limit - (limit / 64).clamp(4, 256);
    if options.threads == 0 {
        options.threads = options.connections.div_ceil(per_ring).max(1);
    }
    if options.connections.div_ceil(options.threads) > per_ring {
        return Err(format!(
            "{} connections over {} threads: more than {per_ring} per ring (open-file limit {limit})",
            options.connections, options.threads
        ));
    }
    Ok(options)
}

fn ring(sq: u32, fixed: u32, defer: bool) -> std::io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize((fixed * 2).next_power_of_two().clamp(4096, 65536));
    if defer {
        builder
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all();
    }
    let ring = builder.build(sq)?;
    ring.submitter().register_files_sparse(fixed)?;
    Ok(ring)
}

/// Pushes `entry`, submitting first while the submission queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: every entry built here references only memory that outlives its completion: the
        // static frame, the listener's address (kept in `Conns` until the setup ends), and the receive
        // buffers (kept in `Conns` until the thread ends, after the last completion).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return;
        }
        ring.submit().expect("io_uring submit");
    }
}

/// Submits and collects what is ready without waiting (DEFER_TASKRUN runs deferred work only in an
/// enter that asks for completions).
fn reap(ring: &mut IoUring, wait: bool) {
    let result = if wait {
        ring.submit_and_wait(1)
    } else {
        let zero = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&zero);
        ring.submitter().submit_with_args(1, &args)
    };
    if let Err(e) = result {
        if !matches!(
            e.raw_os_error(),
            Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
        ) {
            panic!("io_uring enter: {e}");
        }
    }
}

fn completions(ring: &mut IoUring) -> Vec<cqueue::Entry> {
    ring.completion().collect()
}

/// One thread's connections: the client sockets' slots on the client ring, the accepted sockets' slots
/// on the sending ring, and a receive buffer per client socket (`--recv`).
struct Conns {
    clients: Vec<u32>,
    accepted: Vec<u32>,
    buffers: Vec<[u8; 64]>,
    /// Kept open until the thread ends (its multishot accept stays armed, idle).
    _listener: Option<TcpListener>,
}

/// Opens `n` connections to a listener of this thread's own.
fn open(n: usize, client: &mut IoUring, server: &mut IoUring) -> Conns {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    // std listens with a backlog of 128: raised, as ringws does (`--listen-backlog`).
    set_listen_backlog(listener.as_fd(), 4096).expect("listen backlog");
    let addr = match listener.local_addr().expect("address") {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
    };
    let sockaddr = Box::new(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    });
    push(
        server,
        &opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .allocate_file_index(true)
            .build()
            .user_data(TAG_ACCEPT),
    );
    let mut conns = Conns {
        clients: Vec::with_capacity(n),
        accepted: Vec::with_capacity(n),
        buffers: Vec::new(),
        _listener: None,
    };
    let (mut started, mut in_flight, mut connected) = (0usize, 0usize, 0usize);
    while connected < n || conns.accepted.len() < n {
        while started < n && in_flight < SETUP_IN_FLIGHT {
            push(
                client,
                &opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
                    .file_index(Some(types::DestinationSlot::auto_target()))
                    .build()
                    .user_data(TAG_SOCKET | started as u64),
            );
            started += 1;
            in_flight += 1;
        }
        reap(client, false);
        for cqe in completions(client) {
            let result = cqe.result();
            match cqe.user_data() & TAG_MASK {
                TAG_SOCKET => {
                    assert!(result >= 0, "socket: {}", -result);
                    let slot = result as u32;
                    conns.clients.push(slot);
                    push(
                        client,
                        &opcode::Connect::new(
                            types::Fixed(slot),
                            &*sockaddr as *const libc::sockaddr_in as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                        .build()
                        .user_data(TAG_CONNECT | slot as u64),
                    );
                }
                TAG_CONNECT => {
                    assert!(result >= 0, "connect: {}", -result);
                    in_flight -= 1;
                    connected += 1;
                }
                other => panic!("unexpected completion {other:#x} on the client ring"),
            }
        }
        reap(server, false);
        for cqe in completions(server) {
            assert_eq!(cqe.user_data(), TAG_ACCEPT);
            assert!(cqe.result() >= 0, "accept: {}", -cqe.result());
            conns.accepted.push(cqe.result() as u32);
            if !cqueue::more(cqe.flags()) {
                push(
                    server,
                    &opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
                        .allocate_file_index(true)
                        .build()
                        .user_data(TAG_ACCEPT),
                );
            }
        }
        if in_flight == SETUP_IN_FLIGHT || started == n {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    conns._listener = Some(listener);
    conns
}

/// One round on one thread: the sends (and receives) of its connections. Returns (start, end, CPU).
fn round(
    conns: &mut Conns,
    client: &mut IoUring,
    server: &mut IoUring,
    recv: bool,
    barrier: &Barrier,
) -> (Instant, Instant, Duration, usize) {
    let n = conns.accepted.len();
    if recv {
        conns.buffers.resize(n, [0; 64]);
        for (i, &slot) in conns.clients.iter().enumerate() {
            let buf = &mut conns.buffers[i];
            push(
                client,
                &opcode::Recv::new(types::Fixed(slot), buf.as_mut_ptr(), buf.len() as u32)
                    .build()
                    .user_data(TAG_RECV | i as u64),
            );
        }
        client.submit().expect("submit receives");
    }
    barrier.wait();
    let start = Instant::now();
    let cpu = thread_cpu_time();
    for &slot in &conns.accepted {
        push(
            server,
            &opcode::Send::new(types::Fixed(slot), FRAME.as_ptr(), FRAME.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(TAG_SEND | slot as u64),
        );
    }
    let (mut sent, mut received, mut errors) = (0usize, 0usize, 0usize);
    while sent < n || (recv && received < n) {
        reap(server, sent < n && !recv);
        for cqe in completions(server) {
            if cqe.user_data() & TAG_MASK == TAG_SEND {
                sent += 1;
                if cqe.result() != FRAME.len() as i32 {
                    errors += 1;
                }
            }
        }
        if recv {
            reap(client, false);
            for cqe in completions(client) {
                if cqe.user_data() & TAG_MASK == TAG_RECV {
                    received += 1;
                    if cqe.result() != FRAME.len() as i32 {
                        errors += 1;
                    }
                }
            }
        }
    }
    (start, Instant::now(), thread_cpu_time() - cpu, errors)
}

fn main() {
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "broadcast floor: {} connections, {} threads (pinned: {}), {} CPUs, SQ {} entries, frame {} bytes, {}",
        options.connections,
        options.threads,
        options.pin,
        cpus,
        options.sq,
        FRAME.len(),
        if options.recv {
            "a receive armed on every client socket"
        } else {
            "nothing waiting on the client sockets"
        }
    );
    let barrier = Arc::new(Barrier::new(options.threads));
    let results = Arc::new(Mutex::new(vec![Vec::new(); options.rounds]));
    let setup_start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let n = options.connections / options.threads
            + usize::from(t < options.connections % options.threads);
        let barrier = Arc::clone(&barrier);
        let results = Arc::clone(&results);
        let (sq, rounds, recv, pin) = (options.sq, options.rounds, options.recv, options.pin);
        handles.push(std::thread::spawn(move || {
            if pin {
                let _ = pin_current_thread(t % cpus);
            }
            let table = n as u32 + 16;
            let mut client = ring(sq, table, !recv).expect("client ring");
            let mut server = ring(sq, table, true).expect("sending ring");
            let mut conns = open(n, &mut client, &mut server);
            barrier.wait();
            for r in 0..rounds {
                let outcome = round(&mut conns, &mut client, &mut server, recv, &barrier);
                results.lock().expect("results")[r].push(outcome);
            }
            barrier.wait();
        }));
    }
    for handle in handles {
        handle.join().expect("thread");
    }
    println!(
        "setup: {} connections in {:.1}s",
        options.connections,
        setup_start.elapsed().as_secs_f64()
    );
    for (r, outcomes) in results.lock().expect("results").iter().enumerate() {
        let start = outcomes.iter().map(|o| o.0).min().expect("a thread");
        let end = outcomes.iter().map(|o| o.1).max().expect("a thread");
        let cpu: Duration = outcomes.iter().map(|o| o.2).sum();
        let errors: usize = outcomes.iter().map(|o| o.3).sum();
        let wall = end - start;
        println!(
            "round {}: {} deliveries in {:.1} ms (wall, barrier to last completion); CPU {:.1} ms \
             ({:.2} us per delivery, {:.0} deliveries/s per core); errors {}",
            r + 1,
            options.connections,
            wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e6 / options.connections as f64,
            options.connections as f64 / cpu.as_secs_f64(),
            errors
        );
    }
}
