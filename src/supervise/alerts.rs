//! Alerts: a late feed, a failed run, a product at risk, a refused rule edit, low disk space.
//!
//! [`evaluate`] is a pure function of what the daemon knows and the time; the loop in [`spawn`]
//! gathers those facts every few seconds, puts the alerts on the [`Board`] (the web client and
//! `/metrics` show them) and passes each raised or cleared alert to the operator's command, if
//! one is declared.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::board::{Alert, Board, Refused};
use crate::config::rules::RuleSet;
use crate::config::{Shared, current};
use crate::id::ClaimId;
use crate::ledger::{Ledger, timestamp};

/// When free space is too low: below a share of the file system or below a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// Percent of the file system.
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

impl MinFree {
    /// `5%`, `2G`, `500M`, `1000000`.
    pub fn parse(text: &str) -> Result<MinFree, String> {
        let t = text.trim();
        let bad = || format!("`{text}` is not a free space such as 5%, 2G, 500M");
        if let Some(p) = t.strip_suffix('%') {
            return p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(MinFree::Percent)
                .ok_or_else(bad);
        }
        let (n, mult) = match t.char_indices().last() {
            Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
            Some((i, 'M')) => (&t[..i], 1 << 20),
            Some((i, 'G')) => (&t[..i], 1 << 30),
            Some((i, 'T')) => (&t[..i], 1 << 40),
            _ => (t, 1),
        };
        n.trim()
            .parse::<u64>()
            .map(|n| MinFree::Bytes(n.saturating_mul(mult)))
            .map_err(|_| bad())
    }

    fn too_low(self, available: u64, total: u64) -> bool {
        match self {
            MinFree::Percent(p) => total > 0 && (available as f64) < total as f64 * p / 100.0,
            MinFree::Bytes(b) => available < b,
        }
    }
}

/// What the alerts are decided from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Channels with a cadence: (name, cadence, grace, last arrival, paused).
    pub feeds: Vec<Feed>,
    /// Models whose last run ended without success: (model, run, state, reason).
    pub failed: Vec<(String, String, String, String)>,
    /// The refused rule edit in force.
    pub refused: Option<Refused>,
    /// Free and total bytes of the spool's file system.
    pub disk: Option<(u64, u64)>,
    /// When the daemon started (a feed that never sent is late from then).
    pub started: Option<DateTime<Utc>>,
    /// Channels that expect every file routed and hold unrouted ones: (channel, how many, the
    /// newest's id and name).
    pub unrouted: Vec<(String, i64, String, String)>,
    /// Products at risk, late, or issued degraded with a feed still missing: (product, why).
    pub products: Vec<(String, String)>,
    /// The first ledger read that failed, if one did: the facts are then incomplete, and no
    /// alert is raised or cleared on them.
    pub unread: Option<String>,
}

/// A channel that declares its cadence.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Channel name.
    pub channel: String,
    /// Expected time between files.
    pub cadence: Duration,
    /// Slack.
    pub grace: Duration,
    /// Last file received.
    pub last: Option<DateTime<Utc>>,
    /// Paused by an operator (a paused feed is not late: its files wait).
    pub paused: bool,
}

