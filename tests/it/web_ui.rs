//! End to end, in a real headless Chromium: the overview loads, a file dropped into the spool
//! makes a run appear live without a reload, pausing a model from the page makes its next input
//! wait and resuming releases it. The screenshots of the main pages, taken from the repository's
//! own sample chain, land in `docs/screenshots/` for the README.

use crate::common;

use std::time::Duration;

use common::browser::Browser;
use common::{Gateway, chain_gateway_with, eventually, pi_series, repo};
use serde_json::json;

const TOKEN: &str = "alice-0123456789abcdef";

fn runs(gw: &Gateway) -> Vec<serde_json::Value> {
    let (_, v) = gw.api("GET", "/api/runs?model=fc", None, None);
    v.as_array().cloned().unwrap_or_default()
}

/// Opens the overview and signs in as alice with her token.
fn sign_in(b: &Browser, server: &str) {
    b.go(&format!("{server}/#/"));
    let token = b.wait_for("#token", 10);
    b.type_into(&token, TOKEN);
    b.click_on("#signin button", 5);
    b.wait_until(
        "signed in",
        "return document.getElementById('who').textContent.includes('alice')",
        10,
    );
}

fn shot(b: &Browser, name: &str) {
    b.screenshot(&repo().join("docs/screenshots").join(name));
}

