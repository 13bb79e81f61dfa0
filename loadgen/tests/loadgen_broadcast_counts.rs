//! `ringws-loadgen broadcast` counts exactly what was published and delivered: every subscriber gets every
//! message from the real server in broadcast mode; a server that withholds messages shows them as missing.

mod common;
use common::{loadgen_on, ringws_binary, tungstenite_broadcast, ServerProcess, ENGINES};

#[test]
fn every_subscriber_gets_every_message_from_ringws() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2", "--mode", "broadcast"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "broadcast",
                "--url",
                &url,
                "-c",
                "50",
                "--publishers",
                "2",
                "-r",
                "400",
                "-d",
                "1",
                "-s",
                "64",
            ],
        );
        assert!(
            run.success,
            "{engine}: errors reported: {}",
            run.report["errors"]
        );
        let published = run.u64_at("/broadcast/published");
        assert!(published >= 350, "published {published}");
        assert_eq!(run.u64_at("/broadcast/delivered"), published * 50);
        assert_eq!(run.u64_at("/broadcast/missing"), 0);
        assert_eq!(run.u64_at("/broadcast/duplicates"), 0);
        assert_eq!(run.u64_at("/broadcast/out_of_order"), 0);
        assert_eq!(run.u64_at("/latency/count"), published * 50);
    }
}

#[test]
fn withheld_messages_are_reported_missing() {
    for engine in ENGINES {
        let url = tungstenite_broadcast(Some(4));
        let run = loadgen_on(
            engine,
            &[
                "broadcast",
                "--url",
                &url,
                "-c",
                "5",
                "--publishers",
                "1",
                "-r",
                "200",
                "-d",
                "1",
                "-s",
                "50",
            ],
        );
        assert!(!run.success, "missing messages must fail the run");
        let published = run.u64_at("/broadcast/published");
        assert!(published >= 150, "published {published}");
        // Message n is withheld from the first accepted connection (a subscriber) when n % 4 == 0.
        assert_eq!(run.u64_at("/broadcast/missing"), published.div_ceil(4));
        assert_eq!(
            run.u64_at("/broadcast/delivered"),
            published * 5 - published.div_ceil(4)
        );
        assert_eq!(run.u64_at("/broadcast/duplicates"), 0);
    }
}

#[test]
fn pubsub_topic_subscribers_get_every_message_from_ringws() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2", "--mode", "pubsub"]);
    let url = server.url();
    for kind in ["text", "binary"] {
        for engine in ENGINES {
            let run = loadgen_on(
                engine,
                &[
                    "broadcast",
                    "--url",
                    &url,
                    "-c",
                    "20",
                    "--publishers",
                    "2",
                    "-r",
                    "300",
                    "-d",
                    "0.5",
                    "-s",
                    "48",
                    "--topic",
                    "news",
                    "--kind",
                    kind,
                ],
            );
            assert!(
                run.success,
                "{engine} {kind}: errors reported: {}",
                run.report["errors"]
            );
            let published = run.u64_at("/broadcast/published");
            assert!(published >= 120, "{kind}: published {published}");
            assert_eq!(run.u64_at("/broadcast/delivered"), published * 20, "{kind}");
            // Publishers are not subscribed to the topic: nothing comes back to them.
            assert_eq!(run.counter("publisher_echoes"), 0, "{kind}");
        }
    }
}
