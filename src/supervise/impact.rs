//! A rule edit weighed on the archive: the rules in force and an edited set each decide every
//! operational file archived in a period, and what differs is gathered ([`crate::route::impact`]
//! compares; this walks the ledger and reads the files that a rule or a slot asks about).
//!
//! In: the ledger, the spool, both rule sets, the period. Out: an [`Impact`]. Never: writing
//! anything, running anything; a stored path from the ledger is read confined under the spool,
//! no link followed.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::config::rules::RuleSet;
use crate::ledger::{Ledger, LedgerError};
use crate::route::impact::{Impact, outcome};

/// Compares `in_force` with `edited` over the operational files archived in `[since, until)`,
/// keeping `examples` of each kind.
pub fn assess(
    reader: &Ledger,
    spool: &Path,
    in_force: &RuleSet,
    edited: &RuleSet,
    (since, until): (DateTime<Utc>, DateTime<Utc>),
    examples: usize,
) -> Result<Impact, LedgerError> {
    let mut impact = Impact::default();
    let mut fault: Option<LedgerError> = None;
    reader.each_archived_between(since, until, |f| {
        if fault.is_some() {
            return;
        }
        let facts = crate::route::Facts {
            channel: &f.channel,
            name: &f.original,
            format: &f.format,
            version: &f.version,
        };
        let needs = |r: &RuleSet| {
            r.channels.contains_key(&f.channel)
                && crate::route::needs_content(&r.routes, &r.models, &facts)
        };
        let content = if needs(in_force) || needs(edited) {
            match f.stored.as_deref().map(|s| {
                crate::fs::read_confined(spool, Path::new(s), crate::examine::DEFAULT_MAX_SIZE)
            }) {
                Some(Ok(bytes)) => Some(bytes),
                _ => {
                    impact.files += 1;
                    impact.unreadable.count += 1;
                    if impact.unreadable.examples.len() < examples {
                        impact.unreadable.examples.push(f.id.clone());
                    }
                    return;
                }
            }
        } else {
            None
        };
        let (old, new) = (
            outcome(in_force, &facts, content.as_deref()),
            outcome(edited, &facts, content.as_deref()),
        );
        impact.add(
            &f.id,
            &old,
            &new,
            |delivery| {
                let (model, slot) = delivery.split_once('.').unwrap_or((delivery, ""));
                reader.runs_taking(&f.id, model, slot).unwrap_or_else(|e| {
                    fault.get_or_insert(e);
                    Vec::new()
                })
            },
            examples,
        );
    })?;
    match fault {
        Some(e) => Err(e),
        None => Ok(impact),
    }
}

/// The page of a rule edit not in force: the last live edit refused (its problems), and the
/// staged edit (a copy of the rules folder edited beside it, `rules.next/` by default) with its
/// problems or its impact over the last days.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EditView {
    /// The version in force.
    pub in_force: String,
    /// The last live edit refused, while no good edit followed.
    pub refused: Option<crate::board::Refused>,
    /// The staged edit's folder (relative to where the daemon runs, when below it).
    pub staged_dir: String,
    /// Whether it is there.
    pub staged: bool,
    /// Its version, when it compiles.
    pub version: Option<String>,
    /// Its problems, with file and line, when it does not.
    pub problems: Vec<String>,
    /// The period weighed: archived files received from…
    pub since: String,
    /// …to.
    pub until: String,
    /// What it would change over that period (none when it does not compile, or is the set in
    /// force).
    pub impact: Option<Impact>,
}

/// The edit page at `now`: the staged folder compiled and weighed over the `days` before `now`.
pub fn edit_view(
    reader: &Ledger,
    spool: &Path,
    in_force: &RuleSet,
    refused: Option<crate::board::Refused>,
    staged_dir: &Path,
    now: DateTime<Utc>,
    days: u32,
) -> Result<EditView, LedgerError> {
    let since = now - chrono::Duration::days(i64::from(days));
    let mut view = EditView {
        in_force: in_force.version.clone(),
        refused,
        // As an operator would type it from where the daemon runs.
        staged_dir: std::env::current_dir()
            .ok()
            .and_then(|cwd| staged_dir.strip_prefix(cwd).ok())
            .unwrap_or(staged_dir)
            .display()
            .to_string(),
        staged: std::fs::symlink_metadata(staged_dir).is_ok_and(|m| m.is_dir()),
        version: None,
        problems: Vec::new(),
        since: crate::ledger::timestamp(since),
        until: crate::ledger::timestamp(now),
        impact: None,
    };
    if !view.staged {
        return Ok(view);
    }
    match RuleSet::load(staged_dir) {
        Err(p) => view.problems = p.0.iter().map(ToString::to_string).collect(),
        Ok(edited) => {
            view.version = Some(edited.version.clone());
            if edited.version != in_force.version {
                view.impact = Some(assess(reader, spool, in_force, &edited, (since, now), 10)?);
            }
        }
    }
    Ok(view)
}
