#!/usr/bin/env bash
# bench-bdev.sh — ferrite's uring bdev against raw fio on the same file, same run.
#
# Builds ferrite in release mode, lays out one file (default 1 GiB), and runs 4 KiB random
# write and random read at QD1 and QD32 twice per row: fio (io_uring, O_DIRECT, fixed buffers,
# registered files) and `ferrite perf --bdev` (in-process, one reactor). Both are pinned to the
# same core. Prints a markdown table with IOPS, p50 and p99 and the ferrite/fio ratios.
#
# Knobs: BENCH_FILE (default /var/tmp/ferrite-bench.img), BENCH_SIZE_MB (1024),
#        BENCH_TIME (seconds per run, 10), BENCH_CORE (1), BENCH_JSON (write the table as JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

FILE=${BENCH_FILE:-/var/tmp/ferrite-bench.img}
SIZE_MB=${BENCH_SIZE_MB:-1024}
TIME=${BENCH_TIME:-10}
CORE=${BENCH_CORE:-1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v fio >/dev/null || { echo "installing fio" >&2; apt-get install -y -qq fio >/dev/null; }
cargo build --release -q
BIN=target/release/ferrite

if [ ! -f "$FILE" ] || [ "$(stat -c %s "$FILE")" -ne $((SIZE_MB << 20)) ]; then
  echo "laying out $FILE ($SIZE_MB MiB)" >&2
  dd if=/dev/zero of="$FILE" bs=1M count="$SIZE_MB" oflag=direct status=none
fi

cat > "$WORK/ferrite.toml" <<TOML
[reactor]
cores = [$CORE]
[memory]
buf_size = 131072
buf_count = 64
[rpc]
socket = "$WORK/unused.sock"
[[bdev]]
type = "uring"
name = "bench"
filename = "$FILE"
block_size = 4096
TOML

run_fio() { # rw qd -> json
  fio --name=b --filename="$FILE" --ioengine=io_uring --direct=1 --fixedbufs --registerfiles \
      --rw="$1" --bs=4k --iodepth="$2" --time_based --runtime="$TIME" --ramp_time=1 \
      --cpus_allowed="$CORE" --randrepeat=0 --norandommap --output-format=json
}

run_ferrite() { # pattern qd -> json
  "$BIN" perf --config "$WORK/ferrite.toml" --bdev bench -w "$1" -q "$2" -o 4096 \
      -t "$TIME" --warmup 1 --json 2>/dev/null
}

echo '[' > "$WORK/rows.json"
first=1
for row in "randwrite 1" "randwrite 32" "randread 1" "randread 32"; do
  set -- $row
  echo "running $1 QD$2 (fio, then ferrite)" >&2
  run_fio "$1" "$2" > "$WORK/fio.json"
  run_ferrite "$1" "$2" > "$WORK/fer.json"
  [ $first = 1 ] || echo ',' >> "$WORK/rows.json"
  first=0
  python3 - "$1" "$2" "$WORK/fio.json" "$WORK/fer.json" >> "$WORK/rows.json" <<'PY'
import json, sys
rw, qd, fio_path, fer_path = sys.argv[1:]
fio = json.load(open(fio_path))["jobs"][0]
side = fio["write" if "write" in rw else "read"]
pct = side["clat_ns"]["percentile"]
fer = json.load(open(fer_path))
print(json.dumps({
    "workload": f"4k {rw} QD{qd}",
    "fio_iops": side["iops"], "fio_p50_us": pct["50.000000"] / 1000, "fio_p99_us": pct["99.000000"] / 1000,
    "ferrite_iops": fer["iops"], "ferrite_p50_us": fer["latency_us"]["p50"], "ferrite_p99_us": fer["latency_us"]["p99"],
}))
PY
done
echo ']' >> "$WORK/rows.json"

python3 - "$WORK/rows.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print("| workload | fio IOPS | ferrite IOPS | IOPS ratio | fio p50 µs | ferrite p50 µs | p50 ratio | fio p99 µs | ferrite p99 µs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['workload']} | {r['fio_iops']:.0f} | {r['ferrite_iops']:.0f} | {r['ferrite_iops']/r['fio_iops']:.2f} "
          f"| {r['fio_p50_us']:.1f} | {r['ferrite_p50_us']:.1f} | {r['ferrite_p50_us']/r['fio_p50_us']:.2f} "
          f"| {r['fio_p99_us']:.1f} | {r['ferrite_p99_us']:.1f} |")
PY
[ -z "${BENCH_JSON:-}" ] || cp "$WORK/rows.json" "$BENCH_JSON"
