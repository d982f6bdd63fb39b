//! Each completion policy, with the real daemon: a file is taken when it is complete, never before.

use crate::common;

use std::io::Write;
use std::time::Duration;

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;

#[test]
fn a_rename_channel_ignores_temporary_names_until_the_rename() {
    let mut gw = Gateway::new();
    gw.start();
    let dir = gw.incoming("obs");
    for tmp in [
        "a.xml.part",
        "a.xml.filepart",
        "a.xml.tmp",
        ".a.xml",
        ".in.a.xml",
    ] {
        std::fs::write(dir.join(tmp), pi_series(1, 1)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(gw.submissions().is_empty(), "a temporary name was taken");
    std::fs::rename(dir.join("a.xml.part"), dir.join("a.xml")).unwrap();
    let decided = gw.wait_for_decided(1, 20);
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].original, b"a.xml");
    assert_eq!(decided[0].state, State::Archived);
    for tmp in ["a.xml.filepart", "a.xml.tmp", ".a.xml", ".in.a.xml"] {
        assert!(dir.join(tmp).exists(), "{tmp} was touched");
    }
    gw.stop();
}

#[test]
fn a_marker_releases_its_file_and_is_archived_beside_it() {
    let mut gw = Gateway::new();
    gw.start();
    let dir = gw.incoming("mark");
    std::fs::write(dir.join("b.xml"), pi_series(2, 1)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(gw.submissions().is_empty(), "taken before its marker");
    std::fs::write(dir.join("b.xml.ok"), b"").unwrap();
    let decided = gw.wait_for_decided(1, 20);
    assert_eq!(decided[0].state, State::Archived);
    assert_eq!(decided[0].marker.as_deref(), Some(&b"b.xml.ok"[..]));
    // The archive folder describes the file.
    let stored = gw.spool().join(decided[0].stored.as_ref().unwrap());
    let manifest = pom::archive::read_manifest(stored.parent().unwrap()).unwrap();
    let line = &manifest[stored.file_name().unwrap().to_str().unwrap()];
    assert_eq!(line.original, "b.xml");
    assert_eq!(line.channel, "mark");
    assert_eq!(line.format.as_deref(), Some("pi-timeseries"));
    assert_eq!(line.version.as_deref(), Some("1.2"));
    assert_eq!(line.sha256.as_deref(), decided[0].sha256.as_deref());
    assert_eq!(line.received_at.as_str(), decided[0].received_at.as_str());
    let marker = format!("{}.ok", stored.display());
    eventually(10, "marker archived", || {
        std::path::Path::new(&marker).exists()
    });
    assert!(!dir.join("b.xml.ok").exists());

    // `.done` works too.
    std::fs::write(dir.join("c.xml"), pi_series(3, 1)).unwrap();
    std::fs::write(dir.join("c.xml.done"), b"").unwrap();
    gw.wait_for_decided(2, 20);
    gw.stop();
}

#[test]
fn a_quiet_channel_waits_until_the_file_stops_changing() {
    let mut gw = Gateway::new();
    gw.start();
    let path = gw.incoming("still").join("slow.xml");
    let body = pi_series(4, 8);
    let mut f = std::fs::File::create(&path).unwrap();
    // Write in place, slowly: each pause is shorter than the 300 ms quiet period.
    for chunk in body.chunks(body.len() / 10 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            gw.submissions().is_empty(),
            "taken while still being written"
        );
    }
    drop(f);
    let decided = gw.wait_for_decided(1, 20);
    assert_eq!(decided[0].state, State::Archived, "{:?}", decided[0]);
    assert_eq!(decided[0].size, Some(body.len() as i64));
    gw.stop();
}

#[test]
fn a_close_after_write_alone_does_not_complete_a_file() {
    // The file is written and closed under its final name on a marker channel: CLOSE_WRITE comes,
    // but without the marker nothing is taken.
    let mut gw = Gateway::new();
    gw.start();
    std::fs::write(gw.incoming("mark").join("d.xml"), pi_series(5, 2)).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(gw.submissions().is_empty());
    gw.stop();
}

#[test]
fn a_poll_only_gateway_finds_files_without_events() {
    let mut gw = Gateway::new();
    gw.extra_args = vec!["--poll".into(), "0.2".into()];
    gw.start();
    gw.drop_file("obs", "polled.xml", &pi_series(6, 1));
    let decided = gw.wait_for_decided(1, 20);
    assert_eq!(decided[0].state, State::Archived);
    gw.stop();
}

#[test]
fn the_same_content_again_on_a_channel_is_a_duplicate() {
    let mut gw = Gateway::new();
    gw.start();
    let body = pi_series(7, 1);
    gw.drop_file("obs", "first.xml", &body);
    gw.wait_for_decided(1, 20);
    gw.drop_file("obs", "again.xml", &body);
    gw.drop_file("mark", "other-channel.xml", &body);
    std::fs::write(gw.incoming("mark").join("other-channel.xml.ok"), b"").unwrap();
    let decided = gw.wait_for_decided(3, 20);
    let again = decided.iter().find(|s| s.original == b"again.xml").unwrap();
    let first = decided.iter().find(|s| s.original == b"first.xml").unwrap();
    let other = decided
        .iter()
        .find(|s| s.original == b"other-channel.xml")
        .unwrap();
    assert_eq!(again.state, State::Duplicate);
    assert_eq!(again.duplicate_of.as_deref(), Some(first.id.as_str()));
    assert_eq!(other.state, State::Archived, "duplicates are per channel");
    assert!(gw.spool().join(again.stored.as_ref().unwrap()).exists());
    gw.stop();
}
