//! Model runs on the local executor: the contract (run folder, run file, environment), exit codes,
//! fatal diagnostics, timeouts, and outputs that re-enter the spool with their lineage.

mod common;

use std::path::Path;

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;
use pom::track::RunState;

const CHANNELS: &str = r#"
[channels.obs]
completion = "rename"

[channels.fcst]
completion = "rename"
"#;

/// A model fixture: a shell script in the rules folder.
fn model(gw: &Gateway, name: &str, script: &str, timeout: &str) {
    let path = gw.dir.path().join(format!("{name}.sh"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nset -e\ncd \"$POM_RUN_DIR\"\n{script}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join(format!("models/{name}.toml")),
        format!(
            "command = [\"/bin/sh\", \"{}\", \"{{run_file}}\"]\ntimeout = \"{timeout}\"\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\n[outputs]\nchannel = \"fcst\"\n\
             [trigger]\nkind = \"arrival\"\n",
            path.display()
        ),
    )
    .unwrap();
}

fn gateway(models: &[(&str, &str, &str)]) -> Gateway {
    let mut gw = Gateway::with_channels(CHANNELS);
    let mut routes = String::new();
    for (name, script, timeout) in models {
        model(&gw, name, script, timeout);
        routes.push_str(&format!(
            "[[route]]\nname = \"to-{name}\"\nchannel = \"obs\"\nfile = \"{name}_*.xml\"\ndeliver = [\"{name}.obs\"]\n\n"
        ));
    }
    routes.push_str("[[route]]\nname = \"forecasts\"\nchannel = \"fcst\"\npublish = [\"web\"]\n");
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    gw.start();
    gw
}

fn wait_run(gw: &Gateway, model: &str, secs: u64) -> pom::track::RunRow {
    let mut found = None;
    eventually(secs, &format!("a finished run of {model}"), || {
        let runs = gw.ledger().runs(Some(model), None, 10).unwrap_or_default();
        found = runs
            .into_iter()
            .find(|r| !matches!(r.state, RunState::Queued | RunState::Running));
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_model_run_follows_the_contract_and_its_output_comes_back_with_lineage() {
    let script = r#"
test -f "$POM_RUN_FILE"
grep -q 'key="runId" value="'"$POM_RUN_ID"'"' "$POM_RUN_FILE"
test "$POM_MODE" = normal
test -n "$POM_T0"
echo "running $POM_RUN_ID" 
sed 's/Q.obs/Q.fcst/' input/fc_1.xml > output/forecast.xml
printf '<Diag xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><line level="3" description="done"/></Diag>' > diag.xml
"#;
    let mut gw = gateway(&[("fc", script, "1m")]);
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    let run = wait_run(&gw, "fc", 30);
    let dir = gw.spool().join(&run.run_dir);
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{run:?}\n{}",
        std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
    );
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.diag[0].description, "done");
    assert!(dir.join("input/fc_1.xml").exists());
    assert!(dir.join("run.xml").exists());
    assert!(
        std::fs::read_to_string(dir.join("stdout.txt"))
            .unwrap()
            .contains(&run.id)
    );
    let input = gw.find(b"fc_1.xml").unwrap();
    assert_eq!(run.inputs, vec![("obs".to_string(), input.id.clone())]);

    // The output re-entered on `fcst`, was validated, routed and published, linked to its run.
    let decided = gw.wait_for_decided(2, 30);
    let out = decided
        .iter()
        .find(|s| s.channel == "fcst")
        .expect("the output came back");
    assert_eq!(out.state, State::Archived);
    assert_eq!(out.route_rules, vec!["forecasts".to_string()]);
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let produced_by: Option<String> = db
        .query_row(
            "SELECT produced_by FROM submissions WHERE id = ?1",
            [&out.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(produced_by.as_deref(), Some(run.id.as_str()));
    eventually(10, "the forecast to be published", || {
        gw.spool().join("outgoing/web/forecast.xml").exists()
    });
    let out = gw
        .pom()
        .args(["runs", "--model", "fc", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], run.id.as_str());
    assert_eq!(v[0]["state"], "succeeded");
    gw.stop();
}

#[test]
fn failures_fatal_diagnostics_and_timeouts_are_recorded() {
    let mut gw = gateway(&[
        ("crash", "echo boom >&2; exit 3", "1m"),
        (
            "fatal",
            "printf '<Diag xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"><line level=\"0\" description=\"no rain data\"/></Diag>' > diag.xml",
            "1m",
        ),
        ("slow", "sleep 30 & echo $! > child.pid; sleep 30", "1s"),
        ("garbage", "echo '<TimeSeries' > output/bad.xml", "1m"),
    ]);
    for (i, m) in ["crash", "fatal", "slow", "garbage"].iter().enumerate() {
        gw.drop_file("obs", &format!("{m}_1.xml"), &pi_series(i, 1));
    }
    let crash = wait_run(&gw, "crash", 30);
    assert_eq!((crash.state, crash.exit_code), (RunState::Failed, Some(3)));
    assert!(
        std::fs::read_to_string(gw.spool().join(&crash.run_dir).join("stderr.txt"))
            .unwrap()
            .contains("boom")
    );

    let fatal = wait_run(&gw, "fatal", 30);
    assert_eq!(
        (fatal.state, fatal.exit_code),
        (RunState::Failed, Some(0)),
        "a fatal line fails even exit 0"
    );
    assert!(fatal.reason.as_deref().unwrap().contains("no rain data"));

    let slow = wait_run(&gw, "slow", 30);
    assert_eq!(slow.state, RunState::TimedOut, "{slow:?}");
    // The model's own child died with it: nothing of its process group is left.
    let child: i32 = std::fs::read_to_string(gw.spool().join(&slow.run_dir).join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(5, "the model's child to be gone", || {
        !Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });

    // Invalid output: rejected, and still linked to the run that wrote it.
    let garbage = wait_run(&gw, "garbage", 30);
    assert_eq!(garbage.state, RunState::Succeeded);
    eventually(20, "the invalid output to be rejected", || {
        gw.decided()
            .iter()
            .any(|s| s.channel == "fcst" && s.state == State::Rejected)
    });
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let (state, produced_by): (String, String) = db
        .query_row(
            "SELECT state, produced_by FROM submissions WHERE channel = 'fcst'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), produced_by.as_str()),
        ("rejected", garbage.id.as_str())
    );
    gw.stop();
}
