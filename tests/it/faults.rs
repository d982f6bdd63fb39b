//! Faults on real resources while files flow: a spool on a small file system that fills up, and
//! a daemon whose descriptor limit is lowered under it. Nothing may be rejected for the fault,
//! nothing marked done that is not, an alert must be raised, and every file must be filed by
//! itself once the cause goes away, without a restart.
//!
//! The small file system is a tmpfs the test mounts: it needs root (CI runs as root).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;

fn is_root() -> bool {
    // SAFETY: reads this process's effective uid.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs mounted on a folder, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallFs(dir.to_path_buf())
    }

    /// Fills the file system under `dir` with a file, which is returned (removing it frees the
    /// space).
    fn fill(dir: &std::path::Path) -> std::path::PathBuf {
        let filler = dir.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=64"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn alerts(gw: &Gateway) -> Vec<String> {
    let (_, v) = gw.api("GET", "/api/alerts", None, None);
    v.as_array()
        .or_else(|| v["alerts"].as_array())
        .map(|a| {
            a.iter()
                .map(|x| format!("{} {}", x["kind"], x["message"]))
                .collect()
        })
        .unwrap_or_default()
}

/// Every submission's state, with no file both in queue/ and marked done falsely: a file the
/// ledger says is archived is in the archive.
fn check_nothing_marked_done_falsely(gw: &Gateway) {
    for s in gw.submissions() {
        if s.state == State::Archived
            && let Some(stored) = &s.stored
        {
            let queued = gw.spool().join("queue").join(&s.id);
            let filed = gw.spool().join(stored);
            assert!(
                filed.exists() || queued.exists(),
                "{} is recorded archived but is neither filed nor queued",
                s.id
            );
        }
    }
}

