//! Products: where each forecast that must be issued stands, live, and its fallback.
//!
//! In: the products (`rules/products.toml`), the routes and models (the chain to each product),
//! the ledger (arrivals, runs, what each issue was made from), the daemon's clock. Out: a
//! [`ProductView`] per product on the board (its cycles around now, its punctuality), which the
//! alerts, the web client and `/metrics` read; and, when a product is not issued at its
//! fallback time with a feed still missing or at risk, the fallback: the model downstream of the
//! cause (or of the first missing feed) run now with the inputs that have arrived, as an audited trigger requested by `fallback <product> <deadline>`, so that the issue
//! it leads to is marked degraded. Never: a write to the ledger but through the control, a
//! replay's files or runs counted toward a deadline, a fallback fired twice for one deadline.
//!
//! Cycles: an issue of a product due on a schedule belongs to the deadline whose cycle holds its
//! time0 (after the previous deadline, up to this one); it is the first succeeded operational run
//! of the product's model with such a time0. A feed's arrival counts toward a cycle from an hour
//! before its earliest arrival seen in past cycles. What past cycles teach (when each feed
//! arrived, relative to its deadline, in the issues' provenance; how long each model ran) is
//! read once per deadline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::board::Board;
pub use crate::board::{Cycle, ProductView};
use crate::config::products::{Due, Product};
use crate::config::routes::Action;
use crate::config::rules::RuleSet;
use crate::config::{Shared, current};
use crate::ledger::products::RunTimes;
use crate::ledger::{Ledger, LedgerError, timestamp};
use crate::supervise::deadline::{Kind, Prediction, Step, predict};

/// Past cycles learned from.
pub const CYCLES: usize = 30;
/// Time between two looks (the daemon's clock may run faster than the wall's).
pub const EVERY: Duration = Duration::from_millis(100);
/// Past issues needed before a product is predicted (until then it is "learning": no risk, no
/// alert, no fallback; a product just declared knows nothing of its feeds yet).
pub const LEARN_FROM: usize = 3;
/// How a fallback run is requested: `(who, model, time0)`, answered in words (the run started,
/// or why none could). The daemon passes the operators' trigger, so that the request is audited
/// like theirs.
pub type Trigger = Box<dyn Fn(&str, &str, Option<DateTime<Utc>>) -> String + Send>;

/// How long firing a fallback may take (the control waits up to 30 s for the dispatcher).
const FALLBACK_ANSWER: Duration = Duration::from_secs(40);
/// Who requests a fallback run: `fallback <product> <deadline>`.
pub const FALLBACK: &str = "fallback";

/// One link of the chain to a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Files from outside the chain, delivered to a model's slot by a route.
    Feed {
        /// The route's name (what operators call the feed).
        name: String,
        /// The model fed.
        model: String,
        /// Its slot.
        slot: String,
    },
    /// A run of a model, once the links it waits for are done.
    Run {
        /// The model.
        model: String,
        /// The links it waits for (earlier indices).
        after: Vec<usize>,
    },
}

impl Link {
    /// What operators call it.
    pub fn name(&self) -> &str {
        match self {
            Link::Feed { name, .. } => name,
            Link::Run { model, .. } => model,
        }
    }
}

/// The chain to a model's runs, upstream first, the model last: each input slot is fed by the
/// model whose outputs go to the channel of the route delivering to it, or else by that route
/// (a feed). Slots no route delivers to are left out; a loop is cut where it closes.
pub fn chain_of(rules: &RuleSet, model: &str) -> Vec<Link> {
    fn add(
        rules: &RuleSet,
        model: &str,
        out: &mut Vec<Link>,
        on: &mut Vec<String>,
    ) -> Option<usize> {
        let m = rules.models.get(model)?;
        if on.iter().any(|o| o == model) {
            return None;
        }
        on.push(model.to_string());
        let mut after = Vec::new();
        for slot in m.inputs.keys() {
            let routes: Vec<_> = rules
                .routes
                .routes
                .iter()
                .filter(|r| {
                    r.actions.iter().any(|a| {
                        matches!(a, Action::Deliver { model: dm, slot: ds } if dm == model && ds == slot)
                    })
                })
                .collect();
            let upstream = routes.iter().find_map(|r| {
                let channel = r.channel.as_ref()?;
                rules
                    .models
                    .values()
                    .find(|u| u.outputs.as_ref().is_some_and(|o| &o.channel == channel))
                    .map(|u| u.name.clone())
            });
            match upstream {
                Some(u) => after.extend(add(rules, &u, out, on)),
                None => {
                    if let Some(r) = routes.first() {
                        out.push(Link::Feed {
                            name: r.name.clone(),
                            model: model.to_string(),
                            slot: slot.clone(),
                        });
                        after.push(out.len() - 1);
                    }
                }
            }
        }
        on.pop();
        out.push(Link::Run {
            model: model.to_string(),
            after,
        });
        Some(out.len() - 1)
    }
    let mut out = Vec::new();
    add(rules, model, &mut out, &mut Vec::new());
    out
}

