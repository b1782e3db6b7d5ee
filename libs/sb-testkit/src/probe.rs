//! Reading what processes use, for tests and benchmarks: CPU seconds (this process, PostgreSQL,
//! RabbitMQ, the whole machine) and resident memory, from Linux's /proc (zeros elsewhere).

use std::{sync::OnceLock, time::Instant};

/// CPU seconds used so far by this process, every `postgres` and `beam.smp` (RabbitMQ) process,
/// and the whole machine. Short-lived processes that exit between two readings are missed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub app: f64,
    pub db: f64,
    pub broker: f64,
    pub machine: f64,
}

static CLK_TCK: OnceLock<f64> = OnceLock::new();

fn ticks_per_second() -> f64 {
    *CLK_TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (command name, utime + stime in seconds) of one `/proc/<pid>/stat`.
fn proc_cpu(stat: &str, tck: f64) -> Option<(&str, f64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // After "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let secs = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck;
    Some((&stat[open + 1..close], secs))
}

impl CpuTimes {
    pub fn now() -> Self {
        let tck = ticks_per_second();
        let mut t = CpuTimes::default();
        // Machine: every busy jiffy (user nice system idle iowait irq softirq steal; not idle, iowait).
        if let Some(line) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| s.lines().next().map(str::to_owned)) {
            let f: Vec<f64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
            let busy: f64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
            t.machine = busy / tck;
        }
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((comm, secs)) = proc_cpu(&stat, tck) else { continue };
            if pid == me {
                t.app += secs;
            } else if comm == "postgres" {
                t.db += secs;
            } else if comm == "beam.smp" {
                t.broker += secs;
            }
        }
        t
    }

    /// What was used between `before` and `self`.
    pub fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            app: self.app - before.app,
            db: self.db - before.db,
            broker: self.broker - before.broker,
            machine: self.machine - before.machine,
        }
    }
}

/// CPU use over a measured stretch, in % of the whole machine (CPUs × wall time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub app: f64,
    pub db: f64,
    pub broker: f64,
    /// Everything else on the machine.
    pub other: f64,
}

/// Measures CPU use from [`CpuMeter::start`] until [`CpuMeter::stop`].
pub struct CpuMeter(CpuTimes, Instant);

impl CpuMeter {
    pub fn start() -> Self {
        Self(CpuTimes::now(), Instant::now())
    }

    pub fn stop(self, cpus: usize) -> CpuUse {
        let used = CpuTimes::now().since(self.0);
        let cap = self.1.elapsed().as_secs_f64() * cpus as f64 / 100.0;
        let (app, db, broker) = (used.app / cap, used.db / cap, used.broker / cap);
        CpuUse { app, db, broker, other: (used.machine / cap - app - db - broker).max(0.0) }
    }
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix` (e.g. a
/// benchmark's load generator, to tell it from the services it drives); Linux names threads
/// after at most 15 bytes.
pub fn threads_cpu(prefix: &str) -> f64 {
    let tck = ticks_per_second();
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| proc_cpu(&stat, tck).filter(|(comm, _)| comm.starts_with(prefix)).map(|(_, secs)| secs))
        .sum()
}

/// Resident memory of process `pid` (`VmRSS`) and its peak so far (`VmHWM`), in bytes.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((kb("VmRSS:")? * 1024, kb("VmHWM:")? * 1024))
}

/// This process's resident memory, in bytes.
pub fn resident_bytes() -> u64 {
    memory_of(std::process::id()).map_or(0, |(rss, _)| rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_with_spaces_in_the_name() {
        let stat = "42 (beam smp) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(proc_cpu(stat, 100.0), Some(("beam smp", 3.0)));
        assert!(resident_bytes() > 0, "this process has resident memory");
    }

    #[test]
    fn counts_the_cpu_of_named_threads_only() {
        let busy = std::thread::Builder::new()
            .name("probe-busy".into())
            .spawn(|| {
                // Spins until its own CPU time reads 0.1 s, or gives up after 10 s of wall time.
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_secs(10) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                    if threads_cpu("probe-busy") >= 0.1 {
                        return true;
                    }
                }
                false
            })
            .unwrap();
        assert!(busy.join().unwrap(), "a spinning thread's CPU time never reached 0.1 s");
        assert_eq!(threads_cpu("no-such-thread"), 0.0);
    }
}
