#!/usr/bin/env bash
# bench-replication.sh — what asynchronous replication to a secondary costs, and how long a
# failover through the bunker takes, one command, under 3 minutes (after the release build).
#
# Builds ferrite in release mode, then, in the same window:
#   a. replication throughput over loopback: a primary (`ferrite serve` on TARGET_CORE) exports a
#      `local-only` volume (uring data + log files) over NVMe/TCP, driven by `ferrite perf -r` on
#      PERF_CORE: (1) with no secondary; then, for every row, a fresh volume (its own log) on the
#      same data file with a fresh secondary (a second `ferrite serve` on SECONDARY_CORE)
#      attached by replication_create, its data, staging and log bdevs (2) RAM disks (a remote
#      node with disks of its own: what replication itself costs) or (3) files on the same disk
#      as the primary's (this machine as it is: the secondary's writes compete with the
#      primary's). Rows: 4 KiB random write QD32 and 128 KiB sequential write QD8, BENCH_TIME s
#      after a 1 s warm-up. With a secondary, a watcher polls replication_status: the primary's
#      committed log rate and the secondary's applied rate, the lag (lag_bytes, lag_seconds)
#      0.3 s before the run ends, a drop (the secondary fell 90% of the log behind), and after
#      the run the time until the secondary's own applied end reached the final committed end
#      ("drain") and until the primary's status read lag_bytes 0 ("status 0": it trails by up to
#      the idle reactor's max_sleep_ms). Bar: IOPS with a secondary / IOPS without >= 0.90.
#   b. failover time for a TAIL_MB bunker tail: a `bunker-sync` primary with a bunker ships to the
#      secondary through `ferrite proxy --rate-mbit RATE_MBIT` (so the secondary lags); TAIL_MB
#      are written in 128 KiB sequential writes QD8, the primary's view of the secondary lag is
#      recorded, the primary is SIGKILLed, and `volume_failover` on the secondary is timed (its
#      report: pull_ms, apply_ms, total_ms, bytes_from_bunker). Bar: total_ms under
#      1 s + bytes_from_bunker / (1 GB/s).
# Prints markdown tables (and the raw failover report).
#
# Knobs: BENCH_TIME (seconds per run, 5), BENCH_TARGET_CORE (0), BENCH_PERF_CORE (1),
#        BENCH_SECONDARY_CORE (secondary, bunker and proxy; PERF_CORE), BENCH_DATA_MB (data
#        files, 256), BENCH_LOG_MB (log, staging and bunker log files, 256; must hold TAIL_MB of
#        entries with their headers), BENCH_TAIL_MB (64),
#        BENCH_RATE_MBIT (proxy rate during b, 1), BENCH_LOG_BLOCK (log bdev block size, 512),
#        BENCH_DIR (scratch dir, /var/tmp), BENCH_JSON (also write all rows as JSON there),
#        BENCH_PERF_FLAGS (extra perf flags), BENCH_PERF_SPELL_US (the load generator's idle
#        spell, 0: it stands in for a host on another machine, and spinning while it awaits
#        responses took 0.27 of the core it shares with the secondary and the disk's completion
#        work; "" for perf's default), BENCH_SETUPS (the setups of a, "1 2 3"),
#        BENCH_FAILOVER (0 skips b), BENCH_ROUNDS (rounds of a, 3: each runs every setup of a
#        row back to back; the table shows medians), BENCH_SECONDARY_SPELL_US and
#        BENCH_PRIMARY_SPELL_US (reactor idle spells), BENCH_SECONDARY_NICE (nice level of the
#        secondary), BENCH_SECONDARY_SCHED (a chrt policy for the secondary, e.g. idle),
#        BENCH_PRIMARY_POLICY (the primary's reactor idle_policy: adaptive or busy),
#        BENCH_STATS_DIR (write both daemons' reactor_stats there after each run),
#        CARGO_TARGET_DIR (as cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

