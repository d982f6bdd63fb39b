//! The repository's own sample chain, end to end: observed rainfall and discharge → the
//! rainfall-runoff model → the propagation model → a forecast published in `outgoing/`.

mod common;

use std::path::PathBuf;

use common::{Gateway, eventually, repo};
use pom::ledger::State;
use pom::track::RunState;

/// Where cargo puts the example programs (`cargo build --examples`, which scripts/test runs).
fn examples_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pom"));
    bin.parent().unwrap().join("examples")
}

#[test]
fn the_sample_chain_runs_end_to_end() {
    let examples = examples_dir();
    assert!(
        examples.join("sample_rainfall_runoff").exists(),
        "build the example models first (`cargo build --examples`; scripts/test does): {}",
        examples.display()
    );
    let mut gw = Gateway::new();
    // The repository's own rules, unchanged.
    std::fs::remove_dir_all(gw.rules()).unwrap();
    common::copy_dir(&repo().join("rules"), &gw.rules());
    let path = format!(
        "{}:{}",
        examples.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    gw.extra_env = vec![("PATH".into(), path)];
    gw.start();
    for f in [
        "rainfall_Y1232010_20261128T12.xml",
        "discharge_Y1232010_20261128T12.xml",
    ] {
        let bytes = std::fs::read(repo().join("examples/samples/obs-pi").join(f)).unwrap();
        gw.drop_file("obs-pi", f, &bytes);
    }
    let forecast = gw
        .spool()
        .join("outgoing/forecasts/forecast_Y1232010-downstream.xml");
    let t = std::time::Instant::now();
    eventually(60, "the forecast to be published", || forecast.exists());
    println!("forecast published {:?} after the drop", t.elapsed());

    let runs = gw.ledger().runs(None, None, 10).unwrap();
    let model = |m: &str| {
        runs.iter()
            .find(|r| r.model == m)
            .unwrap_or_else(|| panic!("no {m} run: {runs:?}"))
    };
    assert_eq!(model("rainfall-runoff").state, RunState::Succeeded);
    assert_eq!(
        model("rainfall-runoff").inputs.len(),
        2,
        "the join took both observations"
    );
    assert_eq!(model("propagation").state, RunState::Succeeded);
    // The forecast is valid PI, archived, and traced back to the propagation run.
    let decided = gw.decided();
    let fc = decided
        .iter()
        .find(|s| s.channel == "forecast")
        .expect("forecast recorded");
    assert_eq!(fc.state, State::Archived);
    assert_eq!(fc.format.as_deref(), Some("pi-timeseries"));
    let out = gw
        .pom()
        .args(["validate", "--json"])
        .arg(&forecast)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&forecast).unwrap();
    assert!(text.contains("<parameterId>Q.fcst</parameterId>"), "{text}");
    gw.stop();
}
