#!/usr/bin/env bash
# Checks the deployment files in deploy/ with the real tools where they are installed:
#   deploy/ringws.service              systemd-analyze verify (and the offline security score, for information)
#   deploy/sysctl.conf                 every line is `key = value` and names a sysctl this kernel has
#   deploy/prometheus/ringws.rules.yml promtool check rules, promtool test rules (ringws.rules.test.yml);
#                                      without promtool, a structural check of the YAML (python3-yaml)
#   deploy/grafana/ringws.json         valid JSON, every panel has queries, unique ids and refIds; every
#                                      query parses as PromQL (promtool, Grafana's variables given values)
#   every metric in rules and dashboard is exported by a live server (tests/deploy_files_use_real_metrics.rs)
#   deploy/nginx.conf, deploy/haproxy.cfg  nginx -t, haproxy -c on copies with local ports and paths; then
#                                      live: two ringws nodes (debug build), the second with a --broker
#                                      link that cannot come up (its /healthz answers 503), each proxy in
#                                      turn in front of them (as this user, files in a temp dir, stopped by
#                                      PID), and `ringws-loadgen echo` through it: 0 errors; nginx (passive
#                                      checks only) spreads the WebSockets over both nodes, HAProxy's
#                                      /healthz check takes the 503 node out and sends every one to the other
# A missing tool is skipped with a note (Debian packages: systemd, prometheus, python3-yaml, nginx-light,
# haproxy); a failed check fails the script. Cheap: about ten seconds once the debug build exists. Every
# process it starts is stopped by PID before it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

failures=0
fail() {
    echo "check_deploy: FAILED: $*" >&2
    failures=$((failures + 1))
}
note() { echo "check_deploy: $*"; }

work=$(mktemp -d)
PIDS=()
cleanup() {
    stop_pid "${PIDS[@]}"
    rm -rf "$work"
}
trap cleanup EXIT

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

# The load balancers, installed the same way (their Debian services are not used: each check runs its own).
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        note "installing nginx-light and haproxy"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light haproxy >/dev/null
    else
        note "nginx or haproxy missing and not root: those checks are skipped"
    fi
fi
PATH=$PATH:/usr/sbin

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

# --- load balancers -----------------------------------------------------------------------------------
# through NAME PORT OUT: 8 echo connections for a second through the proxy on PORT; the JSON report in OUT.
# True when the run completed with 0 errors and every connection opened.
through() {
    local name=$1 port=$2 out=$3
    if ! target/debug/ringws-loadgen echo --url "ws://127.0.0.1:$port/" -c 8 -d 1 -t 1 -s 32 -q \
        --connect-timeout 5 --ramp-timeout 5 --json "$out" >"$out.log" 2>&1; then
        cat "$out.log" >&2
        fail "$name: ringws-loadgen echo through the proxy failed"
        return 1
    fi
    if ! python3 - "$out" <<'EOF'; then
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["errors_total"] == 0 and r["ramp"]["connected"] == 8 and r["received"] > 0
print(f"errors={r['errors_total']} {r['errors']} connected={r['ramp']['connected']} echoed={r['received']}")
sys.exit(0 if ok else 1)
EOF
        fail "$name: WebSockets through the proxy: errors, or not all 8 connected"
        return 1
    fi
}
# lb_copy FILE OUT PROXY_PORT NODE1_PORT NODE2_PORT DIR: FILE with the public port, the two nodes and
# every path (pid, logs, sockets, nginx's temp files) moved to local ports and DIR, logs to stdout, no
# `user` switch, and HAProxy's maxconn within an ordinary open-file limit.
lb_copy() {
    sed -e "s#listen 80;#listen 127.0.0.1:$3;#; s#bind :80\$#bind 127.0.0.1:$3#" \
        -e "s#10\.0\.0\.11:8080#127.0.0.1:$4#; s#10\.0\.0\.12:8080#127.0.0.1:$5#" \
        -e "s#/var/log/nginx/#$6/#; s#/run/nginx.pid#$6/nginx.pid#; s#/run/haproxy/#$6/#" \
        -e '/^user /d; s#log /dev/log local0#log stdout format raw local0#; s#maxconn 100000#maxconn 1000#' \
        -e "s#^http {\$#http {\n    client_body_temp_path $6/body;\n    proxy_temp_path $6/proxy;\n    fastcgi_temp_path $6/fastcgi;\n    uwsgi_temp_path $6/uwsgi;\n    scgi_temp_path $6/scgi;#" \
        "$1" >"$2"
}

