//! Products with deadlines, on a simulated clock (an hour a second): the repository's sample
//! chain and its product (the downstream forecast, due at 15:00 in Paris, with a fallback an
//! hour before), thirty days of history with the observations arriving with some jitter, then a
//! day when the discharge is late, then a usual day.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::{Gateway, eventually, repo};
use serde_json::Value;

/// Simulated seconds per real second.
const SPEED: f64 = 3600.0;
/// The product of the repository's rules.
const PRODUCT: &str = "downstream-forecast";
/// Days of history before the day the discharge is late.
const HISTORY: i64 = 30;

/// Where the daemon's clock stands: a real instant and the simulated time it showed then.
#[derive(Clone, Copy)]
struct Origin(Instant, DateTime<Utc>);

impl Origin {
    fn now(&self) -> DateTime<Utc> {
        self.1
            + chrono::Duration::milliseconds((self.0.elapsed().as_secs_f64() * SPEED * 1e3) as i64)
    }

    fn wait_until(&self, t: DateTime<Utc>) {
        loop {
            let left = (t - self.now()).num_milliseconds();
            if left <= 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(
                ((left as f64 / SPEED) as u64).clamp(1, 20),
            ));
        }
    }
}

/// The deadline of day `d` of the test: 15:00 in Paris (14:00 UTC in November and December).
fn deadline(d: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 30, 14, 0, 0).unwrap() + chrono::Duration::days(d)
}

/// When an observation of day `d` usually arrives: 2 h 45 before the deadline, up to ten
/// minutes either way.
fn usual_arrival(d: i64, k: i64) -> DateTime<Utc> {
    let jitter = (d * 37 + k * 11 + d * d * 7) % 21 - 10;
    deadline(d) - chrono::Duration::minutes(165 - jitter)
}

/// The sample observation `kind` (rainfall, discharge) for day `d`: to 11:00 UTC that day.
fn observation(kind: &str, d: i64) -> (String, Vec<u8>) {
    let text = std::fs::read_to_string(
        repo()
            .join("examples/samples/obs-pi")
            .join(format!("{kind}_Y1232010_20261128T12.xml")),
    )
    .unwrap();
    let day = deadline(d);
    (
        format!("{kind}_Y1232010_{}T12.xml", day.format("%Y%m%d")),
        text.replace("2026-11-28", &day.format("%Y-%m-%d").to_string())
            .into_bytes(),
    )
}

