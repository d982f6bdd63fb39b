//! `pom replay`: stages a period of the archive as a replay session; `replays` and `replay report`.

use super::*;

/// `pom replay`: the archived files of the period, hard-linked with their manifests into a
/// hidden folder of `spool/replay/`, which is then renamed into place whole: the daemon sees
/// one complete folder, exactly as if an operator had copied it.
pub(super) fn replay(paths: &Paths, a: &ReplayArgs) -> Result<ExitCode> {
    match &a.report {
        Some(ReplayCommand::Report { session, json }) => {
            return replay_report(paths, session, *json);
        }
        Some(ReplayCommand::Cancel { session }) => {
            return act(
                paths,
                &Action::CancelReplay {
                    session: session.clone(),
                },
            );
        }
        None => {}
    }
    let (from, to) = (
        parse_time("--from", a.from.as_deref().unwrap_or_default())?,
        parse_time("--to", a.to.as_deref().unwrap_or_default())?,
    );
    anyhow::ensure!(from < to, "--from must be before --to");
    let speed = match a.speed.as_str() {
        "max" => None,
        n => Some(
            n.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .with_context(|| format!("--speed {n}: `max` or a positive number"))?,
        ),
    };
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}_{}",
            from.format("%Y-%m-%dT%H%M"),
            to.format("%Y-%m-%dT%H%M")
        )
    });
    let (staged, folder) = stage(
        paths,
        &Stage {
            from,
            to,
            channel: a.channel.as_deref(),
            models: &a.model,
            speed,
            name: &name,
            rules: None,
        },
    )?;
    eprintln!(
        "replay `{name}`: {staged} file(s) from {} to {}, speed {}",
        pom::ledger::timestamp(from),
        pom::ledger::timestamp(to),
        a.speed
    );
    if a.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let s = follow(paths, &name, &folder)?;
    println!(
        "{} done: {} file(s), {} run(s)",
        s.id, s.files_decided, s.runs
    );
    Ok(ExitCode::SUCCESS)
}

/// A period of the archive to stage as a replay session.
pub(super) struct Stage<'a> {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub channel: Option<&'a str>,
    pub models: &'a [String],
    pub speed: Option<f64>,
    pub name: &'a str,
    /// An edited rule set the session routes by, instead of the rules in force.
    pub rules: Option<&'a Path>,
}

/// Stages a period as a session folder, put in place whole; returns how many files it holds and
/// the folder's name under `replay/`.
pub(super) fn stage(paths: &Paths, st: &Stage) -> Result<(usize, String)> {
    let (from, to, name) = (st.from, st.to, st.name.to_string());
    let ledger = open_ledger(paths)?;
    let files = pom::replay::archived_between(&ledger, from, to, st.channel)?;
    let pruned = pom::replay::pruned_between(&ledger, from, to, st.channel)?;
    if !pruned.is_empty() {
        eprintln!(
            "replay: {} file(s) of that period were removed by retention (their channel's \
             `keep`) and cannot be replayed:",
            pruned.len()
        );
        for s in pruned.iter().take(20) {
            eprintln!(
                "  {}  {}  {}  pruned {}",
                s.id,
                s.channel,
                String::from_utf8_lossy(&s.original),
                s.pruned_at.as_deref().unwrap_or("?")
            );
        }
        if pruned.len() > 20 {
            eprintln!("  … and {} more", pruned.len() - 20);
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        if pruned.is_empty() {
            "no archived file was received in that period"
        } else {
            "every archived file of that period was removed by retention: nothing to replay"
        }
    );
    let spool = Spool::new(&paths.spool);
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.'),
        "--name {name}: letters, digits, `-`, `_` and `.` only"
    );
    let staging = spool
        .replay()
        .join(format!(".staging-{name}-{}", std::process::id()));
    let mut manifests: std::collections::BTreeMap<PathBuf, String> = Default::default();
    for s in &files {
        // Paths read from the ledger stay under their roots.
        let stored = s.stored.clone().unwrap_or_default();
        let src = pom::fs::confined(spool.root(), Path::new(&stored))
            .with_context(|| format!("file {}: {stored:?} is not a path under the spool", s.id))?;
        let rel = Path::new(&stored)
            .strip_prefix("archive")
            .unwrap_or(Path::new(&stored));
        let dest = pom::fs::confined(&staging, rel)
            .with_context(|| format!("file {}: {stored:?} is not a path under the spool", s.id))?;
        let dir = dest.parent().context("stored path")?.to_path_buf();
        if !manifests.contains_key(&dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let link = |from: &Path| {
            std::fs::hard_link(from, &dest).or_else(|_| std::fs::copy(from, &dest).map(|_| ()))
        };
        // A file decided a moment ago may still be on its way from queue/ to the archive: the
        // same file is then in queue/ (or, once moved meanwhile, in the archive after all).
        link(&src)
            .or_else(
                |e| match pom::fs::confined(&spool.queue(), Path::new(&s.id)) {
                    Some(queued) if e.kind() == std::io::ErrorKind::NotFound => {
                        link(&queued).or_else(|_| link(&src))
                    }
                    _ => Err(e),
                },
            )
            .with_context(|| format!("linking {}", src.display()))?;
        manifests
            .entry(dir)
            .or_default()
            .push_str(&pom::archive::manifest_line(s));
    }
    for (dir, text) in &manifests {
        std::fs::write(dir.join(pom::archive::MANIFEST), text)?;
    }
    if let Some(rules) = st.rules {
        pom::config::rules::RuleSet::copy_files(rules, &staging.join(pom::replay::RULES))
            .with_context(|| format!("copying the rules of {}", rules.display()))?;
    }
    let session = pom::replay::SessionFile {
        name: Some(name.clone()),
        speed: st.speed,
        models: (!st.models.is_empty()).then(|| st.models.to_vec()),
        from: Some(pom::ledger::timestamp(from)),
        to: Some(pom::ledger::timestamp(to)),
        whole: true,
        rules: st.rules.is_some(),
    };
    std::fs::write(
        staging.join(pom::replay::SESSION_FILE),
        toml::to_string(&session)?,
    )?;
    let mut target = spool.replay().join(&name);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = spool.replay().join(format!("{name}-{n}"));
    }
    std::fs::rename(&staging, &target).context("moving the session folder into place")?;
    let folder = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((files.len(), folder))
}

