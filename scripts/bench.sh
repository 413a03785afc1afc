#!/usr/bin/env bash
# bench.sh — ferrite's NVMe/TCP latency benchmark, one command, under 10 minutes.
#
# Builds ferrite in release mode, then, all in the same window so the figures compare:
#   1. floors: a busy-polled loopback TCP ping-pong (64 B and 4 KiB; echo server on the target
#      core, client on the initiator core) and `ferrite perf --bdev` in-process (no network) on
#      the target core, for a malloc and a uring bdev;
#   2. a ferrite target pinned to TARGET_CORE exporting a malloc bdev (nsid 1) and a uring bdev
#      on a file (nsid 2), driven by `ferrite perf -r` pinned to PERF_CORE over loopback.
#   3. the replicated change log on the same uring bdev: plain writes with FUA (a durable
#      baseline) first, then the namespace is removed, and a
#      `local-only` volume and a `bunker-sync` volume (bunker: a second `ferrite serve` on
#      PERF_CORE, log on its own file) are exported in turn, 4 KiB random write QD1 and QD32;
#      then a `bunker-sync` volume answering only once the volume write is done too (`ack:
#      applied`, against the default `durable`, which answers once the log copies are durable
#      and serves reads of blocks still being written from memory), then a `bunker-sync`
#      volume whose bunker log is a RAM disk (a bunker node with a log device of its own: what
#      the bunker costs apart from sharing this machine's one disk). Each volume also runs a
#      4 KiB random 50/50 read/write mix at QD16 over its first MiB (reads meet blocks whose
#      volume write is running), as does the plain uring namespace.
# Rows: 4 KiB random read and write at QD1 and QD32, 128 KiB sequential write at QD8, each
# BENCH_TIME seconds after a 1 s warm-up. Prints a markdown table (IOPS, MiB/s, p50, p99,
# p99.9, p99.99 in µs), the ratio of the QD1 p50 to the ping-pong p50, and the change-log
# ratios against plain (bars: bunker-sync QD1 p50 <= 1.3x plain, QD32 IOPS >= 0.8x plain).
#
# Knobs: BENCH_TIME (seconds per run, 4), BENCH_TARGET_CORE (0), BENCH_PERF_CORE (1),
#        BENCH_MALLOC_MB (256), BENCH_URING_MB (512), BENCH_DIR (scratch dir, /var/tmp),
#        BENCH_JSON (also write all rows as JSON there), BENCH_PERF_FLAGS (extra perf flags,
#        e.g. --busy-poll), BENCH_LOG_BLOCK (change-log bdev block size, 4096),
#        BENCH_REPL (0 skips phase 3), CARGO_TARGET_DIR (as cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

TIME=${BENCH_TIME:-4}
TCORE=${BENCH_TARGET_CORE:-0}
PCORE=${BENCH_PERF_CORE:-1}
MALLOC_MB=${BENCH_MALLOC_MB:-256}
URING_MB=${BENCH_URING_MB:-512}
PERF_FLAGS=${BENCH_PERF_FLAGS:-}
LOG_BLOCK=${BENCH_LOG_BLOCK:-4096}
REPL=${BENCH_REPL:-1}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ferrite-bench.XXXXXX")
TPID=
BPID=
cleanup() {
  for pid in $TPID $BPID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

START=$(date +%s)
say "building (release)"
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-target}/release/ferrite
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