/// Starts the daemon four hours before day `d`'s deadline; where its clock stands.
fn start_day(gw: &mut Gateway, d: i64) -> Origin {
    let start = deadline(d) - chrono::Duration::hours(4);
    gw.extra_args = vec![
        "--clock".into(),
        format!("{}@{SPEED}", start.to_rfc3339()),
        "--alert-interval".into(),
        "0.1".into(),
    ];
    gw.start();
    let before = Instant::now();
    let (status, overview) = gw.api("GET", "/api/overview", None, None);
    assert_eq!(status, 200, "{overview}");
    let now = DateTime::parse_from_rfc3339(overview["now"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    Origin(before + before.elapsed() / 2, now)
}

fn drop_observation(gw: &Gateway, kind: &str, d: i64) {
    let (name, bytes) = observation(kind, d);
    gw.drop_file("obs-pi", &name, &bytes);
}

/// The succeeded propagation run of day `d` (time0 at 11:00 that day), if there is one.
fn issue_of(gw: &Gateway, d: i64) -> Option<pom::ledger::runs::RunRow> {
    let time0 = (deadline(d) - chrono::Duration::hours(3))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    gw.ledger()
        .runs_since(deadline(d) - chrono::Duration::days(1))
        .unwrap()
        .into_iter()
        .find(|r| {
            r.model == "propagation"
                && r.time0.starts_with(&time0)
                && r.state == pom::ledger::runs::RunState::Succeeded
        })
}

/// The product's view (the products stage shows it from its first look on).
fn product(gw: &Gateway) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, p) = gw.api("GET", &format!("/api/products/{PRODUCT}"), None, None);
        if status == 200 || Instant::now() > until {
            assert_eq!(status, 200, "{p}");
            return p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn product_alert(gw: &Gateway) -> Option<Value> {
    let (_, alerts) = gw.api("GET", "/api/alerts", None, None);
    alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "product" && a["subject"] == PRODUCT)
        .cloned()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// A usual day: both observations at their usual times; the forecast issued. The number of
/// product alerts the day raised.
fn usual_day(gw: &mut Gateway, d: i64) -> usize {
    let origin = start_day(gw, d);
    for (k, kind) in ["rainfall", "discharge"].iter().enumerate() {
        origin.wait_until(usual_arrival(d, k as i64));
        drop_observation(gw, kind, d);
    }
    eventually(60, "the day's forecast", || issue_of(gw, d).is_some());
    let issue = issue_of(gw, d).unwrap();
    assert!(
        time(&Value::from(issue.ended_at.clone().unwrap())) <= deadline(d),
        "day {d}: {issue:?}"
    );
    let alerts = gw.log().matches("alert: product").count();
    gw.stop();
    alerts
}

#[test]
fn a_late_feed_puts_the_product_at_risk_early_its_fallback_issues_on_time_and_a_usual_day_raises_nothing()
 {
    let mut gw = crate::sample_chain::sample_chain_gateway();
    let started = Instant::now();
    let mut history_alerts = 0;
    for d in 0..HISTORY {
        history_alerts += usual_day(&mut gw, d);
    }
    println!(
        "{HISTORY} days of history in {:?}; product alerts on them: {history_alerts}",
        started.elapsed()
    );

    // The day the discharge is late: the rainfall comes as usual, the discharge does not.
    let late = HISTORY;
    let due = deadline(late);
    let origin = start_day(&mut gw, late);
    let p = product(&gw);
    assert_eq!(
        p["chain"],
        serde_json::json!([
            "observed-discharge",
            "observed-rainfall",
            "rainfall-runoff",
            "propagation"
        ])
    );
    origin.wait_until(usual_arrival(late, 0));
    drop_observation(&gw, "rainfall", late);
    let mut metrics_seen: Option<String> = None;
    let alert = loop {
        if let Some(a) = product_alert(&gw) {
            break a;
        }
        let p = product(&gw);
        if metrics_seen.is_none()
            && p["cycles"].as_array().unwrap().last().unwrap()["state"] == "at risk"
        {
            metrics_seen = Some(gw.http("GET", "/metrics", None, None).text());
        }
        assert!(
            origin.now() < due,
            "no product alert before the deadline: {}",
            product(&gw)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let raised = time(&alert["since"]);
    println!(
        "at risk {} min before the deadline: {}",
        (due - raised).num_minutes(),
        alert["message"]
    );
    assert!(
        raised <= due - chrono::Duration::minutes(30),
        "at risk only at {raised}, the deadline {due}: {alert}"
    );
    // `/metrics` exported the prediction while it was at risk.
    let metrics = metrics_seen.unwrap_or_else(|| gw.http("GET", "/metrics", None, None).text());
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{product=\"{PRODUCT}\"")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
            .to_string()
    };
    let miss: f64 = line("pom_product_miss_probability")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    if line("pom_product_state").contains("state=\"at risk\"") {
        assert!(miss >= 0.7, "{metrics}");
    }
    line("pom_product_predicted_seconds");
    line("pom_product_deadline_seconds");
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains("cause: observed-discharge"), "{alert}");
    assert!(!message.contains("cause: observed-rainfall"), "{alert}");

    // The fallback issues a degraded forecast, on time.
    eventually(60, "the fallback's forecast", || {
        product(&gw)["cycles"].as_array().unwrap().iter().any(|c| {
            time(&c["deadline"]) == due && c["state"].as_str().unwrap().starts_with("issued")
        })
    });
    let p = product(&gw);
    let cycle = p["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| time(&c["deadline"]) == due)
        .unwrap()
        .clone();
    assert_eq!(cycle["state"], "issued", "on time: {cycle}");
    assert_eq!(cycle["degraded"], true, "{cycle}");
    assert!(time(&cycle["issued_at"]) <= due, "{cycle}");
    let runs = gw
        .ledger()
        .runs_since(due - chrono::Duration::days(1))
        .unwrap();
    let fallback = runs
        .iter()
        .find(|r| {
            r.requested_by.as_deref()
                == Some(&format!(
                    "fallback {PRODUCT} {}",
                    pom::ledger::timestamp(due)
                ))
        })
        .unwrap_or_else(|| panic!("no fallback run: {runs:?}"));
    assert_eq!(
        fallback.model, "rainfall-runoff",
        "downstream of the late feed"
    );
    println!(
        "fallback {} issued the degraded forecast at {} (deadline {due})",
        fallback.id, cycle["issued_at"]
    );
    // The alert stays while the discharge is missing, and clears when it arrives.
    origin.wait_until(due + chrono::Duration::minutes(10));
    let still = product_alert(&gw).expect("the alert stays while the feed is missing");
    assert!(
        still["message"].as_str().unwrap().contains("degraded"),
        "{still}"
    );
    drop_observation(&gw, "discharge", late);
    let arrived = origin.now();
    eventually(30, "the alert to clear", || product_alert(&gw).is_none());
    println!(
        "the alert cleared {} simulated min after the late discharge arrived",
        (origin.now() - arrived).num_minutes()
    );
    gw.stop();

    // A usual day raises no alert.
    assert_eq!(usual_day(&mut gw, late + 1), 0, "{}", gw.log());
    start_day(&mut gw, late + 2);
    let p = product(&gw);
    let history = p["history"].as_array().unwrap();
    let degraded = history.iter().filter(|c| c["degraded"] == true).count();
    assert_eq!(degraded, 1, "{p}");
    println!(
        "punctuality over {} days: {}",
        history.len(),
        p["punctuality"]
    );
    gw.stop();
}

/// A product due two hours after each run's time0, on a model that usually takes minutes and
/// once takes five hours (the clock runs an hour a second).
#[test]
fn a_product_due_after_time0_is_at_risk_while_its_run_overruns_then_late_then_issued_late() {
    const DUE: &str = "fc-issue";
    let gw = common::chain_gateway_with(&[("fc", "true", "1d")], |gw| {
        let slow = gw.dir.path().join("slow");
        common::model_fixture(
            gw,
            "fc",
            &format!(
                "if [ -f '{}' ]; then sleep 5; fi\necho forecast made",
                slow.display()
            ),
            "1d",
        );
        std::fs::write(
            gw.rules().join("products.toml"),
            format!(
                "[[product]]\nname = \"{DUE}\"\nmodel = \"fc\"\ndue = {{ after_time0 = \"2h\" }}\n"
            ),
        )
        .unwrap();
        gw.extra_args = vec![
            "--clock".into(),
            format!("2026-11-02T06:00:00Z@{SPEED}"),
            "--alert-interval".into(),
            "0.1".into(),
        ];
    });
    let view = || {
        let (status, p) = gw.api("GET", &format!("/api/products/{DUE}"), None, None);
        assert_eq!(status, 200, "{p}");
        p
    };
    let succeeded = || {
        gw.ledger()
            .runs(Some("fc"), None, 100)
            .unwrap()
            .iter()
            .filter(|r| r.state == pom::ledger::runs::RunState::Succeeded)
            .count()
    };
    for n in 1..=3 {
        gw.drop_file("obs", &format!("fc_{n}.xml"), &common::pi_series(n, 1));
        eventually(30, "the usual run", || succeeded() == n);
    }
    eventually(10, "three issues learned", || {
        view()["history"].as_array().map(Vec::len) == Some(3)
    });
    assert_eq!(view()["punctuality"], 1.0, "{}", view());

    // The slow run: at risk while it overruns, before its deadline; late after it.
    std::fs::write(gw.dir.path().join("slow"), "").unwrap();
    gw.drop_file("obs", "fc_4.xml", &common::pi_series(4, 1));
    let mut seen: Vec<(String, bool)> = Vec::new();
    let mut alerted_before_deadline = false;
    let started = Instant::now();
    while succeeded() < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "{seen:?}");
        let p = view();
        let (_, overview) = gw.api("GET", "/api/overview", None, None);
        let now = time(&overview["now"]);
        if let Some(c) = p["cycles"].as_array().and_then(|c| c.last())
            && !c["run"].is_null()
            && c["state"] != "issued"
        {
            let before = now < time(&c["deadline"]);
            let state = c["state"].as_str().unwrap_or_default().to_string();
            if seen.last().map(|s| &s.0) != Some(&state) {
                seen.push((state, before));
            }
            let (_, alerts) = gw.api("GET", "/api/alerts", None, None);
            alerted_before_deadline |= before
                && alerts
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["kind"] == "product" && a["subject"] == DUE);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("states of the slow run's cycle (state, before its deadline): {seen:?}");
    assert!(
        seen.iter().any(|(s, before)| s == "at risk" && *before),
        "at risk before the deadline: {seen:?}"
    );
    assert!(alerted_before_deadline, "{seen:?}");
    assert!(
        seen.iter().any(|(s, before)| s == "late" && !*before),
        "late after it: {seen:?}"
    );
    // Issued late: the history says so, and the alert goes.
    eventually(10, "the late issue in the history", || {
        let p = view();
        p["history"]
            .as_array()
            .and_then(|h| h.last())
            .map(|c| c["state"].clone())
            == Some(Value::from("issued late"))
    });
    assert_eq!(view()["punctuality"], 0.75, "{}", view());
    eventually(10, "the product alert cleared", || {
        let (_, alerts) = gw.api("GET", "/api/alerts", None, None);
        !alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "product" && a["subject"] == DUE)
    });
}
