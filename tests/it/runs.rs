//! Model runs on the local executor: the contract (run folder, run file, environment), exit codes,
//! fatal diagnostics, timeouts, and outputs that re-enter the spool with their lineage.

use crate::common;

use std::path::Path;

use common::{
    Gateway, chain_gateway as gateway, chain_gateway_with, eventually, pi_series, wait_run,
};
use pom::ledger::State;
use pom::ledger::runs::RunState;

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
    let dir = common::assert_succeeded(&gw, &run);
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
    // Lineage both ways, with `pom show`.
    let shown = gw.pom().args(["show", &run.id]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!("input obs: file {}", input.id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("output forecast.xml: file {}", out.id)),
        "{text}"
    );
    let shown = gw.pom().args(["show", &out.id]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!("produced by run {}", run.id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("from input obs: file {}", input.id)),
        "{text}"
    );
    // The same lineage as JSON objects, for scripts.
    let json = |id: &str| -> serde_json::Value {
        let out = gw.pom().args(["show", id, "--json"]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = json(&run.id);
    assert_eq!(v["run"]["inputs"][0][1], input.id.as_str(), "{v:#}");
    assert_eq!(v["inputs"][0]["slot"], "obs", "{v:#}");
    assert_eq!(v["inputs"][0]["file"], input.id.as_str(), "{v:#}");
    assert_eq!(v["outputs"][0]["name"], "forecast.xml", "{v:#}");
    assert_eq!(v["outputs"][0]["file"], out.id.as_str(), "{v:#}");
    let v = json(&out.id);
    assert_eq!(v["produced_by"], run.id.as_str(), "{v:#}");
    assert_eq!(v["produced_from"][0]["file"], input.id.as_str(), "{v:#}");
    let v = json(&input.id);
    assert_eq!(v["deliveries"][0]["run"], run.id.as_str(), "{v:#}");
    assert_eq!(v["deliveries"][0]["slot"], "obs", "{v:#}");
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

/// Two forecasts dropped on `obs`, at 06:00 (location L1) and 07:00 (L2) on 2024-03-01 as their
/// `forecastDate`, named `<prefix>06.xml` and `<prefix>07.xml`, the second once the run of the
/// first has succeeded: the two succeeded runs of `m`, oldest first.
fn two_forecast_runs(gw: &Gateway, prefix: &str) -> Vec<pom::ledger::runs::RunRow> {
    let at = |hour: u32, n: usize| {
        String::from_utf8(pi_series(n, 1)).unwrap().replace(
            "<missVal>",
            &format!(
                "<forecastDate date=\"2024-03-01\" time=\"{hour:02}:00:00\"/>\n      <missVal>"
            ),
        )
    };
    gw.drop_file("obs", &format!("{prefix}06.xml"), at(6, 1).as_bytes());
    let first = wait_run(gw, "m", 30);
    assert_eq!(first.state, RunState::Succeeded, "{first:?}");
    gw.drop_file("obs", &format!("{prefix}07.xml"), at(7, 2).as_bytes());
    wait_succeeded(gw, 2, 30, "the second run");
    let mut runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    runs.reverse();
    runs
}

/// Waits up to `secs` for `n` succeeded runs of `m`.
fn wait_succeeded(gw: &Gateway, n: usize, secs: u64, what: &str) {
    eventually(secs, what, || {
        gw.ledger()
            .runs(Some("m"), Some(RunState::Succeeded), 10)
            .unwrap()
            .len()
            == n
    });
}

/// A gateway on the chain channels, started, with one model `m` that runs a shell `script`:
/// `rule` is the rest of its rule file after its command, `routes` the routes.
fn script_model(script: &str, rule: &str, routes: &str) -> Gateway {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    let path = gw.dir.path().join("model.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/m.toml"),
        format!("command = [\"/bin/sh\", \"{}\"]\n{rule}", path.display()),
    )
    .unwrap();
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    gw.start();
    gw
}

/// A model with two required slots (join) or a batch trigger, fed by file-name routes.
fn gateway_with(model_toml: &str, routes: &str) -> Gateway {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/m.toml"), model_toml).unwrap();
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    gw.start();
    gw
}

fn join(window: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"ls input > inputs.txt\"]\n\
         [inputs.rain]\nformats = [\"pi-timeseries\"]\n\
         [inputs.flow]\nformats = [\"pi-timeseries\"]\n\
         [trigger]\nkind = \"join\"\nwindow = \"{window}\"\n"
    )
}

const JOIN_ROUTES: &str = r#"
[[route]]
name = "rain"
file = "rain_*.xml"
deliver = ["m.rain"]

[[route]]
name = "flow"
file = "flow_*.xml"
deliver = ["m.flow"]
"#;

