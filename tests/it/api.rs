//! The JSON API under `/api/`, `/metrics`, the pages and the event stream: every endpoint, the
//! refusals without a token, every control action and its audit line, and the alerts.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Gateway, chain_gateway_with, eventually, pi_series};
use serde_json::{Value, json};

const TOKEN: &str = "alice-0123456789abcdef";

/// A model that turns its input into a forecast, and writes a line to stdout.
const FORECAST: &str = r#"echo "forecasting from $(ls input)"
sed 's/Q.obs/Q.fcst/' input/* > output/forecast_$POM_RUN_ID.xml"#;

fn gateway_with_token() -> Gateway {
    chain_gateway_with(
        &[("fc", FORECAST, "1m"), ("slow", "sleep 30", "1m")],
        |gw| {
            gw.extra_env
                .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
        },
    )
}

fn runs_of(gw: &Gateway, model: &str) -> Vec<Value> {
    let (s, v) = gw.api("GET", &format!("/api/runs?model={model}"), None, None);
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

fn ended(gw: &Gateway, model: &str, n: usize) -> Vec<Value> {
    let mut runs = Vec::new();
    eventually(20, &format!("{n} ended run(s) of {model}"), || {
        runs = runs_of(gw, model);
        runs.iter()
            .filter(|r| !matches!(r["state"].as_str(), Some("queued" | "running")))
            .count()
            >= n
    });
    runs
}

fn act(gw: &Gateway, action: Value) -> (u16, Value) {
    gw.api("POST", "/api/actions", Some(TOKEN), Some(action))
}

#[test]
fn every_read_endpoint_answers_open_on_loopback() {
    let gw = gateway_with_token();
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    gw.drop_file(
        "obs",
        "broken.xml",
        b"<TimeSeries>\n<series>\n</TimeSeries>\n",
    );
    let runs = ended(&gw, "fc", 1);
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    gw.wait_for_decided(3, 20); // the input, the broken file, the forecast

    let (s, v) = gw.api("GET", "/api/health", None, None);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));

    let (s, v) = gw.api("GET", "/api/theme", None, None);
    assert_eq!(s, 200);
    assert!(v["title"].is_string() && v["control"] == json!(true), "{v}");

    let (s, o) = gw.api("GET", "/api/overview", None, None);
    assert_eq!(s, 200, "{o}");
    let obs = o["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "obs")
        .unwrap();
    assert!(obs["last_arrival"].is_string(), "{obs}");
    assert_eq!(obs["decided"]["archived"], 1, "{obs}");
    assert_eq!(obs["decided"]["rejected"], 1, "{obs}");
    let fc = o["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "fc")
        .unwrap();
    assert_eq!(fc["last_run"]["id"].as_str(), Some(run_id.as_str()));
    assert_eq!(fc["state"], "idle", "{fc}");
    assert_eq!(o["rules"]["refused"], Value::Null);

    let (s, v) = gw.api(
        "GET",
        "/api/runs?model=fc&state=succeeded&limit=5",
        None,
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (s, v) = gw.api("GET", "/api/runs?state=bogus", None, None);
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("bogus"));

    let (s, d) = gw.api("GET", &format!("/api/runs/{run_id}"), None, None);
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["run"]["state"], "succeeded");
    assert_eq!(d["inputs"][0]["name"], "fc_1.xml");
    assert_eq!(d["outputs"][0]["state"], "archived", "{d}");
    assert!(
        d["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("forecasting from fc_1.xml"),
        "{d}"
    );
    let (s, _) = gw.api("GET", "/api/runs/no-such-run", None, None);
    assert_eq!(s, 404);

    let (s, t) = gw.api("GET", "/api/timeline?hours=24", None, None);
    assert_eq!(s, 200);
    assert_eq!(
        t["models"]["fc"][0]["id"].as_str(),
        Some(run_id.as_str()),
        "{t}"
    );

    let (s, v) = gw.api("GET", "/api/files", None, None);
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    let (_, v) = gw.api("GET", "/api/files?state=rejected", None, None);
    let rejected = &v[0];
    assert_eq!(rejected["original"], "broken.xml");
    assert!(rejected["reason"].is_string());
    assert!(
        rejected["errors"][0]["line"].as_u64().is_some(),
        "rejected files come with line numbers: {rejected}"
    );
    let (_, v) = gw.api(
        "GET",
        "/api/files?name=fc_&channel=obs&format=pi-timeseries",
        None,
        None,
    );
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (s, _) = gw.api("GET", "/api/files?state=lost", None, None);
    assert_eq!(s, 400);
    let input = d["inputs"][0]["file"].as_str().unwrap();
    let (s, f) = gw.api("GET", &format!("/api/files/{input}"), None, None);
    assert_eq!(s, 200);
    assert_eq!(
        f["deliveries"][0]["run"].as_str(),
        Some(run_id.as_str()),
        "{f}"
    );
    let (s, _) = gw.api("GET", "/api/files/nope", None, None);
    assert_eq!(s, 404);

    let (s, r) = gw.api("GET", "/api/rules", None, None);
    assert_eq!(s, 200);
    assert_eq!(r["version"], o["rules"]["version"]);
    // Routes in words: what each takes, what it does.
    assert_eq!(
        r["routes"][0],
        json!([
            "to-fc",
            ["channel obs", "file fc_*.xml"],
            ["deliver to fc.obs"]
        ]),
        "{r}"
    );
    assert!(
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "routes.toml"),
        "{r}"
    );

    let (s, v) = gw.api("GET", "/api/audit", None, None);
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = gw.api("GET", "/api/alerts", None, None);
    assert_eq!((s, v), (200, json!([])));

    let m = gw.http("GET", "/metrics", None, None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let metrics = m.text();
    for line in [
        "pom_files_total{channel=\"obs\",outcome=\"archived\",mode=\"operational\"} 1",
        "pom_files_total{channel=\"obs\",outcome=\"rejected\",mode=\"operational\"} 1",
        "pom_files_total{channel=\"fcst\",outcome=\"archived\",mode=\"operational\"} 1",
        "pom_queue_depth{channel=\"obs\"} 0",
        "pom_runs_total{model=\"fc\",state=\"succeeded\",mode=\"operational\"} 1",
        "pom_run_duration_seconds_count{model=\"fc\"} 1",
        "pom_last_arrival_timestamp_seconds{channel=\"obs\"}",
        "pom_rules_info{version=\"",
        "pom_alerts{kind=\"late_feed\"} 0",
    ] {
        assert!(
            metrics.contains(line),
            "{line} missing from /metrics:\n{metrics}"
        );
    }

    let page = gw.http("GET", "/", None, None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/assets/app.js"));
    assert!(page.header("content-security-policy").is_some());
    for asset in [
        "/assets/app.js",
        "/assets/style.css",
        "/theme.css",
        "/theme/logo",
    ] {
        assert_eq!(gw.http("GET", asset, None, None).status, 200, "{asset}");
    }
    assert_eq!(gw.http("GET", "/assets/nothing.js", None, None).status, 404);
    assert_eq!(gw.http("GET", "/nowhere", None, None).status, 404);
}

/// Reads a server-sent event stream until `want` appears.
fn read_events_until(server: &str, trigger: impl FnOnce(), want: &[&str]) -> String {
    read_stream_until(server, "/api/events", trigger, want)
}

/// Reads the server-sent event stream at `path` until `want` appears.
fn read_stream_until(server: &str, path: &str, trigger: impl FnOnce(), want: &[&str]) -> String {
    let host = server.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Subscribed (the stream opens with a hello), then the action.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: hello") && Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("event: hello"), "{seen}");
    trigger();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| seen.contains(w)) && Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    seen
}

#[test]
fn events_stream_every_change() {
    let gw = gateway_with_token();
    let server = gw.server();
    let seen = read_events_until(
        &server,
        || {
            gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
        },
        &["event: files", "event: run"],
    );
    assert!(seen.contains("event: files"), "{seen}");
    assert!(seen.contains("event: run"), "{seen}");
    let seen = read_events_until(
        &server,
        || {
            act(&gw, json!({"action": "pause_model", "model": "fc"}));
        },
        &["event: control"],
    );
    assert!(seen.contains("event: control"), "{seen}");
}

#[test]
fn control_is_refused_without_a_valid_token_a_json_body_and_the_same_origin() {
    let gw = gateway_with_token();
    let pause = json!({"action": "pause_model", "model": "fc"});
    let (s, v) = gw.api("POST", "/api/actions", None, Some(pause.clone()));
    assert_eq!(s, 401, "{v}");
    let (s, _) = gw.api(
        "POST",
        "/api/actions",
        Some("alice-wrong-token-0000"),
        Some(pause.clone()),
    );
    assert_eq!(s, 401);
    let (s, _) = gw.api("GET", "/api/whoami", None, None);
    assert_eq!(s, 401);
    let (s, v) = gw.api("GET", "/api/whoami", Some(TOKEN), None);
    assert_eq!((s, v["who"].as_str()), (200, Some("alice")));

    let body = serde_json::to_vec(&pause).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let plain = common::http::request(
        &gw.server(),
        "POST",
        "/api/actions",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(&body),
    )
    .unwrap();
    assert_eq!(plain.status, 415, "a form post is not an action");
    let foreign = common::http::request(
        &gw.server(),
        "POST",
        "/api/actions",
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
        Some(&body),
    )
    .unwrap();
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some(TOKEN),
        Some(json!({"action": "explode"})),
    );
    assert_eq!(s, 400, "{v}");

    // Nothing was done by the refused requests; the token never reaches the log.
    let (_, o) = gw.api("GET", "/api/overview", None, None);
    assert!(
        o["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["paused"].is_null())
    );
    assert!(!gw.log().contains(TOKEN));
}

#[test]
fn without_a_configured_token_control_is_disabled() {
    let gw = chain_gateway_with(&[("fc", FORECAST, "1m")], |_| {});
    let (s, v) = gw.api(
        "POST",
        "/api/actions",
        Some(TOKEN),
        Some(json!({"action": "pause_model", "model": "fc"})),
    );
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no token"));
}

fn model_view(gw: &Gateway, model: &str) -> Value {
    let (_, o) = gw.api("GET", "/api/overview", None, None);
    o["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .cloned()
        .unwrap()
}

#[test]
fn pausing_a_model_holds_its_inputs_and_resuming_releases_them() {
    let gw = gateway_with_token();
    let (s, v) = act(&gw, json!({"action": "pause_model", "model": "fc"}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = act(&gw, json!({"action": "pause_model", "model": "fc"}));
    assert_eq!(s, 409, "already paused: {v}");
    let (s, _) = act(&gw, json!({"action": "pause_model", "model": "nobody"}));
    assert_eq!(s, 404);
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    eventually(10, "the input delivered", || {
        model_view(&gw, "fc")["pending_inputs"] == 1
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(runs_of(&gw, "fc").is_empty(), "no run while paused");
    assert_eq!(model_view(&gw, "fc")["state"], "paused");
    assert_eq!(model_view(&gw, "fc")["paused"]["by"], "alice");
    let (s, _) = act(&gw, json!({"action": "resume_model", "model": "fc"}));
    assert_eq!(s, 200);
    ended(&gw, "fc", 1);
    let (s, _) = act(&gw, json!({"action": "resume_model", "model": "fc"}));
    assert_eq!(s, 409, "not paused");
}

#[test]
fn a_pause_outlives_a_restart() {
    let mut gw = gateway_with_token();
    act(&gw, json!({"action": "pause_model", "model": "fc"}));
    gw.stop();
    gw.start();
    assert_eq!(model_view(&gw, "fc")["state"], "paused");
}

#[test]
fn pausing_a_channel_leaves_its_files_in_incoming() {
    let gw = gateway_with_token();
    let (s, v) = act(&gw, json!({"action": "pause_channel", "channel": "obs"}));
    assert_eq!(s, 200, "{v}");
    let dropped = gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    let queue = || {
        let (_, o) = gw.api("GET", "/api/overview", None, None);
        o["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "obs")
            .unwrap()["queue_depth"]
            .as_i64()
            .unwrap()
    };
    eventually(10, "the waiting file counted", || queue() == 1);
    assert!(dropped.exists(), "the file waits where it was dropped");
    assert!(gw.submissions().is_empty());
    let (s, _) = act(&gw, json!({"action": "resume_channel", "channel": "obs"}));
    assert_eq!(s, 200);
    gw.wait_for_decided(1, 10);
    ended(&gw, "fc", 1);
    eventually(5, "the queue empty", || queue() == 0);
}

#[test]
fn runs_are_cancelled_retried_rerun_and_triggered_by_operators() {
    let gw = gateway_with_token();
    // Cancel a running run: its process group is killed.
    gw.drop_file("obs", "slow_1.xml", &pi_series(1, 2));
    let mut slow = String::new();
    eventually(10, "the slow run running", || {
        let r = runs_of(&gw, "slow");
        if let Some(r) = r.first().filter(|r| r["state"] == "running") {
            slow = r["id"].as_str().unwrap().to_string();
        }
        !slow.is_empty()
    });
    let (s, v) = act(&gw, json!({"action": "cancel", "run": slow}));
    assert_eq!(s, 200, "{v}");
    let runs = ended(&gw, "slow", 1);
    assert_eq!(runs[0]["state"], "cancelled");
    assert_eq!(runs[0]["reason"], "cancelled by an operator");
    let (s, _) = act(&gw, json!({"action": "cancel", "run": slow}));
    assert_eq!(s, 409, "an ended run has nothing to cancel");
    let (s, _) = act(&gw, json!({"action": "cancel", "run": "nope"}));
    assert_eq!(s, 404);

    // Retry the cancelled run: the next attempt, same inputs.
    let (s, v) = act(&gw, json!({"action": "retry", "run": slow}));
    assert_eq!(s, 200, "{v}");
    let retry = v["run"].as_str().unwrap().to_string();
    let (_, d) = gw.api("GET", &format!("/api/runs/{retry}"), None, None);
    assert_eq!(d["run"]["attempt"], 2);
    assert_eq!(d["run"]["retry_of"].as_str(), Some(slow.as_str()));
    assert_eq!(d["run"]["requested_by"], "alice");
    assert_eq!(d["inputs"][0]["name"], "slow_1.xml");
    act(&gw, json!({"action": "cancel", "run": retry}));
    let (s, v) = act(&gw, json!({"action": "retry", "run": slow}));
    assert_eq!(s, 409, "retried once already: {v}");

    // A succeeded run is rerun (same time0), not retried.
    // (Another content than slow_1.xml: the same content again would be a duplicate.)
    gw.drop_file("obs", "fc_1.xml", &pi_series(2, 2));
    let first = ended(&gw, "fc", 1)[0].clone();
    let id = first["id"].as_str().unwrap();
    let (s, _) = act(&gw, json!({"action": "retry", "run": id}));
    assert_eq!(s, 409);
    let (s, v) = act(&gw, json!({"action": "rerun", "run": id}));
    assert_eq!(s, 200, "{v}");
    let runs = ended(&gw, "fc", 2);
    let rerun = runs.iter().find(|r| r["id"] == v["run"]).unwrap();
    assert_eq!(rerun["trigger"], "rerun");
    assert_eq!(rerun["time0"], first["time0"]);
    assert_eq!(rerun["state"], "succeeded");

    // Trigger now, with a chosen time0: the latest input of each slot.
    let (s, v) = act(
        &gw,
        json!({"action": "trigger", "model": "fc", "time0": "2026-11-01T06:00:00Z"}),
    );
    assert_eq!(s, 200, "{v}");
    let runs = ended(&gw, "fc", 3);
    let manual = runs.iter().find(|r| r["id"] == v["run"]).unwrap();
    assert_eq!(manual["trigger"], "manual");
    assert_eq!(manual["time0"], "2026-11-01T06:00:00.000000Z");
    assert_eq!(manual["requested_by"], "alice");
    let (s, _) = act(
        &gw,
        json!({"action": "trigger", "model": "fc", "time0": "yesterday"}),
    );
    assert_eq!(s, 400);
    let (s, _) = act(&gw, json!({"action": "trigger", "model": "ghost"}));
    assert_eq!(s, 404);

    // Every action is in the audit log, with who and when, refusals included.
    let (_, log) = gw.api("GET", "/api/audit?limit=100", None, None);
    let log = log.as_array().unwrap();
    assert!(
        log.iter()
            .all(|e| e["who"] == "alice" && e["at"].is_string())
    );
    for action in ["cancel", "retry", "rerun", "trigger"] {
        assert!(
            log.iter()
                .any(|e| e["action"] == action && e["outcome"] == "done"),
            "{action}"
        );
    }
    assert!(
        log.iter()
            .any(|e| e["outcome"].as_str().unwrap().starts_with("refused"))
    );
}

#[test]
fn files_are_held_released_and_reinjected_after_a_fix() {
    let gw = gateway_with_token();
    act(&gw, json!({"action": "pause_model", "model": "fc"}));
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    let file = gw.wait_for_decided(1, 10)[0].id.clone();
    let (s, v) = act(&gw, json!({"action": "hold", "file": file}));
    assert_eq!(s, 200, "{v}");
    let (s, _) = act(&gw, json!({"action": "hold", "file": file}));
    assert_eq!(s, 409);
    act(&gw, json!({"action": "resume_model", "model": "fc"}));
    std::thread::sleep(Duration::from_millis(800));
    assert!(runs_of(&gw, "fc").is_empty(), "a held file feeds no run");
    let (_, f) = gw.api("GET", &format!("/api/files/{file}"), None, None);
    assert_eq!(f["file"]["held_by"], "alice");
    let (s, v) = act(&gw, json!({"action": "release", "file": file}));
    assert_eq!(s, 200, "{v}");
    ended(&gw, "fc", 1);
    let (s, _) = act(&gw, json!({"action": "release", "file": file}));
    assert_eq!(s, 409);

    // A rejected file, fixed and re-injected: a new submission linked to the original.
    gw.drop_file("obs", "fc_2.xml", b"<TimeSeries><oops></TimeSeries>");
    let mut bad = String::new();
    eventually(10, "the broken file rejected", || {
        if let Some(s) = gw.find(b"fc_2.xml")
            && s.state == pom::ledger::State::Rejected
        {
            bad = s.id;
        }
        !bad.is_empty()
    });
    let (s, _) = act(&gw, json!({"action": "reinject", "file": file}));
    assert_eq!(s, 409, "only a rejected file is re-injected");
    let fixed = String::from_utf8(pi_series(2, 2)).unwrap();
    let (s, v) = act(
        &gw,
        json!({"action": "reinject", "file": bad, "content": fixed}),
    );
    assert_eq!(s, 200, "{v}");
    let mut again = None;
    eventually(10, "the fixed file archived", || {
        again = gw
            .submissions()
            .into_iter()
            .find(|s| s.origin.as_deref() == Some(bad.as_str()));
        again
            .as_ref()
            .is_some_and(|s| s.state == pom::ledger::State::Archived)
    });
    let again = again.unwrap();
    assert_eq!(again.original, b"fc_2.xml");
    let (_, f) = gw.api("GET", &format!("/api/files/{bad}"), None, None);
    assert_eq!(f["reinjected_as"][0].as_str(), Some(again.id.as_str()));
    ended(&gw, "fc", 2);
}

#[test]
fn the_cli_acts_through_the_api() {
    let gw = gateway_with_token();
    let pom = |args: &[&str], token: Option<&str>| {
        let mut c = gw.pom();
        c.env("POM_SERVER", gw.server()).args(args);
        match token {
            Some(t) => c.env("POM_TOKEN", t),
            None => c.env_remove("POM_TOKEN"),
        };
        c.output().unwrap()
    };
    let out = pom(&["pause", "model", "fc"], Some(TOKEN));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    let out = pom(&["pause", "model", "fc"], Some(TOKEN));
    assert_eq!(out.status.code(), Some(1), "refused: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("already paused"));
    // The CLI shows the pause an operator made (not only the rule file's), and who made it.
    let out = pom(&["models"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("fc ")).unwrap_or("");
    assert!(line.contains("yes, by alice at "), "{text}");
    let out = pom(&["models", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v[0]["paused"], &v[0]["paused_by"]),
        (&json!(true), &json!("alice"))
    );
    let out = pom(&["pause", "channel", "obs"], Some(TOKEN));
    assert!(out.status.success(), "{out:?}");
    let out = pom(&["status"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("channel obs paused by alice at ")
            || text
                .lines()
                .any(|l| l.starts_with("obs ") && l.contains("by alice at ")),
        "{text}"
    );
    let out = pom(&["resume", "channel", "obs"], Some(TOKEN));
    assert!(out.status.success(), "{out:?}");
    let out = pom(&["resume", "model", "fc"], None);
    assert_eq!(out.status.code(), Some(2), "no token: {out:?}");
    let out = pom(&["resume", "model", "fc"], Some(TOKEN));
    assert!(out.status.success(), "{out:?}");
    let out = pom(&["audit"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice") && text.contains("pause_model") && text.contains("resume_model"),
        "{text}"
    );
    let out = pom(&["alerts"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no alert"),
        "{out:?}"
    );
}

#[test]
fn alerts_for_a_late_feed_a_failed_run_a_refused_edit_and_low_disk() {
    let mut gw = chain_gateway_with(&[("fc", "exit 3", "1m")], |gw| {
        let channels = common::CHAIN_CHANNELS.replace(
            "[channels.obs]\ncompletion = \"rename\"",
            "[channels.obs]\ncompletion = \"rename\"\ncadence = \"2s\"\ngrace = \"2s\"",
        );
        std::fs::write(gw.rules().join("channels.toml"), channels).unwrap();
        let out = gw.dir.path().join("alerts.txt");
        gw.extra_args.extend([
            "--alert-interval".into(),
            "0.2".into(),
            "--min-free-disk".into(),
            "100%".into(),
            "--alert-command".into(),
            format!(
                "echo \"$POM_ALERT_STATE $POM_ALERT_KIND $POM_ALERT_SUBJECT\" >> {}",
                out.display()
            ),
        ]);
    });
    let kinds = |gw: &Gateway| -> Vec<String> {
        let (_, v) = gw.api("GET", "/api/alerts", None, None);
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["kind"].as_str().unwrap(),
                    a["subject"].as_str().unwrap()
                )
            })
            .collect()
    };
    eventually(10, "a late feed and low disk", || {
        let k = kinds(&gw);
        k.contains(&"late_feed obs".to_string()) && k.contains(&"low_disk spool".to_string())
    });
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    eventually(10, "a failed run, and the feed no longer late", || {
        let k = kinds(&gw);
        k.contains(&"failed_run fc".to_string()) && !k.contains(&"late_feed obs".to_string())
    });
    std::fs::write(gw.rules().join("routes.toml"), "[[route]]\nname = 1\n").unwrap();
    eventually(10, "a refused rule edit", || {
        kinds(&gw).contains(&"refused_rules rules".to_string())
    });
    let (_, r) = gw.api("GET", "/api/rules", None, None);
    assert!(
        r["refused"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("routes.toml"),
        "{r}"
    );
    let metrics = gw.http("GET", "/metrics", None, None).text();
    assert!(
        metrics.contains("pom_alert{kind=\"failed_run\",subject=\"fc\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pom_rules_refused 1"), "{metrics}");
    let log = gw.dir.path().join("alerts.txt");
    eventually(5, "the alert command called", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("raised late_feed obs")
            && t.contains("cleared late_feed obs")
            && t.contains("raised failed_run fc")
            && t.contains("raised refused_rules rules")
    });
    gw.stop();
}

#[test]
fn the_theme_file_sets_title_logo_colours_and_fonts_without_a_restart() {
    let theme = std::sync::Arc::new(std::sync::Mutex::new(std::path::PathBuf::new()));
    let t2 = std::sync::Arc::clone(&theme);
    let gw = chain_gateway_with(&[("fc", FORECAST, "1m")], move |gw| {
        let path = gw.dir.path().join("theme/theme.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "title = \"Vigicrues Sud-Est\"\nlogo = \"logo.svg\"\n[colors]\nprimary = \"#123456\"\n[fonts]\nbody = \"Marianne, sans-serif\"\n",
        )
        .unwrap();
        std::fs::write(
            path.with_file_name("logo.svg"),
            "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"regional\"/>",
        )
        .unwrap();
        gw.extra_args
            .extend(["--theme".into(), path.display().to_string()]);
        *t2.lock().unwrap() = path;
    });
    let (_, v) = gw.api("GET", "/api/theme", None, None);
    assert_eq!(v["title"], "Vigicrues Sud-Est");
    let css = gw.http("GET", "/theme.css", None, None).text();
    assert!(css.contains("--pom-primary: #123456;"), "{css}");
    assert!(
        css.contains("--pom-font-body: Marianne, sans-serif;"),
        "{css}"
    );
    assert!(
        gw.http("GET", "/theme/logo", None, None)
            .text()
            .contains("regional")
    );
    // Edited while running; a value that could break out of the declaration is left out.
    let path = theme.lock().unwrap().clone();
    std::fs::write(
        &path,
        "[colors]\nprimary = \"#654321\"\ndanger = \"red; } body { display: none\"\n",
    )
    .unwrap();
    let css = gw.http("GET", "/theme.css", None, None).text();
    assert!(css.contains("--pom-primary: #654321;"), "{css}");
    assert!(!css.contains("display"), "{css}");
    let (_, v) = gw.api("GET", "/api/theme", None, None);
    assert_eq!(v["title"], "POM");
}

/// This machine's address on its main interface, if it has one other than loopback.
fn outside_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn reading_from_another_host_needs_a_token() {
    let Some(ip) = outside_address() else {
        eprintln!("no address other than loopback here: the check is skipped");
        return;
    };
    let gw = chain_gateway_with(&[("fc", FORECAST, "1m")], |gw| {
        gw.extra_env
            .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
        gw.extra_env.push(("POM_LISTEN".into(), "0.0.0.0:0".into()));
    });
    let port = gw.server().rsplit(':').next().unwrap().to_string();
    let outside = format!("http://{ip}:{port}");
    let r = common::http::request(&outside, "GET", "/api/overview", &[], None).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let auth = format!("Bearer {TOKEN}");
    let r = common::http::request(
        &outside,
        "GET",
        "/api/overview",
        &[("Authorization", &auth)],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = common::http::request(&outside, "GET", "/metrics", &[], None).unwrap();
    assert_eq!(r.status, 401);

    // The page itself loads (a shell with no data of the chain); the event stream needs a
    // credential: a one-use ticket got with the token, never the token in the URL.
    let r = common::http::request(&outside, "GET", "/", &[], None).unwrap();
    assert_eq!(r.status, 200);
    let r = common::http::request(&outside, "GET", "/api/events", &[], None).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = common::http::request(&outside, "POST", "/api/events/ticket", &[], None).unwrap();
    assert_eq!(r.status, 401, "a ticket needs the token");
    let r = common::http::request(
        &outside,
        "POST",
        "/api/events/ticket",
        &[("Authorization", &auth)],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let ticket = r.json()["ticket"].as_str().unwrap().to_string();
    assert!(!ticket.contains(TOKEN) && ticket.len() == 32, "{ticket}");
    let path = format!("/api/events?ticket={ticket}");
    let seen = read_stream_until(
        &outside,
        &path,
        || {
            gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
        },
        &["event: files"],
    );
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.contains("event: files"),
        "followed from another host: {seen}"
    );
    // Used once: the same ticket is refused, as is one never issued.
    for path in [
        path.as_str(),
        "/api/events?ticket=00112233445566778899aabbccddeeff",
    ] {
        let r = common::http::request(&outside, "GET", path, &[], None).unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
}
