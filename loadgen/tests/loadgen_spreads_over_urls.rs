//! `--url` repeated: connections go round robin over the URLs (echo, churn, broadcast; in broadcast the
//! subscribers and the publishers each), the report gives the connections per URL, and against two ringws
//! nodes joined through a real Redis (`--broker`) every subscriber on one node gets every publish made on
//! the other: the broadcast check validates cross-node delivery. The same run against two nodes that are
//! not joined reports the other node's publishes missing.

mod common;
use common::redis::RedisServer;
use common::{loadgen_on, metric_sum, ringws_binary, Run, ServerProcess};
use std::time::Duration;

fn nodes(args: &[&str]) -> (ServerProcess, ServerProcess) {
    let start = || {
        let mut all = vec!["--workers", "1", "--no-pin"];
        all.extend_from_slice(args);
        ServerProcess::start(ringws_binary(), &all)
    };
    (start(), start())
}

/// WebSockets each node accepted.
fn websockets(a: &ServerProcess, b: &ServerProcess) -> (u64, u64) {
    (
        metric_sum(a.addr, "ringws_websockets_total"),
        metric_sum(b.addr, "ringws_websockets_total"),
    )
}

/// `(connections, subscribers, publishers)` of the report's entry for URL `i`.
fn share(run: &Run, i: usize) -> (u64, Option<u64>, Option<u64>) {
    let entry = &run.report["urls"][i];
    (
        entry["connections"].as_u64().unwrap(),
        entry["subscribers"].as_u64(),
        entry["publishers"].as_u64(),
    )
}

/// 20 subscribers and 2 publishers over the two nodes' URLs (10 + 1 on each), paced connects so that
/// every node has subscribed on Redis before the first publish.
fn broadcast_over(engine: &str, a: &ServerProcess, b: &ServerProcess, extra: &[&str]) -> Run {
    let (url_a, url_b) = (a.url(), b.url());
    let mut args = vec![
        "broadcast",
        "--url",
        &url_a,
        "--url",
        &url_b,
        "-c",
        "20",
        "--publishers",
        "2",
        "-r",
        "400",
        "-d",
        "1",
        "-s",
        "64",
        "-t",
        "1",
        "--connect-rate",
        "200",
    ];
    args.extend_from_slice(extra);
    loadgen_on(engine, &args)
}

#[test]
fn every_cross_node_delivery_is_validated_through_redis() {
    let redis = RedisServer::start();
    let broker = redis.url();
    for (engine, mode, extra) in [
        ("uring", "broadcast", &[][..]),
        ("epoll", "pubsub", &["--topic", "news"][..]),
    ] {
        let (a, b) = nodes(&["--mode", mode, "--broker", &broker]);
        if mode == "broadcast" {
            redis.wait_subscribers("ringws:#broadcast", 2, Duration::from_secs(10));
        }
        let run = broadcast_over(engine, &a, &b, extra);
        assert!(
            run.success,
            "{mode}: errors reported: {}\n{}",
            run.report["errors"], run.stderr
        );
        let published = run.u64_at("/broadcast/published");
        assert!(published >= 300, "{mode}: published {published}");
        assert_eq!(run.u64_at("/broadcast/delivered"), published * 20, "{mode}");
        assert_eq!(run.u64_at("/broadcast/missing"), 0, "{mode}");
        assert_eq!(run.u64_at("/broadcast/duplicates"), 0, "{mode}");
        assert_eq!(run.u64_at("/broadcast/out_of_order"), 0, "{mode}");
        assert_eq!(run.u64_at("/errors_total"), 0, "{mode}");
        // 10 subscribers and 1 publisher on each node, as the report says and the nodes counted.
        for i in 0..2 {
            assert_eq!(share(&run, i), (11, Some(10), Some(1)), "{mode}: url {i}");
        }
        assert_eq!(run.report["urls"][1]["url"], b.url());
        assert_eq!(websockets(&a, &b), (11, 11), "{mode}");
        // Half of each subscriber's messages came from the other node, through Redis.
        for node in [&a, &b] {
            let received = metric_sum(node.addr, "ringws_broker_received_total");
            assert!(
                received * 3 >= published,
                "{mode}: {received} of {published}"
            );
        }
    }
}

#[test]
fn nodes_not_joined_show_the_other_nodes_publishes_missing() {
    let (a, b) = nodes(&["--mode", "broadcast"]);
    let run = broadcast_over("uring", &a, &b, &[]);
    assert!(
        !run.success,
        "no broker, yet nothing missing: {}",
        run.report
    );
    let (published, expected) = (
        run.u64_at("/broadcast/published"),
        run.u64_at("/broadcast/expected"),
    );
    assert!(published >= 300, "published {published}");
    // Each subscriber gets only its own node's publisher: about half of what it expects is missing.
    let missing = run.u64_at("/broadcast/missing");
    assert!(
        missing * 3 >= expected && missing * 3 <= expected * 2,
        "missing {missing} of {expected}"
    );
    assert_eq!(run.u64_at("/errors/broadcast_missing"), missing);
}

#[test]
fn echo_and_churn_connections_go_round_robin() {
    let (a, b) = nodes(&["--mode", "echo"]);
    let (url_a, url_b) = (a.url(), b.url());
    let urls = ["--url", &url_a, "--url", &url_b];
    let mut echo = vec!["echo", "-c", "5", "-d", "1", "-t", "1"];
    echo.extend_from_slice(&urls);
    let run = loadgen_on("epoll", &echo);
    assert!(run.success, "{}", run.report["errors"]);
    assert_eq!(
        (share(&run, 0), share(&run, 1)),
        ((3, None, None), (2, None, None))
    );
    assert_eq!(websockets(&a, &b), (3, 2));
    assert!(run.u64_at("/received") > 0);
    // Churn: slot 0 cycles on the first URL, slot 1 on the second.
    let mut churn = vec!["churn", "-c", "2", "--rate", "40", "-d", "1", "-t", "1"];
    churn.extend_from_slice(&urls);
    let run = loadgen_on("uring", &churn);
    assert!(run.success, "{}", run.report["errors"]);
    let cycles = run.counter("churn_cycles");
    assert!(cycles >= 20, "{cycles} cycles");
    let (on_a, on_b) = websockets(&a, &b);
    let (on_a, on_b) = (on_a - 3, on_b - 2);
    // Both slots run at the same pace: within a fifth of each other (a cycle or two at the end).
    assert!(
        on_a.abs_diff(on_b) * 5 <= on_a + on_b,
        "churn per node: {on_a} and {on_b}"
    );
    assert!(on_a + on_b >= cycles, "{on_a} + {on_b} < {cycles}");
}