fn delivery_states(gw: &Gateway) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let mut st = db
        .prepare("SELECT slot, state FROM deliveries ORDER BY submission")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_join_runs_once_all_slots_are_filled_within_the_window() {
    let mut gw = gateway_with(&join("30s"), JOIN_ROUTES);
    gw.drop_file("obs", "rain_1.xml", &pi_series(1, 1));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        gw.ledger().runs(Some("m"), None, 10).unwrap().is_empty(),
        "ran before the join"
    );
    // What the model waits for: rain since its arrival, flow missing, the window's end.
    let (_, o) = gw.api("GET", "/api/overview", None, None);
    let m = &o["models"][0];
    let rain_at = gw.submissions()[0].received_at.clone();
    let since = |slot: &str| {
        m["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == slot)
            .map(|s| (s["waiting"].clone(), s["since"].clone()))
            .unwrap()
    };
    assert_eq!(
        since("rain"),
        (serde_json::json!(1), serde_json::json!(rain_at)),
        "{m}"
    );
    assert_eq!(
        since("flow"),
        (serde_json::json!(0), serde_json::Value::Null),
        "{m}"
    );
    let ends = chrono::DateTime::parse_from_rfc3339(m["window_ends"].as_str().unwrap()).unwrap();
    let arrived = chrono::DateTime::parse_from_rfc3339(&rain_at).unwrap();
    assert_eq!(ends - arrived, chrono::Duration::seconds(30), "{m}");
    gw.drop_file("obs", "flow_1.xml", &pi_series(2, 1));
    let run = wait_run(&gw, "m", 30);
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    let mut slots: Vec<&str> = run.inputs.iter().map(|(s, _)| s.as_str()).collect();
    slots.sort();
    assert_eq!(slots, vec!["flow", "rain"]);
    let listed = std::fs::read_to_string(gw.spool().join(&run.run_dir).join("inputs.txt")).unwrap();
    assert_eq!(listed, "flow_1.xml\nrain_1.xml\n");
    gw.stop();
}

#[test]
fn a_join_window_that_ends_gives_its_inputs_up() {
    let mut gw = gateway_with(&join("2s"), JOIN_ROUTES);
    gw.drop_file("obs", "rain_1.xml", &pi_series(1, 1));
    eventually(20, "the lone input to expire", || {
        delivery_states(&gw) == vec![("rain".to_string(), "expired".to_string())]
    });
    assert!(
        gw.log().contains("join window of 2s ended without flow"),
        "{}",
        gw.log()
    );
    // A later flow alone does not complete the expired join.
    gw.drop_file("obs", "flow_1.xml", &pi_series(2, 1));
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(gw.ledger().runs(Some("m"), None, 10).unwrap().is_empty());
    gw.stop();
}

#[test]
fn a_batch_runs_at_its_count_then_after_its_wait() {
    let model = r#"
command = ["/bin/sh", "-c", "ls input | wc -l > count.txt"]
[inputs.obs]
formats = ["pi-timeseries"]
[trigger]
kind = "batch"
count = 3
wait = "5s"
"#;
    let routes = "[[route]]\nname = \"all\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n";
    let mut gw = gateway_with(model, routes);
    for i in 0..4 {
        gw.drop_file("obs", &format!("f{i}.xml"), &pi_series(i, 1));
    }
    wait_succeeded(&gw, 2, 30, "two batch runs");
    let runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    let mut sizes: Vec<usize> = runs.iter().map(|r| r.inputs.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 3]);
    gw.stop();
}

#[test]
fn a_batch_waits_on_the_daemons_clock_and_stamps_arrivals_with_it() {
    // Decisions read the daemon's clock, never the system's: on a clock that runs an hour per
    // real second, a batch that waits an hour for more files runs about a second after the
    // first one, and the file's arrival is stamped in the clock's time.
    let model = r#"
command = ["/bin/sh", "-c", "ls input | wc -l > count.txt"]
[inputs.obs]
formats = ["pi-timeseries"]
[trigger]
kind = "batch"
count = 100
wait = "1h"
"#;
    let routes = "[[route]]\nname = \"all\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n";
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/m.toml"), model).unwrap();
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    gw.extra_args = vec!["--clock".into(), "2026-03-27T00:00:00Z@3600".into()];
    gw.start();
    gw.drop_file("obs", "only.xml", &pi_series(1, 1));
    let decided = gw.wait_for_decided(1, 10);
    assert!(
        decided[0].received_at.starts_with("2026-03-27"),
        "stamped {}",
        decided[0].received_at
    );
    wait_succeeded(&gw, 1, 20, "the batch to run after its wait");
    let run = &gw.ledger().runs(Some("m"), None, 10).unwrap()[0];
    assert_eq!(run.inputs.len(), 1);
    assert!(run.time0.starts_with("2026-03-27"), "time0 {}", run.time0);
    gw.stop();
}

