//! The running gateway routes every accepted file by the rules in force, records the decision with
//! the rule and the rule-set version, publishes, holds, drops, and keeps unrouted files visible.

use crate::common;

use std::os::unix::fs::MetadataExt;

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;

const MODEL: &str = r#"
command = ["true", "{run_file}"]
paused = true
[inputs.rain]
formats = ["pi-timeseries"]
[trigger]
kind = "arrival"
"#;

const ROUTES: &str = r#"
[[route]]
name = "rain-to-rr"
channel = "obs"
where = { "series/header/parameterId" = "P.obs" }
deliver = ["rr.rain"]

[[route]]
name = "discharge-to-web"
channel = "obs"
file = "discharge_*.xml"
publish = ["web"]

[[route]]
name = "quarantine"
channel = "mark"
hold = "a forecaster checks these first"

[[route]]
name = "tests"
file = "test_*.xml"
drop = "test files from the upstream system"
"#;

fn rain(n: usize) -> Vec<u8> {
    String::from_utf8(pi_series(n, 1))
        .unwrap()
        .replace("Q.obs", "P.obs")
        .into_bytes()
}

#[test]
fn every_accepted_file_is_routed_and_the_decision_recorded() {
    let mut gw = Gateway::new();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/rr.toml"), MODEL).unwrap();
    std::fs::write(gw.rules().join("routes.toml"), ROUTES).unwrap();
    gw.start();
    gw.drop_file("obs", "rain_1.xml", &rain(1));
    gw.drop_file("obs", "discharge_1.xml", &pi_series(2, 1));
    gw.drop_file("obs", "test_3.xml", &pi_series(3, 1));
    gw.drop_file("obs", "other.xml", &pi_series(4, 1));
    std::fs::write(gw.incoming("mark").join("m.xml"), pi_series(5, 1)).unwrap();
    std::fs::write(gw.incoming("mark").join("m.xml.ok"), b"").unwrap();
    gw.drop_file("obs", "broken.xml", b"<TimeSeries");
    let decided = gw.wait_for_decided(6, 20);
    let by = |n: &str| decided.iter().find(|s| s.original == n.as_bytes()).unwrap();

    let version = pom::config::rules::RuleSet::load(&gw.rules())
        .unwrap()
        .version;
    for (name, route, rule) in [
        ("rain_1.xml", "routed", Some("rain-to-rr")),
        ("discharge_1.xml", "routed", Some("discharge-to-web")),
        ("test_3.xml", "dropped", Some("tests")),
        ("other.xml", "unrouted", None),
        ("m.xml", "held", Some("quarantine")),
    ] {
        let s = by(name);
        assert_eq!(s.state, State::Archived, "{s:?}");
        assert_eq!(s.route.as_deref(), Some(route), "{s:?}");
        assert_eq!(s.route_rules.first().map(String::as_str), rule, "{s:?}");
        assert_eq!(s.rules_version.as_deref(), Some(version.as_str()));
    }
    assert_eq!(by("broken.xml").route, None, "a refused file is not routed");

    // The delivery waits for its model (declared paused).
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let (model, slot, state, submission): (String, String, String, String) = db
        .query_row(
            "SELECT model, slot, state, submission FROM deliveries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (model.as_str(), slot.as_str(), state.as_str()),
        ("rr", "rain", "pending")
    );
    assert_eq!(submission, by("rain_1.xml").id);

    // Published: the archived file itself, linked under its original name.
    let published = gw.spool().join("outgoing/web/discharge_1.xml");
    eventually(10, "the file to be published", || published.exists());
    let archived = gw
        .spool()
        .join(by("discharge_1.xml").stored.as_ref().unwrap());
    assert_eq!(
        std::fs::metadata(&published).unwrap().ino(),
        std::fs::metadata(&archived).unwrap().ino()
    );

    // `pom files --route unrouted` shows what no rule took.
    let out = gw
        .pom()
        .args(["files", "--route", "unrouted", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["original"], "other.xml");
    // The log at info level says what became of every file, one line each.
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains(&format!("file.id={}", by("other.xml").id)))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains("file archived")
            && line.contains("channel=obs")
            && line.contains("route=unrouted"),
        "{line}"
    );

    // A rule edit applies to the next files, with the new version recorded.
    std::fs::write(
        gw.rules().join("routes.toml"),
        format!("{ROUTES}\n[[route]]\nname = \"the-rest\"\npublish = [\"archive-mirror\"]\n"),
    )
    .unwrap();
    eventually(10, "the new rules", || gw.log().contains("rules reloaded"));
    gw.drop_file("obs", "other2.xml", &pi_series(6, 1));
    let decided = gw.wait_for_decided(7, 20);
    let s = decided
        .iter()
        .find(|s| s.original == b"other2.xml")
        .unwrap();
    assert_eq!(s.route_rules, vec!["the-rest".to_string()]);
    assert_ne!(s.rules_version.as_deref(), Some(version.as_str()));
    gw.stop();
}

