//! `--listen-backlog` sets the listen queue of every worker's listener (read back with `ss`, whose Send-Q
//! column is a listening socket's backlog).

mod common;

use common::{ringws_binary, ServerProcess};
use std::process::Command;

fn listen_queues(port: u16) -> Vec<u32> {
    let output = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    assert!(output.status.success(), "ss failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], "LISTEN", "{line}");
            fields[2].parse().expect("Send-Q")
        })
        .collect()
}

#[test]
fn every_worker_listens_with_the_configured_backlog() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "2", "--no-pin", "--listen-backlog", "17"],
    );
    assert_eq!(listen_queues(server.addr.port()), vec![17, 17]);
    drop(server);

    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--no-pin"]);
    let default = listen_queues(server.addr.port());
    assert_eq!(default.len(), 1);
    // The default, 4096, as far as net.core.somaxconn allows.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(default[0], 4096.min(somaxconn));
}
