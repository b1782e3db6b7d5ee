//! Walking the gateway's authorization matrix (`services/gateway/authz-matrix.json`): every route
//! asked as every viewpoint, its answer compared with the matrix. The gateway's own test walks it
//! in-process, the system's regression suite on the real binaries; each says how a viewpoint
//! sends a request.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::Value;

/// `template` with every `{name}` in its strings replaced by `vars[name]`.
pub fn fill(template: &Value, vars: &HashMap<&str, String>) -> Value {
    match template {
        Value::String(s) => {
            let mut out = s.clone();
            for (k, v) in vars {
                out = out.replace(&format!("{{{k}}}"), v);
            }
            Value::String(out)
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), fill(v, vars))).collect()),
        other => other.clone(),
    }
}

/// One request of the walk.
pub struct Ask {
    pub method: Method,
    /// With its parameters filled in.
    pub path: String,
    pub body: Option<Value>,
    pub viewpoint: String,
}

/// The matrix's viewpoints, in order.
pub fn viewpoints(matrix: &Value) -> Vec<String> {
    matrix["viewpoints"].as_array().expect("viewpoints").iter().map(|v| v.as_str().expect("a viewpoint name").to_owned()).collect()
}

/// Asks every route of `matrix` as every viewpoint, in order (each route through all viewpoints
/// before the next route): path parameters name entries of `ids`, bodies take `vars(route number,
/// viewpoint)`, and `send` answers the status. Returns how many were asked and every answer that
/// differs from the matrix, as a line.
pub async fn walk<F, Fut>(
    matrix: &Value,
    ids: &HashMap<&str, String>,
    vars: impl Fn(usize, &str) -> HashMap<&'static str, String>,
    mut send: F,
) -> (usize, Vec<String>)
where
    F: FnMut(Ask) -> Fut,
    Fut: Future<Output = u16>,
{
    let mut mismatches = Vec::new();
    let mut asked = 0;
    for (n, route) in matrix["routes"].as_array().expect("routes").iter().enumerate() {
        let (name, template) = (route["method"].as_str().expect("method"), route["path"].as_str().expect("path"));
        let method = Method::from_bytes(name.as_bytes()).expect("an HTTP method");
        let mut path = template.to_owned();
        if let Some(params) = route.get("params").and_then(Value::as_object) {
            for (name, target) in params {
                let id = ids.get(target.as_str().expect("a parameter names an id")).unwrap_or_else(|| panic!("no id {target}"));
                path = path.replace(&format!("{{{name}}}"), id);
            }
        }
        for viewpoint in viewpoints(matrix) {
            let expected = route["expect"][&viewpoint].as_u64().unwrap_or_else(|| panic!("{template}: no expectation for {viewpoint}"));
            let body = route.get("body").map(|b| fill(b, &vars(n, &viewpoint)));
            let got = send(Ask { method: method.clone(), path: path.clone(), body, viewpoint: viewpoint.clone() }).await;
            asked += 1;
            if u64::from(got) != expected {
                mismatches.push(format!("{name} {template} as {viewpoint}: expected {expected}, got {got}"));
            }
        }
    }
    (asked, mismatches)
}
