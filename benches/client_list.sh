#!/usr/bin/env bash
# Benchmark of the Bitrix24 client's full listing: `b24sync list` of N deals with `*`
# and `UF_*` (20 user fields) from the simulator with its default limits (burst 50,
# 2 requests/s, 480 operating seconds per method per 10 minutes), release build.
# Prints the CLI's summary line, the figures derived from it, the operating seconds the
# simulator charged (its own count, to check the client's) and the CLI's peak RSS.
# Usage: benches/client_list.sh DEALS   (client_list_100k.sh / client_list_1m.sh wrap it)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:?usage: $0 DEALS}"
ensure_gnu_time
bench_start

say "Starting the simulator with $deals deals and 20 user fields (default limits)"
start_sim "$WORK" target/release/b24-sim --deals "$deals" --user-fields 20
url=$WEBHOOK

say "Listing: b24sync list --entity deal --select '*,UF_*' --format count"
/usr/bin/time -v target/release/b24sync list --webhook "$url" --entity deal --select '*,UF_*' --format count \
    2>"$WORK/run.err"

summary=$(summary_line "$WORK/run.err")
rows=$(json_number "$summary" rows)
requests=$(json_number "$summary" http_requests)
operating=$(json_number "$summary" operating_seconds)
peak_kb=$(peak_rss_kb "$WORK/run.err")
sim_stats=$(sim_stats)
charged=$(charged_list_seconds "$sim_stats")

echo "summary: $summary"
echo "simulator: $sim_stats"
awk -v rows="$rows" -v requests="$requests" -v operating="$operating" -v charged="$charged" -v kb="$peak_kb" 'BEGIN {
    printf "rows_per_http_request: %.1f\n", rows / requests
    printf "operating_seconds_per_10k_rows (client): %.3f\n", operating / rows * 10000
    printf "crm.deal.list_seconds_per_10k_rows (simulator): %.3f\n", charged / rows * 10000
    printf "peak_rss_mb: %.1f\n", kb / 1024
}'
