//! Zero-downtime restart: a new `ringws serve --takeover PATH` takes the port over from the running
//! server whose `--control-socket` is PATH. The old one stops accepting and closes its clients with 1001
//! spread over `--drain-window` (not all at once), then exits 0; the clients reconnect and land on the
//! new one; a client connecting in a loop meanwhile is never refused or reset. Without the flag a second
//! server on the port is still refused (exit 2), and a new process that cannot serve every listener
//! handed over exits 2 and leaves the old one serving.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Clients connected to the old server when the new one takes over.
const CLIENTS: usize = 40;
/// The old server's drain window.
const WINDOW: Duration = Duration::from_secs(3);
/// The old server's message limit; the new one keeps the default (1 MiB). A message between the two is
/// echoed by the new server only (the old one closes 1009): it tells which process serves a client.
const OLD_MAX_MESSAGE: &str = "64KiB";
const PROBE_SIZE: usize = 100 << 10;

/// A directory of its own for the control socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringws-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn control_socket(&self) -> String {
        self.0.join("control.sock").to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server(args: &[&str]) -> ServerProcess {
    ServerProcess::start(ringws_binary(), args)
}

/// Sends one masked binary frame.
fn send_binary(stream: &mut TcpStream, payload: &[u8]) {
    stream
        .write_all(&client_frame(true, 0, 0x2, payload, true))
        .unwrap();
}

/// Whether the server on `stream` is the new one: it echoes a message the old one refuses.
fn served_by_the_new_server(stream: &mut TcpStream) -> bool {
    let probe = vec![7u8; PROBE_SIZE];
    send_binary(stream, &probe);
    match read_server_frame(stream) {
        Some((true, 0x2, payload)) => payload == probe,
        _ => false,
    }
}

/// What one short-lived client saw.
enum Visit {
    /// Connected, upgraded, got its echo.
    Echoed,
    /// Connected and upgraded, then closed with 1001 by a draining server before its echo: it would
    /// reconnect, no error.
    GoingAway,
}

/// Connect, upgrade, one echo, close. An `Err` is what the handover must never cause: a refused or
/// reset connection, a refused upgrade, a connection closed without a WebSocket close.
fn visit(addr: SocketAddr, i: usize) -> Result<Visit, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(upgrade_request("/").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("EOF in the response head {head:?}")),
            Ok(_) => head.push(byte[0]),
            Err(e) => {
                return Err(format!(
                    "reading the response head: {e} (local {:?}, at {:?})",
                    stream.local_addr(),
                    std::time::SystemTime::now()
                ))
            }
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("upgrade refused: {head}"));
    }
    let text = format!("visit {i}");
    stream
        .write_all(&client_frame(true, 0, 0x1, text.as_bytes(), true))
        .map_err(|e| format!("write: {e}"))?;
    let outcome = match read_server_frame(&mut stream) {
        Some((true, 0x1, payload)) if payload == text.as_bytes() => Visit::Echoed,
        Some((_, 0x8, payload)) if payload.starts_with(&1001u16.to_be_bytes()) => Visit::GoingAway,
        other => return Err(format!("expected the echo, got {other:?}")),
    };
    let _ = stream.write_all(&client_frame(true, 0, 0x8, &1000u16.to_be_bytes(), true));
    Ok(outcome)
}

