//! `pom impact` on 100,000 archived files: the repository's rules against an edit that sends the
//! observed discharge to the rain slot, over the observations of the sample chain (half
//! rainfall, half discharge; both rules ask about content, so every file is read).
//!
//! The baseline, measured in the same run, is one pass that reads every archived file (what
//! deciding on content costs anyway). Printed: files, seconds, files/s, the ratio to the
//! baseline, and what the impact found. Target: under 10 s; the process exits 1 if missed or
//! if the impact is not exactly the discharge files.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Gateway, repo};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_usize("POM_BENCH_IMPACT_FILES", 100_000);
    let mut gw = Gateway::new();
    std::fs::remove_dir_all(gw.rules()).unwrap();
    common::copy_dir(&repo().join("rules"), &gw.rules());
    // The models stay paused: their deliveries wait, nothing runs.
    for m in std::fs::read_dir(gw.rules().join("models")).unwrap() {
        let p = m.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("paused = true\n{text}")).unwrap();
    }
    gw.extra_env
        .push(("POM_LOG".into(), "warn,pom=info".into()));
    let samples = repo().join("examples/samples/obs-pi");
    let rain = std::fs::read_to_string(samples.join("rainfall_Y1232010_20261128T12.xml")).unwrap();
    let flow = std::fs::read_to_string(samples.join("discharge_Y1232010_20261128T12.xml")).unwrap();
    let dir = gw.incoming("obs-pi");
    std::fs::create_dir_all(&dir).unwrap();
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    for i in 0..n {
        let (kind, text) = if i % 2 == 0 {
            ("rain", &rain)
        } else {
            ("flow", &flow)
        };
        // Each file its own content (never a duplicate).
        std::fs::write(
            dir.join(format!("{kind}_{i:07}.xml")),
            format!("{text}<!-- {i} -->\n"),
        )
        .unwrap();
    }
    let t = Instant::now();
    gw.start();
    while common::decided_files(&gw.db()) < n {
        assert!(t.elapsed() < Duration::from_secs(1800), "not drained");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{n} observations archived in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    gw.stop();

    // Baseline: read every archived file once.
    let t = Instant::now();
    let mut bytes = 0usize;
    for e in walkdir::WalkDir::new(gw.spool().join("archive")) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "xml") {
            bytes += std::fs::read(e.path()).unwrap().len();
        }
    }
    let baseline = t.elapsed().as_secs_f64();
    println!(
        "baseline: every archived file read once: {baseline:.2} s ({} MB)",
        bytes >> 20
    );

    let edited = gw.dir.path().join("edited");
    common::copy_dir(&gw.rules(), &edited);
    let routes = std::fs::read_to_string(edited.join("routes.toml")).unwrap();
    std::fs::write(
        edited.join("routes.toml"),
        routes.replacen(
            "deliver = [\"rainfall-runoff.discharge\"]",
            "deliver = [\"rainfall-runoff.rain\"]",
            1,
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .arg("--json")
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let impact: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = impact["files"].as_u64().unwrap_or(0) as usize;
    let moved = impact["deliveries_removed"]["rainfall-runoff.discharge"]["count"]
        .as_u64()
        .unwrap_or(0) as usize;
    println!(
        "pom impact: {files} archived files in {secs:.2} s ({:.0} files/s), ratio to the baseline {:.2}",
        files as f64 / secs,
        secs / baseline.max(1e-9)
    );
    println!(
        "found: {} decided differently, {moved} discharge deliveries removed, {} refused by the rain slot, {} route changes",
        impact["changed"],
        impact["refused_by_slot"]["rainfall-runoff.rain"]["count"],
        impact["routes"].as_object().map_or(0, |r| r.len())
    );
    let exact = files == n && moved == n / 2 && impact["changed"].as_u64() == Some((n / 2) as u64);
    if secs >= 10.0 || !exact {
        eprintln!("impact benchmark: a target is missed (under 10 s, exactly the discharge files)");
        std::process::exit(1);
    }
    println!("impact benchmark: all targets met");
}
