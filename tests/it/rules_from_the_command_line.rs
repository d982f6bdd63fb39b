//! Routing rules and model declarations, from the command line (the daemon's routing comes next).

use crate::common;

use common::{Gateway, pi_series};

const MODEL: &str = r#"
description = "Rainfall-runoff"
command = ["python3", "rr.py", "{run_file}"]
timeout = "10m"
retries = { max = 1, backoff = "30s" }

[inputs.rain]
formats = ["pi-timeseries"]
where = { "series/header/parameterId" = "P.obs" }

[inputs.discharge]
formats = ["pi-timeseries"]
required = false

[outputs]
channel = "obs"

[trigger]
kind = "schedule"
cron = "0 */6 * * *"
timezone = "Europe/Paris"
"#;

const ROUTES: &str = r#"
apply = "first"

[[route]]
name = "rain-to-rr"
channel = "obs"
format = "pi-timeseries"
where = { "series/header/parameterId" = "P.obs" }
deliver = ["rr.rain"]

[[route]]
name = "discharge-to-rr-and-web"
channel = "obs"
file = "discharge_*.xml"
deliver = ["rr.discharge"]
publish = ["web"]

[[route]]
name = "quarantine"
channel = "mark"
hold = "checked by a forecaster first"
"#;

fn gateway() -> Gateway {
    let gw = Gateway::new();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(gw.rules().join("models/rr.toml"), MODEL).unwrap();
    std::fs::write(gw.rules().join("routes.toml"), ROUTES).unwrap();
    gw
}

fn write(gw: &Gateway, name: &str, body: &[u8]) -> std::path::PathBuf {
    let p = gw.dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn pom_route_tells_the_decision_and_the_rule_behind_it() {
    let gw = gateway();
    let check = gw.pom().arg("check").output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let rain = String::from_utf8(pi_series(1, 1))
        .unwrap()
        .replace("Q.obs", "P.obs");
    let rain = write(&gw, "rain_1.xml", rain.as_bytes());
    let discharge = write(&gw, "discharge_1.xml", &pi_series(2, 1));
    let other = write(&gw, "other.xml", &pi_series(3, 1));
    let out = gw
        .pom()
        .args(["route", "--channel", "obs"])
        .args([&rain, &discharge, &other])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("deliver to rr.rain (rule rain-to-rr)"),
        "{text}"
    );
    assert!(
        lines[1].ends_with(
            "deliver to rr.discharge, publish to outgoing/web/ (rule discharge-to-rr-and-web)"
        ),
        "{text}"
    );
    assert!(lines[2].ends_with("unrouted: no rule matches"), "{text}");

    let out = gw
        .pom()
        .args(["route", "--channel", "mark", "--json"])
        .arg(&other)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["decision"]["rules"][0], "quarantine");
    assert_eq!(v[0]["decision"]["actions"][0]["action"], "hold");
    assert_eq!(v[0]["rules_version"].as_str().unwrap().len(), 64);
}

#[test]
fn pom_models_shows_the_trigger_and_the_next_scheduled_time() {
    let gw = gateway();
    let out = gw.pom().args(["models", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "rr");
    assert_eq!(v[0]["trigger"], "schedule");
    assert_eq!(v[0]["paused"], false);
    let next = v[0]["next"].as_str().unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    let ahead = next.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::zero() && ahead <= chrono::Duration::hours(6),
        "{next}"
    );
}

#[test]
fn a_broken_route_or_model_is_reported_with_file_and_line() {
    let gw = gateway();
    std::fs::write(
        gw.rules().join("routes.toml"),
        format!("{ROUTES}\n[[route]]\nname = \"bad\"\ndeliver = [\"rr.snow\"]\n"),
    )
    .unwrap();
    std::fs::write(
        gw.rules().join("models/broken.toml"),
        "command = []\n[trigger]\nkind = \"sometimes\"\n",
    )
    .unwrap();
    let out = gw.pom().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "routes.toml:23: route `bad`: deliver `rr.snow`: model `rr` has no input `snow`"
        ),
        "{text}"
    );
    assert!(
        text.contains("broken.toml:1: model `broken`: `command` is empty"),
        "{text}"
    );
    assert!(
        text.contains("broken.toml:2: model `broken`: trigger kind `sometimes`"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
}
