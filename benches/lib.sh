# Shared by the benchmarks that run the release simulator and b24sync. Sourced, not
# run, from the repository root; brings in scripts/lib.sh.
source scripts/lib.sh

# bench_start: builds the release b24-sim and b24sync and makes the scratch directory
# WORK. On exit, the simulator (SIM_PID, set by start_sim) is stopped, the benchmark's
# own bench_cleanup runs if it defines one, and WORK is removed.
bench_start() {
    ensure_rust
    say "Building release binaries (b24-sim, b24sync)"
    cargo build --release -q -p b24-sim -p b24-cli
    WORK=$(mktemp -d)
    SIM_PID=""
    trap bench_exit EXIT
}

bench_exit() {
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
    if declare -F bench_cleanup >/dev/null; then bench_cleanup || true; fi
    rm -rf "$WORK"
}

# summary_line FILE: the last JSON line in FILE (b24sync's summary).
summary_line() { grep '^{' "$1" | tail -1; }

# json_number JSON KEY: the number under KEY in a one-line JSON object.
json_number() { printf '%s' "$1" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p"; }

# peak_rss_kb FILE: the peak RSS that GNU `time -v` wrote into FILE.
peak_rss_kb() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }

# sim_stats: the simulator's statistics (one JSON line); WEBHOOK is set by start_sim.
sim_stats() { curl -sf "${WEBHOOK%%/rest/*}/_sim/stats"; }

# charged_list_seconds STATS: the operating seconds the simulator charged crm.deal.list.
charged_list_seconds() {
    printf '%s' "$1" | sed -n 's/.*"crm.deal.list":\([0-9.e-]*\).*/\1/p' | tail -1
}
