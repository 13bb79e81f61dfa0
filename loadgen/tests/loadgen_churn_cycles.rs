//! `ringws-loadgen churn` completes connect / echo / close cycles at the requested rate and counts them.

mod common;
use common::{loadgen, Ringws};

#[test]
fn churn_completes_cycles_without_errors() {
    let server = Ringws::start(&["--workers", "1"]);
    let url = server.url();
    let run = loadgen(&[
        "churn", "--url", &url, "-c", "10", "-r", "200", "-m", "3", "-d", "1",
    ]);
    assert!(run.success, "errors reported: {}", run.report["errors"]);
    let cycles = run.counter("churn_cycles");
    // 200 cycles are scheduled; a loaded machine may finish fewer (behind schedule), never more.
    assert!((100..=210).contains(&cycles), "cycles {cycles}");
    assert_eq!(run.u64_at("/received"), run.u64_at("/sent"));
    assert_eq!(run.u64_at("/received"), cycles * 3);
}
