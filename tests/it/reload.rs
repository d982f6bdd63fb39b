//! Edits of `rules/` and `schemas/` while the gateway runs: a good edit is applied, a broken one
//! is refused whole and the previous set stays in force; a changed XSD is recompiled.

use crate::common;

use std::time::Duration;

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;

#[test]
fn a_good_rules_edit_is_applied_and_a_broken_one_leaves_the_old_rules_in_force() {
    let mut gw = Gateway::new();
    gw.start();
    let channels = gw.rules().join("channels.toml");

    // A broken edit: refused, and the running channels keep working.
    let broken = format!(
        "{}\n[channels.late]\ncompletion = \"whenever\"\n",
        common::CHANNELS
    );
    std::fs::write(&channels, broken).unwrap();
    eventually(10, "the refusal to be logged", || {
        gw.log().contains("rules edit refused")
    });
    assert!(gw.log().contains("completion `whenever`"), "{}", gw.log());
    gw.drop_file("obs", "still-flowing.xml", &pi_series(1, 1));
    let decided = gw.wait_for_decided(1, 20);
    assert_eq!(decided[0].state, State::Archived);
    assert!(
        !gw.incoming("late").exists(),
        "half of a broken edit was applied"
    );

    // A good edit: the new channel appears and takes files.
    let good = format!(
        "{}\n[channels.late]\ncompletion = \"rename\"\n",
        common::CHANNELS
    );
    std::fs::write(&channels, good).unwrap();
    eventually(10, "the new channel folder", || {
        gw.incoming("late").is_dir()
    });
    gw.drop_file("late", "new-channel.xml", &pi_series(2, 1));
    let decided = gw.wait_for_decided(2, 20);
    let s = decided
        .iter()
        .find(|s| s.original == b"new-channel.xml")
        .unwrap();
    assert_eq!((s.channel.as_str(), s.state), ("late", State::Archived));
    gw.stop();
}

#[test]
fn a_save_seen_half_way_is_never_applied() {
    // Regression: an edit that truncates the file, then writes it, was once read while empty,
    // and the empty rule set (no channel at all) was put in force.
    let mut gw = Gateway::new();
    gw.start();
    let channels = gw.rules().join("channels.toml");
    let f = std::fs::File::create(&channels).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(f);
    std::fs::write(&channels, common::CHANNELS).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    gw.drop_file("obs", "after-save.xml", &pi_series(3, 1));
    assert_eq!(gw.wait_for_decided(1, 20)[0].state, State::Archived);
    assert!(!gw.log().contains("rules reloaded"), "{}", gw.log());
    gw.stop();
}

#[test]
fn a_changed_xsd_is_compiled_again() {
    let mut gw = Gateway::new();
    gw.start();
    gw.drop_file("obs", "before.xml", &pi_series(1, 1));
    gw.wait_for_decided(1, 20);
    // The operator tightens the schema: a header's `units` becomes `unitsOfMeasure`.
    let xsd = gw.dir.path().join("schemas/pi-xml/pi_timeseries.xsd");
    let text = std::fs::read_to_string(&xsd).unwrap();
    assert!(text.contains("name=\"units\""));
    std::fs::write(
        &xsd,
        text.replace("name=\"units\"", "name=\"unitsOfMeasure\""),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    gw.drop_file("obs", "after.xml", &pi_series(2, 1));
    let decided = gw.wait_for_decided(2, 20);
    let before = decided
        .iter()
        .find(|s| s.original == b"before.xml")
        .unwrap();
    let after = decided.iter().find(|s| s.original == b"after.xml").unwrap();
    assert_eq!(before.state, State::Archived);
    assert_eq!(after.state, State::Rejected, "{after:?}");
    assert!(
        after.errors.iter().any(|e| e.message.contains("units")),
        "{after:?}"
    );
    gw.stop();
}
