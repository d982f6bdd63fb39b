//! `pom serve`: the daemon in the foreground, its signals, and its exit code when a stage cannot go on.

use super::*;

/// How long a daemon that cannot go on still answers `/api/health` (503, the dead stage named)
/// before it exits.
pub(super) const FATAL_GRACE: Duration = Duration::from_secs(2);

pub(super) fn serve(paths: &Paths, a: &ServeArgs) -> Result<ExitCode> {
    // SAFETY: reads this process's effective uid.
    if unsafe { libc::geteuid() } == 0 && !a.allow_root {
        anyhow::bail!(
            "pom serve refuses to run as root: the spool, the ledger and the models' run \
             folders would belong to root, out of reach of the service's user. Run it as that \
             user (the package's unit runs it as `pom`), or pass --allow-root (POM_ALLOW_ROOT=1) \
             for a trial"
        );
    }
    let signals = block_signals();
    raise_descriptor_limit();
    let config = Config {
        spool: paths.spool.clone(),
        rules: paths.rules.clone(),
        schemas: paths.schemas.clone(),
        db: paths.db(),
        workers: a
            .workers
            // One more than the cores: a worker waiting on a read or on the ledger leaves its
            // core to another (measured by the intake benchmark: +8 % on 2 cores).
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()) + 1),
        scan_every: seconds(a.scan_interval, 0.1, "--scan-interval")?,
        poll: a.poll.map(|p| seconds(p, 0.05, "--poll")).transpose()?,
        limits: a.limits.limits(),
        sync: !a.no_sync,
        clock: match &a.clock {
            Some(c) => pom::clock::Clock::parse(c).map_err(|e| anyhow::anyhow!("--clock: {e}"))?,
            None => pom::clock::Clock::System,
        },
        alerts: pom::supervise::alerts::Settings {
            min_free: MinFree::parse(&a.min_free_disk)
                .map_err(|e| anyhow::anyhow!("--min-free-disk: {e}"))?,
            command: a.alert_command.clone(),
            every: seconds(a.alert_interval, 0.1, "--alert-interval")?,
        },
        replay_quiet: seconds(a.replay_quiet, 0.2, "--replay-quiet")?,
    };
    pom::chain::executor::slurm::configure(pom::chain::executor::slurm::Settings {
        poll: seconds(a.slurm_poll, 0.2, "--slurm-poll")?,
    });
    let clock = config.clock;
    let db = config.db.clone();
    let daemon = Daemon::start(config).context("cannot start")?;
    let web = if a.listen == "off" {
        None
    } else {
        let tokens = Tokens::load(
            paths.token_file.as_deref(),
            std::env::var("POM_TOKEN").ok().as_deref(),
        )
        .context("reading the token file")?;
        if !tokens.any() {
            tracing::warn!("no operator token (--token-file or POM_TOKEN): control is disabled");
        }
        let theme = match &a.theme {
            Some(t) => Some(absolute(t, "--theme")?),
            None => {
                let default = absolute(Path::new("theme/theme.toml"), "theme")?;
                default.exists().then_some(default)
            }
        };
        let settings = WebSettings {
            listen: a
                .listen
                .parse()
                .with_context(|| format!("--listen {}: not an address:port", a.listen))?,
            tokens,
            theme,
            db,
            rules_dir: paths.rules.clone(),
            staged_rules: a
                .staged_rules
                .clone()
                .unwrap_or_else(|| pom::fs::with_suffix(&paths.rules, ".next")),
            clock,
        };
        Some(
            Web::start(
                settings,
                daemon.board(),
                daemon.control(),
                daemon.rules(),
                daemon.spool().clone(),
            )
            .context("web")?,
        )
    };
    if let Some(w) = &web {
        // A line for scripts and tests that ask for port 0.
        tracing::info!(addr = %w.addr(), "listening on http://{}", w.addr());
    }
    tracing::info!(spool = %paths.spool.display(), "pom is running");
    // Under systemd (Type=notify): ready now, and a watchdog fed while every stage lives.
    let _ = pom::supervise::systemd::notify("READY=1");
    let watchdog =
        pom::supervise::systemd::spawn_watchdog(std::sync::Arc::clone(daemon.board().health()));
    let sig = loop {
        let sig = wait_for(&signals);
        if sig == libc::SIGHUP {
            tracing::info!("SIGHUP: reloading rules and schemas");
            daemon.reload();
            continue;
        }
        if sig != libc::SIGUSR1 {
            break sig;
        }
        if let Some(why) = daemon.fatal() {
            // A stage is dead or the ledger is gone: no clean stop can be promised. Files in
            // flight stay in queue/ with what the ledger says of them, running models are
            // adopted at the next start; systemd restarts the daemon on this exit.
            // Health answers 503 with the dead stage for a moment first, so that a monitor
            // polling it sees why before the process goes.
            tracing::error!(reason = %why, "pom stops in {FATAL_GRACE:?}: a stage cannot go on");
            std::thread::sleep(FATAL_GRACE);
            std::process::exit(3);
        }
    };
    tracing::info!(signal = sig, "stopping");
    let _ = pom::supervise::systemd::notify("STOPPING=1");
    if let Some(w) = web {
        w.stop();
    }
    daemon.stop().context("stopping")?;
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The soft limit on open descriptors raised to the hard one: the daemon holds files, ledger
/// connections and web connections at once, and a low soft limit (1024 is common) would turn a
/// busy moment into refused work.
pub(super) fn raise_descriptor_limit() {
    // SAFETY: reads and sets this process's own limit.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in every thread (spawned threads inherit the mask) so that
/// the main thread alone receives them with `sigwait`.
pub(super) fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        // Raised by the daemon itself when a stage cannot go on (see `pom::health`).
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub(super) fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: waits on a valid, blocked set.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
