//! `make run`'s supervisor (`scripts/dev-up.sh`) as a user meets it: a service killed with
//! `kill -9` is started again and becomes ready, the other five keep running untouched, the
//! terminal says what happened, and Ctrl-C stops all six. Runs the debug binaries that
//! `make test` builds (`SWITCHBOARD_BIN_DIR`), on this test's own ports, databases and run folder.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use std::os::unix::process::CommandExt;

use sb_bus::catalog::SERVICES;
use sb_testkit::wait_for;

use system_tests::Six;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pid_in(run_dir: &Path, file: &str) -> Option<i32> {
    std::fs::read_to_string(run_dir.join(file)).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks the process exists; a zombie (exited, not yet reaped) counts as gone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !status.is_empty() && !status.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z'))
}

/// `kill -<sig> <pid>`; a negative pid signals that process group.
fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg("--").arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// `make run` in the foreground; stopped (as `make stop` would) if the test fails midway.
struct MakeRun {
    child: Child,
    env: Vec<(String, String)>,
    /// Everything it printed so far (stdout and stderr, line by line).
    out: Arc<Mutex<Vec<String>>>,
}

impl MakeRun {
    async fn wait_printed(&self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.out.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "make run did not print {needle:?} within {timeout:?}; it printed: {:#?}",
                self.out.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MakeRun {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(repo().join("scripts/dev-down.sh")).envs(self.env.iter().cloned()).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(six: &Six, run_dir: &Path) -> MakeRun {
    let mut env: Vec<(String, String)> = SERVICES.iter().flat_map(|s| six.env_of(s)).collect();
    let bin_dir = system_tests::bin_of("debug", "gateway").parent().unwrap().to_path_buf();
    env.push(("SWITCHBOARD_BIN_DIR".into(), bin_dir.display().to_string()));
    env.push(("SWITCHBOARD_RUN_DIR".into(), run_dir.display().to_string()));
    // Its own process group, as a terminal's foreground job is: Ctrl-C signals the whole group.
    let mut child = Command::new("bash")
        .process_group(0)
        .arg(repo().join("scripts/dev-up.sh"))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<Box<dyn std::io::Read + Send>> = vec![Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
    for r in readers {
        let out = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
    }
    MakeRun { child, env, out }
}

async fn ready(http: &reqwest::Client, port: u16) -> bool {
    http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_under_make_run_is_restarted_and_ready_while_the_others_run_on() {
    let six = Six::layout();
    let run_dir = six.dir.join("run");
    let mut run = start(&six, &run_dir);
    run.wait_printed("Switchboard is running", Duration::from_secs(120)).await;
    let http = reqwest::Client::new();
    let pids: HashMap<&str, i32> = SERVICES.iter().map(|s| (*s, pid_in(&run_dir, &format!("{s}.pid")).unwrap())).collect();
    for s in SERVICES {
        assert!(ready(&http, six.ports[s].0).await, "{s} ready after make run started");
    }

    signal(pids["billing"], "KILL");
    let said = run.wait_printed("billing exited", Duration::from_secs(10)).await;
    assert!(said.contains("killed by signal 9"), "the terminal says how it ended: {said}");
    assert!(said.contains("restarting in"), "{said}");
    let again = run.wait_printed("billing is ready again", Duration::from_secs(60)).await;
    let restarted = pid_in(&run_dir, "billing.pid").unwrap();
    assert_ne!(restarted, pids["billing"], "a new billing process");
    assert!(again.contains(&restarted.to_string()), "{again}");
    assert!(ready(&http, six.ports["billing"].0).await, "billing answers /readyz again");
    for s in SERVICES.iter().filter(|s| **s != "billing") {
        assert_eq!(pid_in(&run_dir, &format!("{s}.pid")), Some(pids[s]), "{s} was not restarted");
        assert!(alive(pids[s]), "{s} still runs");
        assert!(ready(&http, six.ports[s].0).await, "{s} still ready");
    }
    let exits: Vec<String> = run.out.lock().unwrap().iter().filter(|l| l.contains(" exited")).cloned().collect();
    assert!(exits.iter().all(|l| l.contains("billing")), "only billing exited: {exits:?}");
    assert!(run.child.try_wait().unwrap().is_none(), "make run is still in the foreground");
    let supervisor_log = std::fs::read_to_string(run_dir.join("supervisor.log")).unwrap();
    assert!(supervisor_log.contains("billing is ready again"), "{supervisor_log}");

    // Ctrl-C: everything stops, and make run ends well.
    let group = i32::try_from(run.child.id()).unwrap();
    signal(-group, "INT");
    let status = wait_for(Duration::from_secs(60), "make run to end after Ctrl-C", || {
        let status = run.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "make run ends with status 0 after Ctrl-C: {status}");
    for s in SERVICES {
        let pid = if s == "billing" { restarted } else { pids[s] };
        wait_for(Duration::from_secs(10), &format!("{s} (pid {pid}) stopped"), || async move { (!alive(pid)).then_some(()) }).await;
    }
    drop(run);
    six.clean_up().await;
}
