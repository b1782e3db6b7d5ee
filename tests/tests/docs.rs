//! The README is the user's manual: these checks keep it true to the code.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[test]
fn readme_lists_every_event_type_of_the_catalog_with_its_producer() {
    let readme = read("README.md");
    for spec in sb_bus::catalog::CATALOG {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", spec.event_type)))
            .unwrap_or_else(|| panic!("README's event catalog lacks {}", spec.event_type));
        assert!(row.contains(&format!("| {} |", spec.producer)), "README gives the wrong producer for {}: {row}", spec.event_type);
    }
}

/// Every catalog event has a consumer: the README's catalog names who consumes it, and that
/// service's `lib.rs` registers a handler for the event's payload type.
#[test]
fn every_catalog_event_is_consumed_by_the_service_the_readme_names() {
    let readme = read("README.md");
    for spec in sb_bus::catalog::CATALOG {
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{}` |", spec.event_type))).unwrap();
        let consumers = row.split('|').nth(3).unwrap_or_default().trim().to_owned();
        assert!(!consumers.is_empty(), "README names no consumer of {}: {row}", spec.event_type);
        for consumer in consumers.split(',').map(str::trim) {
            let events = read(&format!("services/{consumer}/src/events.rs"));
            assert!(
                events.contains(&format!("<{}>", spec.payload)),
                "{consumer} has no handler for {} ({})",
                spec.event_type,
                spec.payload
            );
        }
    }
}

#[test]
fn readme_ports_match_the_defaults() {
    let readme = read("README.md");
    for svc in sb_bus::catalog::SERVICES {
        let (http, grpc) = sb_runtime::config::default_ports(svc);
        let row = readme.lines().find(|l| l.starts_with(&format!("| {svc} "))).unwrap_or_else(|| panic!("README's port table lacks {svc}"));
        assert!(row.contains(&format!("`127.0.0.1:{http}`")) && row.contains(&format!("`127.0.0.1:{grpc}`")), "{svc}: {row}");
    }
}

/// Every setting the config loader reads is documented (`SVC_X` or `SWITCHBOARD_X`).
#[test]
fn readme_documents_every_setting_the_code_reads() {
    let readme = read("README.md");
    let src = read("libs/sb-runtime/src/config.rs");
    let mut found = 0;
    for (call, doc_prefix) in [("env.own(\"", "SVC_"), ("env.shared(\"", "SWITCHBOARD_"), ("duration(env, \"", "SWITCHBOARD_")] {
        for piece in src.split(call).skip(1) {
            let name = piece.split('"').next().unwrap();
            found += 1;
            assert!(readme.contains(&format!("`{doc_prefix}{name}`")), "README does not document {doc_prefix}{name}");
        }
    }
    assert!(found >= 12, "expected to find the settings in config.rs, found {found}");
    // Each service's own settings: `env.own("X")` in services/<svc>/src/config.rs is `<SVC>_X`.
    for svc in sb_bus::catalog::SERVICES {
        let Ok(src) = std::fs::read_to_string(root().join(format!("services/{svc}/src/config.rs"))) else { continue };
        let prefix = svc.to_uppercase().replace('-', "_");
        for piece in src.split("env.own(\"").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(readme.contains(&format!("`{prefix}_{name}`")), "README does not document {prefix}_{name}");
        }
        // Shared ones a service reads (`env.shared("X")`: `SWITCHBOARD_X`, overridable per service).
        for piece in src.split("env.shared(\"").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(readme.contains(&format!("`SWITCHBOARD_{name}`")), "README does not document SWITCHBOARD_{name}");
        }
    }
    for var in ["OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG"] {
        assert!(readme.contains(&format!("`{var}`")), "README does not document {var}");
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read("README.md");
    assert!(readme.contains("make run") && readme.contains("make test"));
    let ci = read(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == "make test"), ".ci/run must call the README's test command");
    let makefile = read("Makefile");
    for target in ["run:", "test:", "bench:"] {
        assert!(makefile.lines().any(|l| l.starts_with(target)), "Makefile lacks {target}");
    }
}
