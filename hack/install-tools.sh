#!/usr/bin/env bash
# Tools the tests use that are not Python imports: helm (from a PyPI wheel, see README) and
# the system packages the local cluster needs. Idempotent; everything lands in .venv/bin.
set -euo pipefail
echo "[install-tools] nothing extra yet"
