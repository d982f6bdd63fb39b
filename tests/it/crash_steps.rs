//! A crash at every step. A small workload (a file through intake, a model run, its output
//! re-injected and published, a replay of it all) runs under `strace`, which kills the daemon
//! with SIGKILL on entering the K-th call of one system call in one thread. It is done for
//! every K of every file-system, sync and SQLite call the daemon makes, each followed by a
//! normal restart that finishes the workload. Every point must end with each file archived or
//! rejected exactly once, nothing left in flight, no run launched twice and a sound ledger.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Gateway, missing, pi_series};
use pom::ledger::State;
use pom::ledger::runs::RunState;

/// The calls a crash is injected into: whatever creates or opens a file, changes a folder
/// (create, rename, link, remove), writes a file or the ledger (SQLite writes with `pwrite64`
/// and truncates its journal), or syncs. Calls that change nothing on disk (reads, SQLite's
/// `fcntl` locks) are left out: a crash there leaves what a crash at the next change leaves.
/// Each call is counted on its own, per thread, as `strace` counts them.
const CALLS: &[&str] = &[
    "openat",
    "mkdir",
    "rename",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "write",
    "pwrite64",
    "ftruncate",
    "fsync",
    "fdatasync",
];

/// The workload's gateway: observations in, a model copying them out as a forecast (and
/// logging each launch with its run id), forecasts published.
fn gateway() -> Gateway {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    let script = gw.dir.path().join("model.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ncd \"$POM_RUN_DIR\"\necho \"$POM_RUN_ID started\" >> {l}\n\
             sed 's/Q.obs/Q.fcst/' input/*.xml > output/forecast.xml\n",
            l = launches(&gw).display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/m.toml"),
        format!(
            "command = [\"/bin/sh\", \"{}\"]\ntimeout = \"1m\"\n\
             retries = {{ max = 1, backoff = \"1s\" }}\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\n\
             [outputs]\nchannel = \"fcst\"\nformats = [\"pi-timeseries\"]\n\
             [trigger]\nkind = \"arrival\"\n",
            script.display()
        ),
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"to-m\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n\n\
         [[route]]\nname = \"forecasts\"\nchannel = \"fcst\"\npublish = [\"web\"]\n",
    )
    .unwrap();
    // Quick to notice and to start a replay: the workload is short.
    gw.extra_args = [
        "--scan-interval",
        "1",
        "--poll",
        "0.1",
        "--replay-quiet",
        "0.5",
    ]
    .map(String::from)
    .to_vec();
    gw
}

fn launches(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("launches")
}

/// What became of one point.
enum Point {
    /// The daemon was killed at it; the restart finished the workload.
    Crashed,
    /// The workload and the daemon's stop made fewer such calls: the calls are exhausted.
    Passed,
}

/// How far the workload has come.
#[derive(Default)]
struct Progress {
    replayed: bool,
}

enum Driven {
    Done,
    Died(ExitStatus),
}

