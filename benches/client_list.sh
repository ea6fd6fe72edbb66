#!/usr/bin/env bash
# Benchmark of the Bitrix24 client's full listing: `b24sync list` of N deals with `*`
# and `UF_*` (20 user fields) from the simulator with its default limits (burst 50,
# 2 requests/s, 480 operating seconds per method per 10 minutes), release build.
# Prints the CLI's summary line, the figures derived from it, the operating seconds the
# simulator charged (its own count, to check the client's) and the CLI's peak RSS.
# Usage: benches/client_list.sh DEALS   (client_list_100k.sh / client_list_1m.sh wrap it)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

deals="${1:?usage: $0 DEALS}"
ensure_rust
ensure_gnu_time

say "Building release binaries (b24-sim, b24sync)"
cargo build --release -q -p b24-sim -p b24sync

work=$(mktemp -d)
SIM_PID=""
cleanup() {
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

say "Starting the simulator with $deals deals and 20 user fields (default limits)"
start_sim "$work" target/release/b24-sim --deals "$deals" --user-fields 20
url=$WEBHOOK

say "Listing: b24sync list --entity deal --select '*,UF_*' --format count"
/usr/bin/time -v target/release/b24sync list --webhook "$url" --entity deal --select '*,UF_*' --format count \
    2>"$work/run.err"

summary=$(grep '^{' "$work/run.err" | tail -1)
field() { printf '%s' "$summary" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
rows=$(field rows)
requests=$(field http_requests)
operating=$(field operating_seconds)
peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/run.err")
sim_stats=$(curl -s "${url%%/rest/*}/_sim/stats")
charged=$(printf '%s' "$sim_stats" | sed -n 's/.*"crm.deal.list":\([0-9.e-]*\).*/\1/p' | tail -1)

echo "summary: $summary"
echo "simulator: $sim_stats"
awk -v rows="$rows" -v requests="$requests" -v operating="$operating" -v charged="$charged" -v kb="$peak_kb" 'BEGIN {
    printf "rows_per_http_request: %.1f\n", rows / requests
    printf "operating_seconds_per_10k_rows (client): %.3f\n", operating / rows * 10000
    printf "crm.deal.list_seconds_per_10k_rows (simulator): %.3f\n", charged / rows * 10000
    printf "peak_rss_mb: %.1f\n", kb / 1024
}'
