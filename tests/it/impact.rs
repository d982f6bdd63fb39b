//! `pom impact`: a rule edit tried on the archived past before it is put in force.

use crate::common;

use common::{Gateway, eventually, repo};

/// The edit these tests try: the observed discharge sent to the rain slot, in the rules folder
/// `dir`.
pub(crate) fn send_the_discharge_to_the_rain_slot(dir: &std::path::Path) {
    let routes = std::fs::read_to_string(dir.join("routes.toml")).unwrap();
    let wrong = routes.replacen(
        "deliver = [\"rainfall-runoff.discharge\"]",
        "deliver = [\"rainfall-runoff.rain\"]",
        1,
    );
    assert_ne!(routes, wrong);
    std::fs::write(dir.join("routes.toml"), wrong).unwrap();
}

/// Pauses or resumes the sample chain's propagation model, as an operator.
fn propagation(gw: &Gateway, token: &str, action: &str) {
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some(token),
        Some(serde_json::json!({"action": action, "model": "propagation"})),
    );
    assert_eq!(s, 200, "{v}");
}

/// Three days of observations dropped, each pair run through the sample chain to its forecast;
/// the time before the first.
fn three_forecasts(gw: &Gateway) -> chrono::DateTime<chrono::Utc> {
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    // Three days of observations, each pair run through the chain.
    for day in 25..28 {
        for kind in ["rainfall", "discharge"] {
            let text = std::fs::read_to_string(
                repo()
                    .join("examples/samples/obs-pi")
                    .join(format!("{kind}_Y1232010_20261128T12.xml")),
            )
            .unwrap();
            gw.drop_file(
                "obs-pi",
                &format!("{kind}_Y1232010_202611{day}T12.xml"),
                text.replace("2026-11-28", &format!("2026-11-{day}"))
                    .as_bytes(),
            );
        }
        let n = day - 24;
        eventually(60, "the day's forecast", || {
            gw.ledger()
                .runs(None, None, 100)
                .unwrap()
                .iter()
                .filter(|r| r.model == "propagation" && r.state.name() == "succeeded")
                .count()
                == n as usize
        });
    }
    since
}

