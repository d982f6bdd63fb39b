//! The test harness: the real `pom` daemon in a temporary folder, with helpers named in the
//! spool's own words.
#![allow(
    dead_code,
    reason = "the benchmarks share this harness and use a part of it"
)]

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pom::ledger::{FileFilter, Ledger, State, Submission};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the real-world corpus shipped with the tests.
pub fn corpus(rel: &str) -> PathBuf {
    repo().join("tests/corpus").join(rel)
}

/// A valid PI time series of about `kb` kilobytes, unique by `n`.
pub fn pi_series(n: usize, kb: usize) -> Vec<u8> {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">\n  <timeZone>0.0</timeZone>\n  <series>\n    <header>\n      <type>instantaneous</type>\n",
    );
    s.push_str(&format!(
        "      <locationId>L{n}</locationId>\n      <parameterId>Q.obs</parameterId>\n      <timeStep unit=\"second\" multiplier=\"3600\"/>\n      <startDate date=\"2026-01-01\" time=\"00:00:00\"/>\n      <endDate date=\"2026-01-02\" time=\"00:00:00\"/>\n      <missVal>-999.0</missVal>\n      <units>m3/s</units>\n    </header>\n"
    ));
    let mut i = 0;
    while s.len() < kb * 1024 {
        s.push_str(&format!(
            "    <event date=\"2026-01-{:02}\" time=\"{:02}:00:00\" value=\"{}.{}\" flag=\"0\"/>\n",
            1 + (i / 24) % 28,
            i % 24,
            n,
            i
        ));
        i += 1;
    }
    s.push_str("  </series>\n</TimeSeries>\n");
    s.into_bytes()
}

/// The `channels.toml` used by most tests.
pub const CHANNELS: &str = r#"
[channels.obs]
completion = "rename"

[channels.mark]
completion = "marker"

[channels.still]
completion = "quiet"
quiet_ms = 300
"#;

/// A gateway under test: spool, rules, schemas and ledger in a temporary folder.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// A command the daemon is started under (`pom` and its arguments follow it), such as a
    /// sandbox; empty for none.
    pub wrapper: Vec<std::ffi::OsString>,
    starts: usize,
}

impl Gateway {
    /// A gateway with the test channels and the repository's schemas, not yet started.
    pub fn new() -> Gateway {
        Gateway::with_channels(CHANNELS)
    }

