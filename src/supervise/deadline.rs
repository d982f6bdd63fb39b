//! Whether a product will be issued by its deadline: a prediction from what the chain to it still
//! needs (feeds not yet arrived, runs not yet ended) and how long each took in the past.
//!
//! In: the chain to one issue of a product as [`Step`]s, in order (each feed with its past
//! arrivals relative to past deadlines, each run with its past durations and the steps it waits
//! for), the deadline, and now. Out: a [`Prediction`]: the chance of missing the deadline, the
//! predicted issue time, and the step that makes it late. Pure: no clock, no I/O, and the same
//! question always gets the same answer (its scenarios come from a generator seeded by it).
//!
//! How: [`SCENARIOS`] scenarios. In each, a feed not yet arrived arrives at a time drawn past
//! now from its past arrivals (relative to their deadlines), each smoothed into a small logistic
//! kernel (a feed a minute later than it has ever been is still most likely jitter) and weighted
//! by its chance of lying past now; a run not yet ended lasts a duration drawn the same way from
//! its past durations, past what it has already run. Beside the past values lies a tail, drawn as
//! often as one of them: a delay past now whose chance of lasting another r, once it has lasted
//! s, is (s / (s + r)) to the power [`TAIL_SHAPE`], s being how long now is past the latest value
//! seen before it (at least the history's spread and a floor, [`FEED_TAIL_S`] or a run's median
//! duration). So a feed on its usual time costs little risk; one later than its usual arrivals
//! costs what the late arrivals of the past say (an outage seen before weighs as much as it
//! happened); and one later than ever more as the time left shrinks, since an outage that has
//! lasted is expected to last. A run starts when the last step it waits for is done. The cause
//! is the pending step that most often heads the critical path of the scenarios that miss.
//!
//! The deadlines benchmark measures how early and how well this warns over many deadlines.

use chrono::{DateTime, Duration, Utc};

/// Scenarios drawn per prediction.
pub const SCENARIOS: usize = 400;

/// The least scale of a feed's tail, in seconds: a feed later than it has ever been is taken to
/// be held back by an outage of half an hour at least, not by jitter.
pub const FEED_TAIL_S: f64 = 1800.0;

/// The tail's shape: the chance of a delay lasting another r once it has lasted s is
/// (s / (s + r)) to this power (below 1: an outage that has lasted is expected to last).
pub const TAIL_SHAPE: f64 = 0.75;

/// The least scale of the kernel a past value is smoothed into, in seconds.
pub const LEAST_BANDWIDTH_S: f64 = 30.0;

/// The least scale of a run's tail, in seconds (besides its median duration).
pub const RUN_TAIL_S: f64 = 60.0;

/// One step of the chain to a product.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What operators call it (a feed's route, a model's name).
    pub name: String,
    /// A feed or a run.
    pub kind: Kind,
}

/// What a step is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A file from outside the chain.
    Feed {
        /// When this cycle's file arrived, if it has.
        arrived: Option<DateTime<Utc>>,
        /// Past cycles' arrivals, in seconds after their deadlines (negative: before).
        history: Vec<f64>,
    },
    /// A run of a model, started once every step it waits for is done.
    Run {
        /// The steps it waits for (indices of earlier steps).
        after: Vec<usize>,
        /// When this cycle's run started, if it has.
        started: Option<DateTime<Utc>>,
        /// When it ended, if it has.
        ended: Option<DateTime<Utc>>,
        /// Past runs' durations, from ready to ended, in seconds.
        durations: Vec<f64>,
    },
}

/// What is predicted of one issue of a product.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The chance of missing the deadline, 0 to 1.
    pub miss: f64,
    /// The median predicted issue time.
    pub ready: DateTime<Utc>,
    /// Nine scenarios in ten are issued by then.
    pub ready_p90: DateTime<Utc>,
    /// The step that makes it late, when it may be.
    pub cause: Option<String>,
}