#[test]
fn a_file_that_does_not_fit_its_slot_is_not_delivered() {
    // The route sends every file to `rr.rain`, but the slot takes rainfall (P.obs) only.
    let model = r#"
command = ["true"]
paused = true
[inputs.rain]
formats = ["pi-timeseries"]
where = { "series/header/parameterId" = "P.obs" }
[trigger]
kind = "arrival"
"#;
    let mut gw = Gateway::new();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/rr.toml"), model).unwrap();
    std::fs::write(
        gw.rules().join("routes.toml"),
        "[[route]]\nname = \"all\"\nchannel = \"obs\"\ndeliver = [\"rr.rain\"]\n",
    )
    .unwrap();
    gw.start();
    gw.drop_file("obs", "rain.xml", &rain(1));
    gw.drop_file("obs", "flow.xml", &pi_series(2, 1));
    let decided = gw.wait_for_decided(2, 20);
    let db = rusqlite::Connection::open(gw.db()).unwrap();
    let delivered: Vec<String> = db
        .prepare("SELECT submission FROM deliveries")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rain_id = &decided
        .iter()
        .find(|s| s.original == b"rain.xml")
        .unwrap()
        .id;
    assert_eq!(delivered, vec![rain_id.clone()]);
    assert!(gw.log().contains("does not fit"), "{}", gw.log());
    gw.stop();
}

/// A join of rainfall and discharge, each routed by its parameter.
const JOIN: &str = r#"
command = ["/bin/sh", "-c", "ls input > inputs.txt"]
[inputs.rain]
formats = ["pi-timeseries"]
[inputs.discharge]
formats = ["pi-timeseries"]
[trigger]
kind = "join"
window = "1h"
"#;

fn join_routes(discharge: &str) -> String {
    format!(
        "[[route]]\nname = \"rain\"\nchannel = \"obs\"\n\
         where = {{ \"series/header/parameterId\" = \"P.obs\" }}\ndeliver = [\"m.rain\"]\n\n\
         [[route]]\nname = \"discharge\"\nchannel = \"obs\"\n\
         where = {{ \"series/header/parameterId\" = \"{discharge}\" }}\ndeliver = [\"m.discharge\"]\n"
    )
}

