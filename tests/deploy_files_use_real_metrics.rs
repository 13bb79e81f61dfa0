//! The deployment files query only metrics the server exports: every `ringws_*` name in the Prometheus
//! rules (and their unit tests) and in the Grafana dashboard is a family of a live TLS server's
//! `/metrics` (TLS, so that the certificate's families are there too). A renamed or removed metric
//! fails here instead of leaving an alert that can never fire or an empty panel.
//! The tools' own checks (`systemd-analyze verify`, `promtool`) run in `scripts/check_deploy.sh`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::ringws_binary;
use common::tls::{metrics, TlsServer};

const DEPLOY_FILES: [&str; 3] = [
    "deploy/prometheus/ringws.rules.yml",
    "deploy/prometheus/ringws.rules.test.yml",
    "deploy/grafana/ringws.json",
];

/// Every `ringws_[a-z0-9_]+` word in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(found) = text[i..].find("ringws_") {
        let start = i + found;
        let mut end = start + "ringws_".len();
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        let preceded = start > 0 && word(bytes[start - 1]);
        if !preceded && end > start + "ringws_".len() {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The families a `/metrics` text declares (`# TYPE name kind`).
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_in_rules_and_dashboard_is_exported() {
    let server = TlsServer::start(ringws_binary(), &[]);
    let exported = exported_families(&metrics(&server));
    for family in [
        "ringws_websockets_open",
        "ringws_tls_reloads_total",
        "ringws_tls_cert_not_after_seconds",
    ] {
        assert!(exported.contains(family), "{family} missing: {exported:?}");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used = BTreeSet::new();
    for file in DEPLOY_FILES {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the server does not export: {unknown:?}"
        );
        used.extend(names);
    }
    let unused: Vec<_> = exported.difference(&used).collect();
    println!("exported families used by no rule or panel: {unused:?}");
}

#[test]
fn metric_names_are_found_whole() {
    let text = r#"expr: sum(rate(ringws_rejected_total{reason="x"}[5m])) / ringws_a:b and xringws_no ringws_"#;
    let names: Vec<_> = metric_names(text).into_iter().collect();
    assert_eq!(names, ["ringws_a:b", "ringws_rejected_total"]);
}
