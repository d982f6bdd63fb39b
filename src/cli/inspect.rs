//! The verbs that read: `check`, `validate`, `route`, `impact`, `status`, `files`, `models`, `runs`, `show`,
//! `audit`, `alerts`. They read the rules, the schemas and the ledger; they change nothing.

use super::*;

pub(super) fn check(paths: &Paths) -> Result<ExitCode> {
    let mut problems: Vec<Problem> = Vec::new();
    match RuleSet::load(&paths.rules) {
        Ok(r) => {
            println!(
                "rules: {} channel(s), {} model(s), {} route(s), version {}",
                r.channels.len(),
                r.models.len(),
                r.routes.routes.len(),
                &r.version[..12]
            );
            for p in r.products.values() {
                println!(
                    "product {}: issued by {}, due {}{}",
                    p.name,
                    p.model,
                    p.due.describe(),
                    p.fallback
                        .map(|f| format!(", fallback {} min before", f.as_secs() / 60))
                        .unwrap_or_default()
                );
            }
            // What only the machine can tell: the command is there, the schedule ever fires.
            let path = std::env::var_os("PATH");
            for m in r.models.values() {
                let file = paths.rules.join("models").join(format!("{}.toml", m.name));
                let program = m.command.first().map(String::as_str).unwrap_or_default();
                if let Some(why) = pom::config::model::command_not_found(program, path.as_deref()) {
                    problems.push(Problem {
                        file: file.clone(),
                        line: None,
                        message: why,
                    });
                }
                if let pom::config::model::Trigger::Schedule { pattern, .. } = &m.trigger
                    && m.trigger.next_after(chrono::Utc::now()).is_none()
                {
                    problems.push(Problem {
                        file,
                        line: None,
                        message: format!("cron `{pattern}` never fires"),
                    });
                }
            }
        }
        Err(p) => problems.extend(p.0),
    }
    match Catalog::load(&paths.schemas) {
        Ok(c) => {
            let mut v = Validator::new();
            for xsd in c.xsds() {
                if let Err(errors) = v.compile(&xsd) {
                    for e in errors {
                        problems.push(Problem {
                            file: xsd.clone(),
                            line: e.line.map(|l| l as usize),
                            message: e.message,
                        });
                    }
                }
            }
            println!(
                "schemas: {} format(s), {} XSD file(s)",
                c.formats().len(),
                c.xsds().len()
            );
        }
        Err(p) => problems.extend(p.0),
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s)", problems.len());
        Ok(ExitCode::from(1))
    }
}

