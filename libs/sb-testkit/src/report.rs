//! One report for `make bench`: each benchmark records its target figures with [`write`] to
//! `<dir>/<bench>.json`, and the `bench-report` binary prints all of them as one table (figure,
//! target, worst round, same-run baseline, ratio, met) and writes them together to
//! `<dir>/report.json`, so two runs can be compared. `<dir>` is `SB_BENCH_REPORT_DIR`, or
//! `target/bench-report` in the workspace.
//!
//! A figure is judged by its worst round, never its best: the highest of the rounds for an upper
//! bound (latency), the lowest for a lower bound (throughput, ratios).

use std::path::PathBuf;

/// A benchmark's numeric setting from the environment (`1_000` reads as 1000), or `default` when
/// unset or unreadable.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

use serde_json::{Value, json};

/// Where the benchmarks' figures go.
pub fn dir() -> PathBuf {
    match std::env::var_os("SB_BENCH_REPORT_DIR") {
        Some(d) => PathBuf::from(d),
        // This crate is libs/sb-testkit in the workspace.
        None => {
            let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            crate_dir.ancestors().nth(2).unwrap_or(crate_dir).join("target/bench-report")
        }
    }
}

/// Whether a target is an upper or a lower bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// One target figure of a benchmark, with every round it was measured in.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub bound: Bound,
    pub target: f64,
    pub rounds: Vec<f64>,
    /// A same-run baseline: what it is, and its value (worst round) in the same unit.
    pub baseline: Option<(String, f64)>,
}

impl Figure {
    pub fn at_most(name: &str, unit: &str, target: f64, rounds: Vec<f64>) -> Self {
        Self { name: name.to_owned(), unit: unit.to_owned(), bound: Bound::AtMost, target, rounds, baseline: None }
    }

    pub fn at_least(name: &str, unit: &str, target: f64, rounds: Vec<f64>) -> Self {
        Self { name: name.to_owned(), unit: unit.to_owned(), bound: Bound::AtLeast, target, rounds, baseline: None }
    }

    pub fn baseline(mut self, what: &str, value: f64) -> Self {
        self.baseline = Some((what.to_owned(), value));
        self
    }

    /// The worst round (NaN when there is none, or a round is NaN: not measured).
    pub fn worst(&self) -> f64 {
        if self.rounds.is_empty() || self.rounds.iter().any(|r| r.is_nan()) {
            return f64::NAN;
        }
        let fold = |f: fn(f64, f64) -> f64, init| self.rounds.iter().copied().fold(init, f);
        match self.bound {
            Bound::AtMost => fold(f64::max, f64::NEG_INFINITY),
            Bound::AtLeast => fold(f64::min, f64::INFINITY),
        }
    }

    /// Met only if every round meets the target.
    pub fn met(&self) -> bool {
        let w = self.worst();
        match self.bound {
            Bound::AtMost => w <= self.target,
            Bound::AtLeast => w >= self.target,
        }
    }

    pub fn target_text(&self) -> String {
        let op = if self.bound == Bound::AtMost { "<=" } else { ">=" };
        format!("{op} {} {}", num(self.target), self.unit)
    }

    pub fn to_json(&self, bench: &str) -> Value {
        let worst = self.worst();
        let ratio = self.baseline.as_ref().map(|(_, b)| worst / b).filter(|r| r.is_finite());
        json!({
            "bench": bench,
            "figure": self.name,
            "unit": self.unit,
            "target": self.target_text(),
            "rounds": self.rounds.iter().map(|r| finite(*r)).collect::<Vec<_>>(),
            "worst": finite(worst),
            "baseline": self.baseline.as_ref().map(|(what, v)| json!({ "what": what, "value": finite(*v) })),
            "ratio_to_baseline": ratio,
            "met": self.met(),
        })
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// A number as a table shows it: three significant digits, no exponent.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Writes `bench`'s figures (replacing its earlier file) and prints where.
pub fn write(bench: &str, figures: &[Figure]) -> std::io::Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{bench}.json"));
    let doc = json!({
        "bench": bench,
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "figures": figures.iter().map(|f| f.to_json(bench)).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    println!("  figures written to {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_judged_by_its_worst_round() {
        let lat = Figure::at_most("ack p99", "ms", 20.0, vec![5.0, 19.0, 21.0]).baseline("status p99", 3.0);
        assert_eq!(lat.worst(), 21.0);
        assert!(!lat.met(), "one round over the target misses it");
        let v = lat.to_json("webhook");
        assert_eq!(v["ratio_to_baseline"], json!(7.0));
        assert_eq!((v["target"].as_str(), v["met"].as_bool()), (Some("<= 20 ms"), Some(false)));

        let ratio = Figure::at_least("bus / lapin", "x", 0.8, vec![0.9, 0.81, 0.85]);
        assert_eq!(ratio.worst(), 0.81);
        assert!(ratio.met());
        let unmeasured = Figure::at_least("bus / lapin", "x", 0.8, vec![0.9, f64::NAN]);
        assert!(!unmeasured.met(), "a round that was not measured is not a met one");
        assert_eq!(unmeasured.to_json("bus")["worst"], Value::Null);
    }

    #[test]
    fn numbers_read_like_a_table() {
        assert_eq!(
            [num(1234.4), num(12.34), num(1.234), num(0.1234), num(20.0), num(f64::NAN)],
            ["1234", "12.3", "1.23", "0.123", "20", "-"]
        );
    }
}
