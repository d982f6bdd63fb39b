//! `pom backup` and `pom restore`: a consistent copy of the ledger while the daemon runs, and
//! its restore (the daemon stopped) with the reconciliation of the spool.

use super::*;

pub(super) fn backup(paths: &Paths, a: &BackupArgs) -> Result<ExitCode> {
    let db = paths.db();
    let started = std::time::Instant::now();
    let checked = pom::ledger::backup::backup(&db, &a.file)
        .with_context(|| format!("backing up {}", db.display()))?;
    println!(
        "backup {}: integrity {}, {} files, {} runs, last claim {}, in {:.1} s",
        a.file.display(),
        checked.integrity,
        checked.submissions,
        checked.runs,
        checked.last_claim.as_deref().unwrap_or("none"),
        started.elapsed().as_secs_f64()
    );
    Ok(if checked.integrity == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn restore(paths: &Paths, a: &RestoreArgs) -> Result<ExitCode> {
    let spool = Spool::new(&paths.spool);
    let db = paths.db();
    let r = pom::daemon::restore::restore(&spool, &db, &a.file, chrono::Utc::now())
        .with_context(|| format!("restoring {}", a.file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &r.checked;
    println!(
        "backup {}: integrity {}, schema {} (this POM knows {}), {} files, {} runs, last claim {}",
        a.file.display(),
        c.integrity,
        c.schema_version,
        c.known_version,
        c.submissions,
        c.runs,
        c.last_claim.as_deref().unwrap_or("none")
    );
    print!("restored as {}", db.display());
    match &r.replaced {
        Some(p) => println!(" (the ledger it replaced is kept as {})", p.display()),
        None => println!(),
    }
    println!(
        "{} archived or rejected files claimed after the backup, back in incoming/ as new \
         arrivals (pom serve claims them again)",
        r.new_arrivals.count
    );
    listed(&r.new_arrivals, |m| m.clone());
    if r.left.count > 0 {
        println!(
            "{} files unknown to the restored ledger left where they are",
            r.left.count
        );
        listed(&r.left, |(file, why)| format!("{file}: {why}"));
    }
    println!(
        "{} files the restored ledger knows are missing from the spool",
        r.missing.count
    );
    listed(&r.missing, |(id, stored)| format!("{id}  {stored}"));
    Ok(ExitCode::SUCCESS)
}

/// The files of a listing, one a line, and how many were not listed.
fn listed<T>(l: &pom::daemon::restore::Listing<T>, line: impl Fn(&T) -> String) {
    for item in &l.first {
        println!("  {}", line(item));
    }
    let more = l.count - l.first.len() as u64;
    if more > 0 {
        println!("  … and {more} more, not listed");
    }
}
