//! Trigger: which runs to start now, from the deliveries waiting for a model. Pure: the waiting
//! deliveries and the clock come in, decisions go out; the dispatcher carries them out.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::model::{Model, Trigger};
use crate::id::ClaimId;
use crate::ledger::runs::Pending;

/// What to do with waiting deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Start one run with these inputs.
    Start(Vec<Pending>),
    /// These waited longer than the join window: give them up, with the reason.
    Expire(Vec<Pending>, String),
}

fn arrived(p: &Pending) -> DateTime<Utc> {
    ClaimId::parse(&p.submission)
        .map(|c| c.time())
        .unwrap_or_default()
}

/// Decides, for one model, what to do with `pending` (oldest first) at `now`, starting at most
/// `free` runs. Schedule triggers are not decided here (they fire on the clock, not on arrival).
pub fn plan(model: &Model, pending: &[Pending], now: DateTime<Utc>, free: usize) -> Vec<Plan> {
    let mut plans = Vec::new();
    if free == 0 && !matches!(model.trigger, Trigger::Join { .. }) {
        return plans;
    }
    match &model.trigger {
        Trigger::Arrival => {
            for p in pending.iter().take(free) {
                plans.push(Plan::Start(vec![p.clone()]));
            }
        }
        Trigger::Batch { count, wait } => {
            let mut rest: &[Pending] = pending;
            let wait = chrono::Duration::from_std(*wait).unwrap_or_default();
            while plans.len() < free && !rest.is_empty() {
                if rest.len() >= *count {
                    plans.push(Plan::Start(rest[..*count].to_vec()));
                    rest = &rest[*count..];
                } else if now - arrived(&rest[0]) >= wait {
                    plans.push(Plan::Start(rest.to_vec()));
                    rest = &[];
                } else {
                    break;
                }
            }
        }
        Trigger::Join { window } => {
            let window = chrono::Duration::from_std(*window).unwrap_or_default();
            let mut left: Vec<Pending> = pending.to_vec();
            loop {
                let complete = model
                    .inputs
                    .values()
                    .filter(|s| s.required)
                    .all(|s| left.iter().any(|p| p.slot == s.name));
                if !complete || plans.len() >= free {
                    break;
                }
                // The oldest waiting file of each slot makes the run (the dispatcher gives a join
                // only deliveries whose elder files are all decided: see
                // `Ledger::pending_deliveries`).
                let mut inputs = Vec::new();
                for slot in model.inputs.values() {
                    if let Some(i) = left.iter().position(|p| p.slot == slot.name) {
                        inputs.push(left.remove(i));
                    }
                }
                plans.push(Plan::Start(inputs));
            }
            let (expired, _): (Vec<Pending>, Vec<Pending>) =
                left.into_iter().partition(|p| now - arrived(p) > window);
            if !expired.is_empty() {
                let missing: Vec<&str> = model
                    .inputs
                    .values()
                    .filter(|s| s.required && !pending.iter().any(|p| p.slot == s.name))
                    .map(|s| s.name.as_str())
                    .collect();
                let why = format!(
                    "join window of {}s ended without {}",
                    window.num_seconds(),
                    if missing.is_empty() {
                        "a complete set of inputs".to_string()
                    } else {
                        missing.join(", ")
                    }
                );
                plans.push(Plan::Expire(expired, why));
            }
        }
        Trigger::Schedule { .. } => {}
    }
    plans
}

/// Whether a failed run whose attempt was `attempt` (1 for the first) is retried, and when: not
/// once the model's retries are spent; otherwise after the backoff, doubled at each attempt.
pub fn retry(
    retries: &crate::config::model::Retries,
    attempt: i64,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let attempt = u32::try_from(attempt.max(0)).unwrap_or(u32::MAX);
    (attempt <= retries.max).then(|| retry_at(now, retries.backoff, attempt))
}

/// When a failed run's attempt `attempt` is retried: `backoff` doubled at each attempt after
/// the first, never more than [`crate::config::model::MAX_DURATION`] after `now`, and never an overflow
/// whatever the rules say.
pub fn retry_at(now: DateTime<Utc>, backoff: Duration, attempt: u32) -> DateTime<Utc> {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let wait = backoff
        .checked_mul(factor)
        .unwrap_or(crate::config::model::MAX_DURATION)
        .min(crate::config::model::MAX_DURATION);
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|w| now.checked_add_signed(w))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    fn model(trigger: &str) -> Model {
        let text = format!(
            "command = [\"m\"]\n[inputs.rain]\nformats = [\"pi-timeseries\"]\n\
             [inputs.flow]\nformats = [\"pi-timeseries\"]\n\
             [inputs.extra]\nformats = [\"pi-timeseries\"]\nrequired = false\n[trigger]\n{trigger}\n"
        );
        let mut p = Vec::new();
        Model::compile("m", Path::new("m.toml"), &text, &mut p).expect("model")
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn pending(slot: &str, s: i64) -> Pending {
        Pending {
            submission: crate::id::ClaimId(at(s).timestamp_micros()).text(),
            slot: slot.into(),
            stored: String::new(),
            original: b"x.xml".to_vec(),
        }
    }

    #[test]
    fn a_join_starts_when_every_required_slot_is_filled() {
        let m = model("kind = \"join\"\nwindow = \"10m\"");
        let waiting = vec![pending("rain", 0)];
        assert!(plan(&m, &waiting, at(60), 1).is_empty());
        let both = vec![pending("rain", 0), pending("flow", 30)];
        let plans = plan(&m, &both, at(60), 1);
        // One input per slot, in slot order.
        assert_eq!(
            plans,
            vec![Plan::Start(vec![both[1].clone(), both[0].clone()])]
        );
    }

    #[test]
    fn a_join_window_that_ends_expires_what_waited() {
        let m = model("kind = \"join\"\nwindow = \"10m\"");
        let waiting = vec![pending("rain", 0)];
        let plans = plan(&m, &waiting, at(601), 1);
        let [Plan::Expire(gone, why)] = plans.as_slice() else {
            panic!("{plans:?}")
        };
        assert_eq!(gone, &waiting);
        assert!(why.contains("flow"), "{why}");
    }

    #[test]
    fn a_batch_runs_at_its_count_or_after_its_wait() {
        let m = model("kind = \"batch\"\ncount = 3\nwait = \"5m\"");
        let two = vec![pending("rain", 0), pending("flow", 10)];
        assert!(plan(&m, &two, at(60), 2).is_empty());
        assert_eq!(plan(&m, &two, at(300), 2), vec![Plan::Start(two.clone())]);
        let four: Vec<Pending> = (0..4).map(|i| pending("rain", i)).collect();
        assert_eq!(
            plan(&m, &four, at(10), 1),
            vec![Plan::Start(four[..3].to_vec())]
        );
    }

    #[test]
    fn arrival_runs_once_per_file_within_the_concurrency() {
        let m = model("kind = \"arrival\"");
        let three: Vec<Pending> = (0..3).map(|i| pending("rain", i)).collect();
        assert_eq!(plan(&m, &three, at(10), 2).len(), 2);
    }
}

