#!/usr/bin/env bash
# Checks the SAM template: cfn-lint, SAM's own validation with its linter, then what the
# template deploys (infra/check_template.py: the per-portal schedules, the scheduler's role,
# VPC permissions only with a VPC). All offline: no AWS account or credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_sam
export SAM_CLI_TELEMETRY=0
say "cfn-lint infra/template.yaml"
cfn-lint infra/template.yaml
say "sam validate --lint --template infra/template.yaml"
sam validate --lint --template infra/template.yaml --region us-east-1
say "infra/check_template.py (the template expanded and translated as sam deploy does)"
python3 infra/check_template.py