TIME=${BENCH_TIME:-5}
ROUNDS=${BENCH_ROUNDS:-3}
TCORE=${BENCH_TARGET_CORE:-0}
PCORE=${BENCH_PERF_CORE:-1}
SCORE=${BENCH_SECONDARY_CORE:-$PCORE}
DATA_MB=${BENCH_DATA_MB:-256}
LOG_MB=${BENCH_LOG_MB:-256}
TAIL_MB=${BENCH_TAIL_MB:-64}
RATE_MBIT=${BENCH_RATE_MBIT:-1}
LOG_BLOCK=${BENCH_LOG_BLOCK:-512}
PERF_FLAGS=${BENCH_PERF_FLAGS:-}
PERF_SPELL=${BENCH_PERF_SPELL_US-0}
[ -z "$PERF_SPELL" ] || PERF_FLAGS="--idle-spell-us $PERF_SPELL $PERF_FLAGS"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ferrite-bench-repl.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '[bench-repl %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

START=$(date +%s)
say "building (release)"
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-target}/release/ferrite
[ -x "$BIN" ] || die "no binary at $BIN"
LAYOUT=$(date +%s)

# a: data files of the primary and of setup (3)'s secondary, a log per (setup, row), and the
# staging and log of (3); b: the trio's files.
say "laying out files in $WORK"
mkdir -p "$WORK/a" "$WORK/b"
for f in a/p-data.img a/s-data.img b/p-data.img b/s-data.img; do
  dd if=/dev/zero of="$WORK/$f" bs=1M count="$DATA_MB" oflag=direct status=none
done
for f in a/log11.log a/log12.log a/log21.log a/log22.log a/log31.log a/log32.log a/s-stage.log a/s-log.log \
  b/p-log.log b/b-log.log b/s-stage.log b/s-log.log; do
  dd if=/dev/zero of="$WORK/$f" bs=1M count="$LOG_MB" oflag=direct status=none
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NQN=nqn.2026-11.io.ferrite:bench-repl

