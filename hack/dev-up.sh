#!/usr/bin/env bash
# make dev-up: local cluster + CRD + operator + API on 127.0.0.1:5002 (auth off); last line: export KUBECONFIG=...
# The logic lives in hack/kubetune_local/devstack.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$REPO/.venv/bin/python" -m kubetune_local.devstack up "$@"