#[test]
fn a_new_process_takes_the_port_over_and_the_old_one_drains_with_jitter() {
    let dir = TempDir::new("takeover");
    let control = dir.control_socket();
    let window = format!("{}s", WINDOW.as_secs());
    // The operators' address, the same for both (the new process binds it once the old one let go).
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut old = server(&[
        "--metrics-listen",
        &metrics_addr,
        "--workers",
        "2",
        "--no-pin",
        "--control-socket",
        &control,
        "--drain-window",
        &window,
        "--max-message-size",
        OLD_MAX_MESSAGE,
    ]);
    let addr = old.addr;

    // Clients of the old server, each waiting for its close on a thread of its own.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| ws_at(addr, "/")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        send_text(client, &format!("hello {i}"));
        assert_eq!(read_text(client), format!("hello {i}"));
        client
            .set_read_timeout(Some(WINDOW + Duration::from_secs(10)))
            .unwrap();
    }
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                let code = expect_close(&mut client);
                (Instant::now(), code)
            })
        })
        .collect();

    // A client connecting in a loop through the whole handover.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut echoed, mut going_away, mut errors) = (0usize, 0usize, Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match visit(addr, i) {
                    Ok(Visit::Echoed) => echoed += 1,
                    Ok(Visit::GoingAway) => going_away += 1,
                    Err(e) => errors.push(e),
                }
                i += 1;
            }
            (echoed, going_away, errors)
        })
    };
    thread::sleep(Duration::from_millis(300));

    // The new process: another worker count, port 0 (the one handed over), its own control socket at
    // the same path once the old one let go of it.
    let new = server(&[
        "--metrics-listen",
        &metrics_addr,
        "--workers",
        "3",
        "--no-pin",
        "--takeover",
        &control,
        "--control-socket",
        &control,
        "--drain-window",
        "1s",
    ]);
    let handed_over = Instant::now();
    assert_eq!(new.addr, addr, "the new server serves the same port");

    // Every old client gets 1001, spread over the window rather than at once.
    let mut closes: Vec<Duration> = Vec::new();
    for waiter in waiting {
        let (at, code) = waiter.join().unwrap();
        assert_eq!(code, Some(1001));
        closes.push(at.saturating_duration_since(handed_over));
    }
    closes.sort();
    let first = closes[0];
    let last = *closes.last().unwrap();
    assert!(
        last <= WINDOW + Duration::from_secs(1),
        "every close within the window (and a tick): {closes:?}"
    );
    assert!(
        last - first >= WINDOW / 2,
        "the closes are spread over the window, not sent at once: {closes:?}"
    );
    let slice = WINDOW / 10;
    for start in closes.iter() {
        let in_slice = closes
            .iter()
            .filter(|at| **at >= *start && **at < *start + slice)
            .count();
        assert!(
            in_slice <= CLIENTS * 3 / 10,
            "{in_slice} of {CLIENTS} closes within {slice:?} from {start:?}: {closes:?}"
        );
    }

    // The old process is done: exit 0 once its clients are gone.
    let status = old
        .wait_exit(WINDOW + Duration::from_secs(10))
        .expect("the old server exits after its drain");
    assert_eq!(status.code(), Some(0));
    // The operators' address is the new server's now.
    let metrics = metrics_text(metrics_addr.parse().unwrap());
    assert!(
        metrics.contains("ringws_connections_total"),
        "the new server serves --metrics-listen: {metrics}"
    );

    stop.store(true, Ordering::Relaxed);
    let (echoed, going_away, errors) = looping.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} of {} visits failed during the handover: {errors:?}",
        errors.len(),
        echoed + going_away + errors.len()
    );
    assert!(echoed > 20, "the loop kept visiting ({echoed} echoes)");

    // Reconnecting clients land on the new server.
    for _ in 0..10 {
        let mut client = ws_at(addr, "/");
        assert!(served_by_the_new_server(&mut client));
    }

    // And the new server can be taken over in turn: its control socket is bound at the same path.
    let mut newer = server(&["--workers", "3", "--no-pin", "--takeover", &control]);
    assert_eq!(newer.addr, addr);
    let mut new = new;
    let status = new
        .wait_exit(Duration::from_secs(10))
        .expect("the second server exits after its drain");
    assert_eq!(status.code(), Some(0));
    let mut client = ws_at(addr, "/");
    send_text(&mut client, "still here");
    assert_eq!(read_text(&mut client), "still here");
    drop(client);
    newer.signal("TERM");
    assert_eq!(
        newer
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn without_the_flag_a_second_server_is_still_refused_and_with_it_nothing_running_binds() {
    let dir = TempDir::new("takeover-refused");
    let control = dir.control_socket();
    let old = server(&["--workers", "2", "--no-pin", "--control-socket", &control]);
    let addr = old.addr;

    // Same port, no --takeover: the busy-port check refuses it.
    let mut second = Command::new(ringws_binary());
    second
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--workers", "2", "--no-pin"])
        .stdin(Stdio::null());
    let (code, stderr) = ServerProcess::command_expect_failure(second);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );

    // Another port, the same control socket: refused too, naming the flag; the old one's socket stays.
    let (code, stderr) = ServerProcess::start_expect_failure(
        ringws_binary(),
        &["--workers", "1", "--no-pin", "--control-socket", &control],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--control-socket"), "{stderr}");
    assert!(std::path::Path::new(&control).exists());

    // --takeover with no server behind the path: a plain start on a port of its own.
    let other = TempDir::new("takeover-nothing");
    let fresh = server(&[
        "--workers",
        "1",
        "--no-pin",
        "--takeover",
        &other.control_socket(),
    ]);
    assert_ne!(fresh.addr, addr);
    let mut client = ws_at(fresh.addr, "/");
    send_text(&mut client, "fresh");
    assert_eq!(read_text(&mut client), "fresh");

    // --takeover on the busy port of a server without a control socket: refused, saying why.
    let mut command = Command::new(ringws_binary());
    command
        .arg("serve")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &fresh.addr.port().to_string(),
        ])
        .args([
            "--workers",
            "1",
            "--no-pin",
            "--takeover",
            &other.control_socket(),
        ])
        .stdin(Stdio::null());
    let (code, stderr) = ServerProcess::command_expect_failure(command);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is already in use"), "{stderr}");
    assert!(stderr.contains("--control-socket at that path"), "{stderr}");

    // The old server served throughout.
    let mut client = ws_at(addr, "/");
    send_text(&mut client, "old");
    assert_eq!(read_text(&mut client), "old");
}

