"""Consistency checks between the deployment descriptions and Switchboard's fixed facts.

Called by scripts/check-deploy.sh (which first validates the files with the real tools):

    python3 check-deploy-consistency.py ROOT [LABEL=RENDERED.yaml ...]

ROOT is the workspace root (docker-compose.yml, Dockerfile, k8s/secret.example.yaml);
each RENDERED.yaml is the output of `kubectl kustomize LABEL` for one kustomization.
Needs PyYAML only (kubernetes-validate's own dependency). Prints one line per problem
and exits 1 if there is any.

Besides ports, probes and the like, it checks that the services are wired to each other
(WIRING: the gateway's gRPC clients, billing's local-checkout webhooks), that every
service gets the shared service token, that gateway and billing share the Stripe webhook
secret, that secrets come from the Secret in k8s (and from the environment / .env, with
the code's public development defaults, in compose), and that the retired variable name
STRIPE_WEBHOOK_SECRET is used nowhere.
"""

import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

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
SECRETISH = re.compile(r"(DATABASE_URL|AMQP_URL|SERVICE_TOKEN|STRIPE_WEBHOOK_SECRET|STRIPE_API_KEY|OPENAI_API_KEY)$")

# Shared secrets (read as {SVC}_<NAME>, else SWITCHBOARD_<NAME>) and who needs them.
SERVICE_TOKEN = "SWITCHBOARD_SERVICE_TOKEN"  # every service; at least 16 characters
WEBHOOK_SECRET = "SWITCHBOARD_STRIPE_WEBHOOK_SECRET"  # gateway verifies, billing's local checkout signs
WEBHOOK_SECRET_USERS = ("gateway", "billing")
STRIPE_API_KEY = "SWITCHBOARD_STRIPE_API_KEY"  # billing only, optional
STRIPE_API_KEY_USERS = ("billing",)
OPENAI_API_KEY = "AI_ASSIST_OPENAI_API_KEY"  # ai-assist only, optional
OPENAI_API_KEY_USERS = ("ai-assist",)
# The variable's old name, read by nothing any more: a deployment setting it would silently
# run with the public development secret.
RETIRED = re.compile(r"(?<![A-Za-z0-9_])STRIPE_WEBHOOK_SECRET(?![A-Za-z0-9_])")
# Secret -> key each secret variable is read from in k8s.
SECRET_KEYS = {
    SERVICE_TOKEN: "service-token",
    WEBHOOK_SECRET: "stripe-webhook-secret",
    STRIPE_API_KEY: "stripe-api-key",
    OPENAI_API_KEY: "openai-api-key",
}
OPTIONAL_SECRET_KEYS = {"stripe-api-key", "openai-api-key"}
# The public development values the code falls back to when a secret is unset (compose
# defaults to them so that its services agree with each other and warn like the code does).
DEV_SECRETS = {
    SERVICE_TOKEN: ("libs/sb-runtime/src/config.rs", "DEV_SERVICE_TOKEN", "switchboard-local-dev-service-token"),
    WEBHOOK_SECRET: ("libs/sb-stripe/src/lib.rs", "DEV_WEBHOOK_SECRET", "whsec_switchboard_local_development_only"),
}


def grpc_url(target):
    return f"http://{target}:{SERVICES[target][2]}"


# Service-to-service addresses: service -> {variable: URL through the target's compose
# service / k8s Service name}. The code's defaults (127.0.0.1) are wrong in a container.
WIRING = {
    "gateway": {
        "GATEWAY_IDENTITY_URL": grpc_url("identity"),
        "GATEWAY_BILLING_URL": grpc_url("billing"),
        "GATEWAY_CRM_SYNC_URL": grpc_url("crm-sync"),
        "GATEWAY_SUPPORT_URL": grpc_url("support-router"),
        "GATEWAY_AI_URL": grpc_url("ai-assist"),
    },
    "support-router": {
        # The plan of an account it has not heard about from billing's events yet.
        "SUPPORT_ROUTER_BILLING_URL": grpc_url("billing"),
    },
    "billing": {
        # The embedded local checkout POSTs signed webhooks here, inside the network.
        "BILLING_LOCAL_WEBHOOK_URL": f"http://gateway:{SERVICES['gateway'][1]}/webhooks/stripe",
    },
}
# Where browsers reach the gateway, for billing: SWITCHBOARD_PUBLIC_URL or BILLING_PUBLIC_URL.
PUBLIC_URL_VARS = ("BILLING_PUBLIC_URL", "SWITCHBOARD_PUBLIC_URL")

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def db_name(name):
    return "switchboard_" + name.replace("-", "_")


def same_endpoint(actual, expected, k8s_namespace=None):
    """Whether URL `actual` is `expected` (scheme, host, port, path; a trailing / ignored).

    In k8s the host may also be the Service's namespaced or fully qualified DNS name."""
    try:
        a, e = urlsplit(str(actual)), urlsplit(expected)
        a_port, e_port = a.port, e.port
    except ValueError:
        return False
    hosts = {e.hostname}
    if k8s_namespace:
        hosts |= {f"{e.hostname}.{k8s_namespace}", f"{e.hostname}.{k8s_namespace}.svc",
                  f"{e.hostname}.{k8s_namespace}.svc.cluster.local"}
    return (a.scheme == e.scheme and a.hostname in hosts and a_port == e_port
            and a.path.rstrip("/") == e.path.rstrip("/") and not a.query and not a.fragment)


