//! Runs on Slurm: 200 runs through a real one-node cluster (`slurmctld` and `slurmd` on
//! 127.0.0.1), beside 20 runs through the same cluster as the baseline, each with its own
//! `pom serve` polling every second.
//!
//! Figures: the calls POM makes to the controller per poll interval besides the submissions
//! (one `squeue` and at most one `sacct` for all jobs: a constant, whatever the number of jobs),
//! the submission rate, and the delay from a job's end (the time its job script wrote in the run
//! folder) to its run recorded as ended in the ledger.
//!
//! Targets: at most 2 calls per poll interval with 200 jobs, and at most 1.5 times the figure
//! with 20 (it does not grow with the jobs); the longest delay at most one poll interval plus
//! 1 s. The process exits 1 if one is missed.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::slurm::Cluster;
use common::{CHAIN_CHANNELS, Gateway, pi_series};

const POLL: f64 = 1.0;

struct Figures {
    calls_per_poll: f64,
    submissions_per_s: f64,
    delay_p50: f64,
    delay_max: f64,
    seconds: f64,
}

fn calls(gw: &Gateway) -> f64 {
    let m = gw.http("GET", "/metrics", None, None).text();
    m.lines()
        .find_map(|l| l.strip_prefix("pom_slurm_calls_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn ms(t: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| t.timestamp_micros() as f64 / 1000.0)
        .unwrap_or(f64::NAN)
}

fn through_slurm(cluster: &Cluster, runs: usize) -> Figures {
    let mut gw = Gateway::with_channels(CHAIN_CHANNELS);
    let script = gw.dir.path().join("hydro.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncd \"$POM_RUN_DIR\"\necho ok > output/done.txt\n",
    )
    .unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/hydro.toml"),
        format!(
            "command = [\"/bin/sh\", \"{}\"]\ntimeout = \"30m\"\nconcurrency = {runs}\n\
             executor = \"slurm\"\n[inputs.obs]\nformats = [\"pi-timeseries\"]\n\
             [trigger]\nkind = \"arrival\"\n",
            script.display()
        ),
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"to-hydro\"\nchannel = \"obs\"\ndeliver = [\"hydro.obs\"]\n",
    )
    .unwrap();
    gw.extra_env
        .push(("SLURM_CONF".into(), cluster.conf().display().to_string()));
    gw.extra_args
        .extend(["--slurm-poll".into(), POLL.to_string()]);
    gw.start();
    let before = calls(&gw);
    let began = Instant::now();
    for i in 0..runs {
        gw.drop_file("obs", &format!("hydro_{i}.xml"), &pi_series(i, 1));
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let ended = loop {
        let r = gw.ledger().runs(Some("hydro"), None, runs + 10).unwrap();
        if r.len() == runs && r.iter().all(|r| r.ended_at.is_some()) {
            break r;
        }
        assert!(Instant::now() < deadline, "the runs did not all end");
        std::thread::sleep(Duration::from_millis(200));
    };
    let seconds = began.elapsed().as_secs_f64();
    let after = calls(&gw);
    assert!(
        ended
            .iter()
            .all(|r| r.state == pom::ledger::runs::RunState::Succeeded),
        "every run succeeds: {:?}",
        ended
            .iter()
            .find(|r| r.state != pom::ledger::runs::RunState::Succeeded)
    );
    // Besides one sbatch per run.
    let polls = seconds / POLL;
    let calls_per_poll = (after - before - runs as f64) / polls;
    let mut starts: Vec<f64> = ended
        .iter()
        .filter_map(|r| r.started_at.as_deref().map(ms))
        .collect();
    starts.sort_by(f64::total_cmp);
    let submissions_per_s =
        (starts.len() - 1) as f64 / ((starts[starts.len() - 1] - starts[0]) / 1000.0).max(1e-3);
    let mut delays: Vec<f64> = ended
        .iter()
        .filter_map(|r| {
            let status =
                std::fs::read_to_string(gw.spool().join(&r.run_dir).join(".slurm/status")).ok()?;
            let end = ms(status.split_whitespace().nth(2)?);
            Some((ms(r.ended_at.as_deref()?) - end) / 1000.0)
        })
        .collect();
    assert_eq!(delays.len(), runs, "a status file per run");
    delays.sort_by(f64::total_cmp);
    gw.stop();
    Figures {
        calls_per_poll,
        submissions_per_s,
        delay_p50: delays[delays.len() / 2],
        delay_max: delays[delays.len() - 1],
        seconds,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("slurm benchmark: run it with `cargo bench --bench slurm`");
        return;
    }
    // A node declared with 32 CPUs on this small machine (jobs of a shell script each): the
    // cluster keeps 32 jobs running at once, so that 200 jobs are in flight together.
    let Some(cluster) = Cluster::start_with(&[
        ("CPUs=2", "CPUs=32"),
        (
            "ReturnToService=2",
            "ReturnToService=2\nSlurmdParameters=config_overrides",
        ),
    ]) else {
        println!("slurm benchmark: skipped (not root)");
        return;
    };
    let base = through_slurm(&cluster, 20);
    let big = through_slurm(&cluster, 200);
    for (n, f) in [(20, &base), (200, &big)] {
        println!(
            "{n:>4} runs on Slurm: {:>6.1} s, controller calls per poll {:>5.2}, submissions {:>6.1}/s, \
             end to recorded p50 {:>5.2} s max {:>5.2} s",
            f.seconds, f.calls_per_poll, f.submissions_per_s, f.delay_p50, f.delay_max
        );
    }
    let ratio = big.calls_per_poll / base.calls_per_poll.max(1e-9);
    println!("  calls per poll, 200 runs / 20 runs (baseline): {ratio:>5.2}");
    let mut missed = Vec::new();
    if big.calls_per_poll > 2.0 {
        missed.push(format!(
            "{:.2} calls per poll with 200 jobs (target 2)",
            big.calls_per_poll
        ));
    }
    if ratio > 1.5 {
        missed.push(format!(
            "calls per poll grow with the jobs ({ratio:.2} times, target 1.5)"
        ));
    }
    if big.delay_max > POLL + 1.0 {
        missed.push(format!(
            "a job's end recorded {:.2} s later (target {:.1} s)",
            big.delay_max,
            POLL + 1.0
        ));
    }
    if missed.is_empty() {
        println!("slurm benchmark: all targets met");
    } else {
        println!("slurm benchmark: targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
