//! Health of the daemon's stages: every stage beats while it works or waits, says when it is
//! retrying a transient fault, and is supervised so that its end is never silent.
//!
//! In: beats, faults and ends from the stages (intake, examine, ledger writer, filer,
//! dispatcher, alerts, replay, the ledger guard). Out: a report per stage (`ok`, `degraded`
//! while a transient fault is retried, `stuck` when it has not beaten for too long, `dead`) that
//! `/api/health` answers 503 on, and a fatal reason that makes the daemon exit non-zero (so that
//! systemd restarts it). Never: a stage that stops while the daemon says ok.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a stage may go without a beat before it is reported stuck, unless it says
/// otherwise ([`Health::expect`]).
pub const STUCK_AFTER: Duration = Duration::from_secs(3);

/// How a stage waits out a transient fault: a pause that doubles from 50 ms up to 5 s, so that
/// a fault that passes at once costs little and one that lasts costs no busy loop.
#[derive(Debug, Clone, Copy)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(50))
    }
}

impl Backoff {
    /// Sleeps the pause due, and doubles the next one (up to 5 s).
    pub fn wait(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// One stage's state, as reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: String,
    /// ok, degraded, stuck or dead.
    pub state: &'static str,
    /// Seconds since its last beat.
    pub last_beat_s: f64,
    /// Why it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Stage {
    beat: Instant,
    stuck_after: Duration,
    fault: Option<String>,
    dead: Option<String>,
}

/// The stages' health, shared by every stage, the web layer and the main thread.
#[derive(Debug, Default)]
pub struct Health {
    stages: Mutex<BTreeMap<String, Stage>>,
    fatal: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl Health {
    /// Declares a stage that may go `stuck_after` without a beat (its longest honest pause).
    pub fn expect(&self, stage: &str, stuck_after: Duration) {
        if let Ok(mut s) = self.stages.lock() {
            s.insert(
                stage.to_string(),
                Stage {
                    beat: Instant::now(),
                    stuck_after,
                    fault: None,
                    dead: None,
                },
            );
        }
    }

    /// The stage is alive and making progress (or idle and waiting, which is fine).
    pub fn beat(&self, stage: &str) {
        #[cfg(debug_assertions)]
        fault::injected(stage);
        if let Ok(mut s) = self.stages.lock() {
            match s.get_mut(stage) {
                Some(st) => st.beat = Instant::now(),
                None => {
                    s.insert(
                        stage.to_string(),
                        Stage {
                            beat: Instant::now(),
                            stuck_after: STUCK_AFTER,
                            fault: None,
                            dead: None,
                        },
                    );
                }
            }
        }
    }

    /// A transient fault the stage is retrying (`Some`), or its end (`None`): the stage is
    /// degraded meanwhile, and it is said once in the log each way.
    pub fn fault(&self, stage: &str, fault: Option<String>) {
        if let Ok(mut s) = self.stages.lock()
            && let Some(st) = s.get_mut(stage)
        {
            if st.fault != fault {
                match &fault {
                    Some(f) => tracing::error!(stage, fault = %f, "transient fault: retrying"),
                    None => tracing::info!(stage, "transient fault over: the stage goes on"),
                }
            }
            st.fault = fault;
            st.beat = Instant::now();
        }
    }

    /// The daemon is stopping: stages that end now end normally.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the daemon is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A stage ended. Unless the daemon is stopping, that is fatal: it is recorded and the main
    /// thread is woken (SIGUSR1) to stop the daemon with a non-zero exit.
    pub fn ended(&self, stage: &str, why: String) {
        if self.is_stopping() {
            return;
        }
        if let Ok(mut s) = self.stages.lock() {
            let st = s.entry(stage.to_string()).or_insert(Stage {
                beat: Instant::now(),
                stuck_after: STUCK_AFTER,
                fault: None,
                dead: None,
            });
            st.dead = Some(why.clone());
        }
        self.fatal(format!("stage {stage}: {why}"));
    }

    /// The daemon cannot go on (a stage died, the ledger was replaced): recorded, logged, and
    /// the main thread woken.
    pub fn fatal(&self, why: String) {
        tracing::error!(reason = %why, "the daemon cannot go on: stopping with an error");
        if let Ok(mut f) = self.fatal.lock()
            && f.is_none()
        {
            *f = Some(why);
        }
        // SAFETY: signals this very process; the main thread waits for SIGUSR1 with sigwait.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    }

    /// Why the daemon must stop, if it must.
    pub fn fatal_reason(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// Every stage, as of `now`.
    pub fn report(&self, now: Instant) -> Vec<StageReport> {
        let Ok(s) = self.stages.lock() else {
            return Vec::new();
        };
        s.iter()
            .map(|(name, st)| {
                let age = now.saturating_duration_since(st.beat);
                let (state, reason) = if let Some(d) = &st.dead {
                    ("dead", Some(d.clone()))
                } else if age > st.stuck_after {
                    (
                        "stuck",
                        Some(format!("no sign of life for {:.1} s", age.as_secs_f64())),
                    )
                } else if let Some(f) = &st.fault {
                    ("degraded", Some(f.clone()))
                } else {
                    ("ok", None)
                };
                StageReport {
                    stage: name.clone(),
                    state,
                    last_beat_s: (age.as_secs_f64() * 10.0).round() / 10.0,
                    reason,
                }
            })
            .collect()
    }
}

/// Runs a stage on a thread of its own, supervised: its end (a return or a panic) while the
/// daemon is not stopping is fatal, with the reason in the log.
pub fn spawn<T: Ended + Send + 'static>(
    name: &str,
    health: std::sync::Arc<Health>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let stage = name.to_string();
    std::thread::Builder::new()
        .name(stage.clone())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            match result {
                Ok(v) => {
                    if let Some(why) = v.why() {
                        health.ended(&stage, why);
                    } else {
                        health.ended(&stage, "ended unexpectedly".into());
                    }
                    v
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    health.ended(&stage, format!("panicked: {msg}"));
                    std::panic::resume_unwind(panic)
                }
            }
        })
        .expect("spawn a stage thread")
}

/// What a stage's return says about its end.
pub trait Ended {
    /// The error it ended with, if any.
    fn why(&self) -> Option<String>;
}

impl Ended for () {
    fn why(&self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> Ended for Result<(), E> {
    fn why(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

/// Faults injected on demand in test builds: `POM_FAULT_FILE` names a file; once it exists and
/// holds `panic STAGE` or `stall STAGE`, that stage panics or stops beating at its next beat.
#[cfg(debug_assertions)]
mod fault {
    use std::sync::OnceLock;

    pub(super) fn injected(stage: &str) {
        static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
        let Some(file) = FILE.get_or_init(|| std::env::var_os("POM_FAULT_FILE").map(Into::into))
        else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        let mut words = text.split_whitespace();
        let (Some(what), Some(who)) = (words.next(), words.next()) else {
            return;
        };
        if who != stage && stage.strip_prefix(who).is_none_or(|r| !r.starts_with('-')) {
            return;
        }
        match what {
            "panic" => panic!("fault injected into {stage}"),
            "stall" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            _ => {}
        }
    }
}

/// Puts the calling thread at the lowest CPU priority, for a background stage (the station
/// index, retention) that must yield to every other.
pub fn lowest_priority(stage: &str) {
    // SAFETY: plain system calls on this thread's own id.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as _, 19) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "{stage}: priority unchanged"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_without_beats_is_stuck_and_a_fault_degrades_it() {
        let h = Health::default();
        h.expect("filer", Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(h.report(t0)[0].state, "ok");
        h.fault("filer", Some("No space left on device".into()));
        assert_eq!(h.report(Instant::now())[0].state, "degraded");
        assert_eq!(
            h.report(Instant::now() + Duration::from_secs(2))[0].state,
            "stuck"
        );
        h.fault("filer", None);
        assert_eq!(h.report(Instant::now())[0].state, "ok");
    }
}