/// Shows a session's progress until it is done (or refused, or cancelled).
pub(super) fn follow(paths: &Paths, name: &str, folder: &str) -> Result<pom::replay::Session> {
    let db = paths.db();
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Ok(l) = Ledger::open_readonly(&db) else {
            continue;
        };
        let Some(s) = l.session(name)? else {
            let refused = Spool::new(&paths.spool)
                .replay()
                .join(folder)
                .join(pom::replay::CANCELLED);
            if let Ok(why) = std::fs::read_to_string(&refused) {
                anyhow::bail!("the daemon refused the session: {}", why.trim());
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not take the session up: is `pom serve` running?"
            );
            continue;
        };
        let total = s.files_total.max(1);
        let width = 30;
        let filled = (s.files_released * width / total) as usize;
        eprint!(
            "\r[{}{}] {}/{} released, {} decided, {} run(s), {}   ",
            "#".repeat(filled),
            ".".repeat(width as usize - filled.min(width as usize)),
            s.files_released,
            s.files_total,
            s.files_decided,
            s.runs,
            s.state
        );
        if s.state == "done" {
            eprintln!();
            return Ok(s);
        }
        anyhow::ensure!(
            s.state != "cancelled",
            "\n{} was cancelled ({} of {} file(s) released)",
            s.id,
            s.files_released,
            s.files_total
        );
    }
}

pub(super) fn replays(paths: &Paths, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let sessions = ledger.sessions()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!("no replay session");
    }
    for s in sessions {
        println!(
            "{:<34} {:<24} {:<10} {:>7}/{:<7} released {:>7} decided {:>5} run(s)  {}",
            s.id,
            s.name,
            s.state,
            s.files_released,
            s.files_total,
            s.files_decided,
            s.runs,
            match s.speed {
                Some(v) => format!("speed {v}"),
                None => "speed max".into(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn replay_report(paths: &Paths, session: &str, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let s = ledger
        .session(session)?
        .with_context(|| format!("no replay session `{session}`"))?;
    let Some(report) = &s.report else {
        anyhow::bail!(
            "{} is {}: its report is made when it is done ({} of {} file(s) released)",
            s.id,
            s.state,
            s.files_released,
            s.files_total
        );
    };
    // A path read from the ledger: confined under the spool, no link followed.
    let path = paths.spool.join(report);
    let text = pom::fs::read_confined(&paths.spool, Path::new(report), 256 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .with_context(|| format!("reading {}", path.display()))?;
    if json {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let r: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "replay {} `{}`: {} output pair(s) matched, {} identical, {} missing, {} extra; {} run(s) mirror no original",
        s.id,
        s.name,
        r["matched"],
        r["identical"],
        r["missing"],
        r["extra"],
        r["unmirrored_runs"].as_array().map_or(0, Vec::len)
    );
    for d in r["differing_series"].as_array().into_iter().flatten() {
        println!("  differs: {}", d.as_str().unwrap_or_default());
    }
    for d in r["not_made_again"].as_array().into_iter().flatten() {
        println!("  not made again: {}", d.as_str().unwrap_or_default());
    }
    println!("page: {}", path.with_extension("html").display());
    Ok(ExitCode::SUCCESS)
}