/// Predicts when the last step of `steps` will be done, against `deadline`.
pub fn predict(steps: &[Step], deadline: DateTime<Utc>, now: DateTime<Utc>) -> Prediction {
    let mut rng = Rng::seeded(deadline, steps);
    let mut finishes = Vec::with_capacity(SCENARIOS);
    let mut causes: Vec<usize> = vec![0; steps.len()];
    let mut misses = 0usize;
    let mut done = vec![0.0f64; steps.len()];
    // Times are seconds after the deadline.
    let at = |t: DateTime<Utc>| (t - deadline).num_milliseconds() as f64 / 1000.0;
    let now_s = at(now);
    // What each pending step draws from, made once per prediction.
    let samplers: Vec<Option<Sampler>> = steps
        .iter()
        .map(|step| match &step.kind {
            Kind::Feed {
                arrived: None,
                history,
            } => Some(Sampler::new(history, now_s, FEED_TAIL_S)),
            Kind::Run {
                ended: None,
                started,
                durations,
                ..
            } => {
                let ran = started.map_or(0.0, |s| (now_s - at(s)).max(0.0));
                Some(Sampler::new(durations, ran, run_floor(durations)))
            }
            _ => None,
        })
        .collect();
    for _ in 0..SCENARIOS {
        for (i, step) in steps.iter().enumerate() {
            done[i] = match &step.kind {
                Kind::Feed {
                    arrived: Some(t), ..
                } => at(*t),
                Kind::Feed { .. } => samplers[i].as_ref().map_or(now_s, |d| d.draw(&mut rng)),
                Kind::Run { ended: Some(t), .. } => at(*t),
                Kind::Run { after, started, .. } => {
                    let mut draw = || samplers[i].as_ref().map_or(0.0, |d| d.draw(&mut rng));
                    let ready = after
                        .iter()
                        .filter(|&&j| j < i)
                        .map(|&j| done[j])
                        .fold(f64::NEG_INFINITY, f64::max);
                    match started {
                        Some(s) => at(*s) + draw(),
                        None => ready.max(now_s) + draw(),
                    }
                }
            };
        }
        let Some(&finish) = done.last() else {
            break;
        };
        finishes.push(finish);
        if finish > 0.0 {
            misses += 1;
            if let Some(c) = head_of_critical_path(steps, &done) {
                causes[c] += 1;
            }
        }
    }
    finishes.sort_by(f64::total_cmp);
    let quantile = |p: f64| {
        let i = ((finishes.len() as f64 * p).ceil() as usize).clamp(1, finishes.len().max(1)) - 1;
        let s = finishes.get(i).copied().unwrap_or(now_s);
        deadline + Duration::milliseconds((s * 1000.0) as i64)
    };
    let cause = causes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
        .map(|(i, _)| steps[i].name.clone());
    Prediction {
        miss: misses as f64 / finishes.len().max(1) as f64,
        ready: quantile(0.5),
        ready_p90: quantile(0.9),
        cause,
    }
}

/// The pending step (a feed not arrived, a run not ended) at the head of the critical path to
/// the last step: from the last step back through whatever it waited for last.
fn head_of_critical_path(steps: &[Step], done: &[f64]) -> Option<usize> {
    let mut i = steps.len().checked_sub(1)?;
    let mut head = None;
    loop {
        match &steps[i].kind {
            Kind::Feed { arrived, .. } => {
                if arrived.is_none() {
                    head = Some(i);
                }
                return head;
            }
            Kind::Run { after, ended, .. } => {
                if ended.is_none() {
                    head = Some(i);
                }
                match after
                    .iter()
                    .filter(|&&j| j < i)
                    .max_by(|&&a, &&b| done[a].total_cmp(&done[b]))
                {
                    Some(&j) => i = j,
                    None => return head,
                }
            }
        }
    }
}

/// Where a value past `now` is drawn from: each past value smoothed into a logistic kernel (a
/// feed a minute later than ever is still most likely jitter), weighted by its chance of lying
/// past `now` and drawn from past `now`; or the tail, weighted as one past value: a Lomax delay
/// past `now` (the chance of lasting another r is s / (s + r)) whose scale s is the history's
/// spread, at least `least`, and at least how long `now` is past the latest value before it: the
/// longer something has been later than what was seen, the longer it is expected to stay so.
struct Sampler {
    values: Vec<f64>,
    /// Running sums of the weights, the tail's last.
    sums: Vec<f64>,
    bandwidth: f64,
    now: f64,
    scale: f64,
}

impl Sampler {
    fn new(history: &[f64], now: f64, least: f64) -> Sampler {
        let bandwidth = bandwidth(history);
        let mut sums = Vec::with_capacity(history.len() + 1);
        let mut total = 0.0;
        for h in history {
            // The kernel's chance of lying past `now`.
            total += 1.0 / (1.0 + ((now - h) / bandwidth).exp());
            sums.push(total);
        }
        sums.push(total + 1.0);
        let seen = history
            .iter()
            .copied()
            .filter(|h| *h <= now)
            .fold(f64::NEG_INFINITY, f64::max);
        let overrun = if seen.is_finite() { now - seen } else { 0.0 };
        Sampler {
            values: history.to_vec(),
            sums,
            bandwidth,
            now,
            scale: spread(history).max(least).max(overrun),
        }
    }

    fn draw(&self, rng: &mut Rng) -> f64 {
        let total = self.sums.last().copied().unwrap_or(1.0);
        let pick = rng.unit() * total;
        let i = self.sums.partition_point(|s| *s < pick);
        match self.values.get(i) {
            Some(&h) => {
                // The logistic's inverse, from its value at `now` to 1.
                let below = 1.0 - (self.sums[i] - if i == 0 { 0.0 } else { self.sums[i - 1] });
                let u = (below + (1.0 - below) * rng.unit()).min(1.0 - 1e-12);
                (h + self.bandwidth * (u / (1.0 - u)).ln()).max(self.now)
            }
            None => self.now + self.scale * (rng.unit().powf(-1.0 / TAIL_SHAPE) - 1.0),
        }
    }
}

/// The kernel's scale for a history: Silverman's rule on its interquartile range, at least
/// [`LEAST_BANDWIDTH_S`].
fn bandwidth(history: &[f64]) -> f64 {
    let n = history.len().max(1) as f64;
    (0.9 * spread(history) / 1.34 * n.powf(-0.2) / 1.8).max(LEAST_BANDWIDTH_S)
}