/// What is read once per deadline of a product.
#[derive(Debug, Default)]
struct Learned {
    deadline: Option<DateTime<Utc>>,
    rules: String,
    /// For a product due after time0: its latest succeeded run and the rules' version.
    key: String,
    /// The latest deadlines passed, oldest first.
    past: Vec<DateTime<Utc>>,
    /// Per feed link: past arrivals, in seconds after their deadlines.
    arrivals: BTreeMap<usize, Vec<f64>>,
    /// Per model: past durations from queued to ended, in seconds.
    durations: BTreeMap<String, Vec<f64>>,
    history: Vec<Cycle>,
}

/// Starts the products stage; it ends when `stop` is raised.
pub fn spawn(
    db: PathBuf,
    rules: Shared<RuleSet>,
    board: Arc<Board>,
    trigger: Trigger,
    stop: Arc<AtomicBool>,
    clock: crate::clock::Clock,
) -> std::thread::JoinHandle<()> {
    // A fallback waits for the dispatcher's answer (at most half a minute): not stuck meanwhile.
    board
        .health()
        .expect("products", crate::health::STUCK_AFTER.max(FALLBACK_ANSWER));
    let health = Arc::clone(board.health());
    crate::health::spawn("products", health, move || {
        let reader = match Ledger::open_readonly(&db) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "products: cannot read the ledger");
                return;
            }
        };
        let mut learned: BTreeMap<String, Learned> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            board.health().beat("products");
            let rules = current(&rules);
            let now = clock.now();
            let mut views = Vec::new();
            let mut fault = None;
            for p in rules.products.values() {
                let l = learned.entry(p.name.clone()).or_default();
                match look(&reader, &rules, p, l, now, &trigger) {
                    Ok(v) => views.push(v),
                    Err(e) => {
                        fault.get_or_insert(format!("cannot read the ledger: {e}"));
                    }
                }
            }
            learned.retain(|k, _| rules.products.contains_key(k));
            // A failed read keeps what was shown (never a verdict on incomplete facts).
            if fault.is_none() {
                if views != board.products() {
                    board.publish("products", "");
                }
                board.set_products(views);
            }
            board.health().fault("products", fault);
            std::thread::sleep(EVERY);
        }
    })
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// Looks at one product now: its cycles, and the fallback if it is due.
fn look(
    reader: &Ledger,
    rules: &RuleSet,
    p: &Product,
    learned: &mut Learned,
    now: DateTime<Utc>,
    trigger: &Trigger,
) -> Result<ProductView, LedgerError> {
    let chain = chain_of(rules, &p.model);
    let mut view = ProductView {
        name: p.name.clone(),
        description: p.description.clone(),
        model: p.model.clone(),
        due: p.due.describe(),
        risk: p.risk,
        chain: chain.iter().map(|l| l.name().to_string()).collect(),
        cycles: Vec::new(),
        upcoming: Vec::new(),
        history: Vec::new(),
        punctuality: None,
    };
    match &p.due {
        Due::Schedule { .. } => {
            let Some(deadline) = p.due.next_after(now) else {
                return Ok(view);
            };
            if learned.deadline != Some(deadline) || learned.rules != rules.version {
                let past = p.due.latest(now, CYCLES + 2);
                *learned = learn(reader, p, &chain, &past, now)?;
                learned.past = past;
                learned.deadline = Some(deadline);
                learned.rules = rules.version.clone();
            }
            let look = Look {
                reader,
                p,
                chain: &chain,
                learned,
                now,
                trigger,
            };
            look.scheduled(deadline, &mut view)?;
        }
        Due::AfterTime0(delay) => {
            learned.rules.clone_from(&rules.version);
            after_time0(reader, p, &chain, *delay, now, learned, &mut view)?
        }
    }
    Ok(view)
}

