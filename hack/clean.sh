#!/usr/bin/env bash
# make clean: stop the dev stack and the local cluster, then delete what they keep between
# runs -- etcd data (FineTuneJobs...), volumes (trained models!), certificates, logs and
# <repo>/.local/dev. The next `make dev-up` / `make cluster-up` starts from scratch.
# State: ${KUBETUNE_CLUSTER_DIR:-<repo>/.local/cluster}. Logic: hack/kubetune_local/devstack.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY=python3
PYTHONPATH="$REPO/hack${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m kubetune_local.devstack clean "$@"
