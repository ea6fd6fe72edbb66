#!/usr/bin/env bash
# Checks the SAM template: cfn-lint, then SAM's own validation with its linter. Both run
# offline and need no AWS account or credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_sam
export SAM_CLI_TELEMETRY=0
say "cfn-lint infra/template.yaml"
cfn-lint infra/template.yaml
say "sam validate --lint --template infra/template.yaml"
sam validate --lint --template infra/template.yaml --region us-east-1
