//! Replay: a day of the archive copied back as a nested folder, and the same day by
//! `pom replay`, give the same runs as the original day, in replay mode, apart from the
//! operational history: nothing reaches operational `outgoing/`, nothing is a duplicate.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Gateway, chain_gateway_with, copy_dir, eventually, pi_series};
use pom::ledger::State;

/// Routed files (each runs the model once) and unrouted ones (archived only).
const RUNS: usize = 12;
const QUIET_FILES: usize = 2_000;

const FORECAST: &str = r#"echo "mode $POM_MODE t0 $POM_T0"
sed 's/Q.obs/Q.fcst/' input/* > output/forecast_$(basename input/*)"#;

struct Day {
    gw: Gateway,
    /// The original runs: id → time0.
    runs: std::collections::BTreeMap<String, String>,
    published: usize,
}

/// An operational day: routed files run the model, the others are only archived.
fn a_day() -> Day {
    let gw = chain_gateway_with(&[("fc", FORECAST, "1m")], |_| {});
    for i in 0..QUIET_FILES {
        gw.drop_file(
            "obs",
            &format!("station_{i}.xml"),
            &pi_series(100_000 + i, 1),
        );
    }
    for i in 0..RUNS {
        gw.drop_file("obs", &format!("fc_{i}.xml"), &pi_series(i, 2));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let total = QUIET_FILES + 2 * RUNS;
    gw.wait_for_decided(total, 120);
    let mut runs = Default::default();
    eventually(60, "the day's runs", || {
        runs = ended_runs(&gw, None);
        runs.len() == RUNS
    });
    let published = count(&gw.spool().join("outgoing/web"));
    assert_eq!(published, RUNS);
    Day {
        gw,
        runs,
        published,
    }
}

fn ended_runs(gw: &Gateway, session: Option<&str>) -> std::collections::BTreeMap<String, String> {
    let l = gw.ledger();
    l.runs(Some("fc"), None, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.state == pom::ledger::runs::RunState::Succeeded)
        .filter(|r| {
            let s: Option<String> = session_of(gw, &r.id);
            s.as_deref() == session
        })
        .map(|r| (r.id, r.time0))
        .collect()
}

fn session_of(gw: &Gateway, run: &str) -> Option<String> {
    rusqlite::Connection::open(gw.db())
        .unwrap()
        .query_row("SELECT session FROM runs WHERE id = ?1", [run], |r| {
            r.get(0)
        })
        .unwrap()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The session's replay runs, each with the original run it mirrors and its time0.
fn mirrors(gw: &Gateway, session: &str) -> BTreeSet<(String, String)> {
    let c = rusqlite::Connection::open(gw.db()).unwrap();
    let mut st = c
        .prepare("SELECT mirrors, time0, mode FROM runs WHERE session = ?1 AND state = 'succeeded'")
        .unwrap();
    st.query_map([session], |r| {
        let mode: String = r.get(2)?;
        assert_eq!(mode, "replay");
        Ok((
            r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            r.get(1)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn wait_done(gw: &Gateway, name: &str) -> pom::replay::Session {
    let mut found = None;
    eventually(180, &format!("replay session {name} done"), || {
        found = gw.ledger().session(name).unwrap();
        found.as_ref().is_some_and(|s| s.state == "done")
    });
    found.unwrap()
}

fn check_isolation(day: &Day, session: &pom::replay::Session) {
    let gw = &day.gw;
    // The same runs: one replay run per original run, at its time0, in replay mode.
    let expected: BTreeSet<(String, String)> = day.runs.clone().into_iter().collect();
    assert_eq!(mirrors(gw, &session.id), expected);
    // Nothing reached operational outgoing/; the replay's publications are apart.
    assert_eq!(count(&gw.spool().join("outgoing/web")), day.published);
    assert_eq!(
        count(
            &gw.spool()
                .join("outgoing/replay")
                .join(&session.id)
                .join("web")
        ),
        RUNS,
        "the replay's own forecasts (the originals' are made again, not replayed)"
    );
    // Replayed files are new submissions linked to their originals, never duplicates, and
    // the operational history is untouched.
    let all = gw.submissions();
    let replayed: Vec<_> = all
        .iter()
        .filter(|s| s.session.as_deref() == Some(session.id.as_str()))
        .collect();
    assert!(
        replayed.iter().all(|s| s.state == State::Archived),
        "no duplicate, no rejection"
    );
    let originals: BTreeSet<&str> = all
        .iter()
        .filter(|s| s.session.is_none())
        .map(|s| s.id.as_str())
        .collect();
    let linked = replayed
        .iter()
        .filter(|s| s.origin.as_deref().is_some_and(|o| originals.contains(o)))
        .count();
    // The observations replayed, and the forecasts made again (each naming the original
    // forecast it makes again); the original forecasts themselves are not replayed.
    assert_eq!(replayed.len(), QUIET_FILES + 2 * RUNS);
    assert_eq!(
        linked,
        QUIET_FILES + 2 * RUNS,
        "every replayed file names its original"
    );
    // The model saw replay mode and the original time0.
    let c = rusqlite::Connection::open(gw.db()).unwrap();
    let dir: String = c
        .query_row(
            "SELECT run_dir FROM runs WHERE session = ?1 LIMIT 1",
            [&session.id],
            |r| r.get(0),
        )
        .unwrap();
    let out = std::fs::read_to_string(gw.spool().join(dir).join("stdout.txt")).unwrap();
    assert!(out.contains("mode replay"), "{out}");
}

#[test]
fn a_day_copied_back_and_the_same_day_by_pom_replay_give_the_original_runs() {
    let day = a_day();
    let gw = &day.gw;

    // 1. An operator copies the day's archive folder (nested: the day, then its channels).
    let archive = gw.spool().join("archive");
    let year = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap() != "replay")
        .unwrap();
    let month = std::fs::read_dir(&year)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dayfolder = std::fs::read_dir(&month)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    copy_dir(&dayfolder, &gw.spool().join("replay/the-day/dd"));
    let copied = wait_done(gw, "the-day");
    assert_eq!(
        copied.files_total as usize,
        QUIET_FILES + RUNS,
        "the observations; the forecasts are made again by the model"
    );
    check_isolation(&day, &copied);
    assert!(
        !gw.spool().join("replay/the-day").exists(),
        "the copied folder is consumed"
    );

    // 2. The same day by `pom replay`, a period around it.
    gw.replay_everything("by-command");
    let by_command = wait_done(gw, "by-command");
    check_isolation(&day, &by_command);
    assert_eq!(by_command.files_total, copied.files_total);

    let out = gw.pom().args(["replays"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("the-day") && text.contains("by-command") && text.contains("done"),
        "{text}"
    );

    // 3. An unchanged chain reports identical outputs.
    for name in ["the-day", "by-command"] {
        let r = report(gw, name);
        assert_eq!(
            (
                r["matched"].as_u64(),
                r["identical"].as_u64(),
                r["missing"].as_u64(),
                r["extra"].as_u64()
            ),
            (Some(RUNS as u64), Some(RUNS as u64), Some(0), Some(0)),
            "{r}"
        );
        assert_eq!(r["differing_series"], serde_json::json!([]));
    }
    let out = gw
        .pom()
        .args(["replay", "report", "the-day"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{RUNS} output pair(s) matched, {RUNS} identical, 0 missing, 0 extra"
        )),
        "{text}"
    );

    // 4. The model changed since: the report names each series that differs, and by how much.
    let script = gw.dir.path().join("fc.sh");
    let changed = std::fs::read_to_string(&script)
        .unwrap()
        .replace("s/Q.obs/Q.fcst/", "s/Q.obs/Q.fcst/; s/value=\"/value=\"1/");
    std::fs::write(&script, changed).unwrap();
    gw.replay_everything("changed");
    let r = report(gw, "changed");
    assert_eq!(r["matched"].as_u64(), Some(RUNS as u64), "{r}");
    assert_eq!(r["identical"].as_u64(), Some(0), "{r}");
    let differing = r["differing_series"].as_array().unwrap();
    assert_eq!(differing.len(), RUNS, "{r}");
    for run in r["runs"].as_array().unwrap() {
        let s = &run["outputs"][0]["series"][0];
        assert!(s["max_abs_diff"].as_f64().unwrap() >= 10.0, "{s}");
        assert!(s["rmse"].as_f64().unwrap() > 0.0, "{s}");
        assert_eq!(s["identical"], false);
    }
    let out = gw
        .pom()
        .args(["replay", "report", "changed"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("differs: fc forecast_fc_0.xml L0/Q.fcst: max |diff|"),
        "{text}"
    );
    let page = gw.spool().join(format!(
        "reports/replay/{}.html",
        wait_done(gw, "changed").id
    ));
    let html = std::fs::read_to_string(page).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        RUNS,
        "a plot per series that differs"
    );

    // The sessions and their reports in the web client's API, the page served as is.
    let (status, list) = gw.api("GET", "/api/replays", None, None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let (status, d) = gw.api("GET", "/api/replays/changed", None, None);
    assert_eq!(status, 200);
    assert_eq!(
        d["report"]["differing_series"].as_array().unwrap().len(),
        RUNS
    );
    let id = d["session"]["id"].as_str().unwrap();
    let page = gw.http("GET", &format!("/reports/replay/{id}.html"), None, None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<svg"));
    assert_eq!(
        gw.http("GET", "/reports/replay/..%2Fstate.html", None, None)
            .status,
        404
    );
}

fn report(gw: &Gateway, name: &str) -> serde_json::Value {
    let s = wait_done(gw, name);
    let path = gw.spool().join(s.report.expect("a report"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_scheduled_model_fires_in_the_replay_at_its_original_times() {
    // Every two seconds, with the latest observation: the day lasts about ten seconds.
    let gw = chain_gateway_with(&[], |gw| {
        let script = gw.dir.path().join("every2s.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\ncd \"$POM_RUN_DIR\"\necho \"$POM_MODE $POM_T0\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(gw.rules().join("models")).unwrap();
        std::fs::write(
            gw.rules().join("models/every2s.toml"),
            format!(
                "command = [\"/bin/sh\", \"{}\"]\n[inputs.obs]\nformats = [\"pi-timeseries\"]\n\
                 [trigger]\nkind = \"schedule\"\ncron = \"*/2 * * * * *\"\ntimezone = \"UTC\"\n",
                script.display()
            ),
        )
        .unwrap();
        std::fs::write(
            gw.rules().join("routes.toml"),
            "[[route]]\nname = \"obs\"\nchannel = \"obs\"\ndeliver = [\"every2s.obs\"]\n",
        )
        .unwrap();
    });
    for i in 0..10 {
        gw.drop_file("obs", &format!("obs_{i}.xml"), &pi_series(i, 1));
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    gw.wait_for_decided(10, 30);
    let subs = gw.submissions();
    let first = subs.iter().map(|s| s.received_at.clone()).min().unwrap();
    let last = subs.iter().map(|s| s.received_at.clone()).max().unwrap();
    let c = rusqlite::Connection::open(gw.db()).unwrap();
    let original: BTreeSet<String> = c
        .prepare(
            "SELECT time0 FROM runs WHERE model = 'every2s' AND session IS NULL
             AND time0 >= ?1 AND time0 <= ?2",
        )
        .unwrap()
        .query_map([&first, &last], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(original.len() >= 3, "{original:?}");

    let to =
        chrono::DateTime::parse_from_rfc3339(&last).unwrap() + chrono::Duration::milliseconds(1);
    gw.replay(&first, &to.to_rfc3339(), "sched", &[]);
    let s = wait_done(&gw, "sched");
    let replayed: Vec<(String, Option<String>)> = c
        .prepare("SELECT time0, mirrors FROM runs WHERE session = ?1 ORDER BY queued_at")
        .unwrap()
        .query_map([&s.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let times: Vec<String> = replayed.iter().map(|r| r.0.clone()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "fired in order");
    assert_eq!(times.iter().cloned().collect::<BTreeSet<_>>(), original);
    assert!(
        replayed.iter().all(|r| r.1.is_some()),
        "each mirrors its original: {replayed:?}"
    );

    // At speed 4, the arrivals (a second apart) come back a quarter of a second apart.
    gw.replay(&first, &to.to_rfc3339(), "paced", &["--speed", "4"]);
    let paced = wait_done(&gw, "paced");
    let claimed: Vec<chrono::DateTime<chrono::FixedOffset>> = c
        .prepare("SELECT received_at FROM submissions WHERE session = ?1 ORDER BY id")
        .unwrap()
        .query_map([&paced.id], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| chrono::DateTime::parse_from_rfc3339(&t.unwrap()).unwrap())
        .collect();
    let spans: Vec<i64> = claimed
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    assert_eq!(spans.len(), 9);
    let mean = spans.iter().sum::<i64>() as f64 / spans.len() as f64;
    assert!((180.0..=400.0).contains(&mean), "spacing {spans:?} ms");
}

/// What the operational views show: each channel's last arrival, counts, lateness and queue;
/// each model's last run, state, running and waiting inputs; the timeline; the operational
/// lines of `/metrics`; and `pom runs` and `pom files`.
fn operational_views(gw: &Gateway) -> Vec<String> {
    let (_, o) = gw.api("GET", "/api/overview", None, None);
    let mut seen: Vec<String> = Vec::new();
    for c in o["channels"].as_array().unwrap() {
        seen.push(format!(
            "channel {} last {} decided {} late {} queue {}",
            c["name"], c["last_arrival"], c["decided"], c["late"], c["queue_depth"]
        ));
    }
    for m in o["models"].as_array().unwrap() {
        seen.push(format!(
            "model {} last {} state {} running {} pending {}",
            m["name"], m["last_run"]["id"], m["state"], m["running"], m["pending_inputs"]
        ));
    }
    let (_, t) = gw.api("GET", "/api/timeline?hours=24", None, None);
    seen.push(format!("timeline {}", t["models"]));
    let (_, runs) = gw.api("GET", "/api/runs", None, None);
    seen.push(format!("runs {runs}"));
    let (_, files) = gw.api("GET", "/api/files", None, None);
    let ids: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    seen.push(format!("files {ids:?}"));
    let metrics = gw.http("GET", "/metrics", None, None).text();
    seen.extend(
        metrics
            .lines()
            .filter(|l| {
                (l.starts_with("pom_files_total") || l.starts_with("pom_runs_total"))
                    && l.contains("mode=\"operational\"")
                    || l.starts_with("pom_last_arrival")
                    || l.starts_with("pom_runs_running")
                    || l.starts_with("pom_queue_depth")
                    || l.starts_with("pom_run_duration_seconds_count")
            })
            .map(String::from),
    );
    for args in [&["runs"][..], &["files"][..]] {
        let out = gw.pom().args(args).output().unwrap();
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    seen
}

#[test]
fn a_replay_beside_operational_traffic_moves_no_operational_count_metric_lateness_or_last_run() {
    let mut gw = chain_gateway_with(&[("fc", FORECAST, "1m")], |gw| {
        let channels = common::CHAIN_CHANNELS.replace(
            "[channels.obs]\ncompletion = \"rename\"",
            "[channels.obs]\ncompletion = \"rename\"\ncadence = \"3s\"\ngrace = \"1s\"",
        );
        std::fs::write(gw.rules().join("channels.toml"), channels).unwrap();
        gw.extra_args
            .extend(["--alert-interval".into(), "0.2".into()]);
    });
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    gw.wait_for_decided(2, 20);
    let late = |gw: &Gateway| {
        let (_, a) = gw.api("GET", "/api/alerts", None, None);
        a.as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "late_feed" && a["subject"] == "obs")
    };
    // The feed goes late: nothing arrives on it for longer than its cadence and grace.
    eventually(15, "the operational feed to be late", || late(&gw));
    let before = operational_views(&gw);

    // A replay of that period re-injects the file, runs the model and re-archives its output.
    gw.replay_everything("beside");
    let session = wait_done(&gw, "beside");
    std::thread::sleep(std::time::Duration::from_millis(600));

    // Nothing operational moved: not a count, a metric, a last arrival or a last run; the
    // feed is still late.
    assert_eq!(operational_views(&gw), before);
    assert!(late(&gw), "a replay must not hide a late feed");

    // The replay's own views show it, marked.
    let (_, runs) = gw.api("GET", "/api/runs?mode=replay", None, None);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["session"], session.id.as_str());
    assert_eq!(runs[0]["mode"], "replay");
    let (_, all) = gw.api("GET", "/api/runs?mode=all", None, None);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, files) = gw.api("GET", "/api/files?mode=replay", None, None);
    assert!(
        files
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["session"] == session.id.as_str())
            && files.as_array().unwrap().len() >= 2,
        "{files}"
    );
    let (status, bad) = gw.api("GET", "/api/runs?mode=everything", None, None);
    assert_eq!(status, 400, "{bad}");
    let metrics = gw.http("GET", "/metrics", None, None).text();
    assert!(
        metrics.contains("pom_files_total{channel=\"obs\",outcome=\"archived\",mode=\"replay\"} 1")
            && metrics
                .contains("pom_runs_total{model=\"fc\",state=\"succeeded\",mode=\"replay\"} 1"),
        "{metrics}"
    );
    let out = gw
        .pom()
        .args(["runs", "--mode", "replay"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().nth(1).is_some_and(|l| l.contains(" replay ")),
        "{text}"
    );
    gw.stop();
}
