//! Model runs on a real one-node Slurm cluster (`slurmctld` and `slurmd` on 127.0.0.1, started
//! by the test): the run is a batch job, followed by one poll for all jobs, and its end is
//! decided from the job's status file, the queue and the accounting together.

use crate::common;

use std::time::{Duration, Instant};

use common::slurm::Cluster;
use common::{Gateway, eventually, pi_series};
use pom::ledger::runs::{RunRow, RunState};
use serde_json::json;

const TOKEN: &str = "alice-0123456789abcdef";
/// The poll interval the tests give the daemon.
const POLL: f64 = 0.5;

/// A gateway whose model `hydro` runs `script` as a Slurm job, fed by `hydro_*.xml` on `obs`,
/// its outputs on `fcst` published to `outgoing/web/`.
fn slurm_gateway(cluster: &Cluster, script: &str, timeout: &str) -> Gateway {
    slurm_gateway_with(cluster, script, timeout, 1, |_| {})
}

/// As [`slurm_gateway`], with `concurrency` runs of `hydro` at once, and a chance to change the
/// gateway before it starts.
fn slurm_gateway_with(
    cluster: &Cluster,
    script: &str,
    timeout: &str,
    concurrency: usize,
    before: impl FnOnce(&mut Gateway),
) -> Gateway {
    // The chain's shell model `hydro`, declared to run on the cluster.
    common::chain_gateway_with(&[("hydro", script, timeout)], |gw| {
        let toml = gw.rules().join("models/hydro.toml");
        let text = std::fs::read_to_string(&toml).unwrap().replace(
            &format!("timeout = \"{timeout}\"\n"),
            &format!(
                "timeout = \"{timeout}\"\nconcurrency = {concurrency}\nexecutor = \"slurm\"\n\
                 [slurm]\npartition = \"main\"\n"
            ),
        );
        std::fs::write(toml, text).unwrap();
        gw.extra_env
            .push(("SLURM_CONF".into(), cluster.conf().display().to_string()));
        gw.extra_env
            .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
        gw.extra_args
            .extend(["--slurm-poll".into(), POLL.to_string()]);
        before(gw);
    })
}

/// The latest run of `hydro` once it is in one of `states`.
fn wait_state(gw: &Gateway, states: &[RunState], secs: u64) -> RunRow {
    let mut found = None;
    eventually(secs, &format!("a run of hydro in {states:?}"), || {
        found = gw
            .ledger()
            .runs(Some("hydro"), None, 1)
            .unwrap_or_default()
            .into_iter()
            .next()
            .filter(|r| states.contains(&r.state));
        found.is_some()
    });
    found.unwrap()
}

/// Waits until Slurm shows `job` running and its model has written to its output.
fn model_started(gw: &Gateway, cluster: &Cluster, job: i64) {
    eventually(30, "the job running and its model started", || {
        cluster.job_state(job) == "RUNNING"
            && gw
                .ledger()
                .runs(Some("hydro"), None, 1)
                .unwrap_or_default()
                .into_iter()
                .find(|r| r.slurm_job == Some(job))
                .and_then(|r| {
                    std::fs::read_to_string(gw.spool().join(&r.run_dir).join("stdout.txt")).ok()
                })
                .is_some_and(|out| out.contains("started"))
    });
}

fn job_of(gw: &Gateway) -> (String, i64) {
    let mut job = None;
    eventually(30, "a Slurm job id in the ledger", || {
        job = gw
            .ledger()
            .runs(Some("hydro"), None, 1)
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|r| r.slurm_job.map(|j| (r.id, j)));
        job.is_some()
    });
    job.unwrap()
}

