//! kill -9 at random instants under a steady load, again and again: afterwards every dropped file
//! is archived or rejected exactly once, `queue/` is empty and the ledger is sound.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Gateway, pi_series};
use pom::ledger::State;

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const KILLS: usize = 50;

#[test]
fn kill_9_at_random_instants_loses_nothing_and_processes_nothing_twice() {
    let seed = std::env::var("POM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (set POM_CRASH_SEED to replay)");
    let mut rng = Lcg(seed);
    let mut gw = Gateway::new();
    gw.start();

    // Producers on the three kinds of channel, at a steady pace, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let obs = gw.incoming("obs");
    let mark = gw.incoming("mark");
    let still = gw.incoming("still");
    let producer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut dropped: HashMap<String, bool> = HashMap::new(); // name -> valid
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let valid = i % 7 != 3;
                let body = if valid {
                    pi_series(i, 2)
                } else {
                    b"<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"><broken>"
                        .to_vec()
                };
                let name = format!("f{i:06}.xml");
                match i % 5 {
                    0 => {
                        std::fs::write(mark.join(&name), &body).unwrap();
                        std::fs::write(mark.join(format!("{name}.ok")), b"").unwrap();
                        dropped.insert(format!("mark/{name}"), valid);
                    }
                    1 => {
                        std::fs::write(still.join(&name), &body).unwrap();
                        dropped.insert(format!("still/{name}"), valid);
                    }
                    _ => {
                        let tmp = obs.join(format!("{name}.part"));
                        std::fs::write(&tmp, &body).unwrap();
                        std::fs::rename(&tmp, obs.join(&name)).unwrap();
                        dropped.insert(format!("obs/{name}"), valid);
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(1500));
            }
            dropped
        })
    };

    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 400));
        gw.kill9();
        gw.start();
    }
    stop.store(true, Ordering::Relaxed);
    let dropped = producer.join().unwrap();
    println!("{} files dropped across {KILLS} kills", dropped.len());

    let started = Instant::now();
    let decided = gw.wait_for_decided(dropped.len(), 300);
    println!(
        "drained {:.1} s after the last restart",
        started.elapsed().as_secs_f64()
    );

    // Exactly once each, with the verdict its content deserves.
    let mut seen: HashMap<String, State> = HashMap::new();
    for s in &decided {
        let key = format!("{}/{}", s.channel, String::from_utf8_lossy(&s.original));
        assert!(
            seen.insert(key.clone(), s.state).is_none(),
            "{key} decided twice"
        );
    }
    assert_eq!(
        seen.len(),
        dropped.len(),
        "some dropped files were never decided"
    );
    for (name, valid) in &dropped {
        let state = seen.get(name).unwrap_or_else(|| panic!("{name} lost"));
        let expected = if *valid {
            State::Archived
        } else {
            State::Rejected
        };
        assert_eq!(*state, expected, "{name}");
    }
    // On disk too: one stored file per submission, nothing left in flight.
    assert_eq!(
        gw.archived_files().len() + gw.rejected_files().len(),
        dropped.len(),
        "stored files do not match submissions"
    );
    assert!(gw.queue_is_empty());
    for ch in ["obs", "mark", "still"] {
        let left: Vec<_> = std::fs::read_dir(gw.incoming(ch))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left in incoming/{ch}: {left:?}");
    }
    assert!(gw.submissions().iter().all(|s| s.state != State::Claimed));
    gw.stop();
    assert_eq!(gw.ledger().integrity_check().unwrap(), "ok");
}
