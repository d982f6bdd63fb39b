//! Soak: the repository's sample chain (its rules, schemas and example models) fed at 200 files/s
//! for 10 minutes, with the daemon killed (`kill -9`) and restarted every minute.
//!
//! Each second brings one rainfall and one discharge observation of the sample station (each pair
//! runs the chain: rainfall-runoff, then propagation, then a published forecast) and 198 SANDRE
//! exchanges (validated, archived and published to their mirror), each file unique.
//!
//! Printed: files dropped, lost and duplicated (both must be 0), runs, and the drift of the
//! daemon's resident memory, open descriptors, the ledger's WAL and the overview page's latency:
//! each minute's figure against the first minute's (the baseline, measured in the same run).
//!
//! `cargo bench --bench soak -- --minutes 240` (or `POM_SOAK_MINUTES`) soaks for hours.
//!
//! Targets: no file lost or duplicated; in the last minute, memory at most 1.5 times the first
//! minute's, descriptors at most 32 more, the WAL under 64 MiB, the overview's p95 at most 3 times
//! the first minute's (with a 20 ms floor: a few milliseconds are noise here). The process exits 1
//! if one is missed.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, http};

const RATE: usize = 200;
const PAIRS_PER_SECOND: usize = 1;
const MAX_RSS_RATIO: f64 = 1.5;
const MAX_MORE_FDS: i64 = 32;
const MAX_WAL_MB: f64 = 64.0;
const MAX_LATENCY_RATIO: f64 = 3.0;
const LATENCY_FLOOR_MS: f64 = 20.0;

fn minutes() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("POM_SOAK_MINUTES").ok())
        .map(|m| m.parse().expect("--minutes: a whole number"))
        .unwrap_or(10)
}

/// A sample-station observation: 12 hourly values ending `n` hours after the sample's start,
/// so that every pair is a new forecast.
fn observation(parameter: &str, units: &str, n: usize) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::hours(n as i64);
    let at = |h: i64| start + chrono::Duration::hours(h);
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">\n  <timeZone>0.0</timeZone>\n  <series>\n    <header>\n      <type>instantaneous</type>\n      <locationId>Y1232010</locationId>\n      <parameterId>{parameter}</parameterId>\n      <timeStep unit=\"second\" multiplier=\"3600\"/>\n      <startDate date=\"{}\" time=\"{}\"/>\n      <endDate date=\"{}\" time=\"{}\"/>\n      <missVal>-999.0</missVal>\n      <units>{units}</units>\n    </header>\n",
        at(0).format("%Y-%m-%d"),
        at(0).format("%H:%M:%S"),
        at(11).format("%Y-%m-%d"),
        at(11).format("%H:%M:%S"),
    );
    for h in 0..12 {
        s.push_str(&format!(
            "    <event date=\"{}\" time=\"{}\" value=\"{}.{}\" flag=\"0\"/>\n",
            at(h).format("%Y-%m-%d"),
            at(h).format("%H:%M:%S"),
            (h + n as i64) % 7,
            h
        ));
    }
    s.push_str("  </series>\n</TimeSeries>\n");
    s
}

/// What one producer dropped: `channel/name` of each data file.
type Dropped = Vec<String>;

/// Drops files at `RATE` a second until told to stop, as producers do: PI by rename, SANDRE
/// with a marker once the file is whole.
fn produce(
    spool: PathBuf,
    sandre: String,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Dropped {
    let obs = spool.join("incoming/obs-pi");
    let mirror = spool.join("incoming/sandre");
    let mut dropped = Vec::new();
    let began = Instant::now();
    let mut n = 0usize;
    let mut pair = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // In steps of 50 ms: 10 files each.
        let due = (began.elapsed().as_secs_f64() * RATE as f64) as usize;
        while n < due {
            if n.is_multiple_of(RATE / PAIRS_PER_SECOND) {
                for (kind, parameter, units) in
                    [("rainfall", "P.obs", "mm"), ("discharge", "Q.obs", "m3/s")]
                {
                    let name = format!("{kind}_Y1232010_{pair:06}.xml");
                    let tmp = obs.join(format!(".{name}.part"));
                    std::fs::write(&tmp, observation(parameter, units, pair)).unwrap();
                    std::fs::rename(&tmp, obs.join(&name)).unwrap();
                    dropped.push(format!("obs-pi/{name}"));
                    n += 1;
                }
                pair += 1;
                continue;
            }
            let name = format!("serieshydro_{n:08}.xml");
            let body = sandre.replace(
                "<DateHeureCreationFichier>2026-11-28T12:05:00",
                &format!(
                    "<DateHeureCreationFichier>{}",
                    (chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
                        .unwrap()
                        .and_hms_opt(0, 0, 0)
                        .unwrap()
                        + chrono::Duration::seconds(n as i64))
                    .format("%Y-%m-%dT%H:%M:%S")
                ),
            );
            std::fs::write(mirror.join(&name), body).unwrap();
            std::fs::write(mirror.join(format!("{name}.ok")), b"").unwrap();
            dropped.push(format!("sandre/{name}"));
            n += 1;
        }
        count.store(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
    dropped
}

/// One sample of the daemon's health.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss_mb: f64,
    fds: i64,
    wal_mb: f64,
    latency_ms: f64,
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn fds(pid: u32) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as i64)
        .unwrap_or(0)
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
}