#[test]
fn a_run_on_slurm_succeeds_and_its_outputs_re_enter_the_chain() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway(
        &cluster,
        "[ -n \"$SLURM_JOB_ID\" ] || exit 9\nsed 's/Q.obs/Q.fcst/' input/hydro_1.xml > output/forecast.xml",
        "5m",
    );
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let run = wait_state(
        &gw,
        &[RunState::Succeeded, RunState::Failed, RunState::TimedOut],
        120,
    );
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{run:?}\n{}\n{}",
        gw.log(),
        std::fs::read_to_string(gw.spool().join(&run.run_dir).join("stderr.txt"))
            .unwrap_or_default()
    );
    assert_eq!(run.exit_code, Some(0));
    let job = run.slurm_job.expect("the job id is in the ledger");
    eventually(30, "the forecast published", || {
        gw.spool().join("outgoing/web/forecast.xml").exists()
    });
    // The job is in the run's page and in `pom show`.
    let (_, v) = gw.api("GET", &format!("/api/runs/{}", run.id), None, None);
    assert_eq!(v["run"]["slurm_job"], json!(job), "{v}");
    let out = gw.pom().args(["show", &run.id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("slurm_job") && l.trim_end().ends_with(&format!(" {job}"))),
        "{text}"
    );
    let m = gw.http("GET", "/metrics", None, None).text();
    assert!(m.contains("pom_slurm_calls_total"), "{m}");
}

#[test]
fn a_failing_exit_code_on_slurm_fails_the_run_with_its_code() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway(&cluster, "echo 'no rain' >&2\nexit 3", "5m");
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let run = wait_state(&gw, &[RunState::Failed, RunState::Succeeded], 120);
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    assert_eq!(run.exit_code, Some(3), "{run:?}");
    assert_eq!(run.reason.as_deref(), Some("exit code 3"));
    let dir = gw.spool().join(&run.run_dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr.txt")).unwrap(),
        "no rain\n"
    );
}

#[test]
fn a_cancel_from_pom_cancels_the_job() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway(&cluster, "sleep 120", "5m");
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let (run, job) = job_of(&gw);
    eventually(30, "the job running", || {
        cluster.job_state(job) == "RUNNING"
    });
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some(TOKEN),
        Some(json!({"action": "cancel", "run": run})),
    );
    assert_eq!(s, 200, "{v}");
    let r = wait_state(&gw, &[RunState::Cancelled, RunState::Failed], 30);
    assert_eq!(r.state, RunState::Cancelled, "{r:?}");
    eventually(30, "the job cancelled in Slurm", || {
        cluster.job_state(job) == "CANCELLED"
    });
}

#[test]
fn a_timeout_on_slurm_is_enforced_by_pom() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway(&cluster, "sleep 120", "3s");
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let (_, job) = job_of(&gw);
    let r = wait_state(&gw, &[RunState::TimedOut, RunState::Failed], 60);
    assert_eq!(r.state, RunState::TimedOut, "{r:?}");
    eventually(30, "the job cancelled in Slurm", || {
        cluster.job_state(job) == "CANCELLED"
    });
}

#[test]
fn a_job_cancelled_behind_poms_back_or_whose_node_goes_down_fails_with_the_reason() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // A poll of a second: "within two poll intervals" is then two seconds.
    let poll = 1.0;
    let gw = slurm_gateway_with(&cluster, "echo started\nsleep 120", "5m", 1, |gw| {
        let at = gw
            .extra_args
            .iter()
            .position(|a| a == "--slurm-poll")
            .unwrap();
        gw.extra_args[at + 1] = poll.to_string();
    });
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let (_, job) = job_of(&gw);
    // Running for Slurm and the model started: a job cancelled while its node still launches
    // it is killed only after Slurm's KillWait, which is Slurm's time, not POM's.
    model_started(&gw, &cluster, job);
    cluster.run("scancel", &[&job.to_string()]);
    let at = Instant::now();
    let r = wait_state(&gw, &[RunState::Failed, RunState::Cancelled], 30);
    let took = at.elapsed();
    eprintln!("marked failed {took:?} after the scancel");
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("cancelled in Slurm"),
        "{r:?}"
    );
    assert!(
        took <= Duration::from_secs_f64(2.0 * poll),
        "marked failed {took:?} after the scancel (poll {poll} s)"
    );

    // A second file: a job whose node is set down.
    gw.drop_file("obs", "hydro_2.xml", &pi_series(2, 2));
    let mut second = None;
    eventually(30, "a second job", || {
        second = gw
            .ledger()
            .runs(Some("hydro"), None, 1)
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|r| r.slurm_job.filter(|j| *j != job));
        second.is_some()
    });
    let second = second.unwrap();
    model_started(&gw, &cluster, second);
    cluster.run(
        "scontrol",
        &["update", "nodename=localhost", "state=down", "reason=test"],
    );
    let at = Instant::now();
    let r = wait_state(&gw, &[RunState::Failed, RunState::Cancelled], 30);
    let took = at.elapsed();
    eprintln!("marked failed {took:?} after the node went down");
    assert_eq!(r.slurm_job, Some(second));
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    assert!(
        r.reason.as_deref().unwrap_or("").contains("node failed"),
        "{r:?}"
    );
    assert!(
        took <= Duration::from_secs_f64(2.0 * poll),
        "marked failed {took:?} after the node went down (poll {poll} s)"
    );
}