    /// A gateway with these channels.
    pub fn with_channels(channels: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/channels.toml"), channels).unwrap();
        copy_dir(&repo().join("schemas"), &dir.path().join("schemas"));
        Gateway {
            dir,
            child: None,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            wrapper: Vec::new(),
            starts: 0,
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn rules(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    pub fn db(&self) -> PathBuf {
        self.spool().join("state/pom.sqlite")
    }

    pub fn incoming(&self, channel: &str) -> PathBuf {
        self.spool().join("incoming").join(channel)
    }

    /// A `pom` command with this gateway's paths, given as an operator would: relative to the
    /// gateway's folder, which is the command's working directory (absolute paths once hid that
    /// relative ones were broken).
    pub fn pom(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pom"));
        c.current_dir(self.dir.path())
            .args([
                "--spool",
                "spool",
                "--rules",
                "rules",
                "--schemas",
                "schemas",
            ])
            .env("POM_LOG", "info");
        c
    }

    /// Starts `pom serve` and waits until it says it is running.
    pub fn start(&mut self) -> &mut Self {
        if let Err(text) = self.try_start() {
            panic!("{text}");
        }
        self
    }

    /// Starts `pom serve` and waits until it says it is running; if it exits first, it is
    /// reaped and the error gives its status and log.
    pub fn try_start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.dir.path().join(format!("serve-{}.log", self.starts));
        let mut cmd = self.pom();
        cmd.arg("serve")
            .env("POM_LISTEN", "127.0.0.1:0")
            // The machine's own free space is not under test: a test that wants the low disk
            // alert sets `--min-free-disk`, which wins over this.
            .env("POM_MIN_FREE_DISK", "1M")
            // CI runs as root; one test checks the refusal without it.
            .env("POM_ALLOW_ROOT", "1")
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((program, args)) = self.wrapper.split_first() {
            let mut wrapped = Command::new(program);
            wrapped
                .args(args)
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
            for (k, v) in cmd.get_envs() {
                if let Some(v) = v {
                    wrapped.env(k, v);
                }
            }
            cmd = wrapped;
        }
        self.child = Some(cmd.spawn().expect("spawn pom serve"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("pom is running") {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("pom serve exited with {status}:\n{text}"));
            }
            assert!(
                Instant::now() < deadline,
                "pom serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The web client's address, `http://127.0.0.1:PORT`, as the daemon logged it.
    pub fn server(&self) -> String {
        let log = self.log();
        let at = log
            .find("listening on http://")
            .unwrap_or_else(|| panic!("the daemon serves no web client:\n{log}"));
        let rest = &log[at + "listening on ".len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '\u{1b}')
            .unwrap_or(rest.len());
        rest[..end].to_string()
    }

    /// A request to the daemon's API: (status, JSON body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let r = self.http(method, path, token, body);
        (r.status, r.json())
    }

    /// A raw request to the daemon's web server.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> http::Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        http::request(&self.server(), method, path, &headers, body.as_deref())
            .expect("request to the daemon")
    }

    /// `pom replay --from FROM --to TO --name NAME` and more arguments; asserts it succeeded.
    pub fn replay(&self, from: &str, to: &str, name: &str, more: &[&str]) {
        let out = self
            .pom()
            .args(["replay", "--from", from, "--to", to, "--name", name])
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pom replay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Replays every operational file received so far (from the first arrival to a second
    /// after the last) as the session `name`.
    pub fn replay_everything(&self, name: &str) {
        let (from, to) = self.operational_span();
        self.replay(&from, &to, name, &[]);
    }

    /// From the first operational arrival to a second after the last: `--from` and `--to`.
    pub fn operational_span(&self) -> (String, String) {
        let times: Vec<String> = self
            .submissions()
            .iter()
            .filter(|s| s.session.is_none())
            .map(|s| s.received_at.clone())
            .collect();
        let to = chrono::DateTime::parse_from_rfc3339(times.iter().max().unwrap()).unwrap()
            + chrono::Duration::seconds(1);
        (times.iter().min().unwrap().clone(), to.to_rfc3339())
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("serve-{}.log", self.starts)))
            .unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits up to `secs` for the running daemon to exit by itself; its exit status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().expect("running");
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "still running after {secs} s");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        status
    }

    /// `pom serve` with these arguments (and the gateway's own) must refuse to start; what it
    /// said.
    pub fn serve_refused(&self, args: &[&str]) -> String {
        let out = self
            .pom()
            .arg("serve")
            .env("POM_ALLOW_ROOT", "1")
            .args(["--listen", "off"])
            .args(&self.extra_args)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "pom serve started: {err}");
        err
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "pom serve stopped with {status}:\n{}",
                self.log()
            );
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGSTOP: the process is frozen, its inotify queue fills.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Writes a file under a temporary name and renames it into the channel (a well-behaved
    /// producer).
    pub fn drop_file(&self, channel: &str, name: &str, bytes: &[u8]) -> PathBuf {
        let dir = self.incoming(channel);
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        let dest = dir.join(name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::rename(&tmp, &dest).unwrap();
        dest
    }

    /// The ledger, read-only.
    pub fn ledger(&self) -> Ledger {
        Ledger::open_readonly(&self.db()).expect("ledger")
    }

    /// Every submission, oldest first.
    pub fn submissions(&self) -> Vec<Submission> {
        if !self.db().exists() {
            return Vec::new();
        }
        let mut v = self
            .ledger()
            .files(&FileFilter {
                traffic: pom::ledger::Traffic::All,
                limit: usize::MAX,
                ..Default::default()
            })
            .unwrap();
        v.reverse();
        v
    }

    /// Submissions in a terminal state (archived, rejected, duplicate).
    pub fn decided(&self) -> Vec<Submission> {
        self.submissions()
            .into_iter()
            .filter(|s| s.state != State::Claimed)
            .collect()
    }

    /// Waits until `n` submissions are decided and filed (queue empty); panics after `secs`.
    pub fn wait_for_decided(&self, n: usize, secs: u64) -> Vec<Submission> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let d = self.decided();
            if d.len() >= n && self.queue_is_empty() {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} files decided after {secs} s; queue empty: {}\n{}",
                d.len(),
                self.queue_is_empty(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The submission whose original name is `name`.
    pub fn find(&self, name: &[u8]) -> Option<Submission> {
        self.submissions().into_iter().find(|s| s.original == name)
    }

    /// No data file waits in `incoming/` (hidden parts and folders aside).
    pub fn incoming_is_empty(&self) -> bool {
        data_files(&self.spool().join("incoming"))
            .iter()
            .all(|p| p.file_name().unwrap().as_bytes().starts_with(b"."))
    }

    pub fn queue_is_empty(&self) -> bool {
        std::fs::read_dir(self.spool().join("queue"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }

    /// Data files under `archive/` (sidecars and markers left out).
    pub fn archived_files(&self) -> Vec<PathBuf> {
        data_files(&self.spool().join("archive"))
    }

    /// Data files under `rejected/` (reasons left out).
    pub fn rejected_files(&self) -> Vec<PathBuf> {
        data_files(&self.spool().join("rejected"))
    }

    /// The `.reason` text of a rejected submission.
    pub fn reason_of(&self, s: &Submission) -> String {
        let stored = s.stored.as_ref().expect("stored");
        std::fs::read_to_string(self.spool().join(format!("{stored}.reason"))).expect("reason file")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.retain(|p| {
        let n = p.file_name().unwrap().as_bytes();
        !(n == b"manifest.pom.jsonl"
            || n.ends_with(b".reason")
            || n.ends_with(b".ok")
            || n.ends_with(b".done"))
    });
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Copies a folder tree.
/// How many files the ledger at `db` has decided (archived, rejected, duplicate), counted through
/// an index on a read-only connection; 0 while there is no ledger yet.
pub fn decided_files(db: &Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM submissions WHERE state IN ('archived', 'rejected', 'duplicate')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0) as usize
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Whether a tool a test needs is missing; in CI (which installs it) that is a failure.
pub fn missing(what: &str, found: bool) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing: scripts/install-deps installs it"
        );
        eprintln!("SKIPPED: {what} is missing (scripts/install-deps installs it)");
    }
    !found
}

/// Polls `cond` until true or `secs` pass.
pub fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits for a finished run of `model` (neither queued nor running) and returns it.
pub fn wait_run(gw: &Gateway, model: &str, secs: u64) -> pom::ledger::runs::RunRow {
    let mut found = None;
    eventually(secs, &format!("a finished run of {model}"), || {
        let runs = gw.ledger().runs(Some(model), None, 10).unwrap_or_default();
        found = runs.into_iter().find(|r| {
            !matches!(
                r.state,
                pom::ledger::runs::RunState::Queued | pom::ledger::runs::RunState::Running
            )
        });
        found.is_some()
    });
    found.unwrap()
}

/// Asserts that a run succeeded, showing its stderr otherwise; its run folder.
pub fn assert_succeeded(gw: &Gateway, run: &pom::ledger::runs::RunRow) -> PathBuf {
    let dir = gw.spool().join(&run.run_dir);
    assert_eq!(
        run.state,
        pom::ledger::runs::RunState::Succeeded,
        "{run:?}\n{}",
        std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
    );
    dir
}

/// Channels of a chain under test: observations in, forecasts out.
pub const CHAIN_CHANNELS: &str = r#"
[channels.obs]
completion = "rename"

[channels.fcst]
completion = "rename"
"#;

/// A model fixture: a shell script in the rules folder.
pub fn model_fixture(gw: &Gateway, name: &str, script: &str, timeout: &str) {
    let path = gw.dir.path().join(format!("{name}.sh"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nset -e\ncd \"$POM_RUN_DIR\"\n{script}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(gw.rules().join("models")).unwrap();
    std::fs::write(
        gw.rules().join(format!("models/{name}.toml")),
        format!(
            "command = [\"/bin/sh\", \"{}\", \"{{run_file}}\"]\ntimeout = \"{timeout}\"\n\
             [inputs.obs]\nformats = [\"pi-timeseries\"]\n[outputs]\nchannel = \"fcst\"\n\
             [trigger]\nkind = \"arrival\"\n",
            path.display()
        ),
    )
    .unwrap();
}

/// A started gateway with these shell models `(name, script, timeout)`, each fed by files
/// named `<name>_*.xml` on `obs`, their outputs on `fcst` published to `outgoing/web/`.
pub fn chain_gateway(models: &[(&str, &str, &str)]) -> Gateway {
    chain_gateway_with(models, |_| {})
}

/// As [`chain_gateway`], with a chance to change the gateway before it starts.
pub fn chain_gateway_with(
    models: &[(&str, &str, &str)],
    before: impl FnOnce(&mut Gateway),
) -> Gateway {
    let mut gw = Gateway::with_channels(CHAIN_CHANNELS);
    let mut routes = String::new();
    for (name, script, timeout) in models {
        model_fixture(&gw, name, script, timeout);
        routes.push_str(&format!(
            "[[route]]\nname = \"to-{name}\"\nchannel = \"obs\"\nfile = \"{name}_*.xml\"\ndeliver = [\"{name}.obs\"]\n\n"
        ));
    }
    routes.push_str("[[route]]\nname = \"forecasts\"\nchannel = \"fcst\"\npublish = [\"web\"]\n");
    std::fs::write(gw.rules().join("routes.toml"), routes).unwrap();
    before(&mut gw);
    gw.start();
    gw
}

pub mod browser;
pub mod http;
pub mod slurm;
