#!/usr/bin/env bash
# What the channels features cost (docs/BENCHMARKS.md "Channels: auth, presence, history"), one node, every
# variant of a section in the same run, alternating, ROUNDS rounds, medians. Server `ringws serve --mode
# pubsub` pinned to CPU 0 (`--no-pin`), `ringws-loadgen` (one thread) pinned to CPU 1; loopback only; every
# process started and stopped by its PID. Server CPU is the time on CPU of its threads (schedstat, in ns),
# read by a sampler every 50 ms together with the server's /metrics (its 20 requests/s are in every
# variant's CPU alike).
#
# Sections (SECTIONS="plain history presence auth memory", default all):
#
# plain     The plain pub/sub path before and after the channels work: server CPU per delivery, `--workers
#           1`, SUBS raw subscribers (`?topic=bench`) of one topic, one publisher (`ringws-loadgen broadcast
#           --topic bench`), 16 B and 1 KiB payloads, BASE (the build before) against RINGWS (no history,
#           no presence). DELIVERIES deliveries/s asked for 16 B, DELIVERIES_1K for 1 KiB. The window is the
#           one fanout.sh uses: from the first sample with every connection open to the last in which
#           `ringws_deliveries_total` grew; CPU per delivery = window CPU / window deliveries.
# history   RINGWS with `--history-size 0` against `--history-size 1000`, same load: 1 subscriber
#           (PUB1_RATE publishes/s) and SUBS subscribers (as in plain), 16 B and 1 KiB;
#           CPU per publish (deliveries / subscribers in the window). Then 2 publishers with `--workers 2`
#           (both workers on CPU 0), 16 B: CPU per publish and `ringws_history_catch_ups_total` per publish (a
#           worker reading a publication back from the history because a later one reached it first).
#           Every run also prints the server's history entries and `ringws_history_bytes` per entry after
#           the load, and the check column names any handoff drop or history delivery gap it counted.
# presence  churn cycles (connect to `/?topic=t`, one text message, close) with and without `--presence`:
#           CPU per cycle; the difference is one join and one leave (no presence watcher: no event sent).
#           The loadgen's churn closes a cycle after its echo; a pub/sub server answers the message (not a
#           command) with a `{"error":...}` reply instead, which the loadgen counts as a mismatch: expected
#           here, one per cycle, the same in every variant.
# auth      the same churn with no auth (the URL still carries the HS256 token, ignored) against
#           `--auth-jwt-secret-file` (HS256, `?token=`) and `--auth-jwt-public-key` (ES256, P-256 key made
#           with openssl, tokens signed with openssl): CPU per cycle; the difference is the verification.
#           Cycles = growth of `ringws_websockets_total`; `ringws_auth_failures_total` must stay 0.
# memory    a fresh `--workers 1 --history-size 10` server (and, for comparison, one with history off);
#           one WebSocket client (python, pinned to CPU 1) publishes one 100-byte message to each of TOPICS
#           topics, then 9 more to each; VmRSS before, after the first pass and after the second (each read
#           once `ringws_messages_in_total` shows every publish handled), divided per topic, beside what
#           `ringws_history_bytes` counts.
#
# The rates are set low enough for one load generator thread to keep up on a shared machine (a run whose
# load generator missed deliveries says so in its check column): CPU per delivery depends on the rate
# (the worker batches more per wake-up as it rises), so compare variants within a row, not rows.
#
# Usage: scripts/channels_bench.sh   (env: SECTIONS, ROUNDS=3, DUR=4 (s per load run), SUBS=100,
#        DELIVERIES=1000000, DELIVERIES_1K=200000, PUB1_RATE=20000, CHURN_RATE=2000, CHURN_SLOTS=50, TOPICS=10000,
#        SIZES="16 1024" (plain, history), HIST_SUBS="1 $SUBS", HIST_W2=1 (0: no 2-worker runs),
#        RINGWS=target/release/ringws, LOADGEN=target/release/ringws-loadgen, BASE=<ringws before>)
# Needs: release builds (cargo build --release -p ringws -p ringws-loadgen), python3, openssl (auth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}; BASE=${BASE:-}
SECTIONS=${SECTIONS:-"plain history presence auth memory"}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-4}; SUBS=${SUBS:-100}; DELIVERIES=${DELIVERIES:-1000000}
DELIVERIES_1K=${DELIVERIES_1K:-200000}; PUB1_RATE=${PUB1_RATE:-20000}; CHURN_RATE=${CHURN_RATE:-2000}
CHURN_SLOTS=${CHURN_SLOTS:-50}
TOPICS=${TOPICS:-10000}; SIZES=${SIZES:-"16 1024"}; HIST_SUBS=${HIST_SUBS:-"1 $SUBS"}; HIST_W2=${HIST_W2:-1}
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
if [[ " $SECTIONS " == *" plain "* ]]; then
  require_executable "BASE=<the ringws binary built before the channels work>" "$BASE"