/// Every run of `hydro`, newest first.
fn runs(gw: &Gateway) -> Vec<RunRow> {
    gw.ledger()
        .runs(Some("hydro"), None, 100)
        .unwrap_or_default()
}

/// A model that fails the runs of files named `*fail*` with exit 3, after `secs` seconds.
fn sleeper(secs: u32) -> String {
    format!(
        "sleep {secs}\ncase \"$(ls input)\" in *fail*) exit 3;; esac\necho ok > output/forecast_$(ls input)"
    )
}

#[test]
fn the_controller_down_for_three_polls_loses_no_job_and_each_ends_in_its_true_state() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway_with(&cluster, &sleeper(4), "5m", 2, |_| {});
    gw.drop_file("obs", "hydro_ok.xml", &pi_series(1, 2));
    gw.drop_file("obs", "hydro_fail.xml", &pi_series(2, 2));
    eventually(30, "both jobs running", || {
        let r = runs(&gw);
        r.len() == 2
            && r.iter().all(|r| {
                r.slurm_job
                    .is_some_and(|j| cluster.job_state(j) == "RUNNING")
            })
    });
    cluster.stop_controller();
    // Three poll intervals and more: the jobs end meanwhile, with nobody to tell.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs_f64(3.0 * POLL + 4.0) {
        for r in runs(&gw) {
            assert!(
                matches!(r.state, RunState::Running | RunState::Succeeded)
                    || r.state == RunState::Failed && r.exit_code == Some(3),
                "no job is lost or failed while the controller is down: {r:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.start_controller();
    eventually(60, "both runs ended", || {
        runs(&gw).iter().all(|r| r.ended_at.is_some())
    });
    for r in runs(&gw) {
        let name = gw
            .ledger()
            .get(&r.inputs.first().map(|i| i.1.clone()).unwrap_or_default())
            .unwrap()
            .map(|f| String::from_utf8_lossy(&f.original).into_owned())
            .unwrap_or_default();
        if name.contains("fail") {
            assert_eq!((r.state, r.exit_code), (RunState::Failed, Some(3)), "{r:?}");
        } else {
            assert_eq!(r.state, RunState::Succeeded, "{r:?}");
        }
    }
}

#[test]
fn a_daemon_killed_while_jobs_pend_and_run_re_attaches_them_and_submits_none_twice() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // Three jobs of one CPU each on a node of two: two run, one pends.
    let mut gw = slurm_gateway_with(&cluster, &sleeper(4), "5m", 3, |_| {});
    for i in 0..3 {
        gw.drop_file("obs", &format!("hydro_{i}.xml"), &pi_series(i, 2));
    }
    let mut jobs: Vec<(String, i64)> = Vec::new();
    eventually(30, "three jobs, two running and one pending", || {
        jobs = runs(&gw)
            .into_iter()
            .filter_map(|r| r.slurm_job.map(|j| (r.id, j)))
            .collect();
        let states: Vec<String> = jobs.iter().map(|(_, j)| cluster.job_state(*j)).collect();
        jobs.len() == 3
            && states.iter().filter(|s| *s == "RUNNING").count() == 2
            && states.iter().filter(|s| *s == "PENDING").count() == 1
    });
    gw.kill9();
    gw.start();
    eventually(60, "the three runs ended", || {
        let r = runs(&gw);
        r.len() == 3 && r.iter().all(|r| r.ended_at.is_some())
    });
    for r in runs(&gw) {
        assert_eq!(r.state, RunState::Succeeded, "{r:?}\n{}", gw.log());
        assert!(
            jobs.contains(&(r.id.clone(), r.slurm_job.unwrap())),
            "the same run, the same job: {r:?}"
        );
    }
    // Slurm ran three jobs, no more.
    let all = cluster.run("squeue", &["-h", "-t", "all", "-o", "%i %j"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(
        gw.log().contains("re-attached to its Slurm job"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_job_that_ended_while_the_daemon_was_down_is_judged_by_the_accounting_across_a_change_of_day() {
    // The controller forgets an ended job after two seconds: its end is then only in the
    // accounting.
    let Some(cluster) = Cluster::start_with(&[("MinJobAge=300", "MinJobAge=2")]) else {
        return;
    };
    // POM's `sacct` runs a day ahead: the accounting's default window (from midnight) no longer
    // holds the job, only a window from the job's own start does.
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls.txt");
    std::fs::write(
        bin.path().join("sacct"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec faketime -f +1d /usr/bin/sacct \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bin.path().join("sacct"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut gw = slurm_gateway_with(&cluster, "sleep 120", "5m", 1, |gw| {
        gw.extra_env.push(("PATH".into(), path));
    });
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let (run, job) = job_of(&gw);
    eventually(30, "the job running", || {
        cluster.job_state(job) == "RUNNING"
    });
    gw.kill9();
    // Behind the stopped daemon's back: cancelled, then forgotten by the controller.
    cluster.run("scancel", &[&job.to_string()]);
    eventually(90, "the job forgotten by the controller", || {
        cluster.job_state(job).is_empty()
    });
    gw.start();
    let r = wait_state(&gw, &[RunState::Failed, RunState::Succeeded], 30);
    assert_eq!(r.id, run, "the same run, re-attached");
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("cancelled in Slurm"),
        "the accounting's record, not a guess: {r:?}"
    );
    let asked = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(asked.contains("--starttime="), "{asked}");
}

#[test]
fn a_job_requeued_by_slurm_is_followed_under_its_id_not_submitted_again() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let gw = slurm_gateway_with(&cluster, &sleeper(4), "5m", 1, |gw| {
        let toml = gw.rules().join("models/hydro.toml");
        let text = std::fs::read_to_string(&toml).unwrap().replace(
            "partition = \"main\"",
            "partition = \"main\"\nsbatch_args = [\"--requeue\"]",
        );
        std::fs::write(toml, text).unwrap();
    });
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 2));
    let (run, job) = job_of(&gw);
    eventually(30, "the job running", || {
        cluster.job_state(job) == "RUNNING"
    });
    // As after a node failure: back in the queue, under the same id.
    cluster.run("scontrol", &["requeue", &job.to_string()]);
    eventually(30, "the job pending again", || {
        cluster.job_state(job) == "PENDING"
    });
    for r in runs(&gw) {
        assert_eq!(
            r.state,
            RunState::Running,
            "a requeued job is still the run's: {r:?}"
        );
    }
    // Slurm holds a requeued job back a while: let it go now.
    cluster.run(
        "scontrol",
        &["update", &format!("jobid={job}"), "starttime=now"],
    );
    let r = wait_state(&gw, &[RunState::Succeeded, RunState::Failed], 60);
    assert_eq!(
        (r.id.as_str(), r.slurm_job),
        (run.as_str(), Some(job)),
        "{r:?}"
    );
    assert_eq!(r.state, RunState::Succeeded, "{r:?}");
    assert_eq!(runs(&gw).len(), 1, "one run, one job");
}