# bdev NAME FILE BLOCK: one [[bdev]] section (FILE malloc:MB: a RAM disk of MB MiB).
bdev() {
  case $2 in
    malloc:*) printf '[[bdev]]\ntype = "malloc"\nname = "%s"\nsize_mb = %s\nblock_size = %s\n' "$1" "${2#malloc:}" "$3" ;;
    *) printf '[[bdev]]\ntype = "uring"\nname = "%s"\nfilename = "%s"\nblock_size = %s\n' "$1" "$2" "$3" ;;
  esac
}
# serve NAME CORE [BDEV_ARGS...] (triples NAME FILE BLOCK): starts a daemon (pid in SERVED);
# its socket is $WORK/NAME.sock, its log $WORK/NAME.txt; waits until it answers.
serve() {
  local name=$1 core=$2
  shift 2
  {
    printf '[reactor]\ncores = [%s]\n' "$core"
    if [ "$name" = prim ] && [ -n "${BENCH_PRIMARY_POLICY:-}" ]; then
      printf 'idle_policy = "%s"\n' "$BENCH_PRIMARY_POLICY"
    fi
    if [ "$name" = prim ] && [ -n "${BENCH_PRIMARY_SPELL_US:-}" ]; then
      printf 'idle_spell_us = %s\n' "$BENCH_PRIMARY_SPELL_US"
    fi
    if [ "$name" = sec ] && [ -n "${BENCH_SECONDARY_SPELL_US:-}" ]; then
      printf 'idle_spell_us = %s\n' "$BENCH_SECONDARY_SPELL_US"
    fi
    printf '[memory]\nbuf_size = 135168\nbuf_count = 512\n'
    printf '[rpc]\nsocket = "%s/%s.sock"\n' "$WORK" "$name"
    while [ $# -gt 0 ]; do bdev "$1" "$2" "$3"; shift 3; done
  } > "$WORK/$name.toml"
  local nice=0
  [ "$name" = sec ] && nice=${BENCH_SECONDARY_NICE:-0}
  local sched=()
  [ "$name" = sec ] && [ -n "${BENCH_SECONDARY_SCHED:-}" ] && sched=(chrt --"$BENCH_SECONDARY_SCHED" 0)
  nice -n "$nice" "${sched[@]}" taskset -c "$core" "$BIN" serve --config "$WORK/$name.toml" > "$WORK/$name.txt" 2>&1 &
  SERVED=$!
  PIDS+=("$SERVED")
  for _ in $(seq 100); do
    "$BIN" -s "$WORK/$name.sock" rpc spdk_get_version > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$WORK/$name.txt" >&2
  die "$name did not start"
}
# rpc NAME METHOD [JSON]: prints the answer.
rpc() { "$BIN" -s "$WORK/$1.sock" rpc "$2" ${3:+"$3"}; }
# json EXPR: evaluates a python expression over the JSON on stdin (bound to `j`).
json() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"; }
# export NAME PORT [BDEV]: NVMe/TCP subsystem on 127.0.0.1:PORT, with BDEV as namespace 1.
export_nvmf() {
  rpc "$1" nvmf_create_transport '{"trtype": "TCP"}' > /dev/null
  rpc "$1" nvmf_create_subsystem "{\"nqn\": \"$NQN\", \"allow_any_host\": true}" > /dev/null
  [ -z "${3:-}" ] ||
    rpc "$1" nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$3\", \"nsid\": 1}}" > /dev/null
  rpc "$1" nvmf_subsystem_add_listener \
    "{\"nqn\": \"$NQN\", \"listen_address\": {\"trtype\": \"tcp\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$2\"}}" \
    > /dev/null
}
# ship NAME: the primary's view of its secondary (replication_status), one JSON line.
ship() { rpc "$1" replication_status | json 'json.dumps(j["primaries"][0]["secondary"])'; }
# wait_until WHAT SECONDS CMD...: polls CMD every 50 ms.
wait_until() {
  local what=$1 n=$(($2 * 20))
  shift 2
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.05; done
  die "timed out waiting for $what"
}
ship_up() { [ "$(ship "$1" | json '(j or {}).get("link")')" = up ]; }
trid() { echo "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:$1 subnqn:$NQN"; }

: > "$WORK/rows.jsonl"
# record SETUP WORKLOAD PERF_JSON [LAG_JSON]: appends one row.
record() {
  python3 - "$@" >> "$WORK/rows.jsonl" <<'PY'
import json, sys
setup, workload, path = sys.argv[1:4]
r = json.load(open(path))
l = r["latency_us"]
row = {"setup": setup, "workload": workload, "iops": r["iops"], "mib_per_s": r["mib_per_s"],
       "p50": l["p50"], "p99": l["p99"], "errors": r.get("errors", 0)}
if len(sys.argv) > 4:
    row.update(json.loads(sys.argv[4]))
print(json.dumps(row))
PY
}
ROWS=("randwrite 32 4096" "write 8 131072")
label() { echo "$(($3 / 1024))k $1 QD$2"; }

# ---- a. replication throughput -------------------------------------------------------------
# The lag watcher: polls replication_status on the primary (every 50 ms during the run, 10 ms
# after it), samples the lag SAMPLE_AT s after the start and measures the committed and applied
# rates over the measured part of the run (or up to a drop). Once DONE_FILE exists it polls the
# secondary too, until the primary's status reads lag_bytes 0 (at most 10 s): the drain is when
# the secondary's own applied end reached the primary's final committed end (the primary's
# status lags: it is refreshed by the volume's poller, which an idle reactor runs only when it
# wakes, up to max_sleep_ms later). Prints one JSON object.
cat > "$WORK/watch.py" <<'PY'
import json, os, socket, sys, time
psock, ssock, done = sys.argv[1:4]
sample_at, warmup, sector = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
def call(sock, method):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode())
    buf = b""
    while True:
        buf += s.recv(65536)
        try:
            return json.loads(buf)["result"]
        except json.JSONDecodeError:
            continue
