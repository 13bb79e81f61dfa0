//! `ringws-loadgen SCENARIO --help` shows that scenario's description and only the options it reads (with
//! the common ones); `--help` alone shows every option.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringws-loadgen"))
        .args(args)
        .output()
        .expect("run ringws-loadgen");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn has(text: &str, option: &str) -> bool {
    text.lines().any(|line| {
        line.trim_start()
            .split(", ")
            .any(|part| part.split([' ', '<']).next() == Some(option))
    })
}

#[test]
fn each_scenario_shows_its_own_options() {
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "echo",
            &["--depth", "--rate", "--messages", "--url", "--deflate"],
            &[
                "--window",
                "--publishers",
                "--topic",
                "--hold",
                "--ping-interval",
                "--verify-broadcast",
            ],
        ),
        (
            "broadcast",
            &["--publishers", "--topic", "--rate", "--window", "--url"],
            &["--depth", "--messages", "--hold", "--verify-broadcast"],
        ),
        (
            "connect",
            &["--hold", "--ping-interval", "--verify-broadcast", "--url"],
            &["--depth", "--rate", "--messages", "--publishers", "--topic"],
        ),
        (
            "churn",
            &["--rate", "--messages", "--url"],
            &["--depth", "--publishers", "--hold"],
        ),
    ];
    for (scenario, shown, hidden) in cases {
        for args in [[scenario, "--help"], ["-h", scenario]] {
            let text = help(&args);
            assert!(
                text.contains(&format!("Usage: ringws-loadgen {scenario} [OPTIONS]")),
                "{text}"
            );
            for option in shown {
                assert!(has(&text, option), "{scenario}: {option} missing:\n{text}");
            }
            for option in hidden {
                assert!(!has(&text, option), "{scenario}: {option} shown:\n{text}");
            }
        }
    }
    let all = help(&["--help"]);
    for option in [
        "--depth",
        "--publishers",
        "--hold",
        "--verify-broadcast",
        "--messages",
    ] {
        assert!(has(&all, option), "--help shows {option}:\n{all}");
    }
}
