#!/usr/bin/env bash
# Start the local Kubernetes cluster (etcd, control plane, node agent); idempotent.
# State: ${KUBETUNE_CLUSTER_DIR:-<repo>/.local/cluster}. Last line: export KUBECONFIG=...
# The logic lives in hack/kubetune_local/cluster.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "cluster-up: $PY missing, run 'make install' first" >&2; exit 2; }
PYTHONPATH="$REPO/hack${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m kubetune_local.cluster up "$@"
