//! Retention on a simulated clock (six hours a second): a channel and a model that keep a
//! day, a channel that keeps for ever. The files and run folders past their keep are removed,
//! their ledger rows kept and marked, the disk use reported, and a replay of the pruned day
//! says what it cannot replay.

use std::time::Duration;

use common::{eventually, pi_series};
use pom::ledger::State;

use crate::common;

#[test]
fn files_and_run_folders_past_their_keep_are_pruned_and_a_replay_says_what_is_missing() {
    let mut gw = common::chain_gateway_with(
        &[(
            "hydro",
            "sed 's/Q.obs/Q.fcst/' input/hydro_1.xml > output/forecast.xml",
            "1m",
        )],
        |gw| {
            let channels = gw.rules().join("channels.toml");
            let text = std::fs::read_to_string(&channels).unwrap().replace(
                "[channels.obs]\ncompletion = \"rename\"\n",
                "[channels.obs]\ncompletion = \"rename\"\nkeep = \"1d\"\n",
            );
            assert!(text.contains("keep = \"1d\""));
            std::fs::write(&channels, text).unwrap();
            let model = gw.rules().join("models/hydro.toml");
            let text = std::fs::read_to_string(&model)
                .unwrap()
                .replace("timeout = \"1m\"\n", "timeout = \"1m\"\nkeep = \"1d\"\n");
            assert!(text.contains("keep = \"1d\""));
            std::fs::write(&model, text).unwrap();
            gw.extra_args
                .extend(["--clock".into(), "2026-03-01T00:00:00Z@21600".into()]);
        },
    );
    gw.drop_file("obs", "hydro_1.xml", &pi_series(1, 3));
    gw.drop_file("fcst", "kept_1.xml", &pi_series(2, 3));
    // The observation, the file kept for ever, and the model's forecast.
    let decided = gw.wait_for_decided(3, 60);
    assert!(
        decided.iter().all(|s| s.state == State::Archived),
        "{decided:?}"
    );
    let obs = decided.iter().find(|s| s.channel == "obs").unwrap().clone();
    let stored = gw.spool().join(obs.stored.as_deref().unwrap());
    assert!(stored.exists());
    let run = common::wait_run(&gw, "hydro", 60);
    let run_dir = gw.spool().join(&run.run_dir);

    // A simulated day later (four seconds), and a step of retention.
    eventually(30, "the observation and the run folder pruned", || {
        let l = gw.ledger();
        l.get(&obs.id).unwrap().unwrap().pruned_at.is_some()
            && l.runs(Some("hydro"), None, 1).unwrap()[0]
                .pruned_at
                .is_some()
    });
    assert!(!stored.exists(), "the pruned file is gone");
    assert!(!run_dir.exists(), "the pruned run folder is gone");
    let after = gw.submissions();
    assert_eq!(after.len(), 3, "every row kept");
    let row = after.iter().find(|s| s.id == obs.id).unwrap();
    assert_eq!(row.state, State::Archived, "its verdict kept");
    assert!(row.route.is_some(), "its routing kept");
    for s in after.iter().filter(|s| s.channel == "fcst") {
        assert!(
            s.pruned_at.is_none(),
            "a channel without keep keeps its files"
        );
        assert!(gw.spool().join(s.stored.as_deref().unwrap()).exists());
    }
    let shown = gw.pom().args(["show", &obs.id]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("pruned_at"), "{shown}");

    // The disk use per area, in /metrics and on the overview.
    let mut metrics = String::new();
    eventually(30, "disk use measured after the pruning", || {
        metrics = gw.http("GET", "/metrics", None, None).text();
        metrics.contains("pom_pruned_total{kind=\"file\"} 1")
            && metrics.contains("pom_pruned_total{kind=\"run\"} 1")
            && metrics.contains("pom_disk_bytes{area=\"archive\"}")
    });
    for area in ["archive", "runs", "state", "incoming"] {
        assert!(
            metrics.contains(&format!("pom_disk_bytes{{area=\"{area}\"}}")),
            "{area}: {metrics}"
        );
    }
    let (status, overview) = gw.api("GET", "/api/overview", None, None);
    assert_eq!(status, 200);
    assert!(
        overview["disk"]["areas"]["archive"][0].as_u64().unwrap() > 0,
        "{overview}"
    );
    assert_eq!(overview["pruned"]["files"], 1, "{overview}");
    eprintln!(
        "retention: disk use {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("pom_disk_bytes"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // A replay of that day: the pruned observation is named, the rest is replayed.
    let replay_of_the_day = |more: &[&str]| {
        gw.pom()
            .args([
                "replay",
                "--from",
                "2026-02-28T00:00:00Z",
                "--to",
                "2026-03-01T12:00:00Z",
                "--no-wait",
            ])
            .args(more)
            .output()
            .unwrap()
    };
    let out = replay_of_the_day(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 file(s) of that period were removed by retention")
            && err.contains("hydro_1.xml"),
        "{err}"
    );
    assert!(
        err.contains("2 file(s) from"),
        "the others are replayed: {err}"
    );
    // A period with nothing but pruned files says so.
    let out = replay_of_the_day(&["--channel", "obs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("every archived file of that period was removed by retention"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(100));
    gw.stop();
}
