//! The service manager (systemd): readiness, stopping, and a watchdog fed by the supervised
//! stages.
//!
//! In: [`Health`] (every stage's last sign of life), `NOTIFY_SOCKET` and `WATCHDOG_USEC` from
//! systemd. Out: `READY=1`, `STOPPING=1`, and `WATCHDOG=1` every half interval while every
//! stage is alive. Never: a ping while a stage is stuck or dead (so that systemd restarts a
//! daemon that hangs without exiting; a stage that dies already stops the daemon with a
//! non-zero exit), or a daemon that waits on the service manager: a notification that cannot
//! be sent at once is dropped.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::health::{Health, StageReport};

/// Sends one notification (`READY=1`, …) when the daemon runs under a service manager that
/// asked for them; `Ok` when it did not.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(&path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(format!("{state}\n").as_bytes(), &addr)?;
    Ok(())
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // Asked of another process (a parent that exec'd this one): not ours to ping.
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Why the pings are withheld: the stages that are stuck or dead, or `None` when all live.
pub fn withheld(report: &[StageReport]) -> Option<String> {
    let bad: Vec<String> = report
        .iter()
        .filter(|s| s.state == "stuck" || s.state == "dead")
        .map(|s| match &s.reason {
            Some(r) => format!("{} {} ({r})", s.stage, s.state),
            None => format!("{} {}", s.stage, s.state),
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}

/// Starts the watchdog when systemd asked for one; the thread ends when the daemon stops.
pub fn spawn_watchdog(health: Arc<Health>) -> Option<std::thread::JoinHandle<()>> {
    let every = (watchdog_interval()? / 2).max(Duration::from_millis(50));
    tracing::info!(every = ?every, "watchdog: pinging the service manager while every stage lives");
    let thread = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut held: Option<String> = None;
            let mut unsent = false;
            while !health.is_stopping() {
                let why = withheld(&health.report(Instant::now()));
                match &why {
                    None => {
                        if held.is_some() {
                            tracing::info!("watchdog: every stage lives again, pings resume");
                        }
                        match notify("WATCHDOG=1") {
                            Ok(()) => unsent = false,
                            Err(e) if !unsent => {
                                unsent = true;
                                tracing::warn!(error = %e, "watchdog: cannot ping the service manager");
                            }
                            Err(_) => {}
                        }
                    }
                    Some(w) if held.as_ref() != Some(w) => {
                        tracing::error!(stages = %w, "watchdog: pings withheld");
                    }
                    Some(_) => {}
                }
                held = why;
                std::thread::sleep(every);
            }
        })
        .ok()?;
    Some(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, state: &'static str) -> StageReport {
        StageReport {
            stage: name.into(),
            state,
            last_beat_s: 0.0,
            reason: None,
        }
    }

    #[test]
    fn pings_go_on_while_stages_are_ok_or_degraded_and_stop_when_one_is_stuck_or_dead() {
        assert_eq!(
            withheld(&[stage("intake", "ok"), stage("slurm", "degraded")]),
            None
        );
        assert_eq!(
            withheld(&[stage("intake", "ok"), stage("dispatch", "stuck")]).as_deref(),
            Some("dispatch stuck")
        );
        assert!(withheld(&[stage("filer", "dead")]).is_some());
    }
}
