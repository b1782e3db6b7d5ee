//! The end of `make bench`: every benchmark's recorded figures as one table, and together in
//! `report.json` beside them (see `sb_testkit::report`). Exits non-zero only when nothing was
//! recorded or a file cannot be read; a missed target is reported, not an error.

use std::process::ExitCode;

use sb_testkit::report;
use serde_json::{Value, json};

fn main() -> ExitCode {
    let dir = report::dir();
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.file_name().is_some_and(|n| n != "report.json"))
            .collect(),
        Err(e) => {
            eprintln!("bench-report: cannot read {}: {e} (run the benchmarks first)", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let mut figures = Vec::new();
    for path in &files {
        let doc: Value =
            match std::fs::read(path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(doc) => doc,
                Err(e) => {
                    eprintln!("bench-report: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
        figures.extend(doc["figures"].as_array().cloned().unwrap_or_default());
    }
    if figures.is_empty() {
        eprintln!("bench-report: no figures in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let n = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), report::num);
    println!();
    println!("Benchmark report (worst round of each figure; ratio = worst / same-run baseline)");
    println!(
        "  {:<8} {:<50} {:>14} {:>9} {:>6}  {:<44} {:>9} {:>8}  met",
        "bench", "figure", "target", "worst", "rounds", "baseline", "value", "ratio"
    );
    let mut met = 0;
    for f in &figures {
        let (what, value) = match &f["baseline"] {
            Value::Object(b) => (text(&b["what"]), n(&b["value"])),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let ok = f["met"].as_bool() == Some(true);
        met += usize::from(ok);
        println!(
            "  {:<8} {:<50} {:>14} {:>9} {:>6}  {:<44} {:>9} {:>8}  {}",
            text(&f["bench"]),
            text(&f["figure"]),
            text(&f["target"]),
            n(&f["worst"]),
            f["rounds"].as_array().map_or(0, Vec::len),
            what,
            value,
            n(&f["ratio_to_baseline"]),
            if ok { "MET" } else { "MISSED" }
        );
    }
    let out = dir.join("report.json");
    let doc = json!({ "finished_at": chrono::Utc::now().to_rfc3339(), "met": met, "figures": figures.len(), "results": figures });
    if let Err(e) = std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
        eprintln!("bench-report: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("  {met} of {} targets met; written to {}", figures.len(), out.display());
    ExitCode::SUCCESS
}
