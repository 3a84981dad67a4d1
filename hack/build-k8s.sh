#!/usr/bin/env bash
# Obtain kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 for the local
# cluster. No registry ships them prebuilt, so they are built from Debian's `kubernetes`
# source package (see README "How the local cluster works"). The result is cached under
# ${KUBETUNE_CACHE:-~/.cache/kubetune}/k8s-v1.20.2/bin; a warm run returns at once.
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
DEST="$CACHE/k8s-$K8S_VERSION/bin"
BINS=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() {
  for b in "${BINS[@]}"; do [ -x "$DEST/$b" ] || return 1; done
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || return 1
}

log() { echo "[build-k8s] $*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# etcd and the tools the node agent and scripts use are needed even when binaries are cached.
apt_install etcd-server openssl util-linux jq

if have_all; then
  log "cached: $DEST"
  exit 0
fi

apt_install golang-go rsync dpkg-dev make golang-github-modern-go-reflect2-dev

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubetune-k8s-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log "building $K8S_VERSION in $WORK (about 8 minutes on 2 cores)"

# A private apt configuration with deb-src lines, leaving the system's sources untouched.
mkdir -p "$WORK/apt/lists/partial" "$WORK/src"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
cat >"$WORK/apt/sources.list" <<SRC
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian-security $codename-security main
SRC
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$WORK/apt/lists" -o "APT::Sandbox::User=root")
apt-get "${APT_OPTS[@]}" update -qq >/dev/null
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes >/dev/null)
(cd "$WORK/src" && dpkg-source -x --skip-patches kubernetes_*.dsc k8s >/dev/null 2>&1 ||
  dpkg-source -x kubernetes_*.dsc k8s >/dev/null)

# The vendored reflect2 v1.0.1 crashes under Go >= 1.18; Debian packages the fixed v1.0.2.
R2="$WORK/src/k8s/vendor/github.com/modern-go/reflect2"
find "$R2" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$R2/"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R2/" 2>/dev/null || true

mkdir -p "$WORK/home" "$WORK/gocache"
(cd "$WORK/src/k8s" &&
  HOME="$WORK/home" GOCACHE="$WORK/gocache" GOFLAGS=-mod=vendor \
  KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$WORK/build.log" 2>&1) || {
  tail -40 "$WORK/build.log" >&2
  exit 1
}

mkdir -p "$DEST.tmp"
for b in "${BINS[@]}"; do cp "$WORK/src/k8s/_output/bin/$b" "$DEST.tmp/$b"; done
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
log "built: $DEST"
