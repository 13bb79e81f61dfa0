#!/usr/bin/env bash
# Checks the deployment files in deploy/ with the real tools where they are installed:
#   deploy/ringws.service              systemd-analyze verify (and the offline security score, for information)
#   deploy/sysctl.conf                 every line is `key = value` and names a sysctl this kernel has
#   deploy/prometheus/ringws.rules.yml promtool check rules, promtool test rules (ringws.rules.test.yml);
#                                      without promtool, a structural check of the YAML (python3-yaml)
#   deploy/grafana/ringws.json         valid JSON, every panel has queries, unique ids and refIds; every
#                                      query parses as PromQL (promtool, Grafana's variables given values)
#   every metric in rules and dashboard is exported by a live server (tests/deploy_files_use_real_metrics.rs)
# A missing tool is skipped with a note (Debian packages: systemd, prometheus, python3-yaml); a failed
# check fails the script. Cheap: a few seconds once the debug build exists. Starts no long-lived process.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0
fail() {
    echo "check_deploy: FAILED: $*" >&2
    failures=$((failures + 1))
}
note() { echo "check_deploy: $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The tools, installed once if missing (as scripts/interop.sh installs chromium): promtool comes with
# Debian's prometheus package (its service is not started), systemd-analyze with systemd.
if ! command -v promtool >/dev/null || ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        note "installing prometheus (promtool) and systemd (systemd-analyze)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus systemd >/dev/null
    else
        note "promtool or systemd-analyze missing and not root: those checks are skipped"
    fi
fi

# --- systemd unit -------------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    # verify checks that ExecStart's binary exists: point it at this tree's debug build.
    cargo build -q -p ringws --bin ringws
    sed "s#/usr/local/bin/ringws#$PWD/target/debug/ringws#" deploy/ringws.service >"$work/ringws.service"
    # Unknown or malformed settings are warnings (exit 0) naming the file: any line about it is a failure.
    if ! systemd-analyze verify "$work/ringws.service" >"$work/verify.log" 2>&1 \
        || grep -q "ringws.service" "$work/verify.log"; then
        cat "$work/verify.log" >&2
        fail "systemd-analyze verify deploy/ringws.service"
    else
        note "ok: systemd-analyze verify deploy/ringws.service"
    fi
    if systemd-analyze security --offline=true "$work/ringws.service" >"$work/security.log" 2>&1; then
        note "info: $(grep -o 'Overall exposure level.*' "$work/security.log" || echo 'no security score')"
    fi
else
    note "skipped: systemd-analyze not installed (Debian package systemd)"
fi

# --- sysctls ------------------------------------------------------------------------------------------
while IFS= read -r line; do
    case $line in '' | '#'*) continue ;; esac
    if ! [[ $line =~ ^([a-z0-9_.-]+)\ =\ ([0-9]+(\ [0-9]+)*)$ ]]; then
        fail "deploy/sysctl.conf: not 'key = numbers': $line"
        continue
    fi
    key=${BASH_REMATCH[1]}
    if [ -e "/proc/sys/${key//.//}" ]; then
        continue
    elif [[ $key == net.netfilter.* ]]; then
        note "note: $key absent here (nf_conntrack not loaded), as the file's comment says"
    else
        fail "deploy/sysctl.conf: no sysctl $key on this kernel"
    fi
done <deploy/sysctl.conf
note "ok: deploy/sysctl.conf checked"

# --- Prometheus rules ---------------------------------------------------------------------------------
if command -v promtool >/dev/null; then
    if promtool check rules deploy/prometheus/ringws.rules.yml; then
        note "ok: promtool check rules"
    else
        fail "promtool check rules deploy/prometheus/ringws.rules.yml"
    fi
    if promtool test rules deploy/prometheus/ringws.rules.test.yml; then
        note "ok: promtool test rules"
    else
        fail "promtool test rules deploy/prometheus/ringws.rules.test.yml"
    fi
    # The dashboard's queries parsed as PromQL: each becomes a recording rule, Grafana's variables given
    # plain values.
    python3 - deploy/grafana/ringws.json >"$work/dashboard.rules.yml" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in dash["panels"]:
    for n, target in enumerate(panel.get("targets", [])):
        expr = (target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")
                .replace("$instance", ".*"))
        print(f"      - record: dashboard:panel{panel['id']}:{n}")
        print(f"        expr: {json.dumps(expr)}")
