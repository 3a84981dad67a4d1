#!/usr/bin/env bash
# Start the local Kubernetes cluster (a supervisor running etcd, the control plane and the
# node agent), or repair it: the cluster recorded in the state dir comes back with its data,
# address and certificates; a healthy one is left alone. --fresh deletes the old data first.
# State: ${KUBETUNE_CLUSTER_DIR:-<repo>/.local/cluster}. Last line: export KUBECONFIG=...
# The logic lives in hack/kubetune_local/cluster.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "cluster-up: $PY missing, run 'make install' first" >&2; exit 2; }
PYTHONPATH="$REPO/hack${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m kubetune_local.cluster up "$@"
