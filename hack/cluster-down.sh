#!/usr/bin/env bash
# Stop the local Kubernetes cluster and every process it started (pods included); safe to
# run twice. Its data (etcd, volumes) stays for the next cluster-up; `make clean` deletes it.
# State: ${KUBETUNE_CLUSTER_DIR:-<repo>/.local/cluster}.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY=python3
PYTHONPATH="$REPO/hack${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m kubetune_local.cluster down "$@"
