#!/usr/bin/env bash
# Benchmark of pacing by operating time: `b24sync list` of N wide deals (`*` and `UF_*`,
# 20 user fields) from a simulator whose operating budget is tight, with the CLI given
# the same limits through its configuration, release build. A method can spend at most
# its budget B per window W, so a listing that costs C operating seconds needs at least
# (ceil(C / B) - 1) x W of waiting: the theoretical minimum printed beside the wall time.
# The simulator's own count of 429 answers must be 0.
# Usage: benches/client_list_tight.sh [DEALS] [BUDGET_SECS] [WINDOW_SECS]
#        (defaults: 100000 deals, 5 operating seconds per 30 s window)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:-100000}"
budget="${2:-5}"
window="${3:-30}"
bench_start

say "Starting the simulator: $deals deals, 20 user fields, $budget operating s per ${window} s window"
start_sim "$WORK" target/release/b24-sim --deals "$deals" --user-fields 20 \
    --operating-budget "$budget" --operating-window "$window"
url=$WEBHOOK
export B24SYNC_CONFIG="{\"portals\": {\"sim\": {\"webhook_url\": \"$url\",
    \"limits\": {\"operating_budget\": $budget, \"operating_window\": $window}}}}"

say "Listing: b24sync list --portal sim --entity deal --select '*,UF_*' --format count"
target/release/b24sync list --portal sim --entity deal --select '*,UF_*' --format count 2>"$WORK/run.err" \
    || { cat "$WORK/run.err" >&2; exit 1; }

summary=$(summary_line "$WORK/run.err")
sim_stats=$(sim_stats)
charged=$(charged_list_seconds "$sim_stats")
status_429=$(printf '%s' "$sim_stats" | sed -n 's/.*"status_429":\([0-9]*\).*/\1/p')

echo "summary: $summary"
echo "simulator: $sim_stats"
awk -v rows="$(json_number "$summary" rows)" -v seconds="$(json_number "$summary" seconds)" -v charged="$charged" -v b="$budget" -v w="$window" \
    -v s429="$status_429" -v c429="$(json_number "$summary" throttled_429)" 'BEGIN {
    windows = int(charged / b); if (windows < charged / b) windows++
    minimum = (windows - 1) * w
    printf "rows: %d\n", rows
    printf "crm.deal.list_operating_seconds (simulator): %.2f\n", charged
    printf "operating_seconds_per_10k_rows: %.3f\n", charged / rows * 10000
    printf "wall_seconds: %.1f\n", seconds
    printf "theoretical_minimum_seconds: %.1f\n", minimum
    printf "over_minimum_in_windows: %.2f\n", (seconds - minimum) / w
    printf "status_429 (simulator): %d, throttled_429 (client): %d\n", s429, c429
}'