/// The alerts in force at `now`; an alert already raised keeps its `since`.
pub fn evaluate(
    facts: &Facts,
    min_free: MinFree,
    now: DateTime<Utc>,
    previous: &[Alert],
) -> Vec<Alert> {
    let since = |kind: &str, subject: &str| {
        previous
            .iter()
            .find(|a| a.kind == kind && a.subject == subject)
            .map_or_else(|| timestamp(now), |a| a.since.clone())
    };
    let mut out = Vec::new();
    for f in &facts.feeds {
        if f.paused {
            continue;
        }
        let Some(from) = f.last.or(facts.started) else {
            continue;
        };
        let late_after = chrono::Duration::from_std(f.cadence + f.grace).unwrap_or_default();
        if now - from > late_after {
            let what = match f.last {
                Some(t) => format!("last file at {}", timestamp(t)),
                None => "no file since the start".into(),
            };
            out.push(Alert {
                kind: "late_feed".into(),
                subject: f.channel.clone(),
                message: format!(
                    "channel `{}` is late: {what}, expected every {} (grace {})",
                    f.channel,
                    human(f.cadence),
                    human(f.grace)
                ),
                since: since("late_feed", &f.channel),
                link: format!("#/files?channel={}", f.channel),
            });
        }
    }
    for (channel, n, id, name) in &facts.unrouted {
        out.push(Alert {
            kind: "unrouted".into(),
            subject: channel.clone(),
            message: format!(
                "channel `{channel}`: {n} file(s) no rule routes, the newest {name} (file {id}); \
                 `pom route` or the file's page says which condition failed; once the rules \
                 are fixed, `pom reroute --unrouted` routes them again"
            ),
            since: since("unrouted", channel),
            link: format!("#/files?channel={channel}&route=unrouted"),
        });
    }
    for (model, run, state, reason) in &facts.failed {
        out.push(Alert {
            kind: "failed_run".into(),
            subject: model.clone(),
            message: format!("model `{model}`: run `{run}` {state}: {reason}"),
            since: since("failed_run", model),
            link: format!("#/run/{run}"),
        });
    }
    for (product, why) in &facts.products {
        out.push(Alert {
            kind: "product".into(),
            subject: product.clone(),
            message: why.clone(),
            since: since("product", product),
            link: format!("#/product/{product}"),
        });
    }
    if let Some(r) = &facts.refused {
        out.push(Alert {
            kind: "refused_rules".into(),
            subject: "rules".into(),
            message: format!(
                "a rule edit was refused at {} ({} problem(s)): the previous rules stay in force; {}",
                r.at,
                r.problems.len(),
                r.problems.first().cloned().unwrap_or_default()
            ),
            since: since("refused_rules", "rules"),
            link: "#/rules".into(),
        });
    }
    if let Some((available, total)) = facts.disk
        && min_free.too_low(available, total)
    {
        out.push(Alert {
            kind: "low_disk".into(),
            subject: "spool".into(),
            message: format!(
                "the spool's file system has {} free of {}",
                bytes(available),
                bytes(total)
            ),
            since: since("low_disk", "spool"),
            link: "#/".into(),
        });
    }
    out
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct from a valid C path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        let unit = s.f_frsize as u64;
        Some((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
    }
}

/// How the alert loop runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Low-disk threshold.
    pub min_free: MinFree,
    /// Command run for each raised or cleared alert (`sh -c`), with `POM_ALERT_*` variables.
    pub command: Option<String>,
    /// Time between two evaluations.
    pub every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_free: MinFree::Percent(5.0),
            command: None,
            every: Duration::from_secs(2),
        }
    }
}

/// Gathers the facts from the ledger, the rules and the board.
pub fn gather(
    reader: &Ledger,
    rules: &RuleSet,
    board: &Board,
    spool: &std::path::Path,
    started: DateTime<Utc>,
) -> Facts {
    let paused = board.paused_channels();
    let mut unread: Option<String> = None;
    let mut read = |e: crate::ledger::LedgerError| {
        unread.get_or_insert_with(|| e.to_string());
    };
    let mut feeds = Vec::new();
    for c in rules.channels.values() {
        let Some((cadence, grace)) = c.cadence else {
            continue;
        };
        let last = match reader.last_id_on(&c.name) {
            Ok(id) => id.and_then(|id| ClaimId::parse(&id)).map(|id| id.time()),
            Err(e) => {
                read(e);
                continue;
            }
        };
        feeds.push(Feed {
            channel: c.name.clone(),
            cadence,
            grace,
            last,
            paused: paused.contains_key(&c.name),
        });
    }
    let mut failed = Vec::new();
    for m in rules.models.keys() {
        match reader.last_run(m) {
            Ok(Some(r)) if matches!(r.state.name(), "failed" | "timed_out") => failed.push((
                r.model,
                r.id,
                r.state.name().replace('_', " "),
                r.reason.unwrap_or_default(),
            )),
            Ok(_) => {}
            Err(e) => read(e),
        }
    }
    let mut unrouted = Vec::new();
    for c in rules.channels.values().filter(|c| c.expect_routed) {
        match reader.unrouted_on(&c.name) {
            Ok((n, Some((id, name)))) if n > 0 => unrouted.push((
                c.name.clone(),
                n,
                id,
                String::from_utf8_lossy(&name).into_owned(),
            )),
            Ok(_) => {}
            Err(e) => read(e),
        }
    }
    let products = board
        .products()
        .iter()
        .filter_map(|p| p.alarm().map(|why| (p.name.clone(), why)))
        .collect();
    Facts {
        products,
        unrouted,
        feeds,
        failed,
        refused: board.refused(),
        disk: disk_space(spool),
        started: Some(started),
        unread,
    }
}