#[test]
fn fewer_workers_than_listeners_handed_over_exit_2_and_the_old_server_keeps_serving() {
    let migrates = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|v| v.trim() == "1");
    if migrates {
        eprintln!("net.ipv4.tcp_migrate_req = 1: fewer workers are allowed; nothing to check");
        return;
    }
    let dir = TempDir::new("takeover-fewer");
    let control = dir.control_socket();
    let old = server(&["--workers", "3", "--no-pin", "--control-socket", &control]);
    let mut kept = ws_at(old.addr, "/");
    let (code, stderr) = ServerProcess::start_expect_failure(
        ringws_binary(),
        &["--workers", "2", "--no-pin", "--takeover", &control],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--workers 2"), "{stderr}");
    // Nothing changed for the old server: its connection and new ones are served.
    send_text(&mut kept, "kept");
    assert_eq!(read_text(&mut kept), "kept");
    for i in 0..10 {
        let mut client = ws_at(old.addr, "/");
        send_text(&mut client, &format!("new {i}"));
        assert_eq!(read_text(&mut client), format!("new {i}"));
    }
}

#[test]
fn connections_waiting_in_the_accept_queues_after_the_handover_are_served_by_the_new_one() {
    let dir = TempDir::new("takeover-queue");
    let control = dir.control_socket();
    let mut old = server(&[
        "--workers",
        "2",
        "--no-pin",
        "--control-socket",
        &control,
        "--drain-window",
        "0s",
    ]);
    let addr = old.addr;
    let new = server(&["--workers", "2", "--no-pin", "--takeover", &control]);
    // The new process accepts nothing for a while: clients wait in the kernel's accept queues. The old
    // process has stopped accepting (within a tick of the handover) and let go of the sockets; its exit
    // must not take them down (e.g. a shutdown(2) of a listening socket would, in every process).
    new.signal("STOP");
    thread::sleep(Duration::from_millis(300));
    let mut waiting: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(upgrade_request("/").as_bytes()).unwrap();
            stream
        })
        .collect();
    let status = old
        .wait_exit(Duration::from_secs(10))
        .expect("the old server exits after its drain");
    assert_eq!(status.code(), Some(0));
    new.signal("CONT");
    for (i, stream) in waiting.iter_mut().enumerate() {
        let (status, head) = read_response_head(stream);
        assert_eq!(status, 101, "client {i}: {head}");
        send_text(stream, &format!("queued {i}"));
        assert_eq!(read_text(stream), format!("queued {i}"));
    }
}

/// The listen queue lengths of the sockets listening on `port` (`ss`: Send-Q of a listening socket).
fn listen_queues(port: u16) -> Vec<u32> {
    let output = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    assert!(output.status.success(), "ss failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn the_new_process_listen_backlog_applies_to_the_sockets_it_takes_over() {
    let dir = TempDir::new("takeover-backlog");
    let control = dir.control_socket();
    let old = server(&[
        "--workers",
        "2",
        "--no-pin",
        "--listen-backlog",
        "17",
        "--control-socket",
        &control,
        "--drain-window",
        "0s",
    ]);
    assert_eq!(listen_queues(old.addr.port()), vec![17, 17]);
    let new = server(&[
        "--workers",
        "3",
        "--no-pin",
        "--listen-backlog",
        "23",
        "--takeover",
        &control,
    ]);
    assert_eq!(new.addr, old.addr);
    assert_eq!(listen_queues(new.addr.port()), vec![23, 23, 23]);
}
