#!/usr/bin/env bash
# Webhook intake figures for BENCHMARKS.md:
# - parse + verify + message build per event (the intake_bench example, release);
# - process start to first request: the release binary is started against a stub
#   Lambda runtime API (python3) and timed until its first GET .../invocation/next,
#   i.e. configuration read, SQS client built, ready for the first event;
# - the stripped release binary's size (host target; `cargo lambda build` differs).
#
#   benches/intake.sh
#   EVENTS=500000 RUNS=50 benches/intake.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-200000}
RUNS=${RUNS:-20}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -q -p webhook-intake --example intake_bench
"$TARGET/release/examples/intake_bench" "$EVENTS"
# Built on its own: built together with the example, the binary would get the
# dev-dependencies' features too.
cargo build --release -q -p webhook-intake --bin webhook-intake

python3 - "$TARGET/release/webhook-intake" "$RUNS" <<'PY'
import http.server, os, statistics, subprocess, sys, threading, time
first = {}
class Runtime(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        first.setdefault("at", time.perf_counter())
        self.send_response(500)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ,
    AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
    AWS_LAMBDA_FUNCTION_NAME="webhook-intake", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
    AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_LOG_STREAM_NAME="bench", AWS_LAMBDA_LOG_GROUP_NAME="bench",
    AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
    CHANGE_QUEUE_URL="http://127.0.0.1:9/123456789012/b24-changes",
    B24SYNC_CONFIG='{"portals":{"demo":{"webhook_url":"https://demo.bitrix24.com/rest/1/code/","application_tokens":["bench-token"]}}}')
binary, runs = sys.argv[1], int(sys.argv[2])
samples = []
for _ in range(runs):
    first.clear()
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while "at" not in first and time.perf_counter() - started < 5:
        time.sleep(0.0002)
    process.kill()
    process.wait()
    if "at" not in first:
        sys.exit("the intake never asked the runtime API for an event")
    samples.append((first["at"] - started) * 1000)
print(f"process start to first request: median {statistics.median(samples):.1f} ms "
      f"(min {min(samples):.1f}, max {max(samples):.1f}, {runs} runs)")
print(f"binary size: {os.path.getsize(binary):,} bytes ({binary}, stripped)")
PY
