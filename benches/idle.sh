#!/bin/sh
# What an idle Herald costs: a `herald serve` with 12 providers (6 log, 6 webhook),
# a 100 ms poll and messages that are due only far in the future. strace counts the
# process's system calls (every thread) over several windows; the script prints the
# median calls per second, fsyncs per second and bytes written per second.
#
#   cargo build --release --bin herald
#   benches/idle.sh [HERALD_BINARY]
#
# Settings (environment): IDLE_STORE (default: a fresh SQLite directory; or a
# postgres:// or redis:// URL with its own schema or prefix), IDLE_RATE (each
# provider's rate_per_sec; default none), IDLE_WAITING (how many
# far-future messages wait, default 1; more are sent in batches of 100,000),
# IDLE_RUNS (windows, default 5), IDLE_SECONDS (each window, default 30).
set -eu

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/herald}
RUNS=${IDLE_RUNS:-5}
SECONDS_EACH=${IDLE_SECONDS:-30}
WAITING=${IDLE_WAITING:-1}
PORT=${IDLE_PORT:-18319}
command -v strace >/dev/null || { echo "idle.sh: strace is needed (apt-get install strace)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "idle.sh: no herald binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

providers=""
# IDLE_RATE gives each provider that rate_per_sec (a claim then pays a rate bucket).
rate=${IDLE_RATE:+,rate_per_sec=$IDLE_RATE}
for i in 1 2 3 4 5 6; do
    providers="$providers{name=\"log$i\",kind=\"log\"$rate},"
    providers="$providers{name=\"hook$i\",kind=\"webhook\",url=\"http://127.0.0.1:9/hook$i\"$rate},"
done
HERALD_LISTEN=127.0.0.1:$PORT \
HERALD_STORE=${IDLE_STORE:-$WORK/store} \
HERALD_PROVIDERS="[${providers%,}]" \
HERALD_DEFAULTS__SMS=log1 \
HERALD_WORKER__POLL_INTERVAL_MS=100 \
HERALD_LOG=warn \
    "$BIN" serve >"$WORK/herald.log" 2>&1 &
PID=$!
up=0
for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "idle.sh: herald did not start" >&2; cat "$WORK/herald.log" >&2; exit 1; }

# The waiting messages: due in ten years, in batches of up to 100,000.
left=$WAITING
n=0
while [ "$left" -gt 0 ]; do
    size=$((left < 100000 ? left : 100000))
    awk -v size="$size" -v base="$n" 'BEGIN {
        printf "{\"channel\":\"sms\",\"send_at\":\"2036-01-01T00:00:00Z\",\"template\":{\"body\":\"later\"},\"recipients\":["
        for (i = 0; i < size; i++) printf "%s{\"to\":\"+86138%08d\"}", (i ? "," : ""), base + i
        printf "]}"
    }' >"$WORK/batch.json"
    curl -sf -o /dev/null -H 'content-type: application/json' --data-binary @"$WORK/batch.json" \
        "http://127.0.0.1:$PORT/v1/batches" || { echo "idle.sh: submitting failed" >&2; exit 1; }
    left=$((left - size))
    n=$((n + size))
done
sleep 5

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for run in $(seq "$RUNS"); do
    before=$(awk '/^wchar/ { print $2 }' "/proc/$PID/io")
    timeout -s INT "$SECONDS_EACH" strace -f -c -o "$WORK/strace.$run" -p "$PID" >/dev/null 2>&1 || true
    after=$(awk '/^wchar/ { print $2 }' "/proc/$PID/io")
    awk -v s="$SECONDS_EACH" -v bytes=$((after - before)) '
        $NF == "total" { total = $4 }
        $NF ~ /^(fsync|fdatasync)$/ { syncs += $4 }
        END { printf "%.1f %.1f %.0f\n", total / s, syncs / s, bytes / s }' "$WORK/strace.$run" >>"$WORK/rates"
    echo "run $run: $(tail -n 1 "$WORK/rates") (syscalls/s fsyncs/s bytes-written/s)" >&2
done
echo "store: ${IDLE_STORE:-sqlite}, rate: ${IDLE_RATE:-none}, waiting messages: $WAITING, $RUNS windows of $SECONDS_EACH s"
echo "syscalls/s (median): $(cut -d' ' -f1 "$WORK/rates" | median)"
echo "fsyncs/s (median): $(cut -d' ' -f2 "$WORK/rates" | median)"
echo "bytes written/s (median): $(cut -d' ' -f3 "$WORK/rates" | median)"
