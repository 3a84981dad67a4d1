#!/usr/bin/env bash
# make demo: dev-up, then the seed's request (model `tiny`, data/frigo_training.csv) over HTTP
# with a live progress bar, the final status and GET /api/finetune/models. The API keeps
# running afterwards; `make dev-down` stops everything. Logic: hack/kubetune_local/devstack.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$REPO/.venv/bin/python" -m kubetune_local.devstack demo "$@"