#[test]
fn a_full_disk_rejects_nothing_raises_an_alert_and_files_everything_once_space_is_freed() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let mut gw = Gateway::new();
    let _fs = SmallFs::mount(&gw.spool(), "24m");
    gw.extra_args
        .extend(["--min-free-disk".into(), "1%".into()]);
    gw.start();
    // Files prepared as hidden parts before the disk fills, released by rename (as producers do).
    let n = 300;
    let dir = gw.incoming("obs");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n / 2 {
        gw.drop_file("obs", &format!("before_{i}.xml"), &pi_series(i, 4));
    }
    for i in n / 2..n {
        std::fs::write(dir.join(format!(".after_{i}.xml.part")), pi_series(i, 4)).unwrap();
    }
    let filler = SmallFs::fill(&gw.spool());
    for i in n / 2..n {
        std::fs::rename(
            dir.join(format!(".after_{i}.xml.part")),
            dir.join(format!("after_{i}.xml")),
        )
        .unwrap();
    }
    // While full: an alert, and nothing rejected.
    eventually(15, "an alert for the full disk", || {
        alerts(&gw)
            .iter()
            .any(|a| a.contains("stage") || a.contains("low_disk"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let rejected = gw
        .submissions()
        .into_iter()
        .filter(|s| s.state == State::Rejected)
        .count();
    assert_eq!(
        rejected,
        0,
        "files rejected for lack of space:\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("No space left on device") || gw.log().contains("full"),
        "the disk never filled:\n{}",
        gw.log()
    );
    check_nothing_marked_done_falsely(&gw);

    // Space freed: everything is filed within 10 s, by itself.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let decided = gw.wait_for_decided(n, 10);
    let took = freed.elapsed();
    eprintln!("full disk: {n} files filed {took:?} after space was freed");
    assert_eq!(decided.len(), n, "no duplicates, none lost");
    assert!(decided.iter().all(|s| s.state == State::Archived));
    assert!(gw.incoming_is_empty());
    check_nothing_marked_done_falsely(&gw);
    gw.stop();
}

#[test]
fn no_descriptors_left_rejects_nothing_raises_an_alert_and_files_everything_once_restored() {
    let mut gw = Gateway::new();
    gw.start();
    gw.drop_file("obs", "warm.xml", &pi_series(0, 1));
    gw.wait_for_decided(1, 20);
    let pid = gw.child.as_ref().unwrap().id();
    // No new descriptor at all until the limit is restored: a descriptor is refused when no
    // number below the limit is free, and a daemon's numbers have holes (a descriptor closed
    // after others were opened), so the limit is set at 3, where standard input, output and
    // error always stand.
    let open: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(
        (0..3).all(|fd| open.contains(&fd)),
        "the daemon holds 0, 1 and 2: {open:?}"
    );
    let limit = 3;
    // The soft limit only: the hard one stays, so that it can be restored without privileges.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (words[3].to_string(), words[4].to_string());
    let st = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{hard}"))
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
    let n = 100;
    for i in 1..=n {
        gw.drop_file("obs", &format!("f{i}.xml"), &pi_series(i, 2));
    }
    // With no descriptor left the web server cannot accept a request: the alert is seen in the
    // log (and by --alert-command where it can run), and on /api/alerts once restored.
    eventually(15, "a stage alert in the log", || {
        gw.log().contains("alert: stage examine")
    });
    let rejected: Vec<_> = gw
        .submissions()
        .into_iter()
        .filter(|s| s.state == State::Rejected)
        .collect();
    assert!(
        rejected.is_empty(),
        "rejected for lack of descriptors: {rejected:?}"
    );
    check_nothing_marked_done_falsely(&gw);
    let before = gw.decided().len();
    assert!(before < n + 1, "the fault held nothing back");

    let st = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .unwrap();
    assert!(st.success());
    let restored = Instant::now();
    let decided = gw.wait_for_decided(n + 1, 10);
    eprintln!(
        "no descriptors: {} files waited, all filed {:?} after the limit was restored",
        n + 1 - before,
        restored.elapsed()
    );
    assert_eq!(decided.len(), n + 1);
    assert!(
        decided.iter().all(|s| s.state == State::Archived),
        "{decided:?}"
    );
    gw.stop();
}

#[test]
fn the_daemon_refuses_to_start_on_a_ledger_it_cannot_write() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let mut gw = Gateway::new();
    let state = gw.dir.path().join("ledger");
    let _fs = SmallFs::mount(&state, "8m");
    let db = state.join("pom.sqlite");
    gw.extra_args
        .extend(["--db".into(), db.display().to_string()]);
    gw.start();
    gw.stop();
    // Root ignores file permissions: the file system itself is made read-only.
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success());
    let err = gw.serve_refused(&[]);
    // SQLite itself may refuse first (its WAL index cannot be made), or the write check.
    assert!(
        err.contains("cannot start: ledger") && err.contains("pom.sqlite"),
        "{err}"
    );
}

#[test]
fn a_full_disk_as_a_model_ends_fails_no_run_and_its_forecast_comes_once_space_is_freed() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    // The model writes its forecast, says so, and ends when told: in between, the disk fills.
    let signals = tempfile::tempdir().unwrap();
    let (ready, go) = (signals.path().join("ready"), signals.path().join("go"));
    let script = format!(
        "sed 's/Q.obs/Q.fcst/' \"$1\" > output/forecast.xml\ntouch {}\n\
         while [ ! -e {} ]; do sleep 0.1; done",
        ready.display(),
        go.display()
    );
    let mut small = None;
    let mut gw = common::chain_gateway_with(&[("fc", &script, "5m")], |gw| {
        small = Some(SmallFs::mount(&gw.spool(), "24m"));
        gw.extra_args
            .extend(["--min-free-disk".into(), "1%".into()]);
    });
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 4));
    eventually(30, "the model has written its forecast", || ready.exists());
    let filler = SmallFs::fill(&gw.spool());
    std::fs::write(&go, b"").unwrap();

    // While full: the run waits, degraded and alerted, and is not failed.
    eventually(20, "an alert for the run's outputs", || {
        gw.log().contains("cannot put the outputs back")
            || gw.log().contains("cannot record the model's exit")
    });
    eventually(15, "an alert raised for the stage", || {
        gw.log().contains("alert: stage runs")
    });
    std::thread::sleep(Duration::from_secs(2));
    let runs = gw.ledger().runs(Some("fc"), None, 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        !matches!(runs[0].state, pom::ledger::runs::RunState::Failed),
        "a full disk failed the run: {runs:?}\n{}",
        gw.log()
    );

    // Space freed: the run succeeds by itself, its forecast published once.
    std::fs::remove_file(&filler).unwrap();
    eventually(20, "the run succeeded", || {
        gw.ledger().runs(Some("fc"), None, 10).unwrap()[0].state
            == pom::ledger::runs::RunState::Succeeded
    });
    eventually(20, "the forecast published", || {
        gw.spool().join("outgoing/web/forecast.xml").exists()
    });
    let forecasts: Vec<_> = gw
        .submissions()
        .into_iter()
        .filter(|s| s.channel == "fcst")
        .collect();
    assert_eq!(forecasts.len(), 1, "one forecast, once: {forecasts:?}");
    let runs = gw.ledger().runs(Some("fc"), None, 10).unwrap();
    assert_eq!(runs.len(), 1, "the model ran once: {runs:?}");
    gw.stop();
    drop(small);
}
