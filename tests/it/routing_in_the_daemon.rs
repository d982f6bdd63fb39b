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