/// Drives the workload while the daemon lives: once the operational forecast is filed, a
/// replay of everything; done when the replay's forecast is filed and no run is pending.
fn drive(gw: &mut Gateway, progress: &mut Progress) -> Driven {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
            gw.child = None;
            return Driven::Died(status);
        }
        let subs = gw.submissions();
        let filed = |replay: bool| {
            subs.iter().any(|s| {
                s.session.is_some() == replay && s.channel == "fcst" && s.state == State::Archived
            })
        };
        let pending = gw
            .ledger()
            .runs(Some("m"), None, 100)
            .unwrap()
            .iter()
            .any(|r| matches!(r.state, RunState::Queued | RunState::Running));
        if !progress.replayed && filed(false) && !pending {
            replay(gw);
            progress.replayed = true;
        }
        if progress.replayed && filed(true) && !pending {
            return Driven::Done;
        }
        assert!(
            Instant::now() < deadline,
            "the workload did not finish:\n{}\nruns: {:#?}\nfiles: {:#?}",
            gw.log(),
            gw.ledger().runs(Some("m"), None, 100).unwrap(),
            subs
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pom replay` of everything so far, without waiting for it: the session is in place once the
/// command has staged it, and a daemon that dies before taking it up leaves it to its restart.
fn replay(gw: &Gateway) {
    let (from, to) = gw.operational_span();
    gw.replay(&from, &to, "again", &["--no-wait"]);
}

/// The traced daemon: the child of `strace`.
fn traced_pid(strace: u32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The workload once, traced without a crash: for each call, how many the daemon made in all
/// and the most one thread made (the points a crash can be injected at).
fn profile(template: &Path) -> BTreeMap<String, (u32, u32)> {
    let mut gw = gateway();
    common::copy_dir(template, &gw.spool());
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 1));
    let trace = gw.dir.path().join("trace");
    gw.wrapper = ["strace", "-f", "-qq", "-o"]
        .map(std::ffi::OsString::from)
        .to_vec();
    gw.wrapper.push(trace.clone().into());
    gw.wrapper.push("-e".into());
    gw.wrapper.push(format!("trace={}", CALLS.join(",")).into());
    gw.start();
    let mut progress = Progress::default();
    assert!(matches!(drive(&mut gw, &mut progress), Driven::Done));
    let strace = gw.child.as_ref().unwrap().id();
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(traced_pid(strace).unwrap(), libc::SIGTERM) };
    assert!(gw.child.take().unwrap().wait().unwrap().success());
    let mut per_thread: BTreeMap<(String, String), u32> = BTreeMap::new();
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
        // "TID call(args…" or "TID <... call resumed>…"
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(call) = rest.split('(').next().filter(|c| CALLS.contains(c)) else {
            continue;
        };
        *per_thread
            .entry((call.to_string(), tid.to_string()))
            .or_default() += 1;
    }
    let mut out: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for ((call, _), n) in per_thread {
        let e = out.entry(call).or_default();
        e.0 += n;
        e.1 = e.1.max(n);
    }
    out
}

/// Runs the workload with a crash at the `k`-th `call` of a thread.
fn one_point(template: &Path, call: &str, k: u32) -> Point {
    let mut gw = gateway();
    common::copy_dir(template, &gw.spool());
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 1));
    // POM_CRASH_TRACE=DIR keeps each point's trace there, to see where a failing point died.
    let trace = std::env::var("POM_CRASH_TRACE")
        .map_or("/dev/null".to_string(), |d| format!("{d}/{call}-{k}.trace"));
    gw.wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        &trace,
        "-e",
        &format!("trace={call}"),
        "-e",
        &format!("inject={call}:signal=KILL:when={k}"),
    ]
    .map(Into::into)
    .to_vec();
    let mut progress = Progress::default();
    let crashed = match gw.try_start() {
        Err(_) => true,
        Ok(()) => match drive(&mut gw, &mut progress) {
            Driven::Died(status) => killed(&gw, status),
            Driven::Done => {
                // Stop it as the service manager does; the stop's own calls count too.
                let strace = gw.child.as_ref().unwrap().id();
                // The injected kill may land just after the workload ended: then strace has no
                // child left, and its own status says how the daemon ended.
                if let Some(pid) = traced_pid(strace) {
                    // SAFETY: a signal to the daemon this test started.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                let status = gw.child.take().unwrap().wait().unwrap();
                !status.success() && killed(&gw, status)
            }
        },
    };
    if crashed {
        gw.wrapper.clear();
        gw.start();
        match drive(&mut gw, &mut progress) {
            Driven::Done => gw.stop(),
            Driven::Died(status) => {
                panic!("the restarted daemon exited with {status}:\n{}", gw.log())
            }
        }
    }
    check(&gw, &format!("{call} #{k}"));
    if crashed {
        Point::Crashed
    } else {
        Point::Passed
    }
}

/// Whether the daemon died of the injected SIGKILL (anything else is a failure).
fn killed(gw: &Gateway, status: ExitStatus) -> bool {
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the traced daemon ended with {status}, not the injected kill:\n{}",
        gw.log()
    );
    true
}

/// The guarantees, after the point and its restart.
fn check(gw: &Gateway, point: &str) {
    let subs = gw.submissions();
    let mut seen = HashSet::new();
    for s in &subs {
        let key = (
            s.session.clone(),
            s.channel.clone(),
            String::from_utf8_lossy(&s.original).into_owned(),
        );
        assert!(seen.insert(key.clone()), "{point}: {key:?} decided twice");
        assert!(
            matches!(s.state, State::Archived | State::Rejected),
            "{point}: {key:?} left {:?}",
            s.state
        );
    }
    // The observation and the forecast, operational and replayed: each once.
    for replay in [false, true] {
        for channel in ["obs", "fcst"] {
            assert_eq!(
                subs.iter()
                    .filter(|s| s.session.is_some() == replay
                        && s.channel == channel
                        && s.state == State::Archived)
                    .count(),
                1,
                "{point}: {channel}, replay {replay}: {subs:?}"
            );
        }
    }
    assert_eq!(
        gw.archived_files().len() + gw.rejected_files().len(),
        subs.len(),
        "{point}: stored files do not match the ledger"
    );
    assert!(gw.queue_is_empty(), "{point}: queue/ is not empty");
    assert!(gw.incoming_is_empty(), "{point}: incoming/ is not empty");
    assert!(
        gw.spool().join("outgoing/web/forecast.xml").is_file(),
        "{point}: the forecast was not published: {:?}\n{}",
        walkdir::WalkDir::new(gw.spool().join("outgoing"))
            .into_iter()
            .flatten()
            .map(|e| e.path().to_path_buf())
            .collect::<Vec<_>>(),
        gw.log()
    );
    // No run launched twice: each launch under its own run id, one success per mode.
    // No run launched twice, and a model that exited is never run again: a run whose exit
    // status its folder keeps is finished by it, not interrupted and retried. (A model still
    // running when the daemon restarts is stopped and retried as a new run: an interruption.)
    let launched = std::fs::read_to_string(launches(gw)).unwrap_or_default();
    let mut ids = HashSet::new();
    for line in launched.lines() {
        let id = line.split(' ').next().unwrap_or_default();
        assert!(ids.insert(id), "{point}: run {id} launched twice");
    }
    let runs = gw.ledger().runs(Some("m"), None, 100).unwrap();
    for r in &runs {
        if gw.spool().join(&r.run_dir).join(".pom-exit").exists() {
            assert_eq!(
                r.state,
                RunState::Succeeded,
                "{point}: the model of run {} exited and its run is recorded {:?}: {runs:?}",
                r.id,
                r.state
            );
        }
    }
    for mode in ["normal", "replay"] {
        assert_eq!(
            runs.iter()
                .filter(|r| r.mode == mode && r.state == RunState::Succeeded)
                .count(),
            1,
            "{point}: {mode} runs {runs:?}"
        );
    }
    assert!(
        runs.iter().all(|r| ids.contains(r.id.as_str())
            || r.state == RunState::Interrupted
            || r.started_at.is_none()),
        "{point}: a run recorded as launched never ran: {runs:?}"
    );
    assert_eq!(
        gw.ledger().integrity_check().unwrap(),
        "ok",
        "{point}: ledger"
    );
}

#[test]
fn a_crash_at_every_file_system_sync_and_sqlite_call_loses_nothing_and_launches_no_run_twice() {
    if missing(
        "strace",
        std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
    ) {
        return;
    }
    // The spool as a daemon leaves it after its first start: the ledger made, every folder
    // there. Each point starts from a copy of it.
    let mut template = gateway();
    template.start();
    template.stop();
    let made = profile(&template.spool());
    println!("calls the workload makes (in all, most in one thread): {made:?}");
    if std::env::var_os("POM_CRASH_PROFILE").is_some() {
        return;
    }
    let only = std::env::var("POM_CRASH_CALLS").ok();
    let calls: Vec<&'static str> = CALLS
        .iter()
        .copied()
        .filter(|c| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x == *c))
        })
        .collect();
    // Points run side by side (the workload waits more than it computes). Each call's K goes
    // up from 1 until a point passes: the daemon made fewer such calls in any one thread.
    let jobs: usize = std::env::var("POM_CRASH_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3);
    let started = Instant::now();
    let frontier: Mutex<BTreeMap<&'static str, Frontier>> =
        Mutex::new(calls.iter().map(|c| (*c, Frontier::default())).collect());
    let spool = template.spool();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    // The call with the fewest points handed out, among those not done.
                    let next = {
                        let mut f = frontier.lock().unwrap();
                        f.iter_mut()
                            .filter(|(_, f)| f.passed_at.is_none())
                            .min_by_key(|(_, f)| f.next)
                            .map(|(c, f)| {
                                f.next += 1;
                                (*c, f.next)
                            })
                    };
                    let Some((call, k)) = next else { return };
                    let point = one_point(&spool, call, k);
                    let mut f = frontier.lock().unwrap();
                    let f = f.get_mut(call).unwrap();
                    match point {
                        Point::Crashed => f.crashed += 1,
                        Point::Passed => {
                            f.passed_at = Some(f.passed_at.map_or(k, |p| p.min(k)));
                        }
                    }
                }
            });
        }
    });
    let frontier = frontier.into_inner().unwrap();
    let total: u32 = frontier.values().map(|f| f.crashed).sum();
    for (call, f) in &frontier {
        println!(
            "{call}: {} crash points (at most {} in one thread when traced whole), the first \
             point past them at K = {}",
            f.crashed,
            made.get(*call).map_or(0, |m| m.1),
            f.passed_at.unwrap_or(0)
        );
        if made.get(*call).is_some_and(|m| m.1 > 0) {
            assert!(f.crashed > 0, "{call}: no crash was injected");
        }
    }
    println!(
        "crash at every step: {total} points covered over {} calls in {:.0} s, each restarted \
         and checked",
        frontier.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total > 0, "no point was covered");
}

/// One call's points: the last K handed out, how many crashed, the first K that passed.
#[derive(Default)]
struct Frontier {
    next: u32,
    crashed: u32,
    passed_at: Option<u32>,
}