if command -v nginx >/dev/null || command -v haproxy >/dev/null; then
    cargo build -q -p ringws --bin ringws -p ringws-loadgen --bin ringws-loadgen
    # Node 1 is healthy; node 2's Redis link can never come up (nothing listens on its port), so its
    # /healthz answers 503 while it serves WebSockets as usual.
    start_listening "$work/node1.out" target/debug/ringws serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin
    PIDS+=("$BG_PID"); node1=$LISTEN_PORT
    start_listening "$work/node2.out" target/debug/ringws serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin \
        --broker "redis://127.0.0.1:$(free_port)"
    PIDS+=("$BG_PID"); node2=$LISTEN_PORT
    health2=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$node2/healthz")
    [ "$health2" = 503 ] || fail "node 2 (--broker down) answers /healthz $health2, expected 503"
fi

if command -v nginx >/dev/null; then
    mkdir -p "$work/nginx"
    port=$(free_port)
    lb_copy deploy/nginx.conf "$work/nginx/nginx.conf" "$port" "$node1" "$node2" "$work/nginx"
    if nginx -t -q -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf"; then
        note "ok: nginx -t deploy/nginx.conf"
        nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
            >"$work/nginx/stdout" 2>&1 &
        nginx_pid=$!
        PIDS+=("$nginx_pid")
        for _ in $(seq 100); do
            curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
            sleep 0.05
        done
        a0=$(metric_sum "$node1" ringws_websockets_total); b0=$(metric_sum "$node2" ringws_websockets_total)
        if through nginx "$port" "$work/nginx/echo.json"; then
            a=$(($(metric_sum "$node1" ringws_websockets_total) - a0)); b=$(($(metric_sum "$node2" ringws_websockets_total) - b0))
            # Passive checks only: the 503 node keeps its share.
            if [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ $((a + b)) = 8 ]; then
                note "ok: 8 WebSockets through nginx, 0 errors, least_conn spread them $a/$b (node 2's /healthz 503 goes unseen: passive checks)"
            else
                fail "nginx: WebSockets per node $a/$b, expected both used and 8 in all"
            fi
        fi
        stop_pid "$nginx_pid"
    else
        fail "nginx -t deploy/nginx.conf"
    fi
else
    note "skipped: nginx not installed (Debian package nginx-light)"
fi

if command -v haproxy >/dev/null; then
    mkdir -p "$work/haproxy"
    port=$(free_port)
    lb_copy deploy/haproxy.cfg "$work/haproxy/haproxy.cfg" "$port" "$node1" "$node2" "$work/haproxy"
    if haproxy -q -c -f "$work/haproxy/haproxy.cfg"; then
        note "ok: haproxy -c deploy/haproxy.cfg"
        haproxy -f "$work/haproxy/haproxy.cfg" -db >"$work/haproxy/stdout" 2>&1 &
        haproxy_pid=$!
        PIDS+=("$haproxy_pid")
        # Node 2 leaves rotation after its failed checks (fall 2, inter 2s): read the state on the socket.
        state=""
        for _ in $(seq 100); do
            state=$(python3 - "$work/haproxy/ringws.sock" <<'EOF' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
rows = [line.split(",") for line in data.decode().splitlines() if line.startswith("ringws_nodes,node")]
print(" ".join(f"{row[1]}={row[17]}" for row in rows))
EOF
)
            [ "$state" = "node1=UP node2=DOWN" ] && break
            kill -0 "$haproxy_pid" 2>/dev/null || break
            sleep 0.1
        done
        if [ "$state" = "node1=UP node2=DOWN" ]; then
            a0=$(metric_sum "$node1" ringws_websockets_total); b0=$(metric_sum "$node2" ringws_websockets_total)
            if through haproxy "$port" "$work/haproxy/echo.json"; then
                a=$(($(metric_sum "$node1" ringws_websockets_total) - a0)); b=$(($(metric_sum "$node2" ringws_websockets_total) - b0))
                if [ "$a" = 8 ] && [ "$b" = 0 ]; then
                    note "ok: haproxy took node 2 (/healthz 503) out; 8 WebSockets through it to node 1, 0 errors"
                else
                    fail "haproxy: WebSockets per node $a/$b, expected 8/0 (node 2 is down)"
                fi
            fi
        else
            cat "$work/haproxy/stdout" >&2
            fail "haproxy: node states '$state', expected node1=UP node2=DOWN (the /healthz check)"
        fi
        stop_pid "$haproxy_pid"
    else
        fail "haproxy -c deploy/haproxy.cfg"
    fi
else
    note "skipped: haproxy not installed (Debian package haproxy)"
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
