"""Consistency checks between the deployment descriptions and Switchboard's fixed facts.

Called by scripts/check-deploy.sh (which first validates the files with the real tools):

    python3 check-deploy-consistency.py ROOT [LABEL=RENDERED.yaml ...]

ROOT is the workspace root (docker-compose.yml, Dockerfile, k8s/secret.example.yaml);
each RENDERED.yaml is the output of `kubectl kustomize LABEL` for one kustomization.
Needs PyYAML only (kubernetes-validate's own dependency). Prints one line per problem
and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

import yaml

# name -> (env prefix, HTTP port, gRPC port). The single source of truth for the checks.
SERVICES = {
    "gateway": ("GATEWAY", 8080, 50050),
    "identity": ("IDENTITY", 8081, 50051),
    "billing": ("BILLING", 8082, 50052),
    "crm-sync": ("CRM_SYNC", 8083, 50053),
    "support-router": ("SUPPORT_ROUTER", 8084, 50054),
    "ai-assist": ("AI_ASSIST", 8085, 50055),
}
BINARIES = list(SERVICES) + ["switchboard"]
SHARED_CONFIG = ["SWITCHBOARD_BUS_PREFIX", "SWITCHBOARD_RETRY_DELAYS", "SWITCHBOARD_LOG_FORMAT", "RUST_LOG"]
SECRET_NAME = "switchboard-secrets"
NAMESPACE = "switchboard"
SECRETISH = re.compile(r"(DATABASE_URL|AMQP_URL|STRIPE_WEBHOOK_SECRET)$")

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def db_name(name):
    return "switchboard_" + name.replace("-", "_")


# --------------------------------------------------------------------------- compose
def check_compose(root):
    path = root / "docker-compose.yml"
    where = "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())  # resolves anchors and `<<` merge keys
    services = doc.get("services") or {}

    expected = set(SERVICES) | {"postgres", "rabbitmq"}
    for extra in sorted(set(services) - expected):
        problem(where, f"unexpected service {extra!r} (expected only {sorted(expected)})")

    pg = services.get("postgres")
    if not pg:
        problem(where, "service 'postgres' missing")
    else:
        if not re.fullmatch(r"postgres:1[56]([.-].*)?", str(pg.get("image", ""))):
            problem(where, f"postgres image must be PostgreSQL 15 or 16, got {pg.get('image')!r}")
        if "healthcheck" not in pg:
            problem(where, "postgres has no healthcheck")

    rmq = services.get("rabbitmq")
    if not rmq:
        problem(where, "service 'rabbitmq' missing")
    else:
        if rmq.get("image") != "rabbitmq:3.13-management":
            problem(where, f"rabbitmq image must be rabbitmq:3.13-management, got {rmq.get('image')!r}")
        test = rmq.get("healthcheck", {}).get("test", [])
        test = " ".join(test) if isinstance(test, list) else str(test)
        if "rabbitmq-diagnostics -q ping" not in test:
            problem(where, f"rabbitmq healthcheck must run `rabbitmq-diagnostics -q ping`, got {test!r}")
        ports = " ".join(str(p) for p in rmq.get("ports", []))
        for port in (5672, 15672):
            if not re.search(rf"(^|[ :]){port}:{port}\b", ports):
                problem(where, f"rabbitmq must publish port {port}, ports are {ports!r}")

    for name, (svc, http, grpc) in SERVICES.items():
        s = services.get(name)
        w = f"{where} service {name!r}"
        if not s:
            problem(where, f"service {name!r} missing")
            continue
        build = s.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        if context not in (".", "./"):
            problem(w, f"must build from context '.', got {context!r}")
        if isinstance(build, dict) and build.get("dockerfile", "Dockerfile") != "Dockerfile":
            problem(w, f"must build ./Dockerfile, got {build.get('dockerfile')!r}")
        command = s.get("command")
        if command not in ([name], name):
            problem(w, f"command must be [{name!r}], got {command!r}")

        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        if env.get(f"{svc}_HTTP_ADDR") != f"0.0.0.0:{http}":
            problem(w, f"{svc}_HTTP_ADDR must be 0.0.0.0:{http}, got {env.get(f'{svc}_HTTP_ADDR')!r}")
        if env.get(f"{svc}_GRPC_ADDR") != f"0.0.0.0:{grpc}":
            problem(w, f"{svc}_GRPC_ADDR must be 0.0.0.0:{grpc}, got {env.get(f'{svc}_GRPC_ADDR')!r}")
        db = str(env.get(f"{svc}_DATABASE_URL", ""))
        if not re.fullmatch(rf"postgres(ql)?://[^@/]+@postgres:5432/{db_name(name)}", db):
            problem(w, f"{svc}_DATABASE_URL must point at postgres:5432/{db_name(name)}, got {db!r}")
        amqp = str(env.get("SWITCHBOARD_AMQP_URL", env.get(f"{svc}_AMQP_URL", "")))
        if not re.fullmatch(r"amqps?://[^@/]+@rabbitmq:5672/.*", amqp):
            problem(w, f"SWITCHBOARD_AMQP_URL must point at rabbitmq:5672, got {amqp!r}")
        for key in SHARED_CONFIG:
            if key not in env:
                problem(w, f"environment lacks {key}")
        if name == "gateway" and "STRIPE_WEBHOOK_SECRET" not in env:
            problem(w, "environment lacks STRIPE_WEBHOOK_SECRET")

        deps = s.get("depends_on") or {}
        for dep in ("postgres", "rabbitmq"):
            cond = deps.get(dep, {}).get("condition") if isinstance(deps, dict) else None
            if cond != "service_healthy":
                problem(w, f"must depend on {dep} with condition service_healthy, got {cond!r}")

        ports = [str(p) for p in s.get("ports", [])]
        if not any(re.search(rf"(^|:){http}:{http}(/tcp)?$", p) for p in ports):
            problem(w, f"must publish its HTTP port {http} to the host, ports are {ports}")

        hc = s.get("healthcheck")
        if hc:
            test = " ".join(hc.get("test", [])) if isinstance(hc.get("test"), list) else str(hc.get("test"))
            if f"/{http}" not in test or "/readyz" not in test:
                problem(w, f"healthcheck must probe /readyz on port {http}, got {test!r}")


# --------------------------------------------------------------------------- kubernetes
def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def port_map(container):
    return {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}


def check_probe(w, container, kind, path, http):
    probe = container.get(kind)
    if not probe:
        problem(w, f"{kind} missing")
        return
    get = probe.get("httpGet") or {}
    if get.get("path") != path or get.get("port") not in ("http", http):
        problem(w, f"{kind} must be httpGet {path} on port http/{http}, got {get}")


def check_rendered(where, path, secret_keys):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = d
        ns = d["metadata"].get("namespace")
        if d.get("kind") != "Namespace" and ns != NAMESPACE:
            problem(where, f"{d.get('kind')}/{d['metadata']['name']} is in namespace {ns!r}, not {NAMESPACE!r}")

    if NAMESPACE not in by_kind.get("Namespace", {}):
        problem(where, f"Namespace {NAMESPACE!r} missing")
    for secret in by_kind.get("Secret", {}):
        problem(where, f"Secret {secret!r} is rendered: secrets must be created out of band, not from k8s/")

    configmaps = by_kind.get("ConfigMap", {})
    shared = [n for n in configmaps if n.startswith("switchboard-config")]
    if len(shared) != 1:
        problem(where, f"expected exactly one switchboard-config ConfigMap, found {shared}")
    for cm_name in shared:
        data = configmaps[cm_name].get("data", {})
        for key in SHARED_CONFIG:
            if key not in data:
                problem(where, f"ConfigMap {cm_name} lacks {key}")
        if data.get("SWITCHBOARD_LOG_FORMAT") not in ("json", "pretty"):
            problem(where, f"SWITCHBOARD_LOG_FORMAT must be json or pretty, got {data.get('SWITCHBOARD_LOG_FORMAT')!r}")
        for key in data:
            if SECRETISH.search(key):
                problem(where, f"ConfigMap {cm_name} holds {key}: it must come from a Secret")

    deployments = by_kind.get("Deployment", {})
    k8s_services = by_kind.get("Service", {})
    for extra in sorted(set(deployments) - set(SERVICES)):
        problem(where, f"unexpected Deployment {extra!r}")

    for name, (svc, http, grpc) in SERVICES.items():
        dep = deployments.get(name)
        w = f"{where} Deployment/{name}"
        if not dep:
            problem(where, f"Deployment {name!r} missing")
            continue
        pod = dep["spec"]["template"]
        pod_spec = pod["spec"]
        containers = pod_spec.get("containers", [])
        if len(containers) != 1:
            problem(w, f"expected one container, found {len(containers)}")
            continue
        c = containers[0]
        image = str(c.get("image", ""))
        if not re.fullmatch(r"([^/]+/)*switchboard(:[\w.-]+)?(@sha256:[0-9a-f]{64})?", image):
            problem(w, f"image must be the switchboard image, got {image!r}")
        if c.get("command") != [name]:
            problem(w, f"command must be [{name!r}], got {c.get('command')!r}")
        ports = port_map(c)
        if ports.get("http") != http or ports.get("grpc") != grpc:
            problem(w, f"containerPorts must be http={http}, grpc={grpc}, got {ports}")

        env = env_map(c)
        for var, port in ((f"{svc}_HTTP_ADDR", http), (f"{svc}_GRPC_ADDR", grpc)):
            if env.get(var, {}).get("value") != f"0.0.0.0:{port}":
                problem(w, f"{var} must be 0.0.0.0:{port}, got {env.get(var)}")
        needed = {f"{svc}_DATABASE_URL": f"{name}-database-url", "SWITCHBOARD_AMQP_URL": "amqp-url"}
        if name == "gateway":
            needed["STRIPE_WEBHOOK_SECRET"] = "stripe-webhook-secret"
        for var, key in needed.items():
            ref = (env.get(var, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") != SECRET_NAME or ref.get("key") != key:
                problem(w, f"{var} must come from secretKeyRef {SECRET_NAME}/{key}, got {env.get(var)}")
            if secret_keys is not None and key not in secret_keys:
                problem(w, f"secret key {key!r} is not documented in k8s/secret.example.yaml")
        for var, e in env.items():
            if SECRETISH.search(var) and "value" in e:
                problem(w, f"{var} is set as a plain value; it must come from a Secret")
        refs = [(f.get("configMapRef") or {}).get("name") for f in c.get("envFrom", [])]
        if not any(r in shared for r in refs):
            problem(w, f"envFrom must reference the switchboard-config ConfigMap, got {refs}")

        check_probe(w, c, "livenessProbe", "/healthz", http)
        check_probe(w, c, "readinessProbe", "/readyz", http)
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not all(k in (res.get(part) or {}) for k in ("cpu", "memory")):
                problem(w, f"resources.{part} must set cpu and memory, got {res.get(part)}")
        csc = c.get("securityContext") or {}
        psc = pod_spec.get("securityContext") or {}
        if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problem(w, "runAsNonRoot must be true")
        if csc.get("readOnlyRootFilesystem") is not True:
            problem(w, "readOnlyRootFilesystem must be true")

        ks = k8s_services.get(name)
        if not ks:
            problem(where, f"Service {name!r} missing")
            continue
        sel = ks["spec"].get("selector") or {}
        labels = pod["metadata"].get("labels") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problem(f"{where} Service/{name}", f"selector {sel} does not select the pods' labels {labels}")
        sports = {p.get("name"): (p.get("port"), p.get("targetPort")) for p in ks["spec"].get("ports", [])}
        if sports.get("http") not in ((http, "http"), (http, http)):
            problem(f"{where} Service/{name}", f"port http must be {http} -> http, got {sports.get('http')}")
        if sports.get("grpc") not in ((grpc, "grpc"), (grpc, grpc)):
            problem(f"{where} Service/{name}", f"port grpc must be {grpc} -> grpc, got {sports.get('grpc')}")


def secret_example_keys(root):
    path = root / "k8s" / "secret.example.yaml"
    if not path.exists():
        problem("k8s/secret.example.yaml", "missing")
        return None
    doc = yaml.safe_load(path.read_text())
    if doc.get("kind") != "Secret" or doc["metadata"].get("name") != SECRET_NAME:
        problem("k8s/secret.example.yaml", f"must be the Secret {SECRET_NAME!r}")
    values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
    for key, value in values.items():
        if "REPLACE_ME" not in str(value):
            problem("k8s/secret.example.yaml", f"key {key!r} must hold a REPLACE_ME placeholder, not a value")
    return set(values)


# --------------------------------------------------------------------------- Dockerfile
def check_dockerfile(root):
    where = "Dockerfile"
    text = (root / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), l.split()[1])
             for l in lines if l.upper().startswith("FROM ")]
    if not froms or froms[0] != "rust:1-bookworm":
        problem(where, f"builder stage must be FROM rust:1-bookworm, got {froms[:1]}")
    if not froms or froms[-1] != "debian:bookworm-slim":
        problem(where, f"final stage must be FROM debian:bookworm-slim, got {froms[-1:]}")
    if not re.search(r"cargo build --release --locked", text):
        problem(where, "must run `cargo build --release --locked`")
    if "ca-certificates" not in text:
        problem(where, "final stage must install ca-certificates")
    # Logical instructions (continuation lines joined) that take binaries out of target/release.
    logical = re.sub(r"\\\n", " ", text).splitlines()
    release = " ".join(l for l in logical if "target/release" in l)
    for b in BINARIES:
        if not re.search(rf"(^|[\s\"'/]){re.escape(b)}([\s\"';]|$)", release):
            problem(where, f"binary {b!r} is not taken from target/release into the image")
    users = [l.split(None, 1)[1] for l in lines if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problem(where, f"final stage must switch to a non-root USER, got {users}")
    if any(l.upper().startswith("ENTRYPOINT") for l in lines):
        problem(where, "must not set an ENTRYPOINT (compose/k8s pick the binary with `command`)")
    ignore = (root / ".dockerignore")
    ignored = ignore.read_text().split() if ignore.exists() else []
    for entry in ("target/", ".git/"):
        if entry not in ignored and entry.rstrip("/") not in ignored:
            problem(".dockerignore", f"must exclude {entry}")


def main():
    root = Path(sys.argv[1])
    check_dockerfile(root)
    check_compose(root)
    keys = secret_example_keys(root)
    for arg in sys.argv[2:]:
        label, _, rendered = arg.partition("=")
        check_rendered(label, rendered, keys)
    for p in problems:
        print(f"  - {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