t0 = time.monotonic()
samples, seen, sample, ended, after, zero, drop_t = [], [], None, None, None, None, None
while True:
    t = time.monotonic() - t0
    p = call(psock, "replication_status")["primaries"][0]
    committed, sec = p["committed"], p["secondary"]
    samples.append((t, committed, sec["applied"]))
    if sec["dropped"] and drop_t is None:
        drop_t = t
    if sample is None and t >= sample_at:
        sample = sec
    if ended is None and os.path.exists(done):
        ended, after = t, sec
        sample = sample or sec
    if ended is not None:
        seen.append((t, call(ssock, "replication_status")["secondaries"][0]["applied"]))
        if sec["dropped"] or t - ended > 10:
            break
        if sec["lag_bytes"] == 0:
            zero = (t - ended) * 1000
            break
    time.sleep(0.05 if ended is None else 0.01)
lo, hi = (warmup, ended or t) if drop_t is None or drop_t > warmup else (0, drop_t)
run = [x for x in samples if lo <= x[0] <= hi]
rate = lambda i: (run[-1][i] - run[0][i]) * sector / (run[-1][0] - run[0][0]) / 2**20 if len(run) > 1 else None
drain = None
if zero is not None:
    drain = next(((x - ended) * 1000 for x, a in seen if a >= committed), None)
print(json.dumps({"lag_bytes": sample["lag_bytes"], "lag_seconds": sample["lag_seconds"],
                  "lag_bytes_end": after["lag_bytes"], "drain_ms": drain, "status_zero_ms": zero,
                  "log_mib_s": rate(1), "applied_mib_s": rate(2),
                  "dropped": sec["dropped"], "dropped_after_s": drop_t, "alarm": sec["alarm"]}))
PY
A=$WORK/a
APORT=$(free_port)
say "a: primary on core $TCORE, secondary on core $SCORE, perf on core $PCORE"
serve prim "$TCORE" Data "$A/p-data.img" 4096 \
  Log11 "$A/log11.log" "$LOG_BLOCK" Log12 "$A/log12.log" "$LOG_BLOCK" Log21 "$A/log21.log" "$LOG_BLOCK" \
  Log22 "$A/log22.log" "$LOG_BLOCK" Log31 "$A/log31.log" "$LOG_BLOCK" Log32 "$A/log32.log" "$LOG_BLOCK"
PID_prim=$SERVED
export_nvmf prim "$APORT"

# proc_ticks PID: user+system ticks of PID (0 without one); machine_ticks: the machine's busy,
# idle (with iowait) and steal ticks.
proc_ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat; }