/// A history's interquartile range (0 for fewer than 4 values).
fn spread(history: &[f64]) -> f64 {
    if history.len() < 4 {
        return 0.0;
    }
    let mut h = history.to_vec();
    h.sort_by(f64::total_cmp);
    let q = |p: f64| h[((h.len() - 1) as f64 * p).round() as usize];
    q(0.75) - q(0.25)
}

/// The least scale of a run's tail: its median duration, at least [`RUN_TAIL_S`].
fn run_floor(durations: &[f64]) -> f64 {
    let mut d = durations.to_vec();
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied().unwrap_or(0.0).max(RUN_TAIL_S)
}

/// A small generator (xorshift64*): scenarios need spread, not secrecy, and the same question
/// must draw the same scenarios.
struct Rng(u64);

impl Rng {
    fn seeded(deadline: DateTime<Utc>, steps: &[Step]) -> Rng {
        let mut seed = deadline.timestamp() as u64 ^ 0x9E37_79B9_7F4A_7C15;
        for s in steps {
            for b in s.name.bytes() {
                seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
            }
        }
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn deadline() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap()
    }

    /// 30 past arrivals about two hours before the deadline, 10 minutes either way.
    fn usual() -> Vec<f64> {
        (0..30)
            .map(|k| -7200.0 + ((k * 37) % 21) as f64 * 60.0 - 600.0)
            .collect()
    }

    /// The sample chain: two feeds, a rainfall-runoff run on both, a propagation run on it.
    fn chain(rain: Option<DateTime<Utc>>, discharge: Option<DateTime<Utc>>) -> Vec<Step> {
        vec![
            Step {
                name: "observed-rainfall".into(),
                kind: Kind::Feed {
                    arrived: rain,
                    history: usual(),
                },
            },
            Step {
                name: "observed-discharge".into(),
                kind: Kind::Feed {
                    arrived: discharge,
                    history: usual(),
                },
            },
            Step {
                name: "rainfall-runoff".into(),
                kind: Kind::Run {
                    after: vec![0, 1],
                    started: None,
                    ended: None,
                    durations: vec![300.0, 360.0, 420.0, 330.0, 390.0],
                },
            },
            Step {
                name: "propagation".into(),
                kind: Kind::Run {
                    after: vec![2],
                    started: None,
                    ended: None,
                    durations: vec![120.0, 150.0, 180.0, 140.0],
                },
            },
        ]
    }

    fn at(minutes_before: i64) -> DateTime<Utc> {
        deadline() - Duration::minutes(minutes_before)
    }

    #[test]
    fn before_its_feeds_are_due_a_product_is_on_track() {
        let p = predict(&chain(None, None), deadline(), at(180));
        assert!(p.miss < 0.1, "{p:?}");
        assert!(p.ready < deadline(), "{p:?}");
    }

    #[test]
    fn a_feed_later_than_it_has_ever_been_puts_the_product_at_risk_and_is_named() {
        // Rain came at its usual time; discharge is later than all 30 past arrivals (by 50
        // minutes), with an hour still to go.
        let steps = chain(Some(at(125)), None);
        let p = predict(&steps, deadline(), at(60));
        assert!(p.miss > 0.2, "{p:?}");
        assert_eq!(p.cause.as_deref(), Some("observed-discharge"), "{p:?}");
        // And the risk grows as the deadline nears without it.
        let later = predict(&steps, deadline(), at(35));
        assert!(later.miss > p.miss, "{later:?} after {p:?}");
    }

    #[test]
    fn a_run_longer_than_ever_is_the_cause_once_its_inputs_are_in() {
        let mut steps = chain(Some(at(130)), Some(at(128)));
        steps[2].kind = Kind::Run {
            after: vec![0, 1],
            started: Some(at(127)),
            ended: None,
            durations: vec![300.0, 360.0, 420.0, 330.0, 390.0],
        };
        let p = predict(&steps, deadline(), at(15));
        assert!(p.miss > 0.2, "{p:?}");
        assert_eq!(p.cause.as_deref(), Some("rainfall-runoff"), "{p:?}");
        // Run as long as usual, it is not.
        let p = predict(&steps, deadline(), at(123));
        assert!(p.miss < 0.05, "{p:?}");
    }

    #[test]
    fn an_issue_done_in_time_is_certain_and_the_same_question_gets_the_same_answer() {
        let mut steps = chain(Some(at(130)), Some(at(128)));
        for (s, (start, end)) in steps[2..].iter_mut().zip([(127, 121), (120, 118)]) {
            if let Kind::Run { started, ended, .. } = &mut s.kind {
                *started = Some(at(start));
                *ended = Some(at(end));
            }
        }
        let p = predict(&steps, deadline(), at(60));
        assert_eq!(p.miss, 0.0);
        assert_eq!(p.ready, at(118));
        assert_eq!(p.cause, None);
        let steps = chain(Some(at(125)), None);
        assert_eq!(
            predict(&steps, deadline(), at(70)),
            predict(&steps, deadline(), at(70))
        );
    }
}
