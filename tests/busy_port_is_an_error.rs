//! A port another `ringws serve` (or anything else) listens on stops startup: exit status 2 and one error
//! line naming the address, nothing on stdout. The first server keeps every connection: its workers share
//! the port among themselves only (the first listener is bound without SO_REUSEPORT, so no other process
//! joins the group by accident).

mod common;

use common::*;
use std::process::{Command, Stdio};

/// Connections opened to the first server after the second one tried to start.
const CONNECTIONS: usize = 20;

#[test]
fn a_second_server_on_a_busy_port_exits_2_and_the_first_keeps_every_connection() {
    let first = ServerProcess::start(ringws_binary(), &["--workers", "2", "--no-pin"]);
    let addr = first.addr;

    // A second server in another mode (pub/sub would answer an echo client differently) on the same port.
    let mut second = Command::new(ringws_binary());
    second
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--workers", "2", "--no-pin", "--mode", "pubsub"])
        .stdin(Stdio::null());
    let (code, stderr) = ServerProcess::command_expect_failure(second);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "the error names the address: {stderr}"
    );

    // Every connection reaches the first server (echo), none a second process.
    let mut clients: Vec<_> = (0..CONNECTIONS).map(|_| ws_at(addr, "/")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        send_text(client, &format!("hello {i}"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_text(client), format!("hello {i}"));
    }
}

#[test]
fn a_port_held_by_another_program_exits_2_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut command = Command::new(ringws_binary());
    command
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--workers", "2", "--no-pin"])
        .stdin(Stdio::null());
    let (code, stderr) = ServerProcess::command_expect_failure(command);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );
}
