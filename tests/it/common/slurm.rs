//! A real one-node Slurm cluster on 127.0.0.1 (Debian's `slurm-wlm`): `slurmctld` and `slurmd`
//! started from `tests/slurm/slurm.conf` in a scratch folder, on ports of their own, stopped
//! when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One cluster at a time in a test binary: two daemons each are heavy on a small machine, and
/// the other tests run beside them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    ctld: Option<Child>,
    slurmd: Option<Child>,
    /// Released last, once the daemons are stopped.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in [self.slurmd.take(), self.ctld.take()].into_iter().flatten() {
            stop(c);
        }
        // Jobs the test left running die with their slurmd's steps.
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.path().display().to_string()])
            .status();
    }
}

fn stop(mut c: Child) {
    // SAFETY: our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts the cluster and waits until its node is idle. `None` (the test is skipped) when not
    /// root: the daemons run as root.
    pub fn start() -> Option<Cluster> {
        Cluster::start_with(&[])
    }

    /// As [`Cluster::start`], with lines of the configuration replaced (`(from, to)`).
    pub fn start_with(changes: &[(&str, &str)]) -> Option<Cluster> {
        // SAFETY: a plain system call with no argument.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: a Slurm cluster's daemons run as root (CI runs as root)");
            return None;
        }
        assert!(
            Path::new("/usr/sbin/slurmctld").exists(),
            "slurmctld missing (Debian package slurm-wlm; scripts/install-deps installs it)"
        );
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let template =
            std::fs::read_to_string(super::repo().join("tests/slurm/slurm.conf")).unwrap();
        let (a, b) = (free_port(), free_port());
        let mut template = template;
        for (from, to) in changes {
            assert!(template.contains(from), "no `{from}` in slurm.conf");
            template = template.replace(from, to);
        }
        let conf = template
            .replace("@DIR@", &d.display().to_string())
            .replace("@CTLD_PORT@", &a.to_string())
            .replace("@D_PORT@", &b.to_string());
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let mut c = Cluster {
            dir,
            ctld: None,
            slurmd: None,
            _turn: turn,
        };
        c.start_controller();
        c.slurmd = Some(
            c.command("/usr/sbin/slurmd")
                .args(["-D", "-N", "localhost"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start slurmd"),
        );
        c.wait_node("idle", 60);
        Some(c)
    }

    /// The configuration file, for `SLURM_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm command for this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf()).stdin(Stdio::null());
        c
    }

    /// A Slurm command's output, which must succeed.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `slurmctld` (again), keeping its state.
    pub fn start_controller(&mut self) {
        self.ctld = Some(
            self.command("/usr/sbin/slurmctld")
                .args(["-D", "-i"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start slurmctld"),
        );
    }

    /// Stops `slurmctld`; the jobs run on.
    pub fn stop_controller(&mut self) {
        if let Some(c) = self.ctld.take() {
            stop(c);
        }
    }

    /// Waits until the node's state (`sinfo %T`) is `state`.
    pub fn wait_node(&self, state: &str, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self
                .command("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            if out == state {
                return;
            }
            assert!(
                Instant::now() < until,
                "the Slurm node is `{out}`, not `{state}`:\n{}",
                std::fs::read_to_string(self.dir.path().join("slurmctld.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A job's state as `squeue` shows it (empty once the controller has forgotten it).
    pub fn job_state(&self, job: i64) -> String {
        let out = self
            .command("squeue")
            .args(["-h", "-t", "all", "-o", "%T", "-j", &job.to_string()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("Invalid job id"),
            "squeue: {err}"
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