# run_one SETUP K ROUND ROW...: one measured run of row K (fields ROW) in SETUP: 1 no
# secondary; 2 a secondary on RAM bdevs (a remote node with disks of its own); 3 a secondary on
# files of the same disk as the primary's (this machine as it is). Every run is on a freshly
# formatted volume (its own log) with a fresh secondary.
run_one() {
  local setup=$1 k=$2 round=$3 name
  shift 3
  case $setup in
    1) name="(1) local-only, no secondary" ;;
    2) name="(2) + secondary on RAM bdevs" ;;
    3) name="(3) + secondary on files, same disk" ;;
  esac
  local vol=vol$setup$k$round
  dd if=/dev/zero of="$A/log$setup$k.log" bs=1M count=1 conv=notrunc oflag=direct status=none # a fresh format
  rpc prim volume_create \
    "{\"name\": \"$vol\", \"data_bdev\": \"Data\", \"log_bdev\": \"Log$setup$k\", \"mode\": \"local-only\"}" > /dev/null
  PID_sec=
  if [ "$setup" != 1 ]; then
    if [ "$setup" = 2 ]; then
      serve sec "$SCORE" SData malloc:"$DATA_MB" 4096 SStage malloc:"$LOG_MB" "$LOG_BLOCK" SLog malloc:"$LOG_MB" "$LOG_BLOCK"
    else
      for f in s-stage.log s-log.log; do # forget the previous run's superblocks
        dd if=/dev/zero of="$A/$f" bs=1M count=1 conv=notrunc oflag=direct status=none
      done
      serve sec "$SCORE" SData "$A/s-data.img" 4096 SStage "$A/s-stage.log" "$LOG_BLOCK" SLog "$A/s-log.log" "$LOG_BLOCK"
    fi
    PID_sec=$SERVED
    local sport
    sport=$(free_port)
    rpc sec replication_listen "{\"address\": \"127.0.0.1:$sport\"}" > /dev/null
    rpc sec secondary_create "{\"volume\": \"$vol\", \"data_bdev\": \"SData\", \"staging_bdev\": \"SStage\",
      \"log_bdev\": \"SLog\"}" > /dev/null
    rpc prim replication_create "{\"volume\": \"$vol\", \"secondary\": \"127.0.0.1:$sport\"}" > /dev/null
    wait_until "the shipping link" 10 ship_up prim
  fi
  rpc prim nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$vol\", \"nsid\": 1}}" > /dev/null
  say "a round $round $name: $(label "$@")"
  rm -f "$WORK/perf.done"
  local watch=
  if [ "$setup" != 1 ]; then
    python3 "$WORK/watch.py" "$WORK/prim.sock" "$WORK/sec.sock" "$WORK/perf.done" "$(python3 -c "print($TIME + 1 - 0.3)")" 1 \
      "$LOG_BLOCK" > "$WORK/lag.json" &
    watch=$!
  fi
  local m0 p0 s0 t0 m1 p1 s1 t1 extra
  m0=$(machine_ticks) p0=$(proc_ticks "$PID_prim") s0=$(proc_ticks "$PID_sec") t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # PERF_FLAGS is a word list
  "$BIN" perf -r "$(trid "$APORT")" -c "$PCORE" -w "$1" -q "$2" -o "$3" -t "$TIME" --warmup 1 $PERF_FLAGS \
    --json > "$WORK/r.json" 2> "$WORK/perf.err" || { cat "$WORK/perf.err" >&2; die "perf failed"; }
  m1=$(machine_ticks) p1=$(proc_ticks "$PID_prim") s1=$(proc_ticks "$PID_sec") t1=$(date +%s.%N)
  touch "$WORK/perf.done"
  if [ -n "${BENCH_STATS_DIR:-}" ]; then
    rpc prim reactor_stats > "$BENCH_STATS_DIR/prim-$setup$k$round.json"
    [ "$setup" = 1 ] || rpc sec reactor_stats > "$BENCH_STATS_DIR/sec-$setup$k$round.json"
  fi
  # CPU over perf's whole run (warm-up included), in cores: the primary, the secondary and
  # the machine's busy, idle and stolen time.
  # shellcheck disable=SC2086 # m0 and m1 are three numbers each
  extra=$(python3 - "$round" "$t0" "$t1" "$p0" "$p1" "$s0" "$s1" $m0 $m1 <<'PY'
import json, os, sys
a = sys.argv[1:]
t0, t1, p0, p1, s0, s1 = map(float, a[1:7])
m0, m1 = [float(x) for x in a[7:10]], [float(x) for x in a[10:13]]
hz, wall = os.sysconf("SC_CLK_TCK"), t1 - t0
cores = lambda x, y: (y - x) / hz / wall
j = {"round": int(a[0]), "cpu_primary": cores(p0, p1), "busy": cores(m0[0], m1[0]),
     "idle": cores(m0[1], m1[1]), "steal": cores(m0[2], m1[2])}
if s1 > 0:
    j["cpu_secondary"] = cores(s0, s1)
print(json.dumps(j))
PY
  )
  if [ -n "$watch" ]; then
    wait "$watch" || die "the lag watcher failed"
    extra=$(python3 -c 'import json, sys; a = json.loads(sys.argv[1]); a.update(json.loads(sys.argv[2])); print(json.dumps(a))' \
      "$extra" "$(cat "$WORK/lag.json")")
    say "a round $round $name: the applier took $(rpc sec replication_status |
      json 'str(j["secondaries"][0]["staging_from_memory"]) + " runs from memory, read " +
            str(j["secondaries"][0]["staging_reads"])') from the staging log"
    { kill -9 "$PID_sec" && wait "$PID_sec"; } 2>/dev/null || true
  fi
  record "$name" "$(label "$@")" "$WORK/r.json" "$extra"
  rpc prim nvmf_subsystem_remove_ns "{\"nqn\": \"$NQN\", \"nsid\": 1}" > /dev/null
  rpc prim volume_delete "{\"name\": \"$vol\"}" > /dev/null
}