#[test]
fn a_file_a_rule_mistake_left_unrouted_raises_an_alert_is_explained_and_routed_again() {
    const TOKEN: &str = "alice-0123456789abcdef";
    let mut gw =
        Gateway::with_channels("[channels.obs]\ncompletion = \"rename\"\nexpect_routed = true\n");
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/m.toml"), JOIN).unwrap();
    // The mistake: a typo in the discharge rule's parameter.
    std::fs::write(gw.rules().join("routes.toml"), join_routes("Q.ob")).unwrap();
    gw.extra_env
        .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
    gw.extra_args
        .extend(["--alert-interval".into(), "0.2".into()]);
    gw.start();
    let rain = String::from_utf8(pi_series(1, 1))
        .unwrap()
        .replace("Q.obs", "P.obs");
    gw.drop_file("obs", "rain_1.xml", rain.as_bytes());
    gw.drop_file("obs", "discharge_1.xml", &pi_series(1, 1));
    let decided = gw.wait_for_decided(2, 20);
    let discharge = decided
        .iter()
        .find(|s| s.original == b"discharge_1.xml")
        .unwrap();
    assert_eq!(discharge.route.as_deref(), Some("unrouted"));

    // The alert, on the channel that expects every file routed.
    let alert = |gw: &Gateway| {
        let (_, a) = gw.api("GET", "/api/alerts", None, None);
        a.as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "unrouted" && a["subject"] == "obs")
            .cloned()
    };
    eventually(10, "the unrouted alert", || alert(&gw).is_some());
    let message = alert(&gw).unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("discharge_1.xml"), "{message}");
    assert_eq!(
        alert(&gw).unwrap()["link"],
        "#/files?channel=obs&route=unrouted",
        "the alert links to its subject"
    );

    // The explanation names the rule, the failed condition, and the value the file has.
    let (_, d) = gw.api("GET", &format!("/api/files/{}", discharge.id), None, None);
    let nearest = &d["nearest"][0];
    assert_eq!(nearest["rule"], "discharge", "{d}");
    assert_eq!(
        nearest["failed"],
        serde_json::json!([{
            "condition": "where series/header/parameterId",
            "wanted": "Q.ob",
            "found": "Q.obs",
        }]),
        "{d}"
    );
    let out = gw.pom().args(["show", &discharge.id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "rule discharge: where series/header/parameterId wants \"Q.ob\", the file has \"Q.obs\""
        ),
        "{text}"
    );
    assert!(gw.ledger().runs(Some("m"), None, 10).unwrap().is_empty());

    // The rule fixed, the unrouted files routed again: the model runs on the right inputs.
    let since = decided.iter().map(|s| s.received_at.clone()).min().unwrap();
    std::fs::write(gw.rules().join("routes.toml"), join_routes("Q.obs")).unwrap();
    eventually(10, "the fixed rules", || {
        gw.log().contains("rules reloaded")
    });
    let out = gw
        .pom()
        .env("POM_SERVER", gw.server())
        .env("POM_TOKEN", TOKEN)
        .args([
            "reroute",
            "--unrouted",
            "--channel",
            "obs",
            "--since",
            &since,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {out:?}");
    assert!(
        said.contains("1 file(s) routed again") && said.contains("1 routed"),
        "{said}"
    );
    let mut runs = Vec::new();
    eventually(20, "the join to run", || {
        runs = gw.ledger().runs(Some("m"), None, 10).unwrap();
        runs.first().is_some_and(|r| r.ended_at.is_some())
    });
    assert_eq!(runs.len(), 1);
    let rain_id = decided
        .iter()
        .find(|s| s.original == b"rain_1.xml")
        .unwrap()
        .id
        .clone();
    let mut inputs = runs[0].inputs.clone();
    inputs.sort();
    assert_eq!(
        inputs,
        [
            ("discharge".to_string(), discharge.id.clone()),
            ("rain".to_string(), rain_id)
        ]
    );
    // A new decision linked to the old; the alert is over; routing again does nothing twice.
    let (_, d) = gw.api("GET", &format!("/api/files/{}", discharge.id), None, None);
    assert_eq!(d["file"]["route"], "routed");
    assert_eq!(d["reroutes"][0]["route_before"], "unrouted", "{d}");
    assert_eq!(d["reroutes"][0]["by"], "alice", "{d}");
    assert_eq!(d["reroutes"][0]["rules"], serde_json::json!(["discharge"]));
    assert_eq!(d["nearest"], serde_json::json!([]));
    eventually(10, "the alert to end", || alert(&gw).is_none());
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some(TOKEN),
        Some(serde_json::json!({"action": "reroute", "files": [discharge.id]})),
    );
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(gw.ledger().runs(Some("m"), None, 10).unwrap().len(), 1);
    gw.stop();
}