EOF
    if promtool check rules "$work/dashboard.rules.yml" >"$work/dashboard.log" 2>&1; then
        note "ok: every dashboard query parses (promtool)"
    else
        cat "$work/dashboard.log" >&2
        fail "deploy/grafana/ringws.json: a query promtool cannot parse"
    fi
elif python3 -c 'import yaml' 2>/dev/null; then
    note "promtool not installed (Debian package prometheus): structural check of the rules only"
    if python3 - deploy/prometheus/ringws.rules.yml <<'EOF'; then
import re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
errors = []
names = set()
for group in doc["groups"]:
    assert group.get("name"), "a group without a name"
    for rule in group["rules"]:
        name = rule.get("alert")
        if not name or name in names:
            errors.append(f"missing or duplicate alert name: {rule}")
        names.add(name)
        if not rule.get("expr"):
            errors.append(f"{name}: no expr")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            errors.append(f"{name}: severity must be critical, warning or info")
        if not rule.get("annotations", {}).get("summary"):
            errors.append(f"{name}: no summary")
        if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
            errors.append(f"{name}: bad 'for': {rule['for']}")
        if str(rule.get("expr", "")).count("(") != str(rule.get("expr", "")).count(")"):
            errors.append(f"{name}: unbalanced parentheses")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
        note "ok: rules structure"
    else
        fail "deploy/prometheus/ringws.rules.yml structure"
    fi
else
    note "skipped: neither promtool (Debian package prometheus) nor python3-yaml installed"
fi

# --- Grafana dashboard --------------------------------------------------------------------------------
if python3 - deploy/grafana/ringws.json <<'EOF'; then
import json, sys
dash = json.load(open(sys.argv[1]))
errors = []
ids = set()
for panel in dash["panels"]:
    if panel["id"] in ids:
        errors.append(f"duplicate panel id {panel['id']}")
    ids.add(panel["id"])
    grid = panel["gridPos"]
    if grid["x"] + grid["w"] > 24:
        errors.append(f"{panel['title']}: wider than the grid")
    if panel["type"] == "row":
        continue
    targets = panel.get("targets") or []
    if not targets:
        errors.append(f"{panel['title']}: no query")
    refs = [t.get("refId") for t in targets]
    if len(set(refs)) != len(refs) or None in refs:
        errors.append(f"{panel['title']}: refIds missing or repeated")
    for t in targets:
        if not t.get("expr", "").strip():
            errors.append(f"{panel['title']}: empty expr")
        if t["expr"].count("(") != t["expr"].count(")") or t["expr"].count("{") != t["expr"].count("}"):
            errors.append(f"{panel['title']}: unbalanced brackets in {t['expr']}")
if not dash.get("uid") or not dash.get("title"):
    errors.append("dashboard without uid or title")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
    note "ok: deploy/grafana/ringws.json"
else
    fail "deploy/grafana/ringws.json"
fi

# --- metric names against a live server ---------------------------------------------------------------
if cargo test -q -p ringws --test deploy_files_use_real_metrics >"$work/names.log" 2>&1; then
    note "ok: every metric in rules and dashboard is exported"
else
    cat "$work/names.log" >&2
    fail "metric names (cargo test --test deploy_files_use_real_metrics)"
fi

if [ "$failures" -gt 0 ]; then
    echo "check_deploy: $failures check(s) failed" >&2
    exit 1
fi
note "all deployment checks passed"