#[test]
fn an_operator_watches_the_chain_live_and_pauses_a_model() {
    let forecast = r#"echo "forecasting from $(ls input)"
sleep 0.3
sed 's/Q.obs/Q.fcst/' input/* > output/forecast_$POM_RUN_ID.xml
printf '<Diag xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><line level="3" description="forecast written"/></Diag>' > diag.xml"#;
    let gw = chain_gateway_with(&[("fc", forecast, "1m")], |gw| {
        gw.extra_env
            .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
        gw.extra_args
            .extend(["--alert-interval".into(), "0.2".into()]);
        // A radar feed that should send every second and never does: a late-feed alert.
        let channels = format!(
            "{}\n[channels.radar]\ntitle = \"Radar rainfall, every second\"\ncompletion = \"rename\"\ncadence = \"1s\"\ngrace = \"1s\"\n",
            common::CHAIN_CHANNELS
        );
        std::fs::write(gw.rules().join("channels.toml"), channels).unwrap();
    });
    let server = gw.server();
    gw.drop_file(
        "obs",
        "broken_upload.xml",
        b"<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\">\n  <series>\n</TimeSeries>\n",
    );

    let b = Browser::start();
    // The overview loads, and follows the server's events.
    b.go(&format!("{server}/#/"));
    b.wait_for("#models tr[data-model=\"fc\"]", 20);
    b.wait_for("#channels tr[data-channel=\"obs\"]", 5);
    b.wait_until(
        "live updates",
        "return document.body.dataset.live === 'on'",
        10,
    );

    // A file dropped into the spool makes a run appear on the runs page, without a reload.
    b.go(&format!("{server}/#/runs"));
    b.wait_for("#runs", 10);
    assert!(b.find("#runs tr[data-model=\"fc\"]").is_none());
    b.eval("window.sameDocument = 42; return true");
    gw.drop_file("obs", "fc_1.xml", &pi_series(1, 2));
    b.wait_for("#runs tr[data-model=\"fc\"]", 20);
    b.wait_until(
        "the run shown succeeded",
        "return !!document.querySelector('#runs tr[data-model=\"fc\"] .s-succeeded')",
        20,
    );
    assert_eq!(
        b.eval("return window.sameDocument"),
        json!(42),
        "the page was not reloaded"
    );

    // Signed in, the operator pauses the model from the overview.
    sign_in(&b, &server);
    b.click_on(
        "button[data-action=\"pause_model\"][data-target=\"fc\"]:not([disabled])",
        10,
    );
    b.wait_for("#models tr[data-model=\"fc\"] .state .s-paused", 10);
    let (_, o) = gw.api("GET", "/api/overview", None, None);
    let fc = o["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "fc")
        .unwrap()
        .clone();
    assert_eq!(fc["paused"]["by"], "alice", "{fc}");
    // The CLI shows the pause made from the page, and who made it.
    let out = gw.pom().args(["models"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("fc ") && l.contains("yes, by alice at ")),
        "{text}"
    );

    // Times say their zone: UTC by default, the browser's own with its offset on the switch.
    let arrival = "return document.querySelector('#channels tr[data-channel=\"obs\"] td:nth-child(4)').textContent";
    b.wait_until(
        "UTC times",
        &format!("return /Z/.test((() => {{ {arrival} }})())"),
        10,
    );
    b.click_on("#zone", 5);
    b.wait_until(
        "local times with their offset",
        &format!(
            "return /\\d [+-]\\d\\d:\\d\\d/.test((() => {{ {arrival} }})()) && \
             document.getElementById('zone').textContent === 'local time'"
        ),
        10,
    );
    b.click_on("#zone", 5);
    b.wait_until(
        "back to UTC",
        "return document.getElementById('zone').textContent === 'UTC'",
        10,
    );

    // Its next input waits...
    gw.drop_file("obs", "fc_2.xml", &pi_series(2, 2));
    b.wait_until(
        "the input shown waiting",
        "return document.querySelector('#models tr[data-model=\"fc\"] .pending').textContent.trim() === '1'",
        15,
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(runs(&gw).len(), 1, "no run while the model is paused");
    b.wait_for(".alert[data-alert=\"late_feed\"]", 10);

    // ... and resuming releases it.
    b.click_on(
        "button[data-action=\"resume_model\"][data-target=\"fc\"]:not([disabled])",
        10,
    );
    eventually(20, "the waiting input run", || {
        let r = runs(&gw);
        r.len() == 2 && r.iter().all(|r| r["state"] == "succeeded")
    });
    b.wait_until(
        "the model shown idle with nothing waiting",
        "const r = document.querySelector('#models tr[data-model=\"fc\"]'); \
         return r.querySelector('.pending').textContent.trim() === '0' && !r.querySelector('.state .s-paused')",
        15,
    );

    // Two runs seconds apart on the 24 h timeline: one mark that says how many, not one tick.
    b.go(&format!("{server}/#/runs"));
    b.wait_until(
        "a burst shown with its count",
        "return [...document.querySelectorAll('#timeline .count')].some((t) => t.textContent === '×2')",
        10,
    );

    // The other pages.
    let run = runs(&gw)[0]["id"].as_str().unwrap().to_string();
    b.go(&format!("{server}/#/run/{run}"));
    b.wait_until(
        "the run's output",
        "const o = document.querySelector('#stdout'); \
         return !!o && o.innerText.includes('forecasting from fc_2.xml')",
        10,
    );
    b.go(&format!("{server}/#/files"));
    b.wait_for("#files tr[data-file]", 10);
    b.wait_until(
        "the rejected file with its line",
        "const f = document.querySelector('#files'); return !!f && /line [0-9]+/.test(f.innerText)",
        10,
    );
    b.go(&format!("{server}/#/rules"));
    b.wait_for("dl.facts", 10);
    b.go(&format!("{server}/#/audit"));
    b.wait_until(
        "the operator's actions in the audit log",
        "const a = document.querySelector('#audit'); return !!a && ['alice', 'pause_model', \
         'resume_model'].every((w) => a.innerText.includes(w))",
        10,
    );

    // The same period replayed: the session's page shows its comparison with the original runs.
    let from = gw
        .submissions()
        .iter()
        .map(|s| s.received_at.clone())
        .min()
        .unwrap();
    let to = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    gw.replay(&from, &to, "rehearsal", &["--no-wait"]);
    let mut id = String::new();
    eventually(60, "the replay done", || {
        let s = gw.ledger().session("rehearsal").unwrap();
        if let Some(s) = s.filter(|s| s.state == "done") {
            id = s.id;
        }
        !id.is_empty()
    });
    b.go(&format!("{server}/#/replay/{id}"));
    // Read in the page in one go: a live event may draw the page again meanwhile.
    b.wait_until(
        "the comparison shown",
        "const s = document.querySelector('#summary'); \
         return !!s && s.innerText.includes('2 output pair(s) matched, 2 identical')",
        10,
    );
}

/// The README's screenshots: the repository's sample chain, as an operator on duty sees it.
#[test]
fn the_readmes_screenshots_show_the_sample_chain() {
    let gw = crate::sample_chain::sample_chain_with(|gw| {
        gw.extra_env
            .push(("POM_TOKEN".into(), format!("alice:{TOKEN}")));
        gw.extra_args
            .extend(["--alert-interval".into(), "0.2".into()]);
    });
    let broken =
        std::fs::read(repo().join("examples/samples/obs-pi/discharge_broken_header.xml")).unwrap();
    gw.drop_file("obs-pi", "discharge_broken_header.xml", &broken);
    let server = gw.server();
    let published = gw.spool().join("outgoing/forecasts");
    eventually(60, "the forecast published", || {
        std::fs::read_dir(&published).is_ok_and(|mut d| d.next().is_some())
    });
    eventually(20, "both runs ended", || {
        let r = gw.ledger().runs(None, None, 10).unwrap();
        r.len() == 2 && r.iter().all(|r| r.ended_at.is_some())
    });

    let b = Browser::start();
    sign_in(&b, &server);
    // A pause and a resume, for the audit log.
    for action in ["pause_model", "resume_model"] {
        b.click_on(
            &format!(
                "button[data-action=\"{action}\"][data-target=\"propagation\"]:not([disabled])"
            ),
            10,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    b.wait_for("#models tr[data-model=\"propagation\"] .state .s-idle", 10);
    shot(&b, "overview.png");
    b.go(&format!("{server}/#/runs"));
    b.wait_for("#runs tr[data-model=\"propagation\"] .s-succeeded", 10);
    shot(&b, "runs.png");
    let latest = |model: &str| {
        gw.ledger().runs(Some(model), None, 1).unwrap()[0]
            .id
            .clone()
    };
    let run = latest("propagation");
    b.go(&format!("{server}/#/run/{run}"));
    b.wait_for("#stdout", 10);
    shot(&b, "run.png");
    // The rainfall-runoff run's hydrograph: its simulated discharge against the observed one at
    // the same station, time0 marked, and the rainfall in a chart of its own.
    let rr = latest("rainfall-runoff");
    b.go(&format!("{server}/#/run/{rr}"));
    let q = "figure.hydrograph[data-location=\"Y1232010\"]";
    b.wait_for(
        &format!("{q} path.series.role-output[data-parameter=\"Q.sim\"]"),
        10,
    );
    let drawn = b.eval(&format!(
        "const f = [...document.querySelectorAll('{q}')]; \
         const seg = (p) => p ? (p.getAttribute('d').match(/[ML]/g) || []).length : 0; \
         const g = (sel) => f.map((x) => x.querySelector(sel)).find((x) => x); \
         return {{ charts: f.length, sim: seg(g('path[data-parameter=\"Q.sim\"]')), \
                  obs: seg(g('path[data-parameter=\"Q.obs\"]')), rain: seg(g('path[data-parameter=\"P.obs\"]')), \
                  time0: !!g('line.time0') }}"
    ));
    assert_eq!(drawn["charts"], json!(2), "discharge and rainfall: {drawn}");
    assert!(
        drawn["sim"].as_u64().unwrap() >= 30
            && drawn["obs"].as_u64().unwrap() == 12
            && drawn["rain"].as_u64().unwrap() == 12
            && drawn["time0"] == json!(true),
        "the simulation past time0, the 12 observations, time0: {drawn}"
    );
    shot(&b, "hydrograph.png");

    // The station view: the station's latest forecast against its observations of the days
    // before, from the station index the daemon keeps of the archive.
    b.go(&format!("{server}/#/stations"));
    b.wait_until(
        "both stations listed",
        "return !!document.querySelector('#stations tr[data-station=\"Y1232010\"]') \
         && !!document.querySelector('#stations tr[data-station=\"Y1232010-downstream\"]')",
        30,
    );
    b.click_on("#stations tr[data-station=\"Y1232010\"] a", 10);
    b.wait_for(
        &format!("{q} path.series.role-observed[data-parameter=\"Q.obs\"]"),
        10,
    );
    let station = b.eval(&format!(
        "const f = [...document.querySelectorAll('{q}')]; \
         const seg = (p) => p ? (p.getAttribute('d').match(/[ML]/g) || []).length : 0; \
         const g = (sel) => f.map((x) => x.querySelector(sel)).find((x) => x); \
         return {{ title: document.querySelector('main h1').innerText, \
                  sim: seg(g('path.role-forecast[data-parameter=\"Q.sim\"]')), \
                  obs: seg(g('path.role-observed[data-parameter=\"Q.obs\"]')), \
                  rain: seg(g('path.role-observed[data-parameter=\"P.obs\"]')), \
                  time0: !!g('line.time0') }}"
    ));
    assert!(
        station["title"] == json!("Station Y1232010")
            && station["sim"].as_u64().unwrap() >= 30
            && station["obs"].as_u64().unwrap() == 12
            && station["rain"].as_u64().unwrap() == 12
            && station["time0"] == json!(true),
        "the latest forecast, the observations, time0: {station}"
    );
    shot(&b, "station.png");

    // An ensemble forecast is drawn as a bundle: one thin line per member.
    let members = 5;
    gw.drop_file(
        "obs-pi",
        "ensemble_Y1232010.xml",
        ensemble(members).as_bytes(),
    );
    eventually(30, "the ensemble archived", || {
        gw.find(b"ensemble_Y1232010.xml")
            .is_some_and(|f| f.state == pom::ledger::State::Archived)
    });
    let ens = gw.find(b"ensemble_Y1232010.xml").unwrap();
    b.go(&format!("{server}/#/file/{}", ens.id));
    b.wait_for(
        "figure.hydrograph path.series.member[data-parameter=\"Q.ens\"]",
        10,
    );
    let drawn = b.eval(
        "return document.querySelectorAll('figure.hydrograph path.series.member[data-parameter=\"Q.ens\"]').length",
    );
    assert_eq!(drawn, json!(members), "one line per member");

    b.go(&format!("{server}/#/files"));
    b.wait_for("#files", 10);
    b.wait_until(
        "the rejected sample with its line",
        "const f = document.querySelector('#files'); return !!f && /line [0-9]+/.test(f.innerText)",
        10,
    );
    shot(&b, "files.png");
    b.go(&format!("{server}/#/rules"));
    b.wait_for("#routes", 10);
    shot(&b, "rules.png");
    // An edit staged beside the rules (`rules.next/`, the default), shown with what it would
    // change before it is in force: the discharge sent to the rain slot.
    let staged = gw.dir.path().join("rules.next");
    common::copy_dir(&gw.rules(), &staged);
    crate::impact::send_the_discharge_to_the_rain_slot(&staged);
    b.go(&format!("{server}/#/edit"));
    b.wait_until(
        "the staged edit's impact",
        "const t = document.querySelector('#impact'); return !!t && \
         t.innerText.includes('rainfall-runoff.discharge') && t.innerText.includes('refused by its slot')",
        10,
    );
    shot(&b, "edit.png");
    b.go(&format!("{server}/#/audit"));
    b.wait_for("#audit tbody tr", 10);
    shot(&b, "audit.png");

    // On a phone's width, every page fits: nothing wider than the screen but a table's own
    // sideways scroll.
    b.resize(390, 844);
    for page in [
        "#/",
        "#/runs",
        &format!("#/run/{run}"),
        "#/files",
        "#/stations",
        "#/station/Y1232010",
        "#/rules",
        "#/edit",
        "#/audit",
    ] {
        b.go(&format!("{server}/{page}"));
        b.wait_for("main h1", 10);
        std::thread::sleep(Duration::from_millis(300));
        let fits = b.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1");
        assert_eq!(fits, json!(true), "{page} is wider than a phone");
    }
    b.resize(1400, 1000);

    let (_, stations_before) = gw.api("GET", "/api/stations", None, None);
    gw.replay_everything("rehearsal");
    let id = gw.ledger().session("rehearsal").unwrap().unwrap().id;
    // The station index has read past the replay's files, and counted none of them.
    eventually(30, "the station index past the replay", || {
        let l = gw.ledger();
        let last = gw.submissions().into_iter().map(|s| s.id).max();
        l.series_indexed_upto().unwrap() >= last
    });
    let (_, stations_after) = gw.api("GET", "/api/stations", None, None);
    assert_eq!(stations_after, stations_before, "a replay moves no station");
    b.go(&format!("{server}/#/replay/{id}"));
    // Read in the page in one go: a live event may draw the page again meanwhile.
    b.wait_until(
        "the comparison shown",
        "const s = document.querySelector('#summary'); \
         return !!s && s.innerText.includes('2 output pair(s) matched, 2 identical')",
        10,
    );
    shot(&b, "replay.png");
}

/// A PI ensemble forecast at the sample station: `members` members of 24 hourly values.
fn ensemble(members: usize) -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://www.wldelft.nl/fews/PI http://fews.wldelft.nl/schemas/version1.0/pi-schemas/pi_timeseries.xsd\" \
         version=\"1.2\"><timeZone>0.0</timeZone>",
    );
    for m in 0..members {
        doc.push_str(&format!(
            "<series><header><type>instantaneous</type><locationId>Y1232010</locationId>\
             <parameterId>Q.ens</parameterId><ensembleMemberIndex>{m}</ensembleMemberIndex>\
             <timeStep unit=\"second\" multiplier=\"3600\"/>\
             <startDate date=\"2026-11-28\" time=\"11:00:00\"/><endDate date=\"2026-11-29\" time=\"10:00:00\"/>\
             <forecastDate date=\"2026-11-28\" time=\"11:00:00\"/>\
             <missVal>-999.0</missVal><stationName>Y1232010</stationName><units>m3/s</units></header>"
        ));
        for h in 0..24 {
            let (day, hour) = if h + 11 < 24 {
                (28, h + 11)
            } else {
                (29, h + 11 - 24)
            };
            let v = 12.0 + (m as f64) * 0.8 + (h as f64 * 0.3).sin() * 3.0;
            doc.push_str(&format!(
                "<event date=\"2026-11-{day}\" time=\"{hour:02}:00:00\" value=\"{v:.2}\" flag=\"0\"/>"
            ));
        }
        doc.push_str("</series>");
    }
    doc.push_str("</TimeSeries>\n");
    doc
}
