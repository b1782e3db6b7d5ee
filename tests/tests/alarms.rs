//! The founder's alarms (`k8s/monitoring/`): the rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), and every metric a rule or a dashboard panel names is served by
//! the six running services after a sign-up, a failed login, a payment and a ticket — an alarm on a
//! metric nobody serves would stay silent for good.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use system_tests::{Six, pay, sign_up};

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../k8s/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).current_dir(monitoring()).output().unwrap_or_else(|e| {
        panic!("promtool (Debian's prometheus package; `bash scripts/install-check-tools.sh` installs it) did not run: {e}")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `expr` of every rule in `alerts.yml` (one line, or a folded `>` block).
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        if value.trim() == ">" {
            let indent = line.len() - line.trim_start().len();
            let block = lines[i + 1..].iter().take_while(|l| l.len() - l.trim_start().len() > indent).map(|l| l.trim()).collect::<Vec<_>>();
            exprs.push(block.join(" "));
        } else {
            exprs.push(value.trim().to_owned());
        }
    }
    exprs
}

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// label names or Prometheus's own `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop label matchers, ranges and `by (...)` groupings first.
    let mut plain = String::new();
    let mut depth_curly = 0;
    let mut depth_square = 0;
    for c in expr.chars() {
        match c {
            '{' => depth_curly += 1,
            '}' => depth_curly -= 1,
            '[' => depth_square += 1,
            ']' => depth_square -= 1,
            _ if depth_curly == 0 && depth_square == 0 => plain.push(c),
            _ => plain.push(' '),
        }
    }
    for grouping in ["by (", "without ("] {
        while let Some(at) = plain.find(grouping) {
            let close = plain[at..].find(')').map_or(plain.len(), |c| at + c + 1);
            plain.replace_range(at..close, " ");
        }
    }
    let keywords = ["and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset", "up"];
    let mut names = BTreeSet::new();
    let mut rest = plain.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        let is_function = after.trim_start().starts_with('(');
        if !is_function && !keywords.contains(&word) && word.contains('_') {
            names.insert(word.to_owned());
        }
        rest = after;
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    panels.iter().flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned())).collect()
}

#[test]
fn the_alert_rules_and_the_prometheus_config_pass_promtools_checks_and_unit_tests() {
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap().matches("- alert:").count();
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains(&format!("SUCCESS: {rules} rules found")));
    assert!(promtool(&["test", "rules", "alerts.test.yml"]).contains("SUCCESS"));
    assert!(promtool(&["check", "config", "prometheus.yml"]).contains("SUCCESS"));
}

/// The equality label matchers (`name{label="value"}`) of a PromQL expression, per metric name.
fn equality_matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (at, _) in expr.match_indices('{') {
        let name: String = expr[..at].chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        let name: String = name.chars().rev().collect();
        let Some(close) = expr[at..].find('}') else { continue };
        for matcher in expr[at + 1..at + close].split(',') {
            if let Some((label, value)) = matcher.split_once("=\"") {
                let label = label.trim();
                if !label.ends_with(['!', '=', '~']) && !name.is_empty() && name != "up" {
                    out.push((name.clone(), label.to_owned(), value.trim_end_matches('"').to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn label_matchers_are_read_from_promql() {
    let m = equality_matchers(r#"max by (queue) (sb_bus_queue_messages{role="dlq", queue!="x"}) > 0 and up{job="a"} and y{le=~"1"}"#);
    assert_eq!(m, [("sb_bus_queue_messages".to_owned(), "role".to_owned(), "dlq".to_owned())]);
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"1 - sum by (service) (rate(sb_bus_event_age_seconds_bucket{le="300"}[5m])) / sum by (le, service) (rate(x_count[5m])) > 0.01 and up{job=~"a_b"} == 0"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["sb_bus_event_age_seconds_bucket", "x_count"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_an_alarm_or_the_dashboard_names_is_served_by_the_running_services() {
    let exprs: Vec<String> = rule_exprs().into_iter().chain(dashboard_exprs()).collect();
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let matchers: BTreeSet<(String, String, String)> = exprs.iter().flat_map(|e| equality_matchers(e)).collect();
    assert!(matchers.iter().any(|(n, l, v)| n == "sb_bus_queue_messages" && l == "role" && v == "dlq"), "{matchers:?}");
    assert!(wanted.len() >= 10, "the rules name the metrics: {wanted:?}");

    let mut six = Six::start("debug");
    six.wait_ready().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = six.gateway_url.clone();
    // What a day brings: a sign-up, a failed login, a payment, a ticket.
    let token = sign_up(&http, &base, "alarms@example.com").await.expect("sign-up");
    let bad =
        http.post(format!("{base}/v1/login")).json(&serde_json::json!({"email": "alarms@example.com", "password": "not the password"}));
    assert_eq!(bad.send().await.unwrap().status(), 401);
    assert!(pay(&http, &base, &token).await, "local checkout paid");
    let ticket = serde_json::json!({"subject": "Export", "body": "How do I export my invoices?", "category": "billing"});
    assert_eq!(http.post(format!("{base}/v1/tickets")).bearer_auth(&token).json(&ticket).send().await.unwrap().status(), 201);

    let ports: Vec<u16> = six.running.iter().map(|r| r.http).collect();
    // Queue depths and the outbox's age are sampled every 10 s; events are handled a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut served = String::new();
        for port in &ports {
            served.push_str(&http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap());
        }
        let mut missing: Vec<String> = wanted
            .iter()
            .filter(|m| !served.lines().any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))))
            .cloned()
            .collect();
        // A selector's labels must match a served series too (`role="dlq"`, `le="300"`, ...).
        for (name, label, value) in &matchers {
            if !served.lines().any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("{label}=\"{value}\""))) {
                missing.push(format!("{name}{{{label}=\"{value}\"}}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no service serves {missing:?} (the alarms and dashboard name them)");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    six.kill_and_clean_up(0).await;
}
