#!/bin/sh
# What exporting a big ledger as CSV costs: a `herald serve` without workers takes
# one NDJSON upload of EXPORT_ROWS recipients (due in ten years, all with the ref
# `campaign`), is restarted on the same store (so that the upload's own peak is not
# counted), then `herald export --ref campaign -o FILE` and `herald export BATCH -o
# FILE` stream the search's result and the batch's ledger. The script prints the
# rows and bytes written, the time each took, herald's peak RSS (`VmHWM`) after the
# restart and after each export, and the client's peak RSS (`/usr/bin/time -v`).
#
#   cargo build --release --bin herald
#   benches/export.sh [HERALD_BINARY]
#
# Settings (environment): EXPORT_ROWS (default 1000000), EXPORT_STORE (default: a
# fresh SQLite directory; or a postgres:// or redis:// URL with its own schema or
# prefix, which the script leaves for you to drop), EXPORT_PORT (default 18329).
set -eu

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/herald}
ROWS=${EXPORT_ROWS:-1000000}
PORT=${EXPORT_PORT:-18329}
[ -x "$BIN" ] || { echo "export.sh: no herald binary at $BIN" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "export.sh: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

start() {
    HERALD_LISTEN=127.0.0.1:$PORT \
    HERALD_STORE=${EXPORT_STORE:-$WORK/store} \
    HERALD_PROVIDERS='[{name="log",kind="log"}]' \
    HERALD_DEFAULTS__SMS=log \
    HERALD_WORKER__ENABLED=false \
    HERALD_LIMITS__MAX_RECIPIENTS=$ROWS \
    HERALD_LIMITS__MAX_UPLOAD_BYTES=$((ROWS * 100 + 1000)) \
    HERALD_LOG=warn \
        "$BIN" serve >>"$WORK/herald.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do
        if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "export.sh: herald did not start" >&2
    cat "$WORK/herald.log" >&2
    exit 1
}
hwm() { awk '/^VmHWM/ { printf "%.1f MB", $2 / 1024 }' "/proc/$PID/status"; }

start
awk -v rows="$ROWS" 'BEGIN {
    print "{\"channel\":\"sms\",\"send_at\":\"2036-01-01T00:00:00Z\",\"template\":{\"body\":\"Hello {{name}}\"}}"
    for (i = 0; i < rows; i++) printf "{\"to\":\"+86138%08d\",\"ref\":\"campaign\",\"vars\":{\"name\":\"张%d\"}}\n", i, i
}' | curl -sf -o "$WORK/report.json" -H 'content-type: application/x-ndjson' --data-binary @- \
    "http://127.0.0.1:$PORT/v1/batches" || { echo "export.sh: the upload failed" >&2; cat "$WORK/herald.log" >&2; exit 1; }
BATCH=$(sed 's/.*"batch_id":"\([^"]*\)".*/\1/' "$WORK/report.json")
kill "$PID"
wait "$PID" 2>/dev/null || true
start
echo "store: ${EXPORT_STORE:-sqlite}, rows: $ROWS, batch $BATCH"
echo "herald peak RSS after the restart: $(hwm)"

for what in "--ref campaign" "$BATCH"; do
    # shellcheck disable=SC2086 # `--ref campaign` is two arguments.
    /usr/bin/time -v "$BIN" export $what -o "$WORK/out.csv" --server "http://127.0.0.1:$PORT" \
        2>"$WORK/time.txt" || { cat "$WORK/time.txt" >&2; exit 1; }
    lines=$(($(wc -l <"$WORK/out.csv") - 1))
    bytes=$(wc -c <"$WORK/out.csv")
    took=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$WORK/time.txt")
    client=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f MB", $2 / 1024 }' "$WORK/time.txt")
    echo "export $what: $lines rows, $bytes bytes in $took; herald peak RSS $(hwm), client peak RSS $client"
    [ "$lines" = "$ROWS" ] || { echo "export.sh: expected $ROWS rows" >&2; exit 1; }
done
