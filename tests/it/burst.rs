//! Events are hints, scans are truth: a burst that overflows the kernel's event queue, and files
//! written into folders created a moment before, are all picked up.

use crate::common;

use std::time::{Duration, Instant};

use common::{Gateway, pi_series};
use pom::ledger::State;

#[test]
fn twenty_thousand_files_dropped_while_the_daemon_is_frozen_are_all_processed() {
    let mut gw = Gateway::new();
    // The periodic scan is far away: only the overflow rescan can find what the events lost.
    gw.extra_args = vec!["--scan-interval".into(), "3600".into()];
    gw.start();
    let n = 20_000;
    let body = pi_series(0, 1);
    let text = String::from_utf8(body).unwrap();
    gw.freeze();
    let dir = gw.incoming("obs");
    for i in 0..n {
        let content = text.replace("<locationId>L0<", &format!("<locationId>L{i}<"));
        let tmp = dir.join(format!(".f{i}.part"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(format!("f{i:05}.xml"))).unwrap();
    }
    let started = Instant::now();
    gw.thaw();
    let decided = gw.wait_for_decided(n, 600);
    let took = started.elapsed();
    println!(
        "{n} files processed {:.1} s after SIGCONT ({:.0} files/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(decided.len(), n);
    assert!(decided.iter().all(|s| s.state == State::Archived));
    assert_eq!(gw.archived_files().len(), n);
    assert!(
        gw.log().contains("events were lost"),
        "the inotify queue did not overflow: the test did not test the rescan"
    );
    gw.stop();
}

#[test]
fn files_written_into_freshly_created_nested_folders_are_processed() {
    let mut gw = Gateway::new();
    gw.extra_args = vec!["--scan-interval".into(), "3600".into()];
    gw.start();
    let mut expected = 0;
    for a in 0..10 {
        for b in 0..6 {
            let dir = gw.incoming("obs").join(format!("day{a}/hour{b}/x"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..10 {
                // A well-behaved producer on a rename channel: temporary name, then the rename.
                let tmp = dir.join(format!(".f{f}.xml.part"));
                std::fs::write(&tmp, pi_series(a * 1000 + b * 10 + f, 1)).unwrap();
                std::fs::rename(&tmp, dir.join(format!("f{f}.xml"))).unwrap();
                expected += 1;
            }
        }
    }
    let decided = gw.wait_for_decided(expected, 60);
    assert_eq!(decided.len(), expected);
    for s in &decided {
        assert_eq!(s.state, State::Archived, "{s:?}");
    }
    assert!(decided.iter().any(|s| s.original == b"day9/hour5/x/f9.xml"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gw.decided().len(), expected, "a file was processed twice");
    gw.stop();
}