#[test]
fn diagnostics_are_read_where_the_model_writes_them_and_only_selected_outputs_come_back() {
    // As a model adapted to Delft-FEWS writes them: `output/diag.xml` with no `version` and with
    // `eventCode` attributes, beside its export, a state and a log. The diagnostics are shown on
    // the run and never re-enter the spool; only the PI time series the model's `[outputs]`
    // select come back, and what stays in the run folder is reported on the run.
    let script = r#"cd "$POM_RUN_DIR"
cat > output/diag.xml <<'END'
<?xml version="1.0" encoding="UTF-8"?>
<Diag xmlns="http://www.wldelft.nl/fews/PI">
  <line level="3" description="model started" eventCode="Model.Start"/>
  <line level="2" description="one value missing, interpolated" eventCode="Model.Warn"/>
</Diag>
END
cp input/*.xml output/timeseries_export.xml
printf '<State xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><stateId>s</stateId></State>' > output/state.xml
echo 'a log' > output/model.log
"#;
    let mut gw = script_model(
        script,
        "diagnostics = \"output/diag.xml\"\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\n\
             [outputs]\nchannel = \"fcst\"\nformats = [\"pi-timeseries\"]\nfiles = [\"*.xml\"]\n\
             [trigger]\nkind = \"arrival\"\n",
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n",
    );
    gw.drop_file("obs", "Catchment_A_Qin_20240301.xml", &pi_series(1, 1));
    let run = wait_run(&gw, "m", 30);
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    let said: Vec<&str> = run.diag.iter().map(|d| d.description.as_str()).collect();
    assert!(said.contains(&"model started"), "{said:?}");
    assert!(
        said.contains(&"one value missing, interpolated"),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|d| d.starts_with("output/model.log stays in the run folder: its name")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|d| d
                .starts_with("output/state.xml stays in the run folder: its format (pi-state)")),
        "{said:?}"
    );
    // Only the export came back; nothing rejected, the diagnostics not re-injected.
    gw.wait_for_decided(2, 20);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let decided = gw.decided();
    assert_eq!(decided.len(), 2, "{decided:?}");
    let back: Vec<&[u8]> = decided
        .iter()
        .filter(|s| s.channel == "fcst")
        .map(|s| s.original.as_slice())
        .collect();
    assert_eq!(back, vec![b"timeseries_export.xml".as_slice()]);
    assert!(gw.rejected_files().is_empty());
    let dir = gw.spool().join(&run.run_dir);
    for kept in ["output/diag.xml", "output/state.xml", "output/model.log"] {
        assert!(dir.join(kept).exists(), "{kept} kept in the run folder");
    }
    let run_file = std::fs::read_to_string(dir.join("run.xml")).unwrap();
    assert!(
        run_file.contains(&format!(
            "<outputDiagnosticFile>{}</outputDiagnosticFile>",
            dir.join("output/diag.xml").display()
        )),
        "{run_file}"
    );
    gw.stop();
}

#[test]
fn files_delivered_to_a_slot_that_names_its_file_are_merged_into_it() {
    // A model adapted to Delft-FEWS reads exactly `input/timeseries_import.xml` (exit 2
    // otherwise). Two producer files, whatever their names, delivered to that slot in one batch
    // become that one file: both series, valid against the PI schema.
    let script = r#"cd "$POM_RUN_DIR"
[ -f input/timeseries_import.xml ] || { echo "no input/timeseries_import.xml" >&2; exit 2; }
ls input > inputs.txt
"#;
    let mut gw = script_model(
        script,
        "\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\nfile = \"timeseries_import.xml\"\n\
             [trigger]\nkind = \"batch\"\ncount = 2\nwait = \"1h\"\n",
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n",
    );
    gw.drop_file("obs", "Catchment_A_Qin_20240301.xml", &pi_series(1, 1));
    gw.wait_for_decided(1, 10);
    gw.drop_file("obs", "Catchment_B_Qin_20240301.xml", &pi_series(2, 1));
    let run = wait_run(&gw, "m", 30);
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    assert_eq!(run.inputs.len(), 2);
    let dir = gw.spool().join(&run.run_dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("inputs.txt")).unwrap(),
        "timeseries_import.xml\n"
    );
    let merged = dir.join("input/timeseries_import.xml");
    let text = std::fs::read_to_string(&merged).unwrap();
    let a = text
        .find("<locationId>L1</locationId>")
        .expect("first series");
    let b = text
        .find("<locationId>L2</locationId>")
        .expect("second series");
    assert!(a < b, "series in arrival order");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(common::repo().join("schemas/pi-xml/pi_timeseries.xsd"))
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop();
}

#[test]
fn a_published_forecast_keeps_its_name_and_replaces_the_previous_one() {
    // Each run writes `forecast.xml`. Downstream consumers read `outgoing/web/forecast.xml`: it
    // is replaced by each new forecast whole (never a prefixed copy beside it), while a
    // template adds the run's time0 for an archive of all of them.
    let gw = chain_gateway_with(
        &[(
            "fc",
            "sed 's/Q.obs/Q.fcst/' input/* > output/forecast.xml",
            "1m",
        )],
        |gw| {
            let routes = std::fs::read_to_string(gw.rules().join("routes.toml")).unwrap();
            std::fs::write(
                gw.rules().join("routes.toml"),
                routes.replace(
                    "publish = [\"web\"]",
                    "publish = [\"web\", { to = \"dated\", name = \"{stem}_{time0:%Y%m%dT%H%M%S}_{run}{ext}\" }]",
                ),
            )
            .unwrap();
        },
    );
    for i in 1..=2 {
        gw.drop_file("obs", &format!("fc_{i}.xml"), &pi_series(i, 1));
        eventually(30, "the forecast to be published", || {
            std::fs::read_to_string(gw.spool().join("outgoing/web/forecast.xml"))
                .is_ok_and(|t| t.contains(&format!("<locationId>L{i}</locationId>")))
        });
    }
    let names = |d: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(gw.spool().join("outgoing").join(d))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("web"), vec!["forecast.xml".to_string()]);
    let mut runs = gw.ledger().runs(Some("fc"), None, 10).unwrap();
    runs.reverse();
    eventually(10, "both dated copies", || names("dated").len() == 2);
    let expected: Vec<String> = runs
        .iter()
        .map(|r| {
            let t0 = chrono::DateTime::parse_from_rfc3339(&r.time0).unwrap();
            format!("forecast_{}_{}.xml", t0.format("%Y%m%dT%H%M%S"), r.id)
        })
        .collect();
    assert_eq!(names("dated"), expected);
}

#[test]
fn time0_comes_from_the_forecast_and_runs_along_the_chain_with_the_declared_period() {
    // Model `a` takes time0 from its input's forecastDate, as a model adapted to Delft-FEWS
    // does; `b`, fed by `a`'s output, inherits that time0 (one forecast, one time0 along the
    // chain) and covers the period it declares around it.
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/a.toml"),
        "command = [\"/bin/sh\", \"-c\", \"cp input/*.xml output/a_out.xml\"]\n\
         [inputs.obs]\nformats = [\"pi-timeseries\"]\n[outputs]\nchannel = \"fcst\"\n\
         [time0]\nfrom = \"input\"\nslot = \"obs\"\n[trigger]\nkind = \"arrival\"\n",
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("models/b.toml"),
        "command = [\"/bin/sh\", \"-c\", \"true\"]\n[inputs.up]\nformats = [\"pi-timeseries\"]\n\
         [time0]\nperiod = [\"-1d\", \"+3d\"]\n[trigger]\nkind = \"arrival\"\n",
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"a.obs\"]\n\
         [[route]]\nname = \"up\"\nchannel = \"fcst\"\ndeliver = [\"b.up\"]\n",
    )
    .unwrap();
    gw.start();
    let forecast = String::from_utf8(pi_series(1, 1)).unwrap().replace(
        "<missVal>",
        "<forecastDate date=\"2024-03-01\" time=\"06:00:00\"/>\n      <missVal>",
    );
    gw.drop_file("obs", "Catchment_A_Qin_20240301.xml", forecast.as_bytes());
    let a = wait_run(&gw, "a", 30);
    assert_eq!(a.state, RunState::Succeeded, "{a:?}");
    let b = wait_run(&gw, "b", 30);
    assert_eq!(b.state, RunState::Succeeded, "{b:?}");
    assert!(a.time0.starts_with("2024-03-01T06:00:00"), "{}", a.time0);
    assert_eq!(b.time0, a.time0, "one time0 along the chain");
    let run_file = std::fs::read_to_string(gw.spool().join(&b.run_dir).join("run.xml")).unwrap();
    for expected in [
        "<startDateTime date=\"2024-02-29\" time=\"06:00:00\"/>",
        "<endDateTime date=\"2024-03-04\" time=\"06:00:00\"/>",
        "<time0 date=\"2024-03-01\" time=\"06:00:00\"/>",
    ] {
        assert!(run_file.contains(expected), "{expected} in {run_file}");
    }
    gw.stop();
}

#[test]
fn the_model_gets_time0_as_its_inputs_forecast_date_and_the_archive_keeps_the_original() {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/m.toml"),
        "command = [\"/bin/sh\", \"-c\", \"true\"]\n\
         [inputs.obs]\nformats = [\"pi-timeseries\"]\nfile = \"timeseries_import.xml\"\n\
         forecastDate = \"time0\"\n[time0]\nfrom = \"clock\"\nround = \"1h\"\n\
         [trigger]\nkind = \"arrival\"\n",
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n",
    )
    .unwrap();
    gw.start();
    gw.drop_file("obs", "obs_1.xml", &pi_series(1, 1));
    let run = wait_run(&gw, "m", 30);
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    let t0 = chrono::DateTime::parse_from_rfc3339(&run.time0).unwrap();
    assert_eq!(
        t0.format("%M:%S%.f").to_string(),
        "00:00",
        "on the hour: {t0}"
    );
    let copy = std::fs::read_to_string(
        gw.spool()
            .join(&run.run_dir)
            .join("input/timeseries_import.xml"),
    )
    .unwrap();
    let stamp = format!(
        "<forecastDate date=\"{}\" time=\"{}\"/>",
        t0.format("%Y-%m-%d"),
        t0.format("%H:%M:%S")
    );
    assert!(copy.contains(&stamp), "{stamp} in {copy}");
    let input = gw.find(b"obs_1.xml").unwrap();
    let archived = std::fs::read_to_string(gw.spool().join(input.stored.unwrap())).unwrap();
    assert!(
        !archived.contains("forecastDate"),
        "the original is untouched"
    );
    gw.stop();
}

#[test]
fn the_readmes_declaration_of_a_model_adapted_to_delft_fews_compiles() {
    // The README is a test: its example declaration and route compile as written.
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let section = readme
        .split("## Running a model adapted to Delft-FEWS")
        .nth(1)
        .expect("the README's section")
        .split("\n## ")
        .next()
        .unwrap();
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "a model and a route");
    let mut problems = Vec::new();
    let model = pom::config::model::Model::compile(
        "catchment-a",
        Path::new("catchment-a.toml"),
        blocks[0],
        &mut problems,
    )
    .unwrap_or_else(|| panic!("{problems:?}"));
    assert_eq!(model.diagnostics, "output/diag.xml");
    assert_eq!(
        model.inputs["discharge"].file.as_deref(),
        Some("timeseries_import.xml")
    );
    pom::config::routes::Routes::compile(
        Path::new("routes.toml"),
        blocks[1],
        &std::collections::BTreeMap::new(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_model_adapted_to_delft_fews_runs_unchanged_and_starts_warm_from_its_previous_state() {
    // As such models behave: reads only input/timeseries_import.xml (exit 2 otherwise), takes
    // t0 from its forecastDate, prints a banner, reads input/state.xml when present, writes
    // output/state.xml, output/timeseries_export.xml and output/diag.xml (no version, eventCode).
    let script = r#"cd "$POM_RUN_DIR"
[ -f input/timeseries_import.xml ] || { echo "no input/timeseries_import.xml" >&2; exit 2; }
echo "Catchment model 4.2 (c) somebody"
t0=$(sed -n 's/.*<forecastDate date="\([^"]*\)" time="\([^"]*\)".*/\1T\2Z/p' input/timeseries_import.xml | head -1)
if [ -z "$t0" ]; then
  printf '<Diag xmlns="http://www.wldelft.nl/fews/PI"><line level="1" description="no forecastDate in the input" eventCode="Model.Input"/></Diag>' > output/diag.xml
  exit 1
fi
echo "$t0" > t0_used.txt
sed -n 's/.*<\(startDateTime\|endDateTime\) date="\([^"]*\)" time="\([^"]*\)".*/\2T\3Z/p' run.xml > period_used.txt
if [ -f input/state.xml ]; then cp input/state.xml started_from.txt; else echo cold > started_from.txt; fi
printf 'state saved by %s\n' "$POM_RUN_ID" > output/state.xml
cp input/timeseries_import.xml output/timeseries_export.xml
printf '<Diag xmlns="http://www.wldelft.nl/fews/PI"><line level="3" description="done" eventCode="Model.End"/></Diag>' > output/diag.xml
"#;
    let mut gw = script_model(
        script,
        "diagnostics = \"output/diag.xml\"\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\nfile = \"timeseries_import.xml\"\n\
             [time0]\nfrom = \"input\"\nslot = \"obs\"\n\
             [state]\nfile = \"state.xml\"\nmax_age = \"2d\"\n\
             [outputs]\nchannel = \"fcst\"\nfiles = [\"timeseries_export*.xml\"]\n\
             [trigger]\nkind = \"arrival\"\n",
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n\
         [[route]]\nname = \"out\"\nchannel = \"fcst\"\npublish = [\"bulletin\"]\n",
    );
    let runs = two_forecast_runs(&gw, "Catchment_A_Qin_20240301T");
    let (first, second) = (&runs[0], &runs[1]);
    // The ledger's time0 is the t0 the model used (its input's forecastDate).
    assert!(
        first.time0.starts_with("2024-03-01T06:00:00"),
        "{}",
        first.time0
    );
    assert!(
        second.time0.starts_with("2024-03-01T07:00:00"),
        "{}",
        second.time0
    );
    // The model took its t0 from its input's forecastDate and its period from the run file:
    // the ledger's time0 is the one it used.
    for r in [first, second] {
        let t0 = chrono::DateTime::parse_from_rfc3339(&r.time0).unwrap();
        let dir = gw.spool().join(&r.run_dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("t0_used.txt"))
                .unwrap()
                .trim(),
            t0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
        let period = std::fs::read_to_string(dir.join("period_used.txt")).unwrap();
        let expected = [
            t0 - chrono::Duration::days(2),
            t0 + chrono::Duration::days(2),
        ]
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ\n").to_string())
        .concat();
        assert_eq!(period, expected);
    }
    // Cold, then warm from the first run's state.
    assert_eq!(first.state_start.as_deref(), Some("cold"));
    assert_eq!(second.state_start.as_deref(), Some("warm"));
    assert_eq!(second.state_from.as_deref(), Some(first.id.as_str()));
    let dir = |r: &pom::ledger::runs::RunRow| gw.spool().join(&r.run_dir);
    assert_eq!(
        std::fs::read_to_string(dir(first).join("started_from.txt")).unwrap(),
        "cold\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir(second).join("started_from.txt")).unwrap(),
        format!("state saved by {}\n", first.id)
    );
    let run_file = std::fs::read_to_string(dir(second).join("run.xml")).unwrap();
    assert!(
        run_file.contains(&format!("value=\"warm from run {} valid at ", first.id)),
        "{run_file}"
    );
    // Diagnostics shown; nothing but the exports came back; the export published under a
    // stable name.
    assert!(
        second.diag.iter().any(|d| d.description == "done"),
        "{second:?}"
    );
    assert!(
        std::fs::read_to_string(dir(second).join("stdout.txt"))
            .unwrap()
            .contains("Catchment model 4.2")
    );
    gw.wait_for_decided(4, 20);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let back: Vec<String> = gw
        .decided()
        .iter()
        .filter(|s| s.channel == "fcst")
        .map(|s| String::from_utf8_lossy(&s.original).into_owned())
        .collect();
    assert_eq!(back, vec!["timeseries_export.xml"; 2], "{back:?}");
    assert!(gw.rejected_files().is_empty());
    let published =
        std::fs::read_to_string(gw.spool().join("outgoing/bulletin/timeseries_export.xml"))
            .unwrap();
    assert!(
        published.contains("<locationId>L2</locationId>"),
        "the latest forecast"
    );

    // A replay of that period: the same outputs, and the same state chain in its own history
    // (cold, as the original first run, then warm from the replay's own first run).
    gw.replay_everything("again");
    let mut session = None;
    eventually(120, "the replay to end", || {
        session = gw.ledger().session("again").unwrap();
        session.as_ref().is_some_and(|s| s.state == "done")
    });
    let session = session.unwrap();
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let chain: Vec<(String, Option<String>, Option<String>)> = db
        .prepare("SELECT id, state_start, state_from FROM runs WHERE session = ?1 ORDER BY time0")
        .unwrap()
        .query_map([&session.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[0].1.as_deref(), Some("cold"), "{chain:?}");
    assert_eq!(chain[1].1.as_deref(), Some("warm"), "{chain:?}");
    assert_eq!(
        chain[1].2.as_deref(),
        Some(chain[0].0.as_str()),
        "{chain:?}"
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(gw.spool().join(session.report.expect("a report"))).unwrap(),
    )
    .unwrap();
    assert_eq!(report["matched"], 2, "{report:#}");
    assert_eq!(report["identical"], 2, "{report:#}");

    // Bad input: the model exits 1 with a level-1 line, shown as the run's error.
    gw.drop_file("obs", "Catchment_A_Qin_broken.xml", &pi_series(3, 1));
    eventually(30, "the failed run", || {
        gw.ledger()
            .runs(Some("m"), Some(RunState::Failed), 10)
            .unwrap()
            .iter()
            .any(|r| r.exit_code == Some(1))
    });
    let failed = gw
        .ledger()
        .runs(Some("m"), Some(RunState::Failed), 10)
        .unwrap();
    let failed = failed.iter().find(|r| r.exit_code == Some(1)).unwrap();
    assert!(
        failed
            .diag
            .iter()
            .any(|d| d.level == 1 && d.description == "no forecastDate in the input"),
        "{failed:?}"
    );
    gw.stop();
}

#[test]
fn a_state_of_several_files_with_its_pi_description_starts_the_next_run_warm() {
    // A model whose state is a folder of files and a PI state description (as wflow writes):
    // the first run starts from the declared cold folder, the second from every file the first
    // saved (never a link it left), valid at the description's dateTime, named in its run file.
    let script = r#"cd "$POM_RUN_DIR"
cat input/states/*.bin > started_from.txt 2>/dev/null || echo none > started_from.txt
grep -o '<inputStateDescriptionFile>[^<]*' run.xml > in_description.txt || true
grep -o '<outputStateDescriptionFile>[^<]*' run.xml > out_description.txt
mkdir -p output/states
echo "a of $POM_RUN_ID" > output/states/a.bin
echo "b of $POM_RUN_ID" > output/states/b.bin
ln -s /etc/hostname output/states/c.bin
printf '<State xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><stateId>s</stateId><timeZone>1.0</timeZone><dateTime date="2024-03-01" time="06:00:00"/></State>' > output/state.xml
"#;
    let mut gw = script_model(
        script,
        "[inputs.obs]\nformats = [\"pi-timeseries\"]\n\
         [time0]\nfrom = \"input\"\nslot = \"obs\"\n\
         [state]\nfiles = [\"states/*.bin\"]\ndescription = \"state.xml\"\ncold = \"cold/m\"\n\
         [trigger]\nkind = \"arrival\"\n",
        "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n",
    );
    // The cold state: a folder under rules/, read when a run starts.
    std::fs::create_dir_all(gw.rules().join("cold/m/states")).unwrap();
    std::fs::write(gw.rules().join("cold/m/states/a.bin"), "cold a\n").unwrap();
    let runs = two_forecast_runs(&gw, "obs_");
    let (first, second) = (&runs[0], &runs[1]);
    let dir = |r: &pom::ledger::runs::RunRow| gw.spool().join(&r.run_dir);
    let read = |r, f: &str| std::fs::read_to_string(dir(r).join(f)).unwrap();
    // Cold from the declared folder, its files as they lie.
    assert_eq!(first.state_start.as_deref(), Some("cold"));
    assert_eq!(read(first, "started_from.txt"), "cold a\n");
    assert_eq!(read(first, "in_description.txt"), "");
    // Warm from every file the first run saved, but not the link it left.
    assert_eq!(second.state_start.as_deref(), Some("warm"));
    assert_eq!(second.state_from.as_deref(), Some(first.id.as_str()));
    assert_eq!(
        read(second, "started_from.txt"),
        format!("a of {0}\nb of {0}\n", first.id)
    );
    assert!(!dir(second).join("input/states/c.bin").exists());
    // Valid at the description's dateTime (06:00 at UTC+1), not at the run's time0.
    assert!(
        second
            .state_valid_at
            .as_deref()
            .is_some_and(|v| v.starts_with("2024-03-01T05:00:00")),
        "{second:?}"
    );
    // The run file names the description the model gets and the one it writes.
    assert!(
        read(second, "in_description.txt").ends_with("/input/state.xml\n"),
        "{}",
        read(second, "in_description.txt")
    );
    assert!(dir(second).join("input/state.xml").exists());
    assert!(read(second, "out_description.txt").ends_with("/output/state.xml\n"));
    gw.stop();
}

fn retrying_model(gw: &Gateway, script: &str, timeout: &str) {
    let path = gw.dir.path().join("flaky.sh");
    std::fs::write(&path, format!("#!/bin/sh\ncd \"$POM_RUN_DIR\"\n{script}\n")).unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join("models/m.toml"),
        format!(
            "command = [\"/bin/sh\", \"{}\"]\ntimeout = \"{timeout}\"\nretries = {{ max = 1, backoff = \"1s\" }}\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\n[trigger]\nkind = \"arrival\"\n",
            path.display()
        ),
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"all\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n",
    )
    .unwrap();
}

#[test]
fn a_failed_run_is_retried_after_its_backoff_with_the_same_inputs() {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    let launches = gw.dir.path().join("launches");
    retrying_model(
        &gw,
        &format!(
            "echo x >> {l}\ntest $(wc -l < {l}) -ge 2",
            l = launches.display()
        ),
        "1m",
    );
    gw.start();
    gw.drop_file("obs", "a.xml", &pi_series(1, 1));
    wait_succeeded(&gw, 1, 30, "the retry to succeed");
    let runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (second, first) = (&runs[0], &runs[1]);
    assert_eq!((first.state, first.attempt), (RunState::Failed, 1));
    assert_eq!((second.state, second.attempt), (RunState::Succeeded, 2));
    assert_eq!(first.inputs, second.inputs);
    let ended = chrono::DateTime::parse_from_rfc3339(first.ended_at.as_deref().unwrap()).unwrap();
    let queued = chrono::DateTime::parse_from_rfc3339(&second.queued_at).unwrap();
    assert!(
        queued - ended >= chrono::Duration::milliseconds(900),
        "retried after {:?}",
        queued - ended
    );
    // Retried once, as the policy says: nothing more.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(gw.ledger().runs(Some("m"), None, 10).unwrap().len(), 2);
    gw.stop();
}

#[test]
fn an_automatic_retry_and_a_rerun_keep_the_original_time0() {
    // Regression: a retry wrote its own start time as time0 into run.xml while the ledger kept
    // the original. A retry or a rerun is the same forecast: same time0, same period.
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    gw.extra_env
        .push(("POM_TOKEN".into(), "ops:0123456789abcdef0123".into()));
    let launches = gw.dir.path().join("launches");
    retrying_model(
        &gw,
        &format!(
            "echo $$ >> {l}\ngrep -o '<[a-zA-Z]*DateTime [^>]*>\\|<time0 [^>]*>' run.xml > t0.txt\n\
             echo \"$POM_T0\" >> t0.txt\nif [ $(wc -l < {l}) -eq 1 ]; then exit 1; fi",
            l = launches.display()
        ),
        "1m",
    );
    gw.start();
    gw.drop_file("obs", "a.xml", &pi_series(1, 1));
    wait_succeeded(&gw, 1, 30, "the retry to succeed");
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some("0123456789abcdef0123"),
        Some(serde_json::json!({"action": "rerun", "run": gw.ledger().runs(Some("m"), Some(RunState::Succeeded), 10).unwrap()[0].id})),
    );
    assert_eq!(s, 200, "{v}");
    wait_succeeded(&gw, 2, 30, "the rerun to succeed");
    let mut runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    runs.reverse();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let seen = |r: &pom::ledger::runs::RunRow| {
        std::fs::read_to_string(gw.spool().join(&r.run_dir).join("t0.txt")).unwrap()
    };
    for r in &runs[1..] {
        assert_eq!(r.time0, runs[0].time0, "ledger time0 of {}", r.id);
        assert_eq!(
            seen(r),
            seen(&runs[0]),
            "time0 and period the model saw in {}",
            r.id
        );
    }
    assert!(seen(&runs[0]).contains("<time0 "), "{}", seen(&runs[0]));
    gw.stop();
}

#[test]
fn kill_9_of_the_daemon_while_a_model_runs_interrupts_it_and_retries_it_once() {
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    let launches = gw.dir.path().join("launches");
    // The first launch would run for a minute; the retry finishes at once.
    retrying_model(
        &gw,
        &format!(
            "echo $$ >> {l}\nif [ $(wc -l < {l}) -eq 1 ]; then sleep 60; fi",
            l = launches.display()
        ),
        "5m",
    );
    gw.start();
    gw.drop_file("obs", "a.xml", &pi_series(1, 1));
    eventually(30, "the model to start", || {
        std::fs::read_to_string(&launches).is_ok_and(|t| t.lines().count() == 1)
    });
    let first_pid: i32 = std::fs::read_to_string(&launches)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    gw.kill9();
    assert!(
        Path::new(&format!("/proc/{first_pid}")).exists(),
        "the model outlived the daemon"
    );
    gw.start();
    wait_succeeded(&gw, 1, 30, "the retry to succeed");
    let runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].state, RunState::Interrupted);
    assert_eq!(runs[0].attempt, 2);
    // The orphan of the killed daemon was stopped, not left running beside its retry.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    assert!(gone(first_pid), "the first launch still runs");
    assert_eq!(
        std::fs::read_to_string(&launches).unwrap().lines().count(),
        2,
        "launched more than twice"
    );
    gw.stop();
}

#[test]
fn a_model_whose_pid_the_killed_daemon_never_recorded_is_still_stopped_before_its_retry() {
    // The daemon can die between starting a model and committing its pid: the ledger then
    // holds a running run with no pid. The restarted daemon finds the orphan by its run id.
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    let launches = gw.dir.path().join("launches");
    retrying_model(
        &gw,
        &format!(
            "echo $$ >> {l}\nif [ $(wc -l < {l}) -eq 1 ]; then sleep 60; fi",
            l = launches.display()
        ),
        "5m",
    );
    gw.start();
    gw.drop_file("obs", "a.xml", &pi_series(1, 1));
    eventually(30, "the model to start and its pid to be recorded", || {
        std::fs::read_to_string(&launches).is_ok_and(|t| t.lines().count() == 1)
            && gw
                .ledger()
                .runs(Some("m"), Some(RunState::Running), 10)
                .unwrap()
                .iter()
                .any(|r| r.pid.is_some())
    });
    let first_pid: i32 = std::fs::read_to_string(&launches)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    gw.kill9();
    let forgotten = rusqlite::Connection::open(gw.db())
        .unwrap()
        .execute("UPDATE runs SET pid = NULL WHERE state = 'running'", [])
        .unwrap();
    assert_eq!(forgotten, 1);
    gw.start();
    wait_succeeded(&gw, 1, 30, "the retry to succeed");
    let gone = std::fs::read_to_string(format!("/proc/{first_pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "the first launch still runs beside its retry");
    gw.stop();
}

#[test]
fn a_schedule_in_paris_fires_at_its_local_times_across_daylight_saving_with_a_simulated_clock() {
    // Every day at 06:00 in Paris, with a clock that starts on 2026-03-27 at midnight UTC and
    // runs 6 simulated hours per real second: the runs' time0 are 05:00 UTC on the 27th and
    // 28th (CET), then 04:00 UTC on the 29th (CEST), after the change.
    let model = r#"
command = ["/bin/sh", "-c", "echo $POM_T0 > t0.txt; ls input > inputs.txt"]
[inputs.obs]
formats = ["pi-timeseries"]
required = false
[trigger]
kind = "schedule"
cron = "0 6 * * *"
timezone = "Europe/Paris"
"#;
    let routes = "[[route]]\nname = \"all\"\nchannel = \"obs\"\ndeliver = [\"m.obs\"]\n";
    let mut gw = Gateway::with_channels(common::CHAIN_CHANNELS);
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/m.toml"), model).unwrap();
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    gw.extra_args = vec!["--clock".into(), "2026-03-27T00:00:00Z@21600".into()];
    gw.start();
    gw.drop_file("obs", "older.xml", &pi_series(1, 1));
    gw.wait_for_decided(1, 10);
    gw.drop_file("obs", "latest.xml", &pi_series(2, 1));
    gw.wait_for_decided(2, 10);
    eventually(40, "three scheduled runs", || {
        gw.ledger()
            .runs(Some("m"), Some(RunState::Succeeded), 10)
            .unwrap()
            .len()
            >= 3
    });
    gw.stop();
    let mut runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
    runs.reverse();
    let t0: Vec<&str> = runs.iter().take(3).map(|r| r.time0.as_str()).collect();
    assert_eq!(
        t0,
        vec![
            "2026-03-27T05:00:00.000000Z",
            "2026-03-28T05:00:00.000000Z",
            "2026-03-29T04:00:00.000000Z"
        ]
    );
    let dir = gw.spool().join(&runs[1].run_dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("t0.txt")).unwrap().trim(),
        "2026-03-28T05:00:00Z"
    );
    // Each slot gets its latest input.
    assert_eq!(
        std::fs::read_to_string(dir.join("inputs.txt")).unwrap(),
        "latest.xml\n"
    );
    assert!(runs.iter().all(|r| r.trigger == "schedule"));
}