# Rounds: every round runs each row in every setup back to back, so each setup sees the same
# stretch of this shared host's weather (its disk and CPU vary by 2x across minutes); the
# table reports the median of the rounds.
for round in $(seq "$ROUNDS"); do
  k=0
  for row in "${ROWS[@]}"; do
    k=$((k + 1))
    for setup in ${BENCH_SETUPS:-1 2 3}; do
      # shellcheck disable=SC2086 # split the row into its fields
      run_one "$setup" "$k" "$round" $row
    done
  done
done
{ kill -9 "$PID_prim" && wait "$PID_prim"; } 2>/dev/null || true

# ---- b. failover through the bunker ---------------------------------------------------------
if [ "${BENCH_FAILOVER:-1}" = 1 ]; then
  B=$WORK/b
  BPORT=$(free_port)
  SPORT=$(free_port)
  XPORT=$(free_port)
  CPORT=$(free_port)
  PPORT=$(free_port)
  SNPORT=$(free_port)
  say "b: bunker and secondary on core $SCORE, primary on core $TCORE, shipping through a $RATE_MBIT Mbit/s proxy"
  serve bunker "$SCORE" BLog "$B/b-log.log" "$LOG_BLOCK"
  rpc bunker replication_listen "{\"address\": \"127.0.0.1:$BPORT\"}" > /dev/null
  rpc bunker bunker_create '{"volume": "vol0", "log_bdev": "BLog"}' > /dev/null
  serve bsec "$SCORE" SData "$B/s-data.img" 4096 SStage "$B/s-stage.log" "$LOG_BLOCK" SLog "$B/s-log.log" "$LOG_BLOCK"
  rpc bsec replication_listen "{\"address\": \"127.0.0.1:$SPORT\"}" > /dev/null
  rpc bsec secondary_create "{\"volume\": \"vol0\", \"data_bdev\": \"SData\", \"staging_bdev\": \"SStage\",
    \"log_bdev\": \"SLog\", \"bunker\": \"127.0.0.1:$BPORT\"}" > /dev/null
  export_nvmf bsec "$SNPORT"
  taskset -c "$SCORE" "$BIN" proxy --listen "127.0.0.1:$XPORT" --to "127.0.0.1:$SPORT" --rate-mbit "$RATE_MBIT" \
    --control "127.0.0.1:$CPORT" > "$WORK/proxy.txt" 2>&1 &
  PROXY=$!
  PIDS+=("$PROXY")
  wait_until "the proxy" 5 grep -q listen "$WORK/proxy.txt"
  serve bprim "$TCORE" Data "$B/p-data.img" 4096 Log "$B/p-log.log" "$LOG_BLOCK"
  PID_bprim=$SERVED
  rpc bprim volume_create "{\"name\": \"vol0\", \"data_bdev\": \"Data\", \"log_bdev\": \"Log\", \"mode\": \"bunker-sync\",
    \"bunker\": \"127.0.0.1:$BPORT\", \"on_bunker_loss\": \"local-only\"}" > /dev/null
  rpc bprim replication_create "{\"volume\": \"vol0\", \"secondary\": \"127.0.0.1:$XPORT\"}" > /dev/null
  export_nvmf bprim "$PPORT" vol0
  wait_until "the shipping link" 10 ship_up bprim
  bunker_up() { [ "$(rpc bprim volume_status '{"name": "vol0"}' | json 'j["status"]["bunker_link"]')" = up ]; }
  wait_until "the bunker link" 10 bunker_up
  COUNT=$((TAIL_MB * 8))
  say "b: writing $TAIL_MB MiB ($COUNT x 128 KiB, QD8)"
  "$BIN" perf -r "$(trid "$PPORT")" -c "$PCORE" -w write -q 8 -o 131072 --io-count "$COUNT" -t 120 --json \
    > "$WORK/b-perf.json" 2> "$WORK/perf.err" || { cat "$WORK/perf.err" >&2; die "perf failed"; }
  sleep 1.2 # the status is refreshed when the idle reactor wakes (max_sleep_ms 1000): current now
  ship bprim > "$WORK/b-lag.json"
  proxy_stats=$(exec 3<>"/dev/tcp/127.0.0.1/$CPORT" && echo stats >&3 && head -n1 <&3)
  say "b: lag $(json 'j["lag_bytes"]' < "$WORK/b-lag.json") B; proxy: $proxy_stats; SIGKILL the primary"
  { kill -9 "$PID_bprim" && wait "$PID_bprim"; } 2>/dev/null || true
  t0=$(date +%s.%N)
  rpc bsec volume_failover "{\"volume\": \"vol0\", \"nqn\": \"$NQN\"}" > "$WORK/b-failover.json" ||
    { cat "$WORK/bsec.txt" >&2; die "failover failed"; }
  t1=$(date +%s.%N)
  python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$t0" "$t1" \
    > "$WORK/b-rpc-ms"
  say "b: failover $(json 'json.dumps(j)' < "$WORK/b-failover.json")"
  { kill -9 "$PROXY" && wait "$PROXY"; } 2>/dev/null || true
