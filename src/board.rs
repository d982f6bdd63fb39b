//! The board: what the running daemon shows its operators, live — pauses, files waiting in
//! `incoming/`, running models, the last refused rule edit, alerts — and the event bus that tells
//! the web client something changed.
//!
//! Every stage writes its own part; the web layer and the alert loop read it. Nothing here is the
//! record (the ledger is); it is the daemon's memory of the present.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};

pub use crate::ledger::audit::Pause;

/// A rule edit that was refused, kept until a good edit is read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    /// When it was read.
    pub at: String,
    /// Every problem, with file and line.
    pub problems: Vec<String>,
}

/// An alert raised by [`crate::supervise::alerts`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    /// late_feed, unrouted, failed_run, product, refused_rules, low_disk, stage.
    pub kind: String,
    /// What it is about: a channel, a model, the rules, the spool.
    pub subject: String,
    /// One sentence for a person.
    pub message: String,
    /// When it was first raised.
    pub since: String,
    /// The web client's page of its subject (`#/run/ID`, `#/files?channel=…`).
    pub link: String,
}

/// Something changed: the web client refreshes what it shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// files, run, control, alert, rules.
    pub kind: &'static str,
    /// The file, run, model or channel concerned, if one.
    pub id: String,
}

/// The shared board.
#[derive(Debug)]
pub struct Board {
    paused_models: RwLock<BTreeMap<String, Pause>>,
    paused_channels: RwLock<BTreeMap<String, Pause>>,
    waiting: Mutex<BTreeMap<String, usize>>,
    running: Mutex<BTreeMap<String, usize>>,
    refused: Mutex<Option<Refused>>,
    alerts: Mutex<Vec<Alert>>,
    rules_loaded: Mutex<String>,
    /// Per traffic (operational, replay), then channel, then outcome.
    decided: Mutex<BTreeMap<crate::ledger::Traffic, Decided>>,
    operational_claim: std::sync::atomic::AtomicI64,
    events: tokio::sync::broadcast::Sender<Event>,
    health: std::sync::Arc<crate::health::Health>,
    disk: Mutex<DiskUse>,
    pruned: Mutex<Pruned>,
    products: Mutex<Vec<ProductView>>,
}

/// What retention has removed (the ledger keeps their rows): counted once by the retention
/// stage when it starts and kept up to date as it prunes, so that a page never counts them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pruned {
    /// Stored files.
    pub files: i64,
    /// Run folders.
    pub runs: i64,
}