/// What a look at one product due on a schedule goes by.
struct Look<'a> {
    reader: &'a Ledger,
    p: &'a Product,
    chain: &'a [Link],
    learned: &'a Learned,
    now: DateTime<Utc>,
    trigger: &'a Trigger,
}

impl Look<'_> {
    fn scheduled(
        &self,
        deadline: DateTime<Utc>,
        view: &mut ProductView,
    ) -> Result<(), LedgerError> {
        let (p, learned, now) = (self.p, self.learned, self.now);
        let past = &learned.past;
        let previous = past.last().copied();
        view.history = learned.history.clone();
        let on_time = view.history.iter().filter(|c| c.state == "issued").count();
        view.punctuality =
            (!view.history.is_empty()).then(|| on_time as f64 / view.history.len() as f64);
        view.upcoming = p
            .due
            .between(deadline, now + chrono::Duration::days(1), 48)
            .iter()
            .map(|t| timestamp(*t))
            .collect();
        // The previous deadline's cycle, while it matters: late, or issued degraded with a feed
        // still missing.
        if let (Some(prev), Some(before)) = (previous, past.iter().rev().nth(1).copied()) {
            let c = self.cycle(before, prev)?;
            view.cycles.push(c);
        }
        let start = previous.unwrap_or(deadline - chrono::Duration::days(1));
        let c = self.cycle(start, deadline)?;
        view.cycles.push(c);
        Ok(())
    }
}

/// Whether a cycle's fallback is due: from its time before the deadline until the deadline, with
/// a feed still missing or the issue at risk. Never after the deadline: a daemon started after
/// it (or one that learns only then) does not issue a forecast for a cycle already gone.
fn fallback_due(
    c: &Cycle,
    before: std::time::Duration,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    (c.state == "at risk" || !c.waiting_for.is_empty())
        && now >= deadline - chrono::Duration::from_std(before).unwrap_or_default()
        && now < deadline
}