fi

[ -z "${BENCH_JSON:-}" ] || cp "$WORK/rows.jsonl" "$BENCH_JSON"
say "done in $(($(date +%s) - START)) s ($(($(date +%s) - LAYOUT)) s after the build)"
python3 - "$WORK" "$TIME" "$(nproc)" "$TCORE" "$PCORE" "$SCORE" "$TAIL_MB" "$RATE_MBIT" "$PERF_FLAGS" <<'PY'
import json, sys
work, secs, ncpu, tcore, pcore, score, tail_mb, rate, perf_flags = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{work}/rows.jsonl")]
print(f"ferrite scripts/bench-replication.sh, {secs} s per run, {ncpu} cores, primary core {tcore}, "
      f"perf core {pcore}, secondary (and bunker) core {score}; perf flags: {perf_flags.strip() or 'none'}")
print()
print("a. replication throughput, local-only volume on uring files, NVMe/TCP over loopback")
print()
print(f"Each setup ran {max(r['round'] for r in rows)} rounds (each round: every setup back to back); "
      "a row shows the round with the median IOPS, 'IOPS by round' all of them.")
print()
print("| setup | workload | IOPS | MiB/s | p50 µs | p99 µs | IOPS / (1) | IOPS by round | CPU primary | CPU secondary "
      "| machine idle | steal | log MiB/s | applied MiB/s | lag at end | lag s at end | drain ms |")
print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
groups = {}
for r in rows:
    groups.setdefault((r["setup"], r["workload"]), []).append(r)