/// The disk use of the spool's areas (its top-level folders), as last measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskUse {
    /// When it was measured.
    pub at: Option<String>,
    /// Per area: allocated bytes and files.
    pub areas: BTreeMap<String, (u64, u64)>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            paused_models: RwLock::default(),
            paused_channels: RwLock::default(),
            waiting: Mutex::default(),
            running: Mutex::default(),
            refused: Mutex::default(),
            alerts: Mutex::default(),
            rules_loaded: Mutex::default(),
            decided: Mutex::default(),
            operational_claim: std::sync::atomic::AtomicI64::new(0),
            events: tokio::sync::broadcast::channel(1024).0,
            health: std::sync::Arc::default(),
            disk: Mutex::default(),
            pruned: Mutex::default(),
            products: Mutex::default(),
        }
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Board {
    /// Records the disk use of the spool's areas.
    pub fn set_disk(&self, d: DiskUse) {
        *lock(&self.disk) = d;
    }

    /// The disk use of the spool's areas, as last measured.
    pub fn disk(&self) -> DiskUse {
        lock(&self.disk).clone()
    }

    /// Where each product stands, as the products stage last saw it.
    pub fn set_products(&self, p: Vec<ProductView>) {
        *lock(&self.products) = p;
    }

    /// Where each product stands.
    pub fn products(&self) -> Vec<ProductView> {
        lock(&self.products).clone()
    }

    /// Records what retention has removed, as counted in the ledger.
    pub fn set_pruned(&self, p: Pruned) {
        *lock(&self.pruned) = p;
    }

    /// Adds what one step of retention removed.
    pub fn add_pruned(&self, files: usize, runs: usize) {
        let mut p = lock(&self.pruned);
        p.files += i64::try_from(files).unwrap_or(i64::MAX);
        p.runs += i64::try_from(runs).unwrap_or(i64::MAX);
    }

    /// What retention has removed.
    pub fn pruned(&self) -> Pruned {
        lock(&self.pruned).clone()
    }

    /// The stages' health.
    pub fn health(&self) -> &std::sync::Arc<crate::health::Health> {
        &self.health
    }

    /// Whether an operator paused this model.
    pub fn model_paused(&self, model: &str) -> bool {
        self.paused_models
            .read()
            .map(|g| g.contains_key(model))
            .unwrap_or(false)
    }

    /// Whether an operator paused this channel.
    pub fn channel_paused(&self, channel: &str) -> bool {
        self.paused_channels
            .read()
            .map(|g| g.contains_key(channel))
            .unwrap_or(false)
    }

    /// Models paused by an operator.
    pub fn paused_models(&self) -> BTreeMap<String, Pause> {
        read(&self.paused_models)
    }

    /// Channels paused by an operator.
    pub fn paused_channels(&self) -> BTreeMap<String, Pause> {
        read(&self.paused_channels)
    }

    /// Pauses (`Some`) or resumes (`None`) a model; true if that changed anything.
    pub fn set_model_pause(&self, model: &str, pause: Option<Pause>) -> bool {
        set(&self.paused_models, model, pause)
    }

    /// Pauses (`Some`) or resumes (`None`) a channel; true if that changed anything.
    pub fn set_channel_pause(&self, channel: &str, pause: Option<Pause>) -> bool {
        set(&self.paused_channels, channel, pause)
    }

    /// Files waiting in `incoming/` per channel, as the intake last counted them.
    pub fn waiting(&self) -> BTreeMap<String, usize> {
        lock(&self.waiting).clone()
    }

    /// Sets the files waiting per channel.
    pub fn set_waiting(&self, waiting: BTreeMap<String, usize>) {
        *lock(&self.waiting) = waiting;
    }

    /// Runs in progress per model.
    pub fn running(&self) -> BTreeMap<String, usize> {
        lock(&self.running).clone()
    }

    /// Counts a run of `model` started (`1`) or ended (`-1`).
    pub fn count_running(&self, model: &str, delta: isize) {
        let mut g = lock(&self.running);
        let n = g
            .get(model)
            .copied()
            .unwrap_or(0)
            .saturating_add_signed(delta);
        if n == 0 {
            g.remove(model);
        } else {
            g.insert(model.to_string(), n);
        }
    }

    /// The last refused rule edit, while no good edit followed.
    pub fn refused(&self) -> Option<Refused> {
        lock(&self.refused).clone()
    }

    /// Records a refused edit (`Some`) or a good one (`None`).
    pub fn set_refused(&self, refused: Option<Refused>) {
        *lock(&self.refused) = refused;
        self.publish("rules", "");
    }

    /// When the rules in force were loaded, and their version.
    pub fn rules_loaded(&self) -> String {
        lock(&self.rules_loaded).clone()
    }

    /// Records when the rules in force were loaded.
    pub fn set_rules_loaded(&self, at: DateTime<Utc>) {
        *lock(&self.rules_loaded) = crate::ledger::timestamp(at);
    }

    /// The alerts in force.
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.alerts).clone()
    }

    /// Replaces the alerts in force; returns those that are new.
    pub fn set_alerts(&self, now: Vec<Alert>) -> Vec<Alert> {
        let mut g = lock(&self.alerts);
        let fresh: Vec<Alert> = now
            .iter()
            .filter(|a| !g.iter().any(|b| b.kind == a.kind && b.subject == a.subject))
            .cloned()
            .collect();
        let changed = g.len() != now.len() || !fresh.is_empty();
        *g = now;
        drop(g);
        if changed {
            self.publish("alert", "");
        }
        fresh
    }

    /// Operational files decided per channel and outcome (archived, rejected, duplicate) since
    /// the ledger began: counted at start, then as files are filed. A replay's never count here.
    pub fn decided(&self) -> Decided {
        self.decided_in(crate::ledger::Traffic::Operational)
    }

    /// Files of one traffic (operational or replay) decided per channel and outcome.
    pub fn decided_in(&self, traffic: crate::ledger::Traffic) -> Decided {
        lock(&self.decided)
            .get(&traffic)
            .cloned()
            .unwrap_or_default()
    }

    /// Counts `n` more files of `channel` decided as `state`, in operational traffic or a
    /// replay's.
    pub fn count_decided(
        &self,
        traffic: crate::ledger::Traffic,
        channel: &str,
        state: &str,
        n: u64,
    ) {
        *lock(&self.decided)
            .entry(traffic)
            .or_default()
            .entry(channel.to_string())
            .or_default()
            .entry(state.to_string())
            .or_default() += n;
    }

    /// Records that operational files were just claimed.
    pub fn operational_claimed(&self) {
        self.operational_claim.store(
            Utc::now().timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether operational files were claimed within `ms` milliseconds: replay work then gives
    /// way.
    pub fn operational_busy(&self, ms: i64) -> bool {
        Utc::now().timestamp_millis()
            - self
                .operational_claim
                .load(std::sync::atomic::Ordering::Relaxed)
            < ms
    }

    /// Tells the web clients that something changed.
    pub fn publish(&self, kind: &'static str, id: &str) {
        let _ = self.events.send(Event {
            kind,
            id: id.to_string(),
        });
    }

    /// Listens to changes.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

fn set(map: &RwLock<BTreeMap<String, Pause>>, name: &str, pause: Option<Pause>) -> bool {
    let mut g = map.write().unwrap_or_else(|p| p.into_inner());
    match pause {
        Some(p) => {
            if g.contains_key(name) {
                false
            } else {
                g.insert(name.to_string(), p);
                true
            }
        }
        None => g.remove(name).is_some(),
    }
}

/// Files decided per channel, then outcome.
pub type Decided = BTreeMap<String, BTreeMap<String, u64>>;

/// One deadline of a product and how it went or is going.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cycle {
    /// When it is due.
    pub deadline: String,
    /// `issued`, `issued late`, `on track`, `at risk`, `late`, `missed`; `learning` and `not
    /// issued` while too few past cycles were issued.
    pub state: String,
    /// The predicted chance of missing, while not issued.
    pub miss: Option<f64>,
    /// The predicted issue time (median), while not issued.
    pub predicted: Option<String>,
    /// Nine in ten predicted by then.
    pub predicted_p90: Option<String>,
    /// The feed or run that makes it late, when it may be.
    pub cause: Option<String>,
    /// The feeds not yet arrived for it.
    pub waiting_for: Vec<String>,
    /// When it was issued, and by which run.
    pub issued_at: Option<String>,
    /// The run that issued it.
    pub run: Option<String>,
    /// Its time0.
    pub time0: Option<String>,
    /// Issued from a fallback run (with the inputs that had arrived).
    pub degraded: bool,
    /// The fallback fired for it: the run started, or why none could.
    pub fallback: Option<String>,
}

/// Where a product stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProductView {
    /// Its name.
    pub name: String,
    /// What operators call it.
    pub description: Option<String>,
    /// The model whose run issues it.
    pub model: String,
    /// When it is due, in words.
    pub due: String,
    /// Its "at risk" threshold.
    pub risk: f64,
    /// The chain to it, upstream first.
    pub chain: Vec<String>,
    /// The previous deadline (if it has one) and the next, oldest first.
    pub cycles: Vec<Cycle>,
    /// The deadlines after the next, within a day.
    pub upcoming: Vec<String>,
    /// Past cycles, oldest first (the last 30).
    pub history: Vec<Cycle>,
    /// The share of past cycles issued on time.
    pub punctuality: Option<f64>,
}

