# Shared helpers for the project's scripts. Sourced, not run.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Rust toolchain: the machine image ships it; say so clearly when it does not.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        say "cargo not found: install Rust stable (https://rustup.rs) and run again"
        exit 1
    fi
}

# PostgreSQL on 127.0.0.1:5432 with trust auth for the postgres user: start it when it
# is installed but down, install it with apt when it is missing.
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        say "PostgreSQL is up on 127.0.0.1:5432"
        return
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        say "PostgreSQL is not installed: installing it with apt"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        local version hba
        version=$(ls /etc/postgresql | sort -V | tail -1)
        hba=/etc/postgresql/$version/main/pg_hba.conf
        say "Allowing trust auth on loopback in $hba (a local test server only)"
        sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/; s/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
    fi
    say "Starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && { say "PostgreSQL is up on 127.0.0.1:5432"; return; }
        sleep 1
    done
    say "PostgreSQL did not come up on 127.0.0.1:5432"
    exit 1
}

# moto_server (PyPI `moto[server]`): a local SQS-protocol server that the AWS adapter's
# tests start themselves. Installed with pip, quietly, only when `moto_server` is missing.
ensure_moto() {
    if command -v moto_server >/dev/null 2>&1; then
        say "moto_server is installed (SQS stand-in for the AWS adapter tests)"
        return
    fi
    say "moto_server not found: installing moto[server] from PyPI with pip (SQS stand-in for the AWS adapter tests)"
    python3 -m pip install --quiet 'moto[server]>=5.1,<6'
    # pyenv only sees new console scripts after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    command -v moto_server >/dev/null 2>&1 || { say "moto_server is still not on PATH after pip install"; exit 1; }
}

# AWS SAM CLI and cfn-lint (PyPI) for checking infra/template.yaml. Installed with pip,
# quietly, only when one is missing (about 4 minutes the first time).
ensure_sam() {
    if command -v sam >/dev/null 2>&1 && command -v cfn-lint >/dev/null 2>&1; then
        say "sam and cfn-lint are installed (template checks)"
        return
    fi
    say "sam or cfn-lint not found: installing aws-sam-cli and cfn-lint from PyPI with pip (about 4 minutes the first time)"
    python3 -m pip install --quiet aws-sam-cli cfn-lint
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    command -v sam >/dev/null 2>&1 && command -v cfn-lint >/dev/null 2>&1 \
        || { say "sam or cfn-lint is still not on PATH after pip install"; exit 1; }
}

# Headless Chromium (Debian's `chromium`) for the test that loads the status page as a
# browser does. Installed with apt only when it is missing.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        say "chromium is installed (the status page test's headless browser)"
        return
    fi
    say "chromium not found: installing Debian's chromium with apt (the status page test's headless browser)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
    command -v chromium >/dev/null 2>&1 || { say "chromium is still not on PATH after apt-get install"; exit 1; }
}

# GNU time reports a command's peak memory (benchmarks).
ensure_gnu_time() {
    if [ ! -x /usr/bin/time ]; then
        say "GNU time is needed for the peak RSS: installing it with apt"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
}

# start_sim DIR SIM_BINARY ARGS...: starts the simulator in the background (stdout in
# DIR/sim.out, stderr in DIR/sim.err), waits for its `B24_WEBHOOK_URL=` line and sets
# SIM_PID and WEBHOOK. Fails with the simulator's error output if it exits first.
start_sim() {
    local dir=$1
    shift
    "$@" >"$dir/sim.out" 2>"$dir/sim.err" &
    SIM_PID=$!
    for _ in $(seq 1 1200); do
        grep -q '^B24_WEBHOOK_URL=' "$dir/sim.out" 2>/dev/null && break
        kill -0 "$SIM_PID" 2>/dev/null || { cat "$dir/sim.err" >&2; exit 1; }
        sleep 0.5
    done
    WEBHOOK=$(sed -n 's/^B24_WEBHOOK_URL=//p' "$dir/sim.out" | head -1)
    [ -n "$WEBHOOK" ] || { say "the simulator did not print its webhook URL: see $dir/sim.err"; exit 1; }
}

# A free TCP port on 127.0.0.1 (for a server another process must know in advance).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