/// The time of the last file received on a channel.
pub fn last_arrival(reader: &Ledger, channel: &str) -> Option<DateTime<Utc>> {
    reader
        .last_id_on(channel)
        .ok()
        .flatten()
        .and_then(|id| ClaimId::parse(&id))
        .map(|id| id.time())
}

/// Starts the alert loop; it ends when `stop` is raised.
pub fn spawn(
    db: PathBuf,
    spool: PathBuf,
    rules: Shared<RuleSet>,
    board: Arc<Board>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    clock: crate::clock::Clock,
) -> std::thread::JoinHandle<()> {
    board.health().expect(
        "alerts",
        (settings.every * 2 + Duration::from_secs(1)).max(crate::health::STUCK_AFTER),
    );
    let health = Arc::clone(board.health());
    crate::health::spawn("alerts", health, move || {
        let started = clock.now();
        let reader = match Ledger::open_readonly(&db) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "alerts: cannot read the ledger");
                return;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            board.health().beat("alerts");
            let facts = gather(&reader, &current(&rules), &board, &spool, started);
            let previous = board.alerts();
            // A ledger read that failed (busy, I/O error) leaves the facts incomplete: the stage
            // shows degraded (a `stage` alert), and the alerts in force stay as they are.
            board.health().fault(
                "alerts",
                facts
                    .unread
                    .as_ref()
                    .map(|e| format!("cannot read the ledger: {e}")),
            );
            let mut now = match facts.unread {
                Some(_) => previous
                    .iter()
                    .filter(|a| a.kind != "stage")
                    .cloned()
                    .collect(),
                None => evaluate(&facts, settings.min_free, clock.now(), &previous),
            };
            now.extend(stage_alerts(&board, &previous, clock.now()));
            let cleared: Vec<Alert> = previous
                .iter()
                .filter(|a| {
                    !now.iter()
                        .any(|b| b.kind == a.kind && b.subject == a.subject)
                })
                .cloned()
                .collect();
            let raised = board.set_alerts(now);
            for a in &raised {
                tracing::warn!(kind = %a.kind, subject = %a.subject, "alert: {}", a.message);
            }
            for a in &cleared {
                tracing::info!(kind = %a.kind, subject = %a.subject, "alert cleared");
            }
            if let Some(cmd) = &settings.command {
                for (a, state) in raised
                    .iter()
                    .map(|a| (a, "raised"))
                    .chain(cleared.iter().map(|a| (a, "cleared")))
                {
                    notify(cmd, a, state);
                }
            }
            let mut waited = Duration::ZERO;
            while waited < settings.every && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                waited += Duration::from_millis(100);
                board.health().beat("alerts");
            }
        }
    })
}

