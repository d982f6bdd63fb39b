//! `pom impact`: a rule edit tried on the archived past before it is put in force.

use crate::common;

use common::{eventually, repo};

#[test]
fn sending_the_discharge_to_the_rain_slot_lists_exactly_the_files_and_runs_it_changes() {
    let mut gw = crate::sample_chain::sample_chain_gateway();
    gw.start();
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
    let routes = std::fs::read_to_string(edited.join("routes.toml")).unwrap();
    let wrong = routes.replacen(
        "deliver = [\"rainfall-runoff.discharge\"]",
        "deliver = [\"rainfall-runoff.rain\"]",
        1,
    );
    assert_ne!(routes, wrong);
    std::fs::write(edited.join("routes.toml"), wrong).unwrap();

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
