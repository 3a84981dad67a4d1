#!/usr/bin/env bash
# make dev-down: stop what dev-up started (API, operator, then the cluster); jobs, models and
# their files stay for the next dev-up (`make clean` deletes them)
# The logic lives in hack/kubetune_local/devstack.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$REPO/.venv/bin/python" -m kubetune_local.devstack down "$@"