/// An alert per stage that is not ok (a transient fault retried, stuck, dead), keeping the time
/// it was first raised.
fn stage_alerts(board: &Board, previous: &[Alert], now: DateTime<Utc>) -> Vec<Alert> {
    board
        .health()
        .report(std::time::Instant::now())
        .into_iter()
        .filter(|s| s.state != "ok")
        .map(|s| {
            let since = previous
                .iter()
                .find(|a| a.kind == "stage" && a.subject == s.stage)
                .map_or_else(|| timestamp(now), |a| a.since.clone());
            Alert {
                kind: "stage".into(),
                subject: s.stage.clone(),
                message: format!(
                    "stage {} is {}: {}",
                    s.stage,
                    s.state,
                    s.reason.unwrap_or_default()
                ),
                since,
                link: "#/".into(),
            }
        })
        .collect()
}

/// Runs the operator's command for an alert, in the background, killed after a minute.
fn notify(cmd: &str, a: &Alert, state: &str) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("POM_ALERT_STATE", state)
        .env("POM_ALERT_KIND", &a.kind)
        .env("POM_ALERT_SUBJECT", &a.subject)
        .env("POM_ALERT_MESSAGE", &a.message)
        .env("POM_ALERT_SINCE", &a.since)
        .env("POM_ALERT_LINK", &a.link)
        .stdin(Stdio::null())
        .spawn();
    match child {
        Ok(mut c) => {
            std::thread::spawn(move || {
                for _ in 0..600 {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot run the alert command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn feed(last: Option<&str>, paused: bool) -> Feed {
        Feed {
            channel: "obs".into(),
            cadence: Duration::from_secs(900),
            grace: Duration::from_secs(300),
            last: last.map(at),
            paused,
        }
    }

    #[test]
    fn a_feed_is_late_after_cadence_plus_grace_and_not_while_paused() {
        let facts = |last, paused| Facts {
            feeds: vec![feed(last, paused)],
            started: Some(at("2026-01-01T00:00:00Z")),
            ..Facts::default()
        };
        let none = MinFree::Bytes(0);
        let now = at("2026-01-01T12:19:59Z");
        assert!(evaluate(&facts(Some("2026-01-01T12:00:00Z"), false), none, now, &[]).is_empty());
        let now = at("2026-01-01T12:20:01Z");
        let a = evaluate(&facts(Some("2026-01-01T12:00:00Z"), false), none, now, &[]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, "late_feed");
        assert!(
            a[0].message.contains("every 15m (grace 5m)"),
            "{}",
            a[0].message
        );
        assert!(evaluate(&facts(Some("2026-01-01T12:00:00Z"), true), none, now, &[]).is_empty());
        // Never sent: late from the daemon's start.
        assert_eq!(evaluate(&facts(None, false), none, now, &[]).len(), 1);
        // An alert in force keeps the time it was first raised.
        let again = evaluate(
            &facts(Some("2026-01-01T12:00:00Z"), false),
            none,
            at("2026-01-01T13:00:00Z"),
            &a,
        );
        assert_eq!(again[0].since, a[0].since);
    }

    #[test]
    fn failed_runs_refused_rules_and_low_disk_raise_alerts() {
        let facts = Facts {
            failed: vec![(
                "m".into(),
                "m-1".into(),
                "failed".into(),
                "exit code 3".into(),
            )],
            refused: Some(Refused {
                at: "t".into(),
                problems: vec!["routes.toml:3: bad".into()],
            }),
            disk: Some((4 << 30, 100 << 30)),
            ..Facts::default()
        };
        let now = at("2026-01-01T00:00:00Z");
        let kinds = |m| {
            evaluate(&facts, m, now, &[])
                .into_iter()
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(MinFree::Percent(5.0)),
            ["failed_run", "refused_rules", "low_disk"]
        );
        assert_eq!(
            kinds(MinFree::Percent(3.0)),
            ["failed_run", "refused_rules"]
        );
        assert_eq!(kinds(MinFree::parse("5G").unwrap()).len(), 3);
        assert_eq!(MinFree::parse("5%"), Ok(MinFree::Percent(5.0)));
        assert!(MinFree::parse("lots").is_err());
    }
}
