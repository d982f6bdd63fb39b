//! The ledger's backup while files flow, and its restore on a spool that went on after it:
//! the restored ledger is sound, the files claimed after the backup (archived or rejected) come
//! back as new arrivals and are decided once each, and a file the backup knows but the archive
//! lost is reported.

use std::collections::HashMap;
use std::time::Duration;

use common::{Gateway, eventually, pi_series};
use pom::ledger::{Ledger, State};

use crate::common;

#[test]
fn a_backup_taken_under_load_restores_to_a_sound_ledger_that_reconciles() {
    let mut gw = Gateway::new();
    gw.start();
    let n = 400;
    let (backup_out, known) = std::thread::scope(|s| {
        let dropper = s.spawn(|| {
            for i in 1..=n {
                if i % 20 == 0 {
                    // Every twentieth is refused: rejected files are reconciled too.
                    gw.drop_file(
                        "obs",
                        &format!("bad_{i}.xml"),
                        format!("<broken n='{i}'").as_bytes(),
                    );
                } else {
                    gw.drop_file("obs", &format!("load_{i}.xml"), &pi_series(i, 3));
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        eventually(60, "a hundred files decided", || gw.decided().len() >= 100);
        // While files still arrive: as an operator would type it, relative to where they are.
        let out = gw
            .pom()
            .args(["backup", "ledger-backup.sqlite"])
            .output()
            .unwrap();
        let known = Ledger::open_readonly(&gw.dir.path().join("ledger-backup.sqlite"))
            .unwrap()
            .integrity_check()
            .unwrap();
        dropper.join().unwrap();
        (out, known)
    });
    let text = String::from_utf8_lossy(&backup_out.stdout).into_owned();
    assert!(
        backup_out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&backup_out.stderr)
    );
    assert!(text.contains("integrity ok"), "{text}");
    assert_eq!(known, "ok");
    let all = gw.wait_for_decided(n, 60);
    gw.stop();
    let backup = gw.dir.path().join("ledger-backup.sqlite");
    let in_backup = pom::ledger::backup::check(&backup).unwrap();
    assert!(
        (100..n as i64).contains(&in_backup.submissions),
        "the backup was taken with files still to come: {in_backup:?}"
    );
    eprintln!(
        "backup under load: {} of {n} files in it, {text}",
        in_backup.submissions
    );

    // A file the backup knows, lost from the archive since.
    let last = in_backup.last_claim.clone().unwrap();
    let lost = all
        .iter()
        .find(|s| s.id <= last && s.state == State::Archived)
        .unwrap()
        .clone();
    std::fs::remove_file(gw.spool().join(lost.stored.as_deref().unwrap())).unwrap();

    let out = gw
        .pom()
        .args(["restore", "ledger-backup.sqlite", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checked"]["integrity"], "ok", "{r}");
    // Files the backup knew only as claimed (being examined while it was taken) come back
    // as new arrivals too: the daemon forgets such a claim when it starts.
    let claimed_in_backup = Ledger::open_readonly(&backup)
        .unwrap()
        .in_state(State::Claimed)
        .unwrap()
        .len() as i64;
    let arrivals = r["new_arrivals"]["count"].as_i64().unwrap();
    assert_eq!(
        r["new_arrivals"]["first"].as_array().unwrap().len() as i64,
        arrivals,
        "{r}"
    );
    let rejected_back = r["new_arrivals"]["first"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.as_str().unwrap().starts_with("rejected/"))
        .count();
    assert!(
        rejected_back > 0,
        "files rejected after the backup come back too: {r}"
    );
    assert_eq!(r["left"]["count"], 0, "{r}");
    assert_eq!(
        arrivals,
        n as i64 - in_backup.submissions + claimed_in_backup,
        "every file claimed after the backup is a new arrival: {r}"
    );
    eprintln!(
        "restore: {arrivals} files back in incoming/ as new arrivals ({rejected_back} of them \
         rejected, {claimed_in_backup} only claimed in the backup), 1 missing file reported"
    );
    assert_eq!(
        r["missing"],
        serde_json::json!({"count": 1, "first": [[lost.id, lost.stored]]}),
        "the lost file is reported"
    );
    assert!(r["replaced"].as_str().is_some(), "{r}");
    assert_eq!(
        Ledger::open_readonly(&gw.db())
            .unwrap()
            .integrity_check()
            .unwrap(),
        "ok"
    );

    // The daemon on the restored ledger: every content decided once, none twice, and no file
    // in the spool that the ledger does not know.
    gw.start();
    let decided = gw.wait_for_decided(n, 60);
    let mut per_content: HashMap<String, usize> = HashMap::new();
    for s in &decided {
        *per_content.entry(s.sha256.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(per_content.len(), n, "every file decided");
    assert!(
        per_content.values().all(|&c| c == 1),
        "a file decided twice"
    );
    let refused = decided
        .iter()
        .filter(|s| s.state == State::Rejected)
        .count();
    assert_eq!(refused, n / 20, "{decided:?}");
    assert!(
        decided
            .iter()
            .all(|s| matches!(s.state, State::Archived | State::Rejected)),
        "{:?}",
        decided
            .iter()
            .filter(|s| !matches!(s.state, State::Archived | State::Rejected))
            .collect::<Vec<_>>()
    );
    let rejected_files = walkdir::WalkDir::new(gw.spool().join("rejected"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file() && !e.file_name().to_string_lossy().ends_with(".reason")
        })
        .count();
    assert_eq!(rejected_files, n / 20, "one stored copy per refused file");
    gw.stop();
}

#[test]
fn a_backup_that_fails_its_check_is_not_restored_and_nothing_changes() {
    let mut gw = Gateway::new();
    gw.start();
    gw.drop_file("obs", "one.xml", &pi_series(1, 3));
    gw.wait_for_decided(1, 30);
    gw.stop();
    let bad = gw.dir.path().join("bad.sqlite");
    std::fs::write(&bad, b"SQLite format 3\0 but nothing else").unwrap();
    let before = std::fs::read(gw.db()).unwrap();
    let out = gw.pom().args(["restore", "bad.sqlite"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(std::fs::read(gw.db()).unwrap(), before);

    // And none while the daemon runs.
    gw.start();
    let out = gw.pom().args(["backup", "good.sqlite"]).output().unwrap();
    assert!(out.status.success());
    let out = gw.pom().args(["restore", "good.sqlite"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another pom serve holds it"), "{err}");
    gw.stop();
}