median = lambda rs: sorted(rs, key=lambda r: r["iops"])[(len(rs) - 1) // 2]
base = {w: median(rs) for (setup, w), rs in groups.items() if "no secondary" in setup}
by_round = {(r["workload"], r["round"]): r for r in rows if "no secondary" in r["setup"]}
verdicts = []
fmt = lambda v, f: "" if v is None else format(v, f)
for (setup, workload), rs in groups.items():
    m = median(rs)
    b = base.get(workload)
    x = m["iops"] / b["iops"] if b and "lag_bytes" in m else None
    extra = [""] * 5
    if "lag_bytes" in m:
        tag = setup[:3]
        rounds = [f"{r['iops'] / by_round[(workload, r['round'])]['iops']:.2f}" for r in rs if (workload, r["round"]) in by_round]
        line = (f"- {tag} {workload}: IOPS {tag}/(1), medians = {fmt(x, '.2f')} (by round: {', '.join(rounds)}); "
                f"p50 {m['p50'] / b['p50']:.2f}x, p99 {m['p99'] / b['p99']:.2f}x (bar IOPS >= 0.90: "
                f"{'met' if x and x >= 0.9 else 'NOT met'})" if b else f"- {tag} {workload}: no row (1) to compare with")
        dropped = [r for r in rs if r["dropped"]]
        if dropped:
            when = ", ".join(format(r["dropped_after_s"], ".1f") + " s" for r in dropped)
            line += (f"; the secondary was DROPPED in {len(dropped)} of {len(rs)} rounds ({when} into the run): "
                     "no replication after that, so those rounds are not replication figures")
        verdicts.append(line)
        d = m["dropped"]
        extra = [fmt(m["log_mib_s"], ",.0f"), fmt(m["applied_mib_s"], ",.0f"),
                 "dropped" if d else f"{m['lag_bytes'] / 2**20:.2f} MiB", "" if d else f"{m['lag_seconds']:.2f}",
                 "dropped" if d else ("> 10 s" if m["drain_ms"] is None else f"{m['drain_ms']:.0f}")]
    each = " / ".join(format(r["iops"], ",.0f") for r in rs)
    print(f"| {setup} | {workload} | {m['iops']:,.0f} | {m['mib_per_s']:,.1f} | {m['p50']:.1f} | {m['p99']:.1f} "
          f"| {fmt(x, '.2f')} | {each} | {m['cpu_primary']:.2f} "
          f"| {fmt(m.get('cpu_secondary'), '.2f')} | {m['idle']:.2f} | {m['steal']:.2f} | {' | '.join(extra)} |")
print()
print("\n".join(verdicts))
print("- CPU columns are cores busy over perf's run (warm-up included): the primary's and the secondary's "
      "processes, and the machine's idle (with iowait) and stolen time (the host running something else); "
      "the load generator and kernel workers make up the rest of the machine's "
      f"{ncpu} cores")
print("- log MiB/s: the primary's committed log rate (entries with headers); applied MiB/s: the "
      "secondary's applied end as the primary sees it (until a drop); lag at end: 0.3 s before the run ends; "
      "drain: from perf's exit until the secondary's own applied end reached the final committed end "
      "(polled every ~10 ms)")
import os
if not os.path.exists(f"{work}/b-failover.json"):
    sys.exit(0)
lag = json.load(open(f"{work}/b-lag.json"))
f = json.load(open(f"{work}/b-failover.json"))
w = json.load(open(f"{work}/b-perf.json"))
rpc_ms = int(open(f"{work}/b-rpc-ms").read())
pulled = f["bytes_from_bunker"]
bar = 1000 + pulled / 1e9 * 1000
rate_mb = pulled / 2**20 / (f["total_ms"] / 1000) if f["total_ms"] else float("inf")
pull_rate = pulled / 2**20 / (f["pull_ms"] / 1000) if f["pull_ms"] else float("inf")
print()
print(f"b. failover of a {tail_mb} MiB bunker tail (bunker-sync primary, shipping through a {rate} Mbit/s proxy; "
      f"the tail written at {w['mib_per_s']:.0f} MiB/s, 128 KiB QD8)")
print()
print("| lag at kill | bytes from bunker | pull ms | apply ms | total ms | RPC ms | MiB/s (total) | MiB/s (pull) | bar ms | |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
print(f"| {lag['lag_bytes'] / 2**20:.1f} MiB | {pulled / 2**20:.1f} MiB | {f['pull_ms']} | {f['apply_ms']} "
      f"| {f['total_ms']} | {rpc_ms} | {rate_mb:,.0f} | {pull_rate:,.0f} | {bar:.0f} "
      f"| {'met' if f['total_ms'] <= bar else 'NOT met'} |")
print()
print(f"- failover report: {json.dumps(f)}")
PY