fi

WORK=$(mktemp -d)
RESULTS=$WORK/results
SERVER_PID=""
LOADGEN_PID=""
cleanup() {
  stop_pid "$LOADGEN_PID" "$SERVER_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

# The sampler: while process LPID lives, prints "t cpu_ns open v1 v2 ..." every 50 ms: the server's CPU
# time in ns (the sum over its threads of /proc/PID/task/TID/schedstat's time on CPU, user and kernel; the
# mean of a read before and after the /metrics request), ringws_websockets_open and each metric named
# (summed over its series).
cat >"$WORK/sampler.py" <<'EOF'
import os, socket, sys, time
pid, port, lpid, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def cpu():
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except OSError:
            pass
    return total
def metrics():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    vals = {}
    for line in data.decode().splitlines():
        if line.startswith("ringws_"):
            name, _, v = line.rpartition(" ")
            name = name.split("{")[0]
            vals[name] = vals.get(name, 0) + float(v)
    return [int(vals.get(n, 0)) for n in ["ringws_websockets_open"] + names]
def alive():
    try:
        return open(f"/proc/{lpid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while alive():
    c0 = cpu(); m = metrics(); c1 = cpu()
    print(time.monotonic(), (c0 + c1) / 2, *m, flush=True)
    time.sleep(0.05)
# Two more samples after the load generator is gone, so that the last counted work is in the window.
for _ in range(2):
    time.sleep(0.05)
    c0 = cpu(); m = metrics(); c1 = cpu()
    print(time.monotonic(), (c0 + c1) / 2, *m, flush=True)
EOF

# start_server BINARY ARGS...: a `serve --mode pubsub` on an ephemeral port, pinned to CPU 0. Its stdout
# goes to a new file each time: the background start truncates a reused one only later, and the previous
# server's listening line would be read first.
start_server() {
  local bin=$1 out
  shift
  out=$(mktemp -p "$WORK" server.XXXXXX)
  start_listening --cpu 0 "$out" "$bin" serve --bind 127.0.0.1 --port 0 --no-pin --mode pubsub \
    --max-backpressure 64MiB --idle-timeout 0 "$@"
  SERVER_PID=$BG_PID
}

# sample_while_loadgen PORT METRIC...: samples the server into $WORK/samples until $LOADGEN_PID ends.
sample_while_loadgen() {
  local port=$1
  shift
  python3 "$WORK/sampler.py" "$SERVER_PID" "$port" "$LOADGEN_PID" "$@" >"$WORK/samples"
  wait "$LOADGEN_PID" || true
  LOADGEN_PID=""
}

# broadcast_run SECTION VARIANT CASE ROUND SUBS PUBS SIZE RATE BINARY ARGS...: one fanout run; appends a
# result line "section|variant|case|round|ns_per_delivery|ns_per_publish|catch_ups_per_publish|
# deliveries_per_s|history_entries|history_bytes_per_entry|check" to $RESULTS and prints it (the last two
# as the server's gauges read after the load).
broadcast_run() {
  local section=$1 variant=$2 label=$3 round=$4 subs=$5 pubs=$6 size=$7 rate=$8 bin=$9 port
  shift 9
  start_server "$bin" "$@"
  port=$LISTEN_PORT
  taskset -c 1 "$LOADGEN" broadcast --url "ws://127.0.0.1:$port/" --topic bench -c "$subs" --publishers "$pubs" \
    -s "$size" --rate "$rate" -d "$DUR" -t 1 -q --json "$WORK/load.json" >/dev/null 2>&1 &
  LOADGEN_PID=$!
  sample_while_loadgen "$port" ringws_deliveries_total ringws_history_catch_ups_total ringws_history_appended_total \
    ringws_history_entries ringws_history_bytes ringws_handoff_drops_total ringws_history_delivery_gaps_total
  stop_pid "$SERVER_PID"
  SERVER_PID=""
  python3 - "$WORK/load.json" "$WORK/samples" "$subs" "$pubs" "$section|$variant|$label|$round" <<'EOF' | tee -a "$RESULTS"
import json, sys
jpath, spath, subs, pubs, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
raw = open(jpath).read()
j = json.loads(raw[raw.index("{"):]) if "{" in raw else {}
b = j.get("broadcast", {})
rows = [tuple(map(float, l.split())) for l in open(spath) if l.strip()]
# columns: t cpu_ns open deliveries catch_ups appended entries bytes handoff_drops delivery_gaps
start = next((i for i, r in enumerate(rows) if r[2] >= subs + pubs), None)
end = max((i for i in range(1, len(rows)) if rows[i][3] > rows[i - 1][3]), default=None)
if start is None or end is None or end <= start:
    print(f"{key}|nan|nan|nan|0|no publish window ({len(rows)} samples)"); sys.exit()
secs = rows[end][0] - rows[start][0]
cpu_ns = rows[end][1] - rows[start][1]
deliveries = rows[end][3] - rows[start][3]
publishes = deliveries / subs
catch_ups = rows[end][4] - rows[start][4]
clean = (b.get("expected") == b.get("delivered") and not b.get("missing") and not b.get("duplicates")
         and not b.get("out_of_order") and not j.get("errors_total"))
check = "clean" if clean else (f"expected={b.get('expected')} delivered={b.get('delivered')} missing={b.get('missing')} "
                               f"dup={b.get('duplicates')} ooo={b.get('out_of_order')} errors={j.get('errors_total')}")
last = rows[-1]
if last[8] or last[9]:
    check += f" (server: handoff drops {last[8]:.0f}, history delivery gaps {last[9]:.0f})"
# At the end: the history's entries and ringws_history_bytes per entry.
per_entry = last[7] / last[6] if last[6] else float("nan")
print(f"{key}|{cpu_ns / max(deliveries, 1):.0f}|{cpu_ns / max(publishes, 1):.0f}|{catch_ups / max(publishes, 1):.4f}"
      f"|{deliveries / max(secs, 1e-9):.0f}|{last[6]:.0f}|{per_entry:.0f}|{check}")
EOF
}

# churn_run SECTION VARIANT ROUND URL_QUERY BINARY ARGS...: one churn run (CHURN_RATE cycles/s over
# CHURN_SLOTS slots, one text message each); appends "section|variant|case|round|ns_per_cycle|cycles|
# cycles_per_s|joins|auth_failures|check".
churn_run() {
  local section=$1 variant=$2 round=$3 query=$4 bin=$5 port
  shift 5
  start_server "$bin" "$@"
  port=$LISTEN_PORT
  taskset -c 1 "$LOADGEN" churn --url "ws://127.0.0.1:$port/?$query" -c "$CHURN_SLOTS" --rate "$CHURN_RATE" -m 1 \
    --kind text -d "$DUR" -t 1 -q --json "$WORK/load.json" >/dev/null 2>&1 &
  LOADGEN_PID=$!
  sample_while_loadgen "$port" ringws_websockets_total ringws_presence_joins_total ringws_auth_failures_total
  stop_pid "$SERVER_PID"
  SERVER_PID=""
  python3 - "$WORK/load.json" "$WORK/samples" "$section|$variant|churn|$round" <<'EOF' | tee -a "$RESULTS"
import json, sys
jpath, spath, key = sys.argv[1], sys.argv[2], sys.argv[3]
raw = open(jpath).read()
j = json.loads(raw[raw.index("{"):]) if "{" in raw else {}
rows = [tuple(map(float, l.split())) for l in open(spath) if l.strip()]
# columns: t cpu_ns open websockets_total joins auth_failures
grew = [i for i in range(1, len(rows)) if rows[i][3] > rows[i - 1][3]]
if not grew:
    print(f"{key}|nan|0|0|0|0|no upgrade counted ({len(rows)} samples)"); sys.exit()
start, end = grew[0] - 1, grew[-1]
secs = rows[end][0] - rows[start][0]
cycles = rows[end][3] - rows[start][3]
cpu_ns = rows[end][1] - rows[start][1]
c = j.get("counters", {})
errors = {k: v for k, v in j.get("errors", {}).items() if v}
# The one reply per cycle (an error: the message is no command) is counted as a mismatch; anything else
# is a real error.
other = {k: v for k, v in errors.items() if k != "payload_mismatch"}
replies = errors.get("payload_mismatch", 0) == c.get("churn_cycles", -1)
check = "clean" if not other and replies and c.get("churn_cycles", 0) > 0 else f"cycles={c.get('churn_cycles')} errors={errors}"
print(f"{key}|{cpu_ns / max(cycles, 1):.0f}|{cycles:.0f}|{cycles / max(secs, 1e-9):.0f}|{rows[end][4]:.0f}"
      f"|{rows[end][5]:.0f}|{check}")
EOF
}

# table SECTION COLUMN LABEL VARIANT...: a markdown table of SECTION's results: one row per case, for each
# variant its median of field COLUMN (1-based among the figures after the round) and its rounds, and the
# ratio of each variant's median to the first's.
table() {
  python3 - "$RESULTS" "$@" <<'EOF'
import statistics, sys
path, section, column, label, variants = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
rows = [l.rstrip("\n").split("|") for l in open(path) if l.startswith(section + "|")]
cases = list(dict.fromkeys(r[2] for r in rows))
def fig(v):
    try:
        return float(v)
    except ValueError:
        return float("nan")
head = ["case"] + [f"{v} {label} (median)" for v in variants] + [f"{v} rounds" for v in variants]
head += [f"{v} / {variants[0]}" for v in variants[1:]]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for case in cases:
    meds, rounds = [], []
    for v in variants:
        vals = [fig(r[3 + column]) for r in rows if r[1] == v and r[2] == case]
        good = [x for x in vals if x == x]
        meds.append(statistics.median(good) if good else float("nan"))
        rounds.append(", ".join(f"{x:,.4g}" if x < 10 else f"{x:,.0f}" for x in vals))
    ratios = [f"{m / meds[0]:.3f}" if meds[0] == meds[0] and meds[0] else "-" for m in meds[1:]]
    fmt = lambda m: f"{m:,.4f}" if m < 10 else f"{m:,.0f}"
    print("| " + " | ".join([case] + [fmt(m) for m in meds] + rounds + ratios) + " |")
checks = sorted({r[-1] for r in rows})
print(f"\nchecks: {', '.join(checks)}")
EOF
}

header() { # SECTION TITLE
  echo
  echo "## $1: $2"
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# RINGWS=$RINGWS ($(sha256sum "$RINGWS" | cut -c1-12)) LOADGEN=$LOADGEN BASE=${BASE:--} ROUNDS=$ROUNDS DUR=$DUR"
}

# fanout_rate SIZE SUBS: publishes/s for SUBS subscribers (DELIVERIES, or DELIVERIES_1K above 16 B).
fanout_rate() {
  local deliveries=$DELIVERIES
  [ "$1" -gt 16 ] && deliveries=$DELIVERIES_1K
  echo $((deliveries / $2))
}

section_plain() {
  header plain "server ns CPU per delivery, $SUBS raw subscribers, 1 publisher, --workers 1, base vs main"
  echo "# BASE=$BASE ($(sha256sum "$BASE" | cut -c1-12))"
  local round size rate variant bin
  for round in $(seq "$ROUNDS"); do
    for size in $SIZES; do
      rate=$(fanout_rate "$size" "$SUBS")
      for variant in base main; do
        bin=$RINGWS; [ "$variant" = base ] && bin=$BASE
        broadcast_run plain "$variant" "${SUBS}subs-${size}B-${rate}pub/s" "$round" "$SUBS" 1 "$size" "$rate" \
          "$bin" --workers 1
      done
    done
  done
  echo "# command: $RINGWS serve --mode pubsub --workers 1 --no-pin --max-backpressure 64MiB --idle-timeout 0;"
  echo "#          $LOADGEN broadcast --topic bench -c $SUBS --publishers 1 -s SIZE --rate RATE -d $DUR -t 1"
  table plain 1 "ns/delivery" base main
}

section_history() {
  header history "server ns CPU per publish, --history-size 0 vs 1000"
  local round size hist subs rate name
  for round in $(seq "$ROUNDS"); do
    for size in $SIZES; do
      for subs in $HIST_SUBS; do
        if [ "$subs" -eq 1 ]; then rate=$PUB1_RATE; else rate=$(fanout_rate "$size" "$subs"); fi
        name="1pub-${subs}subs-${size}B-${rate}pub/s-w1"
        for hist in 0 1000; do
          broadcast_run history "hist$hist" "$name" "$round" "$subs" 1 "$size" "$rate" "$RINGWS" --workers 1 \
            --history-size "$hist"
        done
      done
    done
    rate=$(fanout_rate 16 "$SUBS")
    [ "$HIST_W2" = 1 ] || continue
    for hist in 0 1000; do
      broadcast_run history "hist$hist" "2pub-${SUBS}subs-16B-${rate}pub/s-w2" "$round" "$SUBS" 2 16 "$rate" \
        "$RINGWS" --workers 2 --history-size "$hist"
    done
  done
  echo "# command: $RINGWS serve --mode pubsub --workers W --history-size H --no-pin --max-backpressure 64MiB --idle-timeout 0;"
  echo "#          $LOADGEN broadcast --topic bench -c SUBS --publishers P -s SIZE --rate RATE -d $DUR -t 1"
  table history 2 "ns/publish" hist0 hist1000
  echo
  table history 1 "ns/delivery" hist0 hist1000
  echo
  table history 3 "catch-ups/publish" hist0 hist1000
  echo
  table history 5 "history entries at the end" hist0 hist1000
  echo
  table history 6 "ringws_history_bytes per entry at the end" hist0 hist1000
}

section_presence() {
  header presence "server ns CPU per churn cycle (connect /?topic=t, 1 message, close), --presence off vs on"
  local round
  for round in $(seq "$ROUNDS"); do
    churn_run presence off "$round" "topic=t" "$RINGWS" --workers 1
    churn_run presence on "$round" "topic=t" "$RINGWS" --workers 1 --presence
  done
  echo "# command: $RINGWS serve --mode pubsub --workers 1 [--presence] --no-pin --max-backpressure 64MiB --idle-timeout 0;"
  echo "#          $LOADGEN churn --url ws://127.0.0.1:PORT/?topic=t -c $CHURN_SLOTS --rate $CHURN_RATE -m 1 --kind text -d $DUR -t 1"
  table presence 1 "ns/cycle" off on
  echo
  table presence 3 "cycles/s" off on
  echo
  table presence 4 "joins counted" off on
}

# b64url: stdin to base64url without padding.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# make_tokens: an HS256 secret and token, a P-256 key pair and an ES256 token, in $WORK (HS_TOKEN,
# ES_TOKEN). Claims: sub, exp (an hour ahead), channels {sub: [t], pub: [t]}.
make_tokens() {
  local claims sig der
  head -c 32 /dev/urandom | base64 -w0 >"$WORK/hs.secret"
  openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/es.key" 2>/dev/null
  openssl ec -in "$WORK/es.key" -pubout -out "$WORK/es.pub" 2>/dev/null
  claims=$(printf '{"sub":"bench","exp":%d,"channels":{"sub":["t"],"pub":["t"]}}' $(($(date +%s) + 3600)) | b64url)
  local hs_input es_input
  hs_input="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url).$claims"
  sig=$(printf '%s' "$hs_input" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$WORK/hs.secret")" -binary | b64url)
  HS_TOKEN="$hs_input.$sig"
  es_input="$(printf '{"alg":"ES256","typ":"JWT"}' | b64url).$claims"
  der=$WORK/es.sig
  printf '%s' "$es_input" | openssl dgst -sha256 -sign "$WORK/es.key" -binary >"$der"
  # JWS wants r || s (32 bytes each), openssl gives an ASN.1 DER SEQUENCE of two INTEGERs.
  sig=$(python3 - "$der" <<'EOF' | b64url
import sys
d = open(sys.argv[1], "rb").read()
def read_int(d, i):
    assert d[i] == 2
    n = d[i + 1]
    return int.from_bytes(d[i + 2:i + 2 + n], "big"), i + 2 + n
assert d[0] == 0x30
i = 3 if d[1] & 0x80 else 2
r, i = read_int(d, i)
s, _ = read_int(d, i)
sys.stdout.buffer.write(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
EOF
)
  ES_TOKEN="$es_input.$sig"
}

section_auth() {
  header auth "server ns CPU per churn cycle (connect /?topic=t&token=JWT, 1 message, close): no auth vs HS256 vs ES256"
  make_tokens
  echo "# HS256 token ${#HS_TOKEN} bytes, ES256 token ${#ES_TOKEN} bytes"
  local round
  for round in $(seq "$ROUNDS"); do
    churn_run auth none "$round" "topic=t&token=$HS_TOKEN" "$RINGWS" --workers 1
    churn_run auth hs256 "$round" "topic=t&token=$HS_TOKEN" "$RINGWS" --workers 1 \
      --auth-jwt-secret-file "$WORK/hs.secret"
    churn_run auth es256 "$round" "topic=t&token=$ES_TOKEN" "$RINGWS" --workers 1 \
      --auth-jwt-public-key "$WORK/es.pub"
  done
  echo "# command: $RINGWS serve --mode pubsub --workers 1 [--auth-jwt-secret-file F | --auth-jwt-public-key P] --no-pin ...;"
  echo "#          $LOADGEN churn --url 'ws://127.0.0.1:PORT/?topic=t&token=JWT' -c $CHURN_SLOTS --rate $CHURN_RATE -m 1 --kind text -d $DUR -t 1"
  table auth 1 "ns/cycle" none hs256 es256
  echo
  table auth 3 "cycles/s" none hs256 es256
  echo
  table auth 5 "auth failures" none hs256 es256
}

# The memory section's client: connects to 127.0.0.1:PORT, publishes one 100-byte text message to each of
# TOPICS topics, waits for ringws_messages_in_total to count them, reads VmRSS; then 9 more per topic. Prints
# "phase rss_kib history_topics history_entries history_bytes".
cat >"$WORK/memory.py" <<'EOF'
import base64, os, socket, sys, time
pid, port, topics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def metrics():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    vals = {}
    for line in data.decode().splitlines():
        if line.startswith("ringws_"):
            name, _, v = line.rpartition(" ")
            vals[name.split("{")[0]] = vals.get(name.split("{")[0], 0) + float(v)
    return vals
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def report(phase):
    m = metrics()
    print(phase, rss(), *(int(m.get(n, 0)) for n in
          ("ringws_history_topics", "ringws_history_entries", "ringws_history_bytes")), flush=True)
def frame(payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    masked = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return head + mask + masked.to_bytes(n, "big")
ws = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
ws.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
resp = b""
while b"\r\n\r\n" not in resp:
    resp += ws.recv(4096)
assert resp.startswith(b"HTTP/1.1 101"), resp
time.sleep(0.5)
base_in = metrics().get("ringws_messages_in_total", 0)
report("before")
data = "x" * 100
sent = 0
for rnd in range(10):
    batch = b"".join(frame(f'{{"op":"pub","topic":"m.{t}","data":"{data}"}}'.encode()) for t in range(topics))
    ws.sendall(batch)
    sent += topics
    if rnd == 0 or rnd == 9:
        deadline = time.time() + 60
        while metrics().get("ringws_messages_in_total", 0) - base_in < sent:
            assert time.time() < deadline, "the server did not count every publish within 60 s"
            time.sleep(0.1)
        time.sleep(0.5)
        report("after1" if rnd == 0 else "after10")
ws.close()
EOF

section_memory() {
  header memory "VmRSS per topic, $TOPICS topics, 100-byte messages, --workers 1"
  local round hist port
  for round in $(seq "$ROUNDS"); do
    for hist in 10 0; do
      start_server "$RINGWS" --workers 1 --history-size "$hist"
      port=$LISTEN_PORT
      taskset -c 1 python3 "$WORK/memory.py" "$SERVER_PID" "$port" "$TOPICS" >"$WORK/mem"
      stop_pid "$SERVER_PID"
      SERVER_PID=""
      python3 - "$WORK/mem" "$TOPICS" "memory|hist$hist|$TOPICS-topics|$round" <<'EOF' | tee -a "$RESULTS"
import sys
rows = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[1]) if l.strip()}
topics, key = int(sys.argv[2]), sys.argv[3]
b, a1, a10 = rows["before"], rows["after1"], rows["after10"]
per = lambda a: (a[0] - b[0]) * 1024 / topics
hist = lambda a: a[3] / topics
# fields: rss B/topic after 1, history_bytes/topic after 1, rss B/topic after 10, history_bytes/topic
# after 10, rss KiB before, history topics after 10, history entries after 10
print(f"{key}|{per(a1):.0f}|{hist(a1):.0f}|{per(a10):.0f}|{hist(a10):.0f}|{b[0]}|{a10[1]}|{a10[2]}|clean")
EOF
    done
  done
  echo "# command: $RINGWS serve --mode pubsub --workers 1 --history-size H --no-pin --max-backpressure 64MiB --idle-timeout 0;"
  echo "#          python client: {\"op\":\"pub\",\"topic\":\"m.N\",\"data\":\"<100 x>\"} for N < $TOPICS, once, then 9 more times"
  table memory 1 "RSS B/topic, 1 msg each" hist10 hist0
  echo
  table memory 2 "history_bytes/topic, 1 msg each" hist10 hist0
  echo
  table memory 3 "RSS B/topic, 10 msgs each" hist10 hist0
  echo
  table memory 4 "history_bytes/topic, 10 msgs each" hist10 hist0
  echo
  table memory 7 "history entries" hist10 hist0
}

echo "# scripts/channels_bench.sh SECTIONS=\"$SECTIONS\" $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)"
for section in $SECTIONS; do
  case $section in
    plain | history | presence | auth | memory) "section_$section" ;;
    *) echo "unknown section $section (plain history presence auth memory)" >&2; exit 2 ;;
  esac
done
