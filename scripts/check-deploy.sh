#!/usr/bin/env bash
# Offline validation of Switchboard's deployment descriptions: no Docker engine and no
# Kubernetes cluster needed.
#
#   0. Dockerfile                `hadolint` (parses and lints it)
#   1. docker-compose.yml        `docker compose config -q` (or `docker-compose config -q`)
#   2. k8s/ kustomizations       `kubectl kustomize` of k8s/base and every k8s/overlays/*
#   3. rendered k8s manifests    `kubernetes-validate --strict` (unknown fields fail) against
#                                each version in K8S_VERSIONS; so is k8s/secret.example.yaml
#   4. consistency with the facts: the six services, their binaries, ports, env vars,
#                                service-to-service wiring (gateway -> identity/billing/
#                                crm-sync, billing's local webhooks -> gateway, shared service
#                                token and Stripe webhook secret), probes, secrets wiring,
#                                Dockerfile
#                                (check-deploy-consistency.py)
#   5. no plaintext credentials in k8s/
#   6. the founder's alarms      `promtool check rules` and `promtool test rules` of
#                                k8s/monitoring/alerts.yml, `promtool check config` of
#                                k8s/monitoring/prometheus.yml; k8s/monitoring/dashboard.json parses
#
# Exit status: 0 all passed, 1 a check failed, 2 a tool is missing
# (install them with: bash scripts/install-check-tools.sh).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

TOOLS_VENV="${SWITCHBOARD_TOOLS_VENV:-/opt/switchboard-check-tools}"
# Oldest Kubernetes the manifests are meant to run on, and the newest schema bundled with
# the pinned kubernetes-validate (its schemas ship in the package: no network needed).
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

FAILED=()
ok()   { printf 'ok    %s\n' "$1"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'
    FAILED+=("$1")
}
missing() {
    printf 'check-deploy: missing tool: %s\n' "$1" >&2
    printf 'check-deploy: install the tools with (as root): bash scripts/install-check-tools.sh\n' >&2
    exit 2
}

# --- tools --------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    missing "docker compose (v2 plugin) or docker-compose"
fi

kustomize_major() {
    "$1" version --client -o json 2>/dev/null |
        sed -n 's/.*"kustomizeVersion": *"v\([0-9][0-9]*\)\..*/\1/p'
}
KUBECTL=""
for k in "${KUBECTL_BIN:-}" "$(command -v kubectl 2>/dev/null)" "$TOOLS_VENV/bin/kubectl"; do
    { [ -n "$k" ] && [ -x "$k" ]; } || continue
    m="$(kustomize_major "$k")"
    if [ -n "$m" ] && [ "$m" -ge 4 ]; then KUBECTL="$k"; break; fi
done
[ -n "$KUBECTL" ] || missing "kubectl with kustomize v4 or newer (Debian 12's kubectl 1.20 is too old)"

KV="$(command -v kubernetes-validate 2>/dev/null || true)"
[ -n "$KV" ] || { [ -x "$TOOLS_VENV/bin/kubernetes-validate" ] && KV="$TOOLS_VENV/bin/kubernetes-validate"; }
[ -n "$KV" ] || missing "kubernetes-validate"

HADOLINT="$(command -v hadolint 2>/dev/null || true)"
[ -n "$HADOLINT" ] || { [ -x "$TOOLS_VENV/bin/hadolint" ] && HADOLINT="$TOOLS_VENV/bin/hadolint"; }
[ -n "$HADOLINT" ] || missing "hadolint"

PROMTOOL="$(command -v promtool 2>/dev/null || true)"
[ -n "$PROMTOOL" ] || missing "promtool (Debian's prometheus package)"

