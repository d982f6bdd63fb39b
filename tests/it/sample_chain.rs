//! The repository's own sample chain, end to end: observed rainfall and discharge → the
//! rainfall-runoff model → the propagation model → a forecast published in `outgoing/`.

use crate::common;

use std::path::PathBuf;

use common::{Gateway, eventually, repo};
use pom::ledger::State;
use pom::ledger::runs::RunState;

/// Where cargo puts the example programs (`cargo build --examples`, which scripts/test runs).
fn examples_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pom"));
    bin.parent().unwrap().join("examples")
}

/// A gateway on the repository's own rules, unchanged, with the example models on its PATH, not
/// yet started.
pub(crate) fn sample_chain_gateway() -> Gateway {
    let mut gw = Gateway::new();
    std::fs::remove_dir_all(gw.rules()).unwrap();
    common::copy_dir(&repo().join("rules"), &gw.rules());
    let path = format!(
        "{}:{}",
        examples_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    gw.extra_env = vec![("PATH".into(), path)];
    gw
}

/// A gateway on the repository's own rules, unchanged, with the example models on its PATH,
/// started, and the sample observations (rainfall and discharge) dropped.
fn sample_chain_started() -> Gateway {
    sample_chain_with(|_| {})
}

/// As [`sample_chain_started`], with a chance to change the gateway before it starts.
pub(crate) fn sample_chain_with(before: impl FnOnce(&mut Gateway)) -> Gateway {
    let mut gw = sample_chain_gateway();
    before(&mut gw);
    gw.start();
    for f in [
        "rainfall_Y1232010_20261128T12.xml",
        "discharge_Y1232010_20261128T12.xml",
    ] {
        let bytes = std::fs::read(repo().join("examples/samples/obs-pi").join(f)).unwrap();
        gw.drop_file("obs-pi", f, &bytes);
    }
    gw
}

#[test]
fn the_sample_chain_runs_end_to_end() {
    let examples = examples_dir();
    assert!(
        examples.join("sample_rainfall_runoff").exists(),
        "build the example models first (`cargo build --examples`; scripts/test does): {}",
        examples.display()
    );
    let mut gw = sample_chain_started();
    let forecast = gw
        .spool()
        .join("outgoing/forecasts/forecast_Y1232010-downstream_2026112811.xml");
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
    // A real forecast: one time0 through the chain, on the hour of the last observation; the
    // observations before it, the forecast from it to 24 hours of lead time past it.
    for m in ["rainfall-runoff", "propagation"] {
        assert!(
            model(m).time0.starts_with("2026-11-28T11:00:00"),
            "{m}: {}",
            model(m).time0
        );
    }
    assert!(
        text.contains("<forecastDate date=\"2026-11-28\" time=\"11:00:00\"/>"),
        "{text}"
    );
    let times: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<event date=\""))
        .map(|l| &l[..l.find("\" value").unwrap()])
        .collect();
    assert_eq!(
        (times.first(), times.last(), times.len()),
        (
            Some(&"2026-11-28\" time=\"11:00:00"),
            Some(&"2026-11-29\" time=\"11:00:00"),
            25
        ),
        "{text}"
    );
    let runoff = std::fs::read_to_string(
        gw.spool()
            .join(&model("rainfall-runoff").run_dir)
            .join("output/runoff_Y1232010.xml"),
    )
    .unwrap();
    assert!(
        runoff.contains("<event date=\"2026-11-28\" time=\"00:00:00\"")
            && runoff.contains("<event date=\"2026-11-29\" time=\"11:00:00\""),
        "the simulation covers the observations and the lead time: {runoff}"
    );
    gw.stop();
}

/// The sample chain replayed: unchanged, every output is identical; with the rainfall-runoff
/// model retuned, the report names the series of both models that differ, and by how much, with
/// the Nash–Sutcliffe efficiency against the observed discharge of the replay.
#[test]
fn a_replay_of_the_sample_chain_compares_a_retuned_model_with_what_ran() {
    let mut gw = sample_chain_started();
    let forecast = gw
        .spool()
        .join("outgoing/forecasts/forecast_Y1232010-downstream_2026112811.xml");
    eventually(60, "the forecast to be published", || forecast.exists());
    let from = gw
        .submissions()
        .iter()
        .map(|s| s.received_at.clone())
        .min()
        .unwrap();
    let to = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let report = |gw: &Gateway, name: &str| -> serde_json::Value {
        gw.replay(&from, &to, name, &[]);
        let s = gw.ledger().session(name).unwrap().unwrap();
        assert_eq!(s.state, "done");
        serde_json::from_slice(&std::fs::read(gw.spool().join(s.report.unwrap())).unwrap()).unwrap()
    };

    let same = report(&gw, "unchanged");
    assert_eq!(same["runs"].as_array().unwrap().len(), 2, "{same}");
    assert_eq!(
        (same["matched"].as_u64(), same["identical"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(same["differing_series"], serde_json::json!([]));

    // The reservoir constant retuned in the model's rule file.
    let rule = gw.rules().join("models/rainfall-runoff.toml");
    let text = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(
        &rule,
        text.replace(
            "concurrency = 1\n",
            "concurrency = 1\nenv = { RUNOFF_K = \"0.6\" }\n",
        ),
    )
    .unwrap();
    eventually(10, "the edit in force", || {
        gw.log().matches("rules reloaded").count() >= 1
    });
    let changed = report(&gw, "retuned");
    assert_eq!(changed["identical"].as_u64(), Some(0), "{changed}");
    let differing: Vec<&str> = changed["differing_series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        differing
            .iter()
            .any(|d| d.starts_with("rainfall-runoff runoff_Y1232010.xml Y1232010/Q.sim"))
            && differing
                .iter()
                .any(|d| d.starts_with("propagation forecast_Y1232010-downstream.xml")),
        "{differing:?}"
    );
    let runoff = changed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "rainfall-runoff")
        .unwrap();
    let series = &runoff["outputs"][0]["series"][0];
    assert!(series["max_abs_diff"].as_f64().unwrap() > 0.0, "{series}");
    assert_eq!(series["observed"], "Y1232010/Q.obs", "{series}");
    assert!(
        series["nse_original"].is_number() && series["nse_replay"].is_number(),
        "{series}"
    );
    gw.stop();
}
