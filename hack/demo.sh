#!/usr/bin/env bash
# make demo: dev-up, then SmolLM2-135M-Instruct fine-tuned with LoRA on data/frigo_chat.jsonl over
# HTTP with a live progress bar; a repair question answered before and after, the held-out eval
# loss and bits per byte before and after, the promotion to the alias `frigo`, the models list.
# The API keeps running afterwards; `make dev-down` stops everything. Logic:
# hack/kubetune_local/devstack.py and hack/kubetune_local/demo.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$REPO/.venv/bin/python" -m kubetune_local.devstack demo "$@"