pub(super) fn validate(paths: &Paths, a: &ValidateArgs) -> Result<ExitCode> {
    let catalog = Catalog::load(&paths.schemas).map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut validator = Validator::new();
    let mut refused = 0;
    let mut out = Vec::new();
    for f in &a.files {
        let ex = examine::examine(f, &catalog, &mut validator, a.limits.limits());
        let shown = f.display().to_string();
        match &ex.verdict {
            Verdict::Accepted {
                format,
                version,
                checked,
            } => {
                if !a.json {
                    println!("{shown}: valid: {format} {version} ({checked})");
                }
                out.push(serde_json::json!({
                    "file": shown, "valid": true, "format": format, "version": version,
                    "checked": checked, "sha256": ex.sha256,
                }));
            }
            Verdict::Rejected(r) => {
                refused += 1;
                if !a.json {
                    println!("{shown}: refused ({}): {}", r.kind.name(), r.reason);
                    for e in &r.errors {
                        println!("  {e}");
                    }
                }
                let (format, version) = ex.identified.clone().unzip();
                out.push(serde_json::json!({
                    "file": shown, "valid": false, "kind": r.kind, "reason": r.reason,
                    "errors": r.errors, "root": ex.root, "sha256": ex.sha256,
                    "format": format, "version": version,
                }));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let channels = ledger.status(pom::ledger::Traffic::Operational)?;
    let paused = ledger.pauses()?;
    let spool = Spool::new(&paths.spool);
    let queue = count_files(&spool.queue());
    let rules = RuleSet::load(&paths.rules);
    if json {
        let v = serde_json::json!({
            "queue_depth": queue,
            "channels": channels,
            "paused": paused.iter().map(|(kind, name, p)| serde_json::json!({
                "kind": kind, "name": name, "by": p.by, "at": p.at,
            })).collect::<Vec<_>>(),
            "rules": match &rules {
                Ok(r) => serde_json::json!({"version": r.version, "problems": []}),
                Err(p) => serde_json::json!({"version": null, "problems": p.0}),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &rules {
        Ok(r) => println!("rules: version {}", &r.version[..12]),
        Err(p) => println!("rules: {p}"),
    }
    println!("queue: {queue} file(s) in flight");
    if channels.is_empty() {
        println!("no operational file received yet");
    } else {
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9}  {:<33} paused",
            "channel",
            "claimed",
            "archived",
            "rejected",
            "duplicate",
            format!("last arrival ({})", super::zone())
        );
    }
    for c in &channels {
        let n = |s: State| c.states.get(s.name()).copied().unwrap_or(0);
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9}  {:<33} {}",
            c.channel,
            n(State::Claimed),
            n(State::Archived),
            n(State::Rejected),
            n(State::Duplicate),
            c.last_arrival
                .as_deref()
                .map_or("-".into(), super::shown_time),
            paused
                .iter()
                .find(|(kind, name, _)| kind == "channel" && *name == c.channel)
                .map(|(_, _, p)| format!("by {} at {}", p.by, super::shown_time(&p.at)))
                .unwrap_or_else(|| "no".into())
        );
    }
    for (kind, name, p) in &paused {
        if kind == "channel" && !channels.iter().any(|c| &c.channel == name) {
            println!(
                "channel {name} paused by {} at {}",
                p.by,
                super::shown_time(&p.at)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn files(paths: &Paths, a: &FilesArgs) -> Result<ExitCode> {
    let state = match &a.state {
        Some(s) => Some(State::parse(s).with_context(|| {
            format!("unknown state `{s}` (claimed, archived, rejected, duplicate)")
        })?),
        None => None,
    };
    let ledger = open_ledger(paths)?;
    let rows = ledger.files(&FileFilter {
        traffic: a.mode,
        state,
        channel: a.channel.clone(),
        route: a.route.clone(),
        name: a.name.clone(),
        format: a.format.clone(),
        before: None,
        limit: a.limit,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no {} files match", a.mode.name());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<9} {:<11} {:<12} {:<32} detail",
        "file", "state", "mode", "channel", "name"
    );
    for r in rows {
        let what = match r.state {
            State::Archived | State::Duplicate => format!(
                "{} {}{}",
                r.format.as_deref().unwrap_or("?"),
                r.version.as_deref().unwrap_or("?"),
                match (&r.route, r.route_rules.first()) {
                    (Some(route), Some(rule)) => format!(", {route} by {rule}"),
                    (Some(route), None) => format!(", {route}"),
                    _ => String::new(),
                }
            ),
            State::Rejected => r.reason.clone().unwrap_or_default(),
            State::Claimed => String::new(),
        };
        println!(
            "{:<24} {:<9} {:<11} {:<12} {:<32} {}",
            r.id,
            r.state.name(),
            if r.session.is_some() {
                "replay"
            } else {
                "operational"
            },
            r.channel,
            format!("{:?}", String::from_utf8_lossy(&r.original)),
            what
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn route(paths: &Paths, a: &RouteArgs) -> Result<ExitCode> {
    let rules = load_rules(paths)?;
    if !rules.channels.contains_key(&a.channel) {
        anyhow::bail!("no channel `{}` in {}", a.channel, paths.rules.display());
    }
    let catalog = Catalog::load(&paths.schemas).map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut validator = Validator::new();
    let mut out = Vec::new();
    for f in &a.files {
        let ex = examine::examine(f, &catalog, &mut validator, examine::Limits::default());
        let shown = f.display().to_string();
        let decision = match &ex.verdict {
            Verdict::Rejected(r) => {
                serde_json::json!({"outcome": "rejected", "kind": r.kind, "reason": r.reason})
            }
            Verdict::Accepted {
                format, version, ..
            } => {
                let name = f
                    .file_name()
                    .map(|n| n.as_encoded_bytes().to_vec())
                    .unwrap_or_default();
                let facts = pom::route::Facts {
                    channel: &a.channel,
                    name: &name,
                    format,
                    version,
                };
                let content = pom::route::needs_content(&rules.routes, &rules.models, &facts)
                    .then(|| std::fs::read(f).ok())
                    .flatten();
                let d = rules.routes.decide(&facts, content.as_deref());
                let mut v = serde_json::to_value(&d)?;
                if d == pom::route::Decision::Unrouted {
                    // Why: the nearest rules, each condition the file fails and on what value.
                    let bytes = content.or_else(|| std::fs::read(f).ok());
                    v["nearest"] =
                        serde_json::to_value(rules.routes.explain(&facts, bytes.as_deref(), 3))?;
                }
                v
            }
        };
        if !a.json {
            println!("{shown}: {}", describe_route(&decision));
            print_nearest(&decision["nearest"]);
        }
        out.push(serde_json::json!({"file": shown, "decision": decision, "rules_version": rules.version}));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The nearest rules of an unrouted file, and why each does not take it.
pub(super) fn print_nearest(nearest: &serde_json::Value) {
    for n in nearest.as_array().into_iter().flatten() {
        let failed: Vec<String> = n["failed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} wants {:?}, the file has {:?}",
                    f["condition"].as_str().unwrap_or(""),
                    f["wanted"].as_str().unwrap_or(""),
                    f["found"].as_str().unwrap_or("")
                )
            })
            .collect();
        println!(
            "  rule {}: {}",
            n["rule"].as_str().unwrap_or(""),
            if failed.is_empty() {
                "matches".into()
            } else {
                failed.join("; ")
            }
        );
    }
}

pub(super) fn describe_route(d: &serde_json::Value) -> String {
    match d["outcome"].as_str() {
        Some("routed") => {
            let rules: Vec<&str> = d["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            let actions: Vec<String> = d["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| match a["action"].as_str() {
                    Some("deliver") => format!(
                        "deliver to {}.{}",
                        a["model"].as_str().unwrap_or(""),
                        a["slot"].as_str().unwrap_or("")
                    ),
                    Some("publish") => format!(
                        "publish to outgoing/{}/",
                        a["target"].as_str().unwrap_or("")
                    ),
                    Some("hold") => format!("hold ({})", a["reason"].as_str().unwrap_or("")),
                    Some("drop") => format!("drop ({})", a["reason"].as_str().unwrap_or("")),
                    _ => a.to_string(),
                })
                .collect();
            format!("{} (rule {})", actions.join(", "), rules.join(", "))
        }
        Some("unrouted") => "unrouted: no rule matches".into(),
        _ => format!("refused: {}", d["reason"].as_str().unwrap_or("")),
    }
}

pub(super) fn models(paths: &Paths, json: bool) -> Result<ExitCode> {
    let rules = load_rules(paths)?;
    let now = chrono::Utc::now();
    // The runtime state an operator set (pauses) and the inputs waiting, from the ledger the
    // daemon keeps them in: the same whether it runs or not.
    let ledger = paths
        .db()
        .exists()
        .then(|| open_ledger(paths))
        .transpose()?;
    let pauses: std::collections::BTreeMap<String, pom::ledger::audit::Pause> = match &ledger {
        Some(l) => l
            .pauses()?
            .into_iter()
            .filter(|(kind, _, _)| kind == "model")
            .map(|(_, name, p)| (name, p))
            .collect(),
        None => Default::default(),
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for m in rules.models.values() {
        let waiting = match &ledger {
            Some(l) => l.pending_count(&m.name)?,
            None => 0,
        };
        let by = pauses.get(&m.name);
        rows.push(serde_json::json!({
            "name": m.name,
            "description": m.description,
            "trigger": m.trigger.kind(),
            "next": m.trigger.next_after(now).map(pom::ledger::timestamp),
            "paused": m.paused || by.is_some(),
            "paused_in_rules": m.paused,
            "paused_by": by.map(|p| &p.by),
            "paused_at": by.map(|p| &p.at),
            "waiting_inputs": waiting,
            "inputs": m.inputs.keys().collect::<Vec<_>>(),
            "outputs": m.outputs.as_ref().map(|o| &o.channel),
            "output_files": m.outputs.as_ref().map(|o| &o.files),
            "diagnostics": &m.diagnostics,
            "executor": m.executor.name(),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no models in {}", paths.rules.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<9} {:<28} {:<36} {:>7}  inputs",
        "model",
        "trigger",
        format!("next ({})", super::zone()),
        "paused",
        "waiting"
    );
    for r in &rows {
        let paused = match (r["paused_by"].as_str(), r["paused_in_rules"].as_bool()) {
            (Some(by), _) => format!("yes, by {by} at {}", r["paused_at"].as_str().unwrap_or("?")),
            (None, Some(true)) => "yes, in its rule file".into(),
            _ => "no".into(),
        };
        println!(
            "{:<24} {:<9} {:<28} {:<36} {:>7}  {}",
            r["name"].as_str().unwrap_or(""),
            r["trigger"].as_str().unwrap_or(""),
            r["next"].as_str().map_or("-".into(), super::shown_time),
            paused,
            r["waiting_inputs"],
            r["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn runs(paths: &Paths, a: &RunsArgs) -> Result<ExitCode> {
    let state = match &a.state {
        Some(s) => Some(
            pom::ledger::runs::RunState::parse(s)
                .with_context(|| format!("unknown run state `{s}`"))?,
        ),
        None => None,
    };
    let ledger = open_ledger(paths)?;
    let rows = ledger.runs_in(a.model.as_deref(), state, a.mode, a.limit)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no {} runs match", a.mode.name());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:<11} {:<11} {:>7} {:<27} {:>9}  reason",
        "run",
        "state",
        "mode",
        "attempt",
        format!("time0 ({})", super::zone()),
        "duration"
    );
    for r in rows {
        println!(
            "{:<40} {:<11} {:<11} {:>7} {:<27} {:>9}  {}",
            r.id,
            r.state.name(),
            if r.session.is_some() {
                "replay"
            } else {
                "operational"
            },
            r.attempt,
            super::shown_time(&r.time0),
            duration(r.started_at.as_deref(), r.ended_at.as_deref()),
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show(paths: &Paths, a: &ShowArgs) -> Result<ExitCode> {
    use pom::supervise::view;
    let ledger = open_ledger(paths)?;
    let print_fields = |body: serde_json::Value| {
        for (k, v) in body.as_object().into_iter().flatten() {
            if v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) {
                continue;
            }
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<14} {shown}");
        }
    };
    if let Some(d) = view::run_detail(&ledger, &paths.spool, &a.id)? {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
            return Ok(ExitCode::SUCCESS);
        }
        print_fields(serde_json::to_value(&d.run)?);
        println!("lineage:");
        for i in &d.inputs {
            let up = i
                .produced_by
                .as_ref()
                .map(|r| format!(", produced by run {r}"))
                .unwrap_or_default();
            println!("  input {}: file {} ({}){up}", i.slot, i.file, i.name);
        }
        for o in &d.outputs {
            let file = o.file.as_deref().unwrap_or("not back yet");
            println!("  output {}: file {file}", o.name);
        }
        for r in &d.downstream {
            println!("  used by run {r}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(mut d) = view::file_detail(&ledger, &a.id)? else {
        anyhow::bail!("no run or file `{}` in the ledger", a.id);
    };
    if let Ok(rules) = RuleSet::load(&paths.rules) {
        d.nearest = view::explain_unrouted(&paths.spool, &rules, &d.file);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The routing said in words, not as the ledger's JSON.
    let mut fields = serde_json::to_value(&d.file)?;
    if let Some(o) = fields.as_object_mut() {
        for raw in [
            "route",
            "route_rules",
            "route_actions",
            "errors",
            "original",
        ] {
            o.remove(raw);
        }
    }
    println!(
        "{:<14} {}",
        "name",
        String::from_utf8_lossy(&d.file.original)
    );
    print_fields(fields);
    if let Some(route) = &d.file.route {
        let decision = match route.as_str() {
            "unrouted" => serde_json::json!({"outcome": "unrouted"}),
            _ => serde_json::json!({
                "outcome": "routed",
                "rules": d.file.route_rules,
                "actions": d.file.route_actions,
            }),
        };
        println!("{:<14} {}", "route", describe_route(&decision));
        if !d.nearest.is_empty() {
            println!("why no rule in force takes it:");
            print_nearest(&serde_json::to_value(&d.nearest)?);
        }
    }
    for e in &d.file.errors {
        let e = serde_json::to_value(e)?;
        println!(
            "{:<14} line {}: {}",
            "error",
            e["line"],
            e["message"].as_str().unwrap_or("")
        );
    }
    println!("lineage:");
    if let Some(run) = &d.produced_by {
        println!("  produced by run {run}");
        for i in &d.produced_from {
            println!("    from input {}: file {} ({})", i.slot, i.file, i.name);
        }
    }
    for u in &d.deliveries {
        match &u.run {
            Some(run) => println!("  input {} of run {run}", u.slot),
            None => println!("  delivered to {}.{} ({})", u.model, u.slot, u.state),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn audit(paths: &Paths, a: &AuditArgs) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let log = ledger.audit_log(a.limit)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in log {
        println!(
            "{}  {:<12} {:<15} {:<40} {}{}",
            super::shown_time(&e.at),
            e.who,
            e.action,
            e.target,
            e.outcome,
            e.detail.map(|d| format!(" — {d}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn alerts(paths: &Paths, json: bool) -> Result<ExitCode> {
    let reply = super::http::call(&paths.server, "/api/alerts", None, None)
        .context("is `pom serve` running?")?;
    if reply.status != 200 {
        anyhow::bail!("HTTP {}: {}", reply.status, reply.text());
    }
    let v = reply.json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no alert");
    }
    for a in list {
        println!(
            "{}  {:<14} {}",
            super::shown_time(a["since"].as_str().unwrap_or_default()),
            a["kind"].as_str().unwrap_or_default(),
            a["message"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".marker"))
                .count()
        })
        .unwrap_or(0)
}

/// A run's duration as a table shows it (`12.3 s`, `4 min 05 s`), or `-` when it has not ended.
fn duration(started: Option<&str>, ended: Option<&str>) -> String {
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (started.and_then(at), ended.and_then(at)) {
        (Some(s), Some(e)) => {
            let ms = (e - s).num_milliseconds().max(0);
            if ms < 60_000 {
                format!("{:.1} s", ms as f64 / 1000.0)
            } else {
                format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
            }
        }
        _ => "-".into(),
    }
}

pub(super) fn impact(paths: &Paths, a: &ImpactArgs) -> Result<ExitCode> {
    if a.in_force == paths.rules {
        anyhow::bail!(
            "give the edited rules with --rules DIR (the rules in force are read from --in-force, \
             {} by default)",
            a.in_force.display()
        );
    }
    let now = RuleSet::load(&a.in_force).map_err(|p| {
        anyhow::anyhow!(
            "the rules in force in {} do not load:\n{p}",
            a.in_force.display()
        )
    })?;
    let edited = RuleSet::load(&paths.rules).map_err(|p| {
        anyhow::anyhow!(
            "the edited rules in {} do not load:\n{p}",
            paths.rules.display()
        )
    })?;
    let since = parse_time("--since", &a.since)?;
    let until = match &a.until {
        Some(t) => parse_time("--until", t)?,
        None => chrono::Utc::now(),
    };
    let ledger = open_ledger(paths)?;
    let started = std::time::Instant::now();
    let impact = pom::supervise::impact::assess(
        &ledger,
        &paths.spool,
        &now,
        &edited,
        (since, until),
        a.examples,
    )?;
    let took = started.elapsed();
    if a.json {
        if a.replay {
            let report = impact_replay(paths, a, since, until)?;
            let both = serde_json::json!({ "impact": impact, "replay": report });
            println!("{}", serde_json::to_string_pretty(&both)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&impact)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} archived file(s) from {} to {}: {} decided differently ({:.1} s)",
        impact.files,
        pom::ledger::timestamp(since),
        pom::ledger::timestamp(until),
        impact.changed,
        took.as_secs_f64()
    );
    let list =
        |title: &str, m: &std::collections::BTreeMap<String, pom::route::impact::Examples>| {
            for (k, e) in m {
                println!(
                    "  {title} {k}: {} file(s), e.g. {}",
                    e.count,
                    e.examples.join(", ")
                );
            }
        };
    list("route", &impact.routes);
    list("delivery added", &impact.deliveries_added);
    list("delivery removed", &impact.deliveries_removed);
    list("delivery refused by its slot", &impact.refused_by_slot);
    list("publication added", &impact.publications_added);
    list("publication removed", &impact.publications_removed);
    for (what, e) in [
        ("unrouted", &impact.unrouted),
        ("dropped", &impact.dropped),
        ("held", &impact.held),
        ("refused (channel gone)", &impact.refused),
        (
            "left out (not readable: pruned or gone)",
            &impact.unreadable,
        ),
    ] {
        if e.count > 0 {
            println!(
                "  would be {what}: {} file(s), e.g. {}",
                e.count,
                e.examples.join(", ")
            );
        }
    }
    for (model, runs) in &impact.runs_losing_input {
        println!(
            "  runs of {model} that would lose an input: {} ({})",
            runs.len(),
            runs.join(", ")
        );
    }
    for (model, e) in &impact.runs_gaining_input {
        println!(
            "  deliveries that would feed {model}'s runs: {} (one run each if it runs on arrival), e.g. {}",
            e.count,
            e.examples.join(", ")
        );
    }
    if a.replay {
        let report = impact_replay(paths, a, since, until)?;
        let id = report["session"].as_str().unwrap_or_default().to_string();
        return super::replay::replay_report(paths, &id, false);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pom impact --replay`: the period staged as a session routed by the edited rules, followed
/// until done; its comparison report (the forecasts that change, and by how much).
fn impact_replay(
    paths: &Paths,
    a: &ImpactArgs,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value> {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("impact-{}", since.format("%Y-%m-%dT%H%M")));
    let (files, folder) = super::replay::stage(
        paths,
        &super::replay::Stage {
            from: since,
            to: until,
            channel: None,
            models: &[],
            speed: None,
            name: &name,
            rules: Some(&paths.rules),
        },
    )?;
    eprintln!(
        "replay `{name}` routed by the rules of {}: {files} file(s)",
        paths.rules.display()
    );
    let s = super::replay::follow(paths, &name, &folder)?;
    let report = s
        .report
        .with_context(|| format!("{} is done without a report: see the daemon's log", s.id))?;
    // A path read from the ledger: confined under the spool, no link followed.
    let bytes = pom::fs::read_confined(&paths.spool, Path::new(&report), 256 << 20)
        .with_context(|| format!("reading the report {report}"))?;
    Ok(serde_json::from_slice(&bytes)?)
}