def is_http_url(value):
    return bool(re.fullmatch(r"https?://[^/\s]+(/\S*)?", str(value or "")))


INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose_default(value):
    """`value` as compose resolves it with an empty environment (${VAR:-default} -> default)."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", str(value))


def check_retired_name(where, text):
    for lineno, line in enumerate(text.splitlines(), 1):
        if RETIRED.search(line):
            problem(f"{where}:{lineno}", f"uses the retired name STRIPE_WEBHOOK_SECRET (now {WEBHOOK_SECRET}): {line.strip()!r}")


def check_dev_secrets(root):
    """The development defaults above still match the code (skipped without the sources)."""
    for var, (source, const, value) in DEV_SECRETS.items():
        path = root / source
        if not path.exists():
            continue
        m = re.search(rf"\b{const}\s*:\s*&str\s*=\s*\"([^\"]*)\"", path.read_text())
        if not m:
            problem("scripts/check-deploy-consistency.py", f"{const} not found in {source}: update DEV_SECRETS")
        elif m.group(1) != value:
            problem("scripts/check-deploy-consistency.py", f"DEV_SECRETS[{var}] is {value!r} but {source} has {m.group(1)!r}")


# --------------------------------------------------------------------------- compose
def check_compose(root):
    path = root / "docker-compose.yml"
    where = "docker-compose.yml"
    text = path.read_text()
    check_retired_name(where, text)
    doc = yaml.safe_load(text)  # resolves anchors and `<<` merge keys
    services = doc.get("services") or {}
    shared_secret_values = {}  # variable -> {service: raw value}, must agree across services

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

        # Wiring to the other services, by their compose service names.
        for var, url in WIRING.get(name, {}).items():
            value = compose_default(env.get(var, ""))
            if not same_endpoint(value, url):
                problem(w, f"{var} must be {url} (the other service inside the compose network), got {env.get(var)!r}")
        if name == "billing":
            found = [v for v in PUBLIC_URL_VARS if v in env]
            if not found:
                problem(w, f"environment lacks SWITCHBOARD_PUBLIC_URL (where browsers reach the gateway, "
                           f"e.g. http://localhost:{SERVICES['gateway'][1]})")
            for var in found:
                if not is_http_url(compose_default(env[var])):
                    problem(w, f"{var} must be an http(s) URL, got {env[var]!r}")

        # Secrets: from the environment / .env, defaulting to the code's public dev values.
        wanted = [SERVICE_TOKEN] + ([WEBHOOK_SECRET] if name in WEBHOOK_SECRET_USERS else [])
        for var in wanted:
            if var not in env:
                problem(w, f"environment lacks {var}")
                continue
            shared_secret_values.setdefault(var, {})[name] = str(env[var])
            m = INTERPOLATION.fullmatch(str(env[var]))
            dev = DEV_SECRETS[var][2]
            if not m or m.group(1) != var or m.group(2) != ":-" or m.group(3) != dev:
                problem(w, f"{var} must be \"${{{var}:-{dev}}}\" (overridable from the environment or .env; "
                           f"defaults to the code's public development value), got {env[var]!r}")
        if name in STRIPE_API_KEY_USERS:
            if env.get(STRIPE_API_KEY) != f"${{{STRIPE_API_KEY}:-}}":
                problem(w, f"{STRIPE_API_KEY} must be \"${{{STRIPE_API_KEY}:-}}\" (optional, from the environment "
                           f"or .env, never a committed key), got {env.get(STRIPE_API_KEY)!r}")
        elif STRIPE_API_KEY in env:
            problem(w, f"{STRIPE_API_KEY} is only for {', '.join(STRIPE_API_KEY_USERS)}")
        if name in OPENAI_API_KEY_USERS and OPENAI_API_KEY in env and env.get(OPENAI_API_KEY) != f"${{{OPENAI_API_KEY}:-}}":
            problem(w, f"{OPENAI_API_KEY} must be \"${{{OPENAI_API_KEY}:-}}\" (optional, from the environment or .env), got {env.get(OPENAI_API_KEY)!r}")
        for var, value in env.items():
            if re.search(r"(SERVICE_TOKEN|STRIPE_WEBHOOK_SECRET|STRIPE_API_KEY|OPENAI_API_KEY)$", var) and not INTERPOLATION.fullmatch(str(value)):
                problem(w, f"{var} holds a literal value: take it from the environment (${{{var}:-...}})")

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

    for var, values in shared_secret_values.items():
        if len(set(values.values())) > 1:
            problem(where, f"{var} differs between services {sorted(values)}: they must share one value")


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
    text = Path(path).read_text()
    check_retired_name(f"{where} (rendered)", text)
    docs = [d for d in yaml.safe_load_all(text) if d]
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
    shared_data = configmaps[shared[0]].get("data", {}) if len(shared) == 1 else {}
    referenced_keys = set()
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
        needed = {
            f"{svc}_DATABASE_URL": f"{name}-database-url",
            "SWITCHBOARD_AMQP_URL": "amqp-url",
            SERVICE_TOKEN: SECRET_KEYS[SERVICE_TOKEN],
        }
        if name in WEBHOOK_SECRET_USERS:
            needed[WEBHOOK_SECRET] = SECRET_KEYS[WEBHOOK_SECRET]
        if name in STRIPE_API_KEY_USERS:
            needed[STRIPE_API_KEY] = SECRET_KEYS[STRIPE_API_KEY]
        elif STRIPE_API_KEY in env:
            problem(w, f"{STRIPE_API_KEY} is only for {', '.join(STRIPE_API_KEY_USERS)}")
        if name in OPENAI_API_KEY_USERS:
            needed[OPENAI_API_KEY] = SECRET_KEYS[OPENAI_API_KEY]
        elif OPENAI_API_KEY in env:
            problem(w, f"{OPENAI_API_KEY} is only for {', '.join(OPENAI_API_KEY_USERS)}")
        if name in OPENAI_API_KEY_USERS:
            needed[OPENAI_API_KEY] = SECRET_KEYS[OPENAI_API_KEY]
        elif OPENAI_API_KEY in env:
            problem(w, f"{OPENAI_API_KEY} is only for {', '.join(OPENAI_API_KEY_USERS)}")
        for var, key in needed.items():
            ref = (env.get(var, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") != SECRET_NAME or ref.get("key") != key:
                problem(w, f"{var} must come from secretKeyRef {SECRET_NAME}/{key}, got {env.get(var)}")
                continue
            referenced_keys.add(key)
            optional = key in OPTIONAL_SECRET_KEYS
            if bool(ref.get("optional", False)) != optional:
                problem(w, f"{var}: secretKeyRef {SECRET_NAME}/{key} must {'' if optional else 'not '}be optional: true")
            documented = secret_keys is None or key in secret_keys[0] or (optional and key in secret_keys[1])
            if not documented:
                problem(w, f"secret key {key!r} is not documented in k8s/secret.example.yaml")
        for var, e in env.items():
            if SECRETISH.search(var) and not (e.get("valueFrom") or {}).get("secretKeyRef"):
                problem(w, f"{var} is not taken from a secretKeyRef; it must come from a Secret")
        for src in c.get("envFrom", []):
            if src.get("secretRef"):
                problem(w, f"envFrom secretRef {src['secretRef']} hides which secrets are read: use secretKeyRef per variable")

        # Wiring to the other services, by their Services' DNS names (env, else the ConfigMap).
        def setting(var):
            e = env.get(var)
            return e.get("value") if e is not None else shared_data.get(var)
        for var, url in WIRING.get(name, {}).items():
            if not same_endpoint(setting(var), url, NAMESPACE):
                problem(w, f"{var} must be {url} (the other service's Service), got {setting(var)!r}")
        if name == "billing":
            urls = {v: setting(v) for v in PUBLIC_URL_VARS if setting(v) is not None}
            if not urls:
                problem(w, "no SWITCHBOARD_PUBLIC_URL (where browsers reach the gateway) in the ConfigMap or env")
            for var, value in urls.items():
                if not is_http_url(value) or re.search(r"//(localhost|127\.0\.0\.1)[:/]", str(value) + "/"):
                    problem(w, f"{var} must be the portal's public http(s) URL, got {value!r}")
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

    if secret_keys is not None:
        for key in sorted((secret_keys[0] | secret_keys[1]) - referenced_keys):
            problem(where, f"k8s/secret.example.yaml documents key {key!r}, which no Deployment reads")


def secret_example_keys(root):
    """(keys set, optional keys shown commented out) of k8s/secret.example.yaml."""
    path = root / "k8s" / "secret.example.yaml"
    if not path.exists():
        problem("k8s/secret.example.yaml", "missing")
        return None
    text = path.read_text()
    doc = yaml.safe_load(text)
    if doc.get("kind") != "Secret" or doc["metadata"].get("name") != SECRET_NAME:
        problem("k8s/secret.example.yaml", f"must be the Secret {SECRET_NAME!r}")
    values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
    for key, value in values.items():
        if "REPLACE_ME" not in str(value):
            problem("k8s/secret.example.yaml", f"key {key!r} must hold a REPLACE_ME placeholder, not a value")
    commented = set(re.findall(r'^  # ([a-z0-9-]+): "REPLACE_ME', text, re.M))
    for key in sorted(OPTIONAL_SECRET_KEYS - set(values) - commented):
        problem("k8s/secret.example.yaml", f"optional key {key!r} is not documented (as a commented-out line)")
    return set(values), commented


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
    check_dev_secrets(root)
    for f in [root / "Dockerfile", *sorted((root / "k8s").rglob("*.y*ml"))]:
        if f.is_file():
            check_retired_name(str(f.relative_to(root)), f.read_text())
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