#[test]
fn sending_the_discharge_to_the_rain_slot_lists_exactly_the_files_and_runs_it_changes() {
    let mut gw = crate::sample_chain::sample_chain_gateway();
    gw.start();
    let since = three_forecasts(&gw);
    let runs = gw.ledger().runs(None, None, 100).unwrap();
    let mut runoff: Vec<String> = runs
        .iter()
        .filter(|r| r.model == "rainfall-runoff")
        .map(|r| r.id.clone())
        .collect();
    runoff.sort();
    let discharge: Vec<String> = gw
        .submissions()
        .iter()
        .filter(|s| String::from_utf8_lossy(&s.original).starts_with("discharge_"))
        .map(|s| s.id.clone())
        .collect();
    assert_eq!((runoff.len(), discharge.len()), (3, 3));

    // The edit: the observed discharge goes to the rain slot.
    let edited = gw.dir.path().join("edited");
    common::copy_dir(&gw.rules(), &edited);
    send_the_discharge_to_the_rain_slot(&edited);

    let out = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .args(["--json", "--examples", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let impact: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        impact["files"], 12,
        "6 observations, 3 runoffs, 3 forecasts: {impact}"
    );
    assert_eq!(impact["changed"], 3, "{impact}");
    let examples = |v: &serde_json::Value| {
        let mut e: Vec<String> = v["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        e.sort();
        e
    };
    let mut expected = discharge.clone();
    expected.sort();
    assert_eq!(
        examples(&impact["deliveries_removed"]["rainfall-runoff.discharge"]),
        expected
    );
    // The rain slot takes rainfall only: it would refuse the discharge.
    assert_eq!(
        examples(&impact["refused_by_slot"]["rainfall-runoff.rain"]),
        expected
    );
    assert_eq!(
        impact["deliveries_added"],
        serde_json::json!({}),
        "{impact}"
    );
    let mut lost: Vec<String> = impact["runs_losing_input"]["rainfall-runoff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    lost.sort();
    assert_eq!(lost, runoff, "exactly the runs that took a discharge");
    assert_eq!(
        impact["routes"],
        serde_json::json!({}),
        "the same rules match"
    );
    assert_eq!(impact["unrouted"]["count"], 0);
    assert_eq!(impact["runs_losing_input"].as_object().unwrap().len(), 1);

    // In words too.
    let text = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("3 decided differently"), "{text}");
    assert!(
        text.contains("delivery removed rainfall-runoff.discharge: 3 file(s)"),
        "{text}"
    );
    assert!(
        text.contains("runs of rainfall-runoff that would lose an input: 3"),
        "{text}"
    );
    // Tried on the past: the period replayed, routed by the edited rules. The report names
    // every forecast that changes: here none is made again, for want of a discharge.
    let out = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .args(["--replay", "--name", "wrong-slot", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(both["impact"]["changed"], 3, "{both}");
    let report = &both["replay"];
    let mut lost: Vec<String> = report["not_made_again"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    lost.sort();
    assert_eq!(
        lost.len(),
        6,
        "3 runoffs and the 3 forecasts after them: {report}"
    );
    for run in &runoff {
        assert!(
            lost.iter()
                .any(|l| l.starts_with(&format!("rainfall-runoff {run} "))),
            "{run} in {lost:?}"
        );
    }
    let forecasts: Vec<String> = runs
        .iter()
        .filter(|r| r.model == "propagation")
        .map(|r| r.id.clone())
        .collect();
    for run in &forecasts {
        assert!(
            lost.iter()
                .any(|l| l.starts_with(&format!("propagation {run} "))),
            "{run} in {lost:?}"
        );
    }
    assert_eq!(report["matched"], 0, "{report}");
    // The session's files were decided by the edited rules, the operational ones by those in
    // force; the edited set is kept beside the session.
    let session = report["session"].as_str().unwrap().to_string();
    let replayed: Vec<_> = gw
        .submissions()
        .into_iter()
        .filter(|s| s.session.as_deref() == Some(session.as_str()))
        .collect();
    assert_eq!(
        replayed.len(),
        6,
        "the 6 observations replayed, nothing made"
    );
    let in_force = pom::config::rules::RuleSet::load(&gw.rules())
        .unwrap()
        .version;
    let tried = pom::config::rules::RuleSet::load(&edited).unwrap().version;
    assert_ne!(in_force, tried);
    for s in &replayed {
        assert_eq!(s.rules_version.as_deref(), Some(tried.as_str()), "{s:?}");
    }
    assert!(
        gw.submissions()
            .iter()
            .filter(|s| s.session.is_none() && s.rules_version.is_some())
            .all(|s| s.rules_version.as_deref() == Some(in_force.as_str()))
    );
    assert!(
        gw.dir
            .path()
            .join("spool/replay/.rules")
            .join(&session)
            .join("routes.toml")
            .is_file()
    );
    // In words, the forecasts that change.
    let words = gw
        .pom()
        .args(["replay", "report", &session])
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&words.stdout);
    assert_eq!(words.matches("not made again: ").count(), 6, "{words}");

    // The rules in force are untouched, and an edit that does not load is refused.
    std::fs::write(edited.join("routes.toml"), "[[route]]\nname = 1\n").unwrap();
    let bad = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("routes.toml"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    gw.stop();
}

#[test]
fn a_replay_whose_own_rules_are_a_link_or_do_not_compile_is_refused_with_the_reason() {
    let mut gw = crate::sample_chain::sample_chain_gateway();
    gw.start();
    let replay = gw.dir.path().join("spool/replay");
    let session = "whole = true\nrules = true\n";
    // Its rules folder is a link (to the rules in force): never followed.
    let linked = replay.join(".staging-linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::write(linked.join("session.pom.toml"), session).unwrap();
    std::os::unix::fs::symlink(gw.rules(), linked.join(".rules")).unwrap();
    std::fs::rename(&linked, replay.join("linked")).unwrap();
    // Its routes name a slot no model has.
    let broken = replay.join(".staging-broken");
    common::copy_dir(&gw.rules(), &broken.join(".rules"));
    std::fs::write(broken.join("session.pom.toml"), session).unwrap();
    let routes = broken.join(".rules/routes.toml");
    let text = std::fs::read_to_string(&routes)
        .unwrap()
        .replace("rainfall-runoff.rain", "rainfall-runoff.snow");
    std::fs::write(&routes, text).unwrap();
    std::fs::rename(&broken, replay.join("broken")).unwrap();
    let reason = |folder: &str| {
        let mut why = String::new();
        eventually(30, "the session refused", || {
            why =
                std::fs::read_to_string(replay.join(folder).join("CANCELLED")).unwrap_or_default();
            !why.is_empty()
        });
        why
    };
    let linked = reason("linked");
    assert!(linked.contains("is not a folder"), "{linked}");
    let broken = reason("broken");
    assert!(
        broken.contains("do not compile") && broken.contains("routes.toml"),
        "{broken}"
    );
    assert!(
        gw.ledger().sessions().unwrap().is_empty(),
        "no session began"
    );
    gw.stop();
}

#[test]
fn a_replay_routed_by_an_edit_keeps_it_across_a_restart_and_names_no_change_when_nothing_changes() {
    const TOKEN: &str = "alice-0123456789abcdef";
    let mut gw = crate::sample_chain::sample_chain_gateway();
    gw.extra_env
        .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
    gw.start();
    let since = three_forecasts(&gw);
    // An edit that changes no decision, only the set's version: the replay must make the same
    // forecasts, every file of it decided by the edit.
    let edited = gw.dir.path().join("edited");
    common::copy_dir(&gw.rules(), &edited);
    let routes = std::fs::read_to_string(edited.join("routes.toml")).unwrap();
    std::fs::write(
        edited.join("routes.toml"),
        format!("{routes}\n# Tried on the past first.\n"),
    )
    .unwrap();
    let tried = pom::config::rules::RuleSet::load(&edited).unwrap().version;
    // The forecasts wait while the daemon is killed and started again.
    propagation(&gw, TOKEN, "pause_model");
    let child = gw
        .pom()
        .args(["impact", "--rules", "edited", "--since"])
        .arg(since.to_rfc3339())
        .args(["--replay", "--name", "same", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let session_files = |gw: &Gateway| -> Vec<pom::ledger::Submission> {
        gw.submissions()
            .into_iter()
            .filter(|s| s.session.is_some() && s.state.name() != "claimed")
            .collect()
    };
    let waited = std::time::Instant::now();
    while session_files(&gw).len() < 9 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(120),
            "the observations and the 3 runoffs of the replay: {:?}; runs {:?}",
            session_files(&gw)
                .iter()
                .map(|s| (s.channel.clone(), s.state.name()))
                .collect::<Vec<_>>(),
            gw.ledger()
                .runs(None, None, 100)
                .unwrap()
                .iter()
                .map(|r| (r.model.clone(), r.state.name(), r.session.clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        session_files(&gw).iter().all(|s| s.channel != "forecast"),
        "the forecasts wait for the restart"
    );
    gw.kill9();
    gw.start();
    propagation(&gw, TOKEN, "resume_model");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(both["impact"]["changed"], 0, "{both}");
    let report = &both["replay"];
    assert_eq!(report["matched"], 6, "{report}");
    assert_eq!(report["identical"], 6, "{report}");
    assert_eq!(report["not_made_again"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["differing_series"],
        serde_json::json!([]),
        "{report}"
    );
    // The forecasts came back after the restart, and were routed by the kept edit too.
    let files = session_files(&gw);
    assert_eq!(files.len(), 12, "6 observations, 3 runoffs, 3 forecasts");
    for s in &files {
        assert_eq!(s.rules_version.as_deref(), Some(tried.as_str()), "{s:?}");
    }
    gw.stop();
}

#[test]
fn the_rule_edit_page_shows_a_staged_edit_with_its_impact_and_a_refused_one_with_its_problems() {
    let mut gw = crate::sample_chain::sample_chain_gateway();
    gw.start();
    three_forecasts(&gw);
    let edit = |gw: &Gateway| {
        let (s, v) = gw.api("GET", "/api/edit?days=1", None, None);
        assert_eq!(s, 200, "{v}");
        v
    };
    let v = edit(&gw);
    assert_eq!(v["staged"], false, "{v}");
    assert!(v["refused"].is_null(), "{v}");
    // Staged beside the rules, where the daemon looks by default (the daemon runs on `rules`).
    let staged = gw.dir.path().join("rules.next");
    common::copy_dir(&gw.rules(), &staged);
    let v = edit(&gw);
    assert_eq!(v["staged"], true, "{v}");
    assert_eq!(
        v["version"], v["in_force"],
        "a copy is the set in force: {v}"
    );
    assert!(v["impact"].is_null(), "{v}");
    send_the_discharge_to_the_rain_slot(&staged);
    let v = edit(&gw);
    assert_eq!(v["impact"]["files"], 12, "{v}");
    assert_eq!(v["impact"]["changed"], 3, "{v}");
    assert_eq!(
        v["impact"]["deliveries_removed"]["rainfall-runoff.discharge"]["count"], 3,
        "{v}"
    );
    assert_eq!(
        v["impact"]["runs_losing_input"]["rainfall-runoff"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{v}"
    );
    // A staged edit that does not load: its problems, with file and line.
    std::fs::write(staged.join("routes.toml"), "[[route]]\nname = 1\n").unwrap();
    let v = edit(&gw);
    assert!(v["impact"].is_null(), "{v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("routes.toml"), "{v}");
    // A live edit refused: shown on the same page, the rules in force unchanged.
    let in_force = v["in_force"].clone();
    std::fs::write(gw.rules().join("routes.toml"), "[[route]]\nname = 1\n").unwrap();
    let mut v = serde_json::Value::Null;
    eventually(30, "the live edit refused", || {
        v = edit(&gw);
        !v["refused"].is_null()
    });
    assert!(
        v["refused"]["problems"].to_string().contains("routes.toml"),
        "{v}"
    );
    assert_eq!(v["in_force"], in_force);
    gw.stop();
}