impl ProductView {
    /// The cycle an alert is about, if one needs one, and the alert's sentence.
    pub fn alarm(&self) -> Option<String> {
        let name = &self.name;
        for c in self.cycles.iter().rev() {
            let cause = c
                .cause
                .as_ref()
                .map(|c| format!(", cause: {c}"))
                .unwrap_or_default();
            let waiting = if c.waiting_for.is_empty() {
                String::new()
            } else {
                format!(", waiting for {}", c.waiting_for.join(", "))
            };
            match c.state.as_str() {
                "at risk" => {
                    return Some(format!(
                        "product `{name}` due {} is at risk ({:.0}% chance of missing, \
                         predicted {}{cause}{waiting})",
                        c.deadline,
                        c.miss.unwrap_or(0.0) * 100.0,
                        c.predicted.as_deref().unwrap_or("?")
                    ));
                }
                "late" => {
                    return Some(format!(
                        "product `{name}` due {} is late{cause}{waiting}",
                        c.deadline
                    ));
                }
                _ if c.degraded && !c.waiting_for.is_empty() => {
                    return Some(format!(
                        "product `{name}` due {} was issued degraded at {} by the fallback; \
                         still waiting for {}",
                        c.deadline,
                        c.issued_at.as_deref().unwrap_or("?"),
                        c.waiting_for.join(", ")
                    ));
                }
                _ => {}
            }
        }
        None
    }
}