say "laying out $WORK/uring.img ($URING_MB MiB)"
dd if=/dev/zero of="$WORK/uring.img" bs=1M count="$URING_MB" oflag=direct status=none
if [ "$REPL" = 1 ]; then
  for f in local.log bunker-sync.log bunker-applied.log bunker-ram.log bunker.log bunker2.log; do
    dd if=/dev/zero of="$WORK/$f" bs=1M count=256 oflag=direct status=none
  done
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NQN=nqn.2026-11.io.ferrite:bench
bdevs() {
  cat <<TOML
[memory]
buf_size = 135168
buf_count = 512
[[bdev]]
type = "malloc"
name = "Malloc0"
size_mb = $MALLOC_MB
block_size = 4096
[[bdev]]
type = "uring"
name = "Uring0"
filename = "$WORK/uring.img"
block_size = 4096
[[bdev]]
type = "uring"
name = "LogLocal"
filename = "$WORK/local.log"
block_size = $LOG_BLOCK
[[bdev]]
type = "uring"
name = "LogBunkerSync"
filename = "$WORK/bunker-sync.log"
block_size = $LOG_BLOCK
[[bdev]]
type = "uring"
name = "LogBunkerApplied"
filename = "$WORK/bunker-applied.log"
block_size = $LOG_BLOCK
[[bdev]]
type = "uring"
name = "LogBunkerRam"
filename = "$WORK/bunker-ram.log"
block_size = $LOG_BLOCK
TOML
}
{ printf '[reactor]\ncores = [%s]\n[rpc]\nsocket = "%s/inproc.sock"\n' "$TCORE" "$WORK"; bdevs; } > "$WORK/inproc.toml"
{
  printf '[reactor]\ncores = [%s]\n[rpc]\nsocket = "%s/target.sock"\n' "$TCORE" "$WORK"
  bdevs
  cat <<TOML
[nvmf]
[[nvmf.subsystem]]
nqn = "$NQN"
allow_any_host = true
namespaces = [{ bdev = "Malloc0", nsid = 1 }, { bdev = "Uring0", nsid = 2 }]
listeners = ["127.0.0.1:$PORT"]
TOML
} > "$WORK/target.toml"

ROWS=("randread 1 4096" "randwrite 1 4096" "randread 32 4096" "randwrite 32 4096" "write 8 131072")
: > "$WORK/rows.jsonl"
# record SETUP WORKLOAD JSON_FILE: appends one row.
record() {
  python3 - "$1" "$2" "$3" >> "$WORK/rows.jsonl" <<'PY'
import json, sys
setup, workload, path = sys.argv[1:]
r = json.load(open(path))
l = r["latency_us"]
print(json.dumps({"setup": setup, "workload": workload, "iops": r["iops"], "mib_per_s": r["mib_per_s"],
                  "p50": l["p50"], "p99": l["p99"], "p999": l["p999"], "p9999": l["p9999"],
                  "errors": r.get("errors", 0)}))
PY
}
label() { # pattern qd size [MiB] -> "4k randread QD1" or "4k randrw QD16 over 1 MiB"
  local size=$(($3 / 1024))k
  echo "$size $1 QD$2${4:+ over $4 MiB}"
}

for size in 64 4096; do
  say "ping-pong $size B (server core $TCORE, client core $PCORE)"
  "$BIN" perf --pingpong "$size" --pingpong-server-core "$TCORE" -c "$PCORE" -t "$TIME" --warmup 1 --json \
    > "$WORK/r.json" 2>/dev/null
  record "floor: TCP ping-pong, busy-polled" "$size B round trip" "$WORK/r.json"
done

for bdev in Malloc0 Uring0; do
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086 # split the row into its fields
    set -- $row
    say "in-process $bdev $(label "$@")"
    "$BIN" perf --config "$WORK/inproc.toml" --bdev "$bdev" -w "$1" -q "$2" -o "$3" -t "$TIME" --warmup 1 \
      --json > "$WORK/r.json" 2>/dev/null
    record "floor: in-process bdev $bdev" "$(label "$@")" "$WORK/r.json"
  done
done

say "starting the target on core $TCORE (127.0.0.1:$PORT)"
taskset -c "$TCORE" "$BIN" serve --config "$WORK/target.toml" > "$WORK/target.log" 2>&1 &
TPID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
TRID="trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN"
for ns in 1 2; do
  name=$([ "$ns" = 1 ] && echo malloc || echo uring)
  for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086 # split the row into its fields
    set -- $row
    say "NVMe/TCP $name $(label "$@")"
    # shellcheck disable=SC2086 # PERF_FLAGS is a word list
    "$BIN" perf -r "$TRID" --nsid "$ns" -c "$PCORE" -w "$1" -q "$2" -o "$3" -t "$TIME" --warmup 1 $PERF_FLAGS \
      --json > "$WORK/r.json" 2>"$WORK/perf.err" || { cat "$WORK/perf.err" >&2; exit 1; }
    record "ferrite NVMe/TCP, $name bdev" "$(label "$@")" "$WORK/r.json"
  done
done

