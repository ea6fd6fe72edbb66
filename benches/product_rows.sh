#!/usr/bin/env bash
# Benchmark of mirroring product rows: a full sync of N deals (20 user fields, up to 5
# product rows each) from the simulator with its DEFAULT limits into a fresh database,
# once without product rows and once with `product_rows = true`, on the classic API
# (crm.deal.productrows.get, one command per deal, 50 per batch request) and on the
# items API (crm.item.productrow.list). The difference between the runs is what the
# product rows cost: HTTP requests, seconds, rows written. Release build.
# Usage: benches/product_rows.sh [DEALS]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:-10000}"
db=b24sync_bench_products
ensure_postgres
ensure_gnu_time
bench_start
bench_cleanup() {
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}

sync_run() { # $1 = api, $2 = product_rows (true/false)
    local api=$1 products=$2 config summary stats
    # A simulator of its own per run (the same seed, so the same deals and rows): its
    # leaky bucket starts empty, not full of the previous run's requests.
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; fi
    say "Starting the simulator with $deals deals, 20 user fields, up to 5 product rows each (default limits)"
    start_sim "$WORK" target/release/b24-sim --deals "$deals" --user-fields 20 --product-rows 5
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    config=$(printf '{"database":{"url":"postgres://postgres@127.0.0.1:5432/%s"},"portals":{"bench":{"webhook_url":"%s","entities":["deal"],"api":"%s","product_rows":%s}}}' \
        "$db" "$WEBHOOK" "$api" "$products")
    target/release/b24sync --config "$config" migrate >/dev/null
    say "b24sync sync --portal bench --entity deal --mode full (api $api, product_rows $products)"
    target/release/b24sync --config "$config" sync --portal bench --entity deal --mode full \
        >"$WORK/run.out" 2>"$WORK/run.err"
    summary=$(summary_line "$WORK/run.out")
    stats=$(sim_stats)
    echo "summary: $summary"
    echo "simulator: $stats"
    python3 - "$summary" "$stats" "$api" "$products" <<'PY'
import json, sys
s, stats, api, products = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
by_method = stats["requests_by_method"]
commands = by_method.get("crm.deal.productrows.get", 0) + by_method.get("crm.item.productrow.list", 0)
print(f"| {api} | {products} | {s['rows_read']:,} | {s['product_rows_written']:,} | {s['http_requests']} | "
      f"{commands:,} | {s['seconds']:.1f} s | {s['operating_seconds']:.1f} | {s['throttled_503']} / {s['throttled_429']} |")
PY
}

sync_run classic false
sync_run classic true
sync_run items false
sync_run items true
