//! The clock: the system's, or a simulated one that starts at a chosen instant and runs faster
//! (for rehearsals, tests across a daylight-saving change, and replay). Decisions take the time
//! from here, never from the system directly.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// Starts at `start` when created and runs `speed` times faster than real time.
    Simulated {
        /// Real instant of the start.
        real: Instant,
        /// Simulated instant at the start.
        start: DateTime<Utc>,
        /// Simulated seconds per real second.
        speed: f64,
    },
}

impl Clock {
    /// A simulated clock from `START[@SPEED]`, e.g. `2026-03-28T00:00:00Z@43200`.
    pub fn parse(text: &str) -> Result<Clock, String> {
        let (start, speed) = match text.split_once('@') {
            Some((s, v)) => (
                s,
                v.parse::<f64>()
                    .ok()
                    .filter(|v| *v > 0.0 && *v <= 1e6)
                    .ok_or(format!(
                        "speed `{v}` is not a positive number of at most 1000000"
                    ))?,
            ),
            None => (text, 1.0),
        };
        let start = DateTime::parse_from_rfc3339(start)
            .map_err(|e| format!("`{start}` is not an RFC 3339 time: {e}"))?
            .with_timezone(&Utc);
        Ok(Clock::Simulated {
            real: Instant::now(),
            start,
            speed,
        })
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Simulated { real, start, speed } => {
                let elapsed = real.elapsed().as_secs_f64() * speed;
                *start + chrono::Duration::microseconds((elapsed * 1e6) as i64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_starts_where_asked_and_runs_faster() {
        let c = Clock::parse("2026-03-28T00:00:00Z@3600").unwrap();
        let t0 = c.now();
        assert!(t0 >= DateTime::parse_from_rfc3339("2026-03-28T00:00:00Z").unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now() - t0 >= chrono::Duration::seconds(60));
        assert!(Clock::parse("yesterday").is_err());
        assert!(Clock::parse("2026-03-28T00:00:00Z@-1").is_err());
    }
}