/// What past cycles teach: each feed's arrivals (from the issues' provenance), each model's
/// durations, each cycle's punctuality.
fn learn(
    reader: &Ledger,
    p: &Product,
    chain: &[Link],
    past: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<Learned, LedgerError> {
    let mut l = Learned::default();
    for w in past.windows(2) {
        let (from, deadline) = (w[0], w[1]);
        let c = match reader.issue_between(&p.model, from, deadline)? {
            Some(run) => issued(reader, chain, &run, deadline, &mut l.arrivals)?,
            None => Cycle {
                state: "missed".into(),
                ..blank(deadline)
            },
        };
        l.history.push(c);
    }
    for link in chain {
        if let Link::Run { model, .. } = link {
            let runs =
                reader.succeeded_between(model, now - chrono::Duration::days(60), now, 10_000)?;
            let d = runs
                .iter()
                .rev()
                .take(5 * CYCLES)
                .filter_map(|r| r.ended_at.map(|e| secs(e - r.queued_at)))
                .collect();
            l.durations.insert(model.clone(), d);
        }
    }
    Ok(l)
}

/// Walks what a run was made from: each feed's arrival relative to `deadline` is learned, and
/// whether a fallback run is among its makers.
fn provenance(
    reader: &Ledger,
    chain: &[Link],
    run: &RunTimes,
    deadline: DateTime<Utc>,
    arrivals: &mut BTreeMap<usize, Vec<f64>>,
    degraded: &mut bool,
    depth: usize,
) -> Result<(), LedgerError> {
    if run
        .requested_by
        .as_deref()
        .and_then(|w| w.strip_prefix(FALLBACK))
        .is_some_and(|rest| rest.starts_with(' '))
    {
        *degraded = true;
    }
    if depth > 8 {
        return Ok(());
    }
    for input in reader.input_times(&run.id)? {
        match &input.produced_by {
            Some(maker) => {
                if let Some(r) = reader.run_times(maker)? {
                    provenance(reader, chain, &r, deadline, arrivals, degraded, depth + 1)?;
                }
            }
            None => {
                let feed = chain.iter().position(|l| {
                    matches!(l, Link::Feed { model, slot, .. } if *model == run.model && *slot == input.slot)
                });
                if let Some(i) = feed {
                    arrivals
                        .entry(i)
                        .or_default()
                        .push(secs(input.received_at - deadline));
                }
            }
        }
    }
    Ok(())
}

/// A cycle issued by `run`: on time or late, degraded when a fallback run is among what it was
/// made from (each feed's arrival in it learned into `arrivals`).
fn issued(
    reader: &Ledger,
    chain: &[Link],
    run: &RunTimes,
    deadline: DateTime<Utc>,
    arrivals: &mut BTreeMap<usize, Vec<f64>>,
) -> Result<Cycle, LedgerError> {
    let ended = run.ended_at.unwrap_or(deadline);
    let mut degraded = false;
    provenance(reader, chain, run, deadline, arrivals, &mut degraded, 0)?;
    Ok(Cycle {
        state: if ended <= deadline {
            "issued"
        } else {
            "issued late"
        }
        .into(),
        issued_at: Some(timestamp(ended)),
        run: Some(run.id.clone()),
        time0: Some(timestamp(run.time0)),
        degraded,
        ..blank(deadline)
    })
}

/// A cycle not issued yet, as predicted at `now`: late past its deadline, at risk from `risk`,
/// on track otherwise.
fn predicted(
    c: &mut Cycle,
    prediction: &Prediction,
    risk: f64,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    c.miss = Some(prediction.miss);
    c.predicted = Some(timestamp(prediction.ready));
    c.predicted_p90 = Some(timestamp(prediction.ready_p90));
    c.cause.clone_from(&prediction.cause);
    c.state = if now > deadline {
        "late"
    } else if prediction.miss >= risk {
        "at risk"
    } else {
        "on track"
    }
    .into();
}

fn blank(deadline: DateTime<Utc>) -> Cycle {
    Cycle {
        deadline: timestamp(deadline),
        state: String::new(),
        miss: None,
        predicted: None,
        predicted_p90: None,
        cause: None,
        waiting_for: Vec::new(),
        issued_at: None,
        run: None,
        time0: None,
        degraded: false,
        fallback: None,
    }
}

impl Look<'_> {
    /// One cycle `(from, deadline]` at `now`: issued, or predicted; its fallback fired if due.
    fn cycle(&self, from: DateTime<Utc>, deadline: DateTime<Utc>) -> Result<Cycle, LedgerError> {
        let (reader, p, chain, learned, now) =
            (self.reader, self.p, self.chain, self.learned, self.now);
        let mut c = blank(deadline);
        let who = format!("{FALLBACK} {} {}", p.name, timestamp(deadline));
        // The steps, as they stand.
        let mut steps = Vec::with_capacity(chain.len());
        for (i, link) in chain.iter().enumerate() {
            let kind = match link {
                Link::Feed { model, slot, name } => {
                    let history = learned.arrivals.get(&i).cloned().unwrap_or_default();
                    let earliest = history.iter().copied().fold(f64::INFINITY, f64::min);
                    let counts_from = if earliest.is_finite() {
                        (deadline + chrono::Duration::milliseconds((earliest * 1000.0) as i64)
                            - chrono::Duration::hours(1))
                        .max(from)
                    } else {
                        from
                    };
                    let arrived = reader.latest_delivery_after(model, slot, counts_from)?;
                    if arrived.is_none() {
                        c.waiting_for.push(name.clone());
                    }
                    Kind::Feed { arrived, history }
                }
                Link::Run { model, after } => {
                    let run = reader.latest_run_after(model, from)?;
                    let (started, ended) = match &run {
                        Some(r) if r.state == "succeeded" => (r.started_at, r.ended_at),
                        Some(r) if r.state == "running" => (r.started_at, None),
                        _ => (None, None),
                    };
                    Kind::Run {
                        after: after.clone(),
                        started,
                        ended,
                        durations: learned.durations.get(model).cloned().unwrap_or_default(),
                    }
                }
            };
            steps.push(Step {
                name: link.name().to_string(),
                kind,
            });
        }
        let fired = reader.requested_by_exists(&who)?;
        if fired {
            c.fallback = Some(format!("requested by `{who}`"));
        }
        if let Some(run) = reader.issue_between(&p.model, from, deadline)? {
            return Ok(Cycle {
                fallback: c.fallback,
                waiting_for: c.waiting_for,
                ..issued(reader, chain, &run, deadline, &mut BTreeMap::new())?
            });
        }
        if learned.history.iter().filter(|c| c.run.is_some()).count() < LEARN_FROM {
            c.state = if now > deadline {
                "not issued"
            } else {
                "learning"
            }
            .into();
            return Ok(c);
        }
        let prediction: Prediction = predict(&steps, deadline, now);
        predicted(&mut c, &prediction, p.risk, deadline, now);
        if let Some(before) = p.fallback
            && !fired
            && fallback_due(&c, before, deadline, now)
        {
            c.fallback = Some(self.fallback(&prediction, &c.waiting_for, deadline, &who));
        }
        Ok(c)
    }

    /// Fires the fallback: the run downstream of the cause, now, with the inputs that have arrived
    /// and the time0 this cycle's issue would have had.
    fn fallback(
        &self,
        prediction: &Prediction,
        waiting_for: &[String],
        deadline: DateTime<Utc>,
        who: &str,
    ) -> String {
        let (p, chain, learned) = (self.p, self.chain, self.learned);
        let cause = prediction
            .cause
            .as_ref()
            .or(waiting_for.first())
            .and_then(|c| chain.iter().position(|l| l.name() == c));
        let model = cause
            .and_then(|c| {
                chain.iter().skip(c + 1).find_map(|l| match l {
                    Link::Run { model, after } if after.contains(&c) => Some(model.clone()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| p.model.clone());
        // The time0 of the last issue, a cycle on: one forecast a cycle, however degraded.
        let time0 = learned
            .history
            .iter()
            .rev()
            .find_map(|c| c.run.as_ref().map(|_| c))
            .and_then(|c| {
                let their = DateTime::parse_from_rfc3339(&c.deadline).ok()?;
                let time0 = c.time0.as_ref()?;
                let t0 = DateTime::parse_from_rfc3339(time0).ok()?;
                Some(t0.with_timezone(&Utc) + (deadline - their.with_timezone(&Utc)))
            });
        let said = (self.trigger)(who, &model, time0);
        tracing::warn!(product = %p.name, %model, "fallback fired: {said}");
        format!("{model}: {said}")
    }
}

/// A product due a delay after time0: its latest run, issued or running.
fn after_time0(
    reader: &Ledger,
    p: &Product,
    chain: &[Link],
    delay: Duration,
    now: DateTime<Utc>,
    learned: &mut Learned,
    view: &mut ProductView,
) -> Result<(), LedgerError> {
    let delay = chrono::Duration::from_std(delay).unwrap_or_default();
    let recent =
        reader.succeeded_between(&p.model, now - chrono::Duration::days(60), now, 10_000)?;
    // Read again only when a run has succeeded since (or the rules changed).
    let key = format!(
        "{} {}",
        recent.last().map_or("", |r| r.id.as_str()),
        learned.rules
    );
    if learned.key != key {
        learned.history.clear();
        for r in recent.iter().rev().take(CYCLES).rev() {
            let c = issued(reader, chain, r, r.time0 + delay, &mut BTreeMap::new())?;
            learned.history.push(c);
        }
        learned.key = key;
    }
    view.history = learned.history.clone();
    let on_time = view.history.iter().filter(|c| c.state == "issued").count();
    view.punctuality =
        (!view.history.is_empty()).then(|| on_time as f64 / view.history.len() as f64);
    let Some(run) = reader.latest_run_after(&p.model, now - chrono::Duration::days(60))? else {
        return Ok(());
    };
    if run.state == "succeeded" {
        if let Some(last) = view.history.last() {
            view.cycles.push(last.clone());
        }
        return Ok(());
    }
    let deadline = run.time0 + delay;
    let durations: Vec<f64> = recent
        .iter()
        .filter_map(|r| r.ended_at.map(|e| secs(e - r.queued_at)))
        .collect();
    let steps = [Step {
        name: p.model.clone(),
        kind: Kind::Run {
            after: Vec::new(),
            started: run.started_at.or(Some(run.queued_at)),
            ended: None,
            durations,
        },
    }];
    let prediction = predict(&steps, deadline, now);
    let mut c = blank(deadline);
    c.run = Some(run.id);
    predicted(&mut c, &prediction, p.risk, deadline, now);
    view.cycles.push(c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_rules() -> RuleSet {
        RuleSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"))
            .expect("the repository's rules")
    }

    #[test]
    fn the_chain_to_the_sample_forecast_is_both_observations_then_both_models() {
        let rules = repository_rules();
        let chain = chain_of(&rules, "propagation");
        assert_eq!(
            chain,
            vec![
                Link::Feed {
                    name: "observed-discharge".into(),
                    model: "rainfall-runoff".into(),
                    slot: "discharge".into()
                },
                Link::Feed {
                    name: "observed-rainfall".into(),
                    model: "rainfall-runoff".into(),
                    slot: "rain".into()
                },
                Link::Run {
                    model: "rainfall-runoff".into(),
                    after: vec![0, 1]
                },
                Link::Run {
                    model: "propagation".into(),
                    after: vec![2]
                },
            ]
        );
        assert!(chain_of(&rules, "nowhere").is_empty());
        assert_eq!(rules.products["downstream-forecast"].model, "propagation");
    }

    fn cycle(state: &str, degraded: bool, waiting: &[&str]) -> Cycle {
        let mut c = blank(DateTime::<Utc>::UNIX_EPOCH);
        c.state = state.into();
        c.degraded = degraded;
        c.cause = Some("observed-discharge".into());
        c.miss = Some(0.75);
        c.waiting_for = waiting.iter().map(|w| w.to_string()).collect();
        c
    }

    #[test]
    fn a_fallback_is_due_from_its_time_before_the_deadline_until_the_deadline_only() {
        let deadline = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1);
        let before = std::time::Duration::from_secs(45 * 60);
        let at = |minutes: i64| deadline + chrono::Duration::minutes(minutes);
        let waiting = cycle("on track", false, &["observed-discharge"]);
        let at_risk = cycle("at risk", false, &[]);
        let fine = cycle("on track", false, &[]);
        assert!(!fallback_due(&waiting, before, deadline, at(-46)));
        assert!(fallback_due(&waiting, before, deadline, at(-45)));
        assert!(fallback_due(&at_risk, before, deadline, at(-1)));
        assert!(!fallback_due(&fine, before, deadline, at(-10)));
        // The deadline gone (a daemon started after it): never.
        let late = cycle("late", false, &["observed-discharge"]);
        assert!(!fallback_due(&late, before, deadline, at(0)));
        assert!(!fallback_due(&late, before, deadline, at(12 * 60)));
    }

    #[test]
    fn an_alarm_is_at_risk_late_or_degraded_with_a_feed_still_missing_and_nothing_else() {
        let view = |cycles: Vec<Cycle>| ProductView {
            name: "bulletin".into(),
            description: None,
            model: "propagation".into(),
            due: String::new(),
            risk: 0.7,
            chain: Vec::new(),
            cycles,
            upcoming: Vec::new(),
            history: Vec::new(),
            punctuality: None,
        };
        let alarm = |cycles| view(cycles).alarm();
        assert_eq!(alarm(vec![cycle("on track", false, &[])]), None);
        assert_eq!(alarm(vec![cycle("issued", false, &[])]), None);
        assert_eq!(alarm(vec![cycle("learning", false, &["a"])]), None);
        assert_eq!(alarm(vec![cycle("issued", true, &[])]), None);
        let risk = alarm(vec![cycle("at risk", false, &["observed-discharge"])]).unwrap();
        assert!(risk.contains("at risk (75% chance of missing"), "{risk}");
        assert!(risk.contains("cause: observed-discharge"), "{risk}");
        let degraded = alarm(vec![
            cycle("issued", true, &["observed-discharge"]),
            cycle("on track", false, &[]),
        ])
        .unwrap();
        assert!(degraded.contains("issued degraded"), "{degraded}");
        assert!(
            alarm(vec![cycle("late", false, &[])])
                .unwrap()
                .contains("is late")
        );
    }
}