/// The overview page: what the web client loads for it.
fn overview_ms(server: &str) -> f64 {
    let t = Instant::now();
    for p in ["/api/overview", "/api/runs", "/api/timeline?hours=24"] {
        let r = http::request(server, "GET", p, &[], None).expect("the overview");
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    t.elapsed().as_secs_f64() * 1000.0
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// One minute's figures: the last sample of memory, descriptors and WAL before the kill (the
/// daemon at its fullest), the p95 of the page's latency.
fn minute(samples: &[Sample]) -> Sample {
    let last = samples.last().copied().unwrap_or_default();
    let latencies: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    Sample {
        latency_ms: percentile(&latencies, 0.95),
        ..last
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak benchmark: run it with `cargo bench --bench soak`");
        return;
    }
    let minutes = minutes();
    let repo = common::repo();
    let examples = repo.join("target/release/examples");
    assert!(
        examples.join("sample_rainfall_runoff").exists(),
        "build the example models first (`cargo build --release --examples`; scripts/test does)"
    );
    let mut gw = Gateway::new();
    std::fs::remove_dir_all(gw.rules()).unwrap();
    common::copy_dir(&repo.join("rules"), &gw.rules());
    gw.extra_env = vec![(
        "PATH".into(),
        format!(
            "{}:{}",
            examples.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )];
    gw.extra_env
        .push(("POM_LOG".into(), "warn,pom::cli::serve=info".into()));
    gw.start();
    let sandre =
        std::fs::read_to_string(repo.join("examples/samples/sandre/serieshydro_Y1232010.xml"))
            .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (spool, stop, count) = (gw.spool(), Arc::clone(&stop), Arc::clone(&count));
        std::thread::spawn(move || produce(spool, sandre, stop, count))
    };
    println!(
        "soak: {minutes} min at {RATE} files/s through the sample chain, kill -9 every minute"
    );

    let wal = gw.spool().join("state/pom.sqlite-wal");
    let mut minutes_seen: Vec<Sample> = Vec::new();
    let began = Instant::now();
    for m in 0..minutes {
        let mut samples = Vec::new();
        let server = gw.server();
        let pid = gw.child.as_ref().unwrap().id();
        while began.elapsed() < Duration::from_secs(60 * (m + 1)) {
            std::thread::sleep(Duration::from_secs(2));
            samples.push(Sample {
                rss_mb: rss_mb(pid),
                fds: fds(pid),
                wal_mb: file_mb(&wal),
                latency_ms: overview_ms(&server),
            });
        }
        let f = minute(&samples);
        println!(
            "minute {:>3}: {:>7} files dropped, RSS {:.1} MB, {} descriptors, WAL {:.1} MB, overview p95 {:.1} ms",
            m + 1,
            count.load(Ordering::Relaxed),
            f.rss_mb,
            f.fds,
            f.wal_mb,
            f.latency_ms
        );
        minutes_seen.push(f);
        gw.kill9();
        gw.start();
    }
    stop.store(true, Ordering::Relaxed);
    let dropped = producer.join().unwrap();
    let drained = Instant::now();
    let fed = |s: &pom::ledger::Submission| {
        s.session.is_none() && matches!(s.channel.as_str(), "obs-pi" | "sandre")
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while gw.decided().iter().filter(|s| fed(s)).count() < dropped.len()
        || !gw.incoming_is_empty()
        || !gw.queue_is_empty()
    {
        assert!(Instant::now() < deadline, "not drained after 600 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{} files dropped in {:.0} s, all decided {:.1} s after the last",
        dropped.len(),
        began.elapsed().as_secs_f64(),
        drained.elapsed().as_secs_f64()
    );
    // Let the chain finish its last runs.
    let idle = Instant::now();
    while gw.ledger().runs(None, None, 50).unwrap().iter().any(|r| {
        matches!(
            r.state,
            pom::ledger::runs::RunState::Queued | pom::ledger::runs::RunState::Running
        )
    }) && idle.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(200));
    }

    // Lost and duplicated, by the ledger and on disk.
    let mut times: HashMap<String, usize> = HashMap::new();
    for s in gw.submissions() {
        if fed(&s) {
            *times
                .entry(format!(
                    "{}/{}",
                    s.channel,
                    String::from_utf8_lossy(&s.original)
                ))
                .or_default() += 1;
        }
    }
    let lost = dropped.iter().filter(|d| !times.contains_key(*d)).count();
    let duplicated: usize = times.values().map(|n| n.saturating_sub(1)).sum();
    let rejected = gw.rejected_files().len();
    let runs = gw.ledger().runs(None, None, 100_000).unwrap();
    let by_state = |model: &str, state: pom::ledger::runs::RunState| {
        runs.iter()
            .filter(|r| r.model == model && r.state == state)
            .count()
    };
    use pom::ledger::runs::RunState::{Failed, Interrupted, Succeeded};
    println!(
        "lost {lost}, duplicated {duplicated}, rejected {rejected}; runs: rainfall-runoff {} succeeded, {} interrupted, {} failed; propagation {} succeeded, {} interrupted, {} failed",
        by_state("rainfall-runoff", Succeeded),
        by_state("rainfall-runoff", Interrupted),
        by_state("rainfall-runoff", Failed),
        by_state("propagation", Succeeded),
        by_state("propagation", Interrupted),
        by_state("propagation", Failed),
    );
    assert!(gw.queue_is_empty(), "queue/ is not empty");
    gw.stop();

    let first = minutes_seen[0];
    let last = *minutes_seen.last().unwrap();
    let rss_ratio = last.rss_mb / first.rss_mb;
    let more_fds = last.fds - first.fds;
    let latency_ratio =
        last.latency_ms.max(LATENCY_FLOOR_MS) / first.latency_ms.max(LATENCY_FLOOR_MS);
    println!(
        "drift, last minute against the first: RSS {:.1} -> {:.1} MB (ratio {rss_ratio:.2}), descriptors {} -> {} ({more_fds:+}), WAL {:.1} -> {:.1} MB, overview p95 {:.1} -> {:.1} ms (ratio {latency_ratio:.2}, floor {LATENCY_FLOOR_MS} ms)",
        first.rss_mb,
        last.rss_mb,
        first.fds,
        last.fds,
        first.wal_mb,
        last.wal_mb,
        first.latency_ms,
        last.latency_ms
    );
    let mut missed = Vec::new();
    if lost > 0 || duplicated > 0 {
        missed.push(format!("{lost} lost and {duplicated} duplicated"));
    }
    if rejected > 0 {
        missed.push(format!("{rejected} rejected (every file is valid)"));
    }
    if rss_ratio > MAX_RSS_RATIO {
        missed.push(format!("RSS ratio {rss_ratio:.2} over {MAX_RSS_RATIO}"));
    }
    if more_fds > MAX_MORE_FDS {
        missed.push(format!("{more_fds} more descriptors, over {MAX_MORE_FDS}"));
    }
    if last.wal_mb > MAX_WAL_MB {
        missed.push(format!("WAL {:.1} MB over {MAX_WAL_MB}", last.wal_mb));
    }
    if latency_ratio > MAX_LATENCY_RATIO {
        missed.push(format!(
            "overview latency ratio {latency_ratio:.2} over {MAX_LATENCY_RATIO}"
        ));
    }
    if missed.is_empty() {
        println!("soak benchmark: all targets met");
    } else {
        println!("soak benchmark: targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