# A Python with PyYAML for the consistency checks: kubernetes-validate's own interpreter has it.
PY=""
kv_py="$(head -n1 "$KV" 2>/dev/null | sed -n 's/^#! *\([^ ]*\).*/\1/p')"
for p in "$TOOLS_VENV/bin/python3" "$kv_py" "$(command -v python3 2>/dev/null)"; do
    [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import yaml' >/dev/null 2>&1 && { PY="$p"; break; }
done
[ -n "$PY" ] || missing "python3 with PyYAML (comes with kubernetes-validate)"

printf 'check-deploy: %s | kubectl %s (kustomize v%s) | kubernetes-validate %s | k8s %s | %s\n' \
    "$("${COMPOSE[@]}" version 2>/dev/null | head -n1)" "$KUBECTL" "$(kustomize_major "$KUBECTL")" \
    "$("$KV" --version 2>&1 | tail -n1)" "$K8S_VERSIONS" "$("$HADOLINT" --version 2>&1 | head -n1)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- 0. Dockerfile -----------------------------------------------------------------------
# DL3008 (pin apt package versions) is ignored: ca-certificates should follow the base
# image's security updates rather than a pinned version that Debian soon withdraws.
if out="$("$HADOLINT" --no-color --ignore DL3008 Dockerfile 2>&1)"; then
    ok "Dockerfile: hadolint"
else
    fail "Dockerfile: hadolint" "$out"
fi

# --- 1. compose ---------------------------------------------------------------------------
if out="$("${COMPOSE[@]}" -f docker-compose.yml config -q 2>&1)"; then
    ok "docker-compose.yml: ${COMPOSE[*]} config -q"
else
    fail "docker-compose.yml: ${COMPOSE[*]} config -q" "$out"
fi

# --- 2. kustomize -------------------------------------------------------------------------
KUSTOMIZATIONS=(k8s/base)
for d in k8s/overlays/*/; do
    [ -f "$d/kustomization.yaml" ] && KUSTOMIZATIONS+=("${d%/}")
done
RENDERED=()   # label=file pairs for the consistency checks
for kdir in "${KUSTOMIZATIONS[@]}"; do
    file="$TMP/$(printf '%s' "$kdir" | tr '/' '_').yaml"
    if out="$("$KUBECTL" kustomize "$kdir" 2>&1 >"$file")"; then
        if [ -n "$out" ]; then
            fail "$kdir: kubectl kustomize printed warnings" "$out"
        else
            ok "$kdir: kubectl kustomize"
        fi
        RENDERED+=("$kdir=$file")
    else
        fail "$kdir: kubectl kustomize" "$out"
    fi
done

# --- 3. schema validation -----------------------------------------------------------------
kv_args=(--strict --quiet)
for v in $K8S_VERSIONS; do kv_args+=(-k "$v"); done
validate() {  # label file
    local out rc
    out="$("$KV" "${kv_args[@]}" "$2" 2>&1)"
    rc=$?
    # --quiet prints only problems; a WARN means a kind/apiVersion without a schema
    # (e.g. a misspelt kind), which kubernetes-validate itself would let pass.
    if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
        ok "$1: kubernetes-validate --strict (k8s $K8S_VERSIONS)"
    else
        fail "$1: kubernetes-validate --strict (k8s $K8S_VERSIONS)" "${out//"$2"/$1}"
    fi
}
for pair in "${RENDERED[@]}"; do
    validate "${pair%%=*}" "${pair#*=}"
done
validate k8s/secret.example.yaml k8s/secret.example.yaml

# --- 4. consistency with the facts --------------------------------------------------------
if out="$("$PY" "$ROOT/scripts/check-deploy-consistency.py" "$ROOT" "${RENDERED[@]}" 2>&1)"; then
    ok "consistency: six services, ports, env, service wiring, probes, secrets wiring, Dockerfile"
else
    fail "consistency: six services, ports, env, service wiring, probes, secrets wiring, Dockerfile" "$out"
fi

# --- 5. no plaintext credentials in k8s/ --------------------------------------------------
# Default broker credentials, Stripe secrets/keys, and any user:password@ in a URL unless it
# is a REPLACE_ME placeholder.
leaks="$(grep -rnIE 'guest:guest|whsec_|(sk|rk)_(live|test)_|://[^:/@[:space:]"'\'']+:[^@[:space:]"'\'']+@' k8s/ |
         grep -vE '://REPLACE_ME[A-Z_]*:REPLACE_ME[A-Z_]*@|://USER:PASSWORD@' || true)"
if [ -z "$leaks" ]; then
    ok "k8s/: no plaintext credentials"
else
    fail "k8s/: plaintext credentials found (use the Secret switchboard-secrets)" "$leaks"
fi

# --- 6. the founder's alarms -----------------------------------------------------------------
if out="$(cd k8s/monitoring && "$PROMTOOL" check rules alerts.yml 2>&1 && "$PROMTOOL" test rules alerts.test.yml 2>&1 &&
          "$PROMTOOL" check config prometheus.yml 2>&1)"; then
    ok "k8s/monitoring: promtool check rules + test rules + check config"
else
    fail "k8s/monitoring: promtool check rules + test rules + check config" "$out"
fi
if out="$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["panels"], "no panels"' k8s/monitoring/dashboard.json 2>&1)"; then
    ok "k8s/monitoring/dashboard.json: Grafana dashboard JSON"
else
    fail "k8s/monitoring/dashboard.json: Grafana dashboard JSON" "$out"
fi

# --- summary ------------------------------------------------------------------------------
if [ "${#FAILED[@]}" -eq 0 ]; then
    printf 'check-deploy: all checks passed\n'
    exit 0
fi
printf 'check-deploy: %d check(s) FAILED:\n' "${#FAILED[@]}"
printf '  - %s\n' "${FAILED[@]}"
exit 1