# rpc SOCKET METHOD JSON
rpc() { "$BIN" --rpc-socket "$1" rpc "$2" "$3" > /dev/null; }
if [ "$REPL" = 1 ]; then
  BPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$WORK/bunker.toml" <<TOML
[reactor]
cores = [$PCORE]
[rpc]
socket = "$WORK/bunker.sock"
[[bdev]]
type = "uring"
name = "BunkerLog"
filename = "$WORK/bunker.log"
block_size = $LOG_BLOCK
[[bdev]]
type = "uring"
name = "BunkerLog2"
filename = "$WORK/bunker2.log"
block_size = $LOG_BLOCK
[[bdev]]
type = "malloc"
name = "BunkerRam"
size_mb = 256
block_size = $LOG_BLOCK
TOML
  say "starting the bunker on core $PCORE (127.0.0.1:$BPORT)"
  taskset -c "$PCORE" "$BIN" serve --config "$WORK/bunker.toml" > "$WORK/bunker.log.txt" 2>&1 &
  BPID=$!
  for _ in $(seq 100); do [ -S "$WORK/bunker.sock" ] && break; sleep 0.1; done
  rpc "$WORK/bunker.sock" replication_listen "{\"address\": \"127.0.0.1:$BPORT\"}"
  rpc "$WORK/bunker.sock" bunker_create '{"volume": "bench-bunker-sync", "log_bdev": "BunkerLog"}'
  rpc "$WORK/bunker.sock" bunker_create '{"volume": "bench-bunker-applied", "log_bdev": "BunkerLog2"}'
  rpc "$WORK/bunker.sock" bunker_create '{"volume": "bench-bunker-ram", "log_bdev": "BunkerRam"}'
  MIX="randrw 16 4096 1"
  # shellcheck disable=SC2086 # split the row into its fields
  set -- $MIX
  say "NVMe/TCP uring $(label "$@")"
  # shellcheck disable=SC2086 # PERF_FLAGS is a word list
  "$BIN" perf -r "$TRID" --nsid 2 -c "$PCORE" -w "$1" -q "$2" -o "$3" --size-mb "$4" -t "$TIME" --warmup 1 \
    $PERF_FLAGS --json > "$WORK/r.json" 2>"$WORK/perf.err" || { cat "$WORK/perf.err" >&2; exit 1; }
  record "ferrite NVMe/TCP, uring bdev" "$(label "$@")" "$WORK/r.json"
  for row in "randwrite 1 4096" "randwrite 32 4096"; do
    # shellcheck disable=SC2086 # split the row into its fields
    set -- $row
    say "NVMe/TCP uring $(label "$@") with FUA (durable plain writes)"
    # shellcheck disable=SC2086 # PERF_FLAGS is a word list
    "$BIN" perf -r "$TRID" --nsid 2 -c "$PCORE" -w "$1" -q "$2" -o "$3" -t "$TIME" --warmup 1 --fua $PERF_FLAGS \
      --json > "$WORK/r.json" 2>"$WORK/perf.err" || { cat "$WORK/perf.err" >&2; exit 1; }
    record "ferrite NVMe/TCP, uring bdev, FUA writes" "$(label "$@")" "$WORK/r.json"
  done
  rpc "$WORK/target.sock" nvmf_subsystem_remove_ns "{\"nqn\": \"$NQN\", \"nsid\": 2}"
  # name, mode, primary's log bdev, ack, label
  for setup in "local-only local-only LogLocal durable local-only" \
    "bunker-sync bunker-sync LogBunkerSync durable bunker-sync" \
    "bunker-applied bunker-sync LogBunkerApplied applied bunker-sync, answered once applied" \
    "bunker-ram bunker-sync LogBunkerRam durable bunker-sync, bunker log on RAM"; do
    # shellcheck disable=SC2086 # split the setup into its fields
    set -- $setup
    vol=bench-$1 mode=$2 log=$3 ack=$4
    shift 4
    what="$*"
    extra=$([ "$mode" = bunker-sync ] && echo ", \"bunker\": \"127.0.0.1:$BPORT\"" || true)
    rpc "$WORK/target.sock" volume_create "{\"name\": \"$vol\", \"data_bdev\": \"Uring0\", \"log_bdev\": \"$log\",
      \"mode\": \"$mode\", \"ack\": \"$ack\"$extra}"
    for _ in $(seq 100); do
      "$BIN" --rpc-socket "$WORK/target.sock" rpc volume_status "{\"name\": \"$vol\"}" |
        grep -q '"bunker_link": "\(up\|none\)"' && break
      sleep 0.1
    done
    rpc "$WORK/target.sock" nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$vol\", \"nsid\": 2}}"
    for row in "randwrite 1 4096" "randwrite 32 4096" "$MIX"; do
      # shellcheck disable=SC2086 # split the row into its fields
      set -- $row
      say "NVMe/TCP change log $what $(label "$@")"
      # shellcheck disable=SC2086 # PERF_FLAGS is a word list
      "$BIN" perf -r "$TRID" --nsid 2 -c "$PCORE" -w "$1" -q "$2" -o "$3" ${4:+--size-mb $4} -t "$TIME" \
        --warmup 1 $PERF_FLAGS --json > "$WORK/r.json" 2>"$WORK/perf.err" || { cat "$WORK/perf.err" >&2; exit 1; }
      record "ferrite NVMe/TCP, uring bdev + change log, $what" "$(label "$@")" "$WORK/r.json"
    done
    say "$vol: $("$BIN" --rpc-socket "$WORK/target.sock" rpc volume_status "{\"name\": \"$vol\"}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["reads_from_memory"])') reads served from memory"
    rpc "$WORK/target.sock" nvmf_subsystem_remove_ns "{\"nqn\": \"$NQN\", \"nsid\": 2}"
    rpc "$WORK/target.sock" volume_delete "{\"name\": \"$vol\"}"
  done
fi

[ -z "${BENCH_JSON:-}" ] || cp "$WORK/rows.jsonl" "$BENCH_JSON"
say "done in $(($(date +%s) - START)) s"
python3 - "$WORK/rows.jsonl" "$TIME" "$(nproc)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"ferrite scripts/bench.sh, {sys.argv[2]} s per run, {sys.argv[3]} cores, target core / perf core as set")
print()
print("| setup | workload | IOPS | MiB/s | p50 µs | p99 µs | p99.9 µs | p99.99 µs |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['setup']} | {r['workload']} | {r['iops']:,.0f} | {r['mib_per_s']:,.1f} | {r['p50']:.1f} "
          f"| {r['p99']:.1f} | {r['p999']:.1f} | {r['p9999']:.1f} |")
pp = {r["workload"]: r["p50"] for r in rows if r["setup"].startswith("floor: TCP")}
print()
for r in rows:
    if r["setup"].startswith("ferrite") and "QD1" in r["workload"]:
        base = pp.get("4096 B round trip")
        print(f"- {r['setup']}, {r['workload']}: p50 {r['p50']:.1f} µs = "
              f"{r['p50'] / base:.2f}x the 4 KiB ping-pong, {r['p50'] / pp['64 B round trip']:.2f}x the 64 B one")
plain = {r["workload"]: r for r in rows if r["setup"] == "ferrite NVMe/TCP, uring bdev"}
durable = {r["workload"]: r for r in rows if r["setup"] == "ferrite NVMe/TCP, uring bdev, FUA writes"}
for r in rows:
    if "change log" not in r["setup"]:
        continue
    p = plain[r["workload"]]
    line = (f"- {r['setup'].split('change log, ')[-1]}, {r['workload']}: p50 {r['p50'] / p['p50']:.2f}x plain, "
            f"IOPS {r['iops'] / p['iops']:.2f}x plain")
    if r["workload"] in durable:
        d = durable[r["workload"]]
        line += f"; p50 {r['p50'] / d['p50']:.2f}x and IOPS {r['iops'] / d['iops']:.2f}x plain with FUA"
    if "bunker-sync" in r["setup"] and "randwrite" in r["workload"]:
        bar = "p50 <= 1.3x" if "QD1" in r["workload"] else "IOPS >= 0.8x"
        ok = r["p50"] <= 1.3 * p["p50"] if "QD1" in r["workload"] else r["iops"] >= 0.8 * p["iops"]
        line += f" (bar {bar}: {'met' if ok else 'NOT met'})"
    print(line)
PY