/// For a schedule trigger: the scheduled time to fire now, if one fell in `(last, now]`, and how
/// many earlier ones in that interval are skipped (after an outage only the latest fires: a
/// forecast for a time already past is of no use).
pub fn schedule_due(
    model: &Model,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, usize)> {
    let mut due = None;
    let mut skipped = 0;
    let mut t = last;
    while let Some(next) = model.trigger.next_after(t) {
        if next > now {
            break;
        }
        if due.is_some() {
            skipped += 1;
        }
        due = Some(next);
        t = next;
        if skipped > 100_000 {
            break;
        }
    }
    due.map(|d| (d, skipped))
}

#[cfg(test)]
mod schedule_tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    #[test]
    fn a_schedule_in_paris_fires_at_local_times_across_the_spring_change() {
        let text = "command = [\"m\"]\n[trigger]\nkind = \"schedule\"\ncron = \"0 * * * *\"\ntimezone = \"Europe/Paris\"\n";
        let mut p = Vec::new();
        let m = Model::compile("m", Path::new("m.toml"), text, &mut p).unwrap();
        // Hourly in Paris on 2026-03-29: 01:00 CET is 00:00Z; 02:00 does not exist; 03:00 CEST is
        // 01:00Z: one hour of UTC between them, as between every other pair.
        let mut last = Utc.with_ymd_and_hms(2026, 3, 28, 23, 30, 0).unwrap();
        let mut fired = Vec::new();
        let mut now = last;
        for _ in 0..12 {
            now += chrono::Duration::minutes(20);
            if let Some((t, skipped)) = schedule_due(&m, last, now) {
                assert_eq!(skipped, 0);
                fired.push(t);
                last = t;
            }
        }
        let utc = |h| Utc.with_ymd_and_hms(2026, 3, 29, h, 0, 0).unwrap();
        assert_eq!(fired, vec![utc(0), utc(1), utc(2), utc(3)]);
        let paris: Vec<String> = fired
            .iter()
            .map(|t| {
                t.with_timezone(&chrono_tz::Europe::Paris)
                    .format("%H:%M %Z")
                    .to_string()
            })
            .collect();
        assert_eq!(
            paris,
            vec!["01:00 CET", "03:00 CEST", "04:00 CEST", "05:00 CEST"]
        );
    }

    #[test]
    fn after_an_outage_only_the_latest_scheduled_time_fires() {
        let text = "command = [\"m\"]\n[trigger]\nkind = \"schedule\"\ncron = \"*/10 * * * *\"\n";
        let mut p = Vec::new();
        let m = Model::compile("m", Path::new("m.toml"), text, &mut p).unwrap();
        let last = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 13, 5, 0).unwrap();
        assert_eq!(
            schedule_due(&m, last, now),
            Some((Utc.with_ymd_and_hms(2026, 11, 28, 13, 0, 0).unwrap(), 5))
        );
        assert_eq!(schedule_due(&m, now, now), None);
    }

    #[test]
    fn a_retry_backoff_doubles_and_never_overflows() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let m = |s| std::time::Duration::from_secs(s);
        assert_eq!(retry_at(now, m(30), 1), now + chrono::Duration::seconds(30));
        assert_eq!(
            retry_at(now, m(30), 3),
            now + chrono::Duration::seconds(120)
        );
        let far = retry_at(now, crate::config::model::MAX_DURATION, 40);
        assert_eq!(far, now + chrono::Duration::days(366));
        assert_eq!(
            retry_at(DateTime::<Utc>::MAX_UTC, m(1), 1),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn a_failed_run_is_retried_by_its_policy_and_then_no_more() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let policy = crate::config::model::Retries {
            max: 2,
            backoff: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            retry(&policy, 1, now),
            Some(now + chrono::Duration::seconds(60))
        );
        assert_eq!(
            retry(&policy, 2, now),
            Some(now + chrono::Duration::seconds(120))
        );
        assert_eq!(retry(&policy, 3, now), None);
        let none = crate::config::model::Retries {
            max: 0,
            backoff: std::time::Duration::from_secs(60),
        };
        assert_eq!(retry(&none, 1, now), None);
        assert_eq!(retry(&policy, i64::MAX, now), None);
    }
}
