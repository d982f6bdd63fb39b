//! The systemd service: the unit's exposure, readiness and the watchdog, SIGHUP, and the daemon
//! run under the unit's restrictions with a model that generates code (writable and executable
//! memory, as Java, Julia and numba models do).
//!
//! These machines' init is not systemd, so `systemd-run` cannot start a transient unit: the
//! restrictions are reproduced with bubblewrap (mount, user, IPC and UTS namespaces, no
//! capabilities) and the unit's own system call filter, compiled by `tests/sandbox/
//! unit_seccomp.py` with libseccomp from the unit's `SystemCallFilter=` lines as systemd reads
//! them.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, eventually, pi_series};
use pom::ledger::runs::RunState;

use crate::common;
use common::missing;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pom.service");

fn is_root() -> bool {
    // SAFETY: reads this process's effective uid.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_unit_is_exposed_at_most_2_0() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output();
    if missing("systemd-analyze", out.is_ok()) {
        return;
    }
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for pom.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(level <= 2.0, "exposure {level} above 2.0:\n{text}");
}

/// The `[Service]` settings of a unit, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]"
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Settings of the unit reproduced by [`Sandbox`].
const REPRODUCED: &[&str] = &[
    "User",
    "Group",
    "NoNewPrivileges",
    "ProtectSystem",
    "ReadWritePaths",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "DevicePolicy",
    "PrivateUsers",
    "PrivateMounts",
    "ProtectHostname",
    "RemoveIPC",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "SystemCallArchitectures",
    "MemoryDenyWriteExecute",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "UMask",
    // Read-only kernel interfaces and clock: the whole tree is read-only here, and the
    // system call filter refuses @clock.
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
];

/// Settings of the unit that are not restrictions (how systemd runs and stops the service), or
/// that deny only what neither POM nor a model asks for, so that running without them proves
/// nothing less. A setting in neither list fails the test: reproduce it or say why not.
const NOT_RESTRICTIONS: &[&str] = &[
    "Type",
    "NotifyAccess",
    "WatchdogSec",
    "Environment",
    "EnvironmentFile",
    "LoadCredential",
    "ExecStart",
    "ExecReload",
    "KillSignal",
    "KillMode",
    "TimeoutStopSec",
    "Restart",
    "RestartSec",
    // Denials of what no process of the service does: creating namespaces, real-time
    // scheduling, set-uid files, changing the execution domain, address families other than
    // local and Internet sockets, other processes' /proc entries.
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RestrictAddressFamilies",
    "ProtectProc",
];

/// The unit's restrictions, as a command prefix: bubblewrap with the unit's system call
/// filter, as an unprivileged user (the service's `User=`).
struct Sandbox {
    prefix: Vec<OsString>,
}

impl Sandbox {
    /// None when a tool is missing outside CI.
    fn of_unit(unit: &Path, scratch: &Path, writable: &Path) -> Option<Sandbox> {
        let bwrap = Command::new("bwrap").arg("--version").output().is_ok();
        if missing("bubblewrap (bwrap)", bwrap) {
            return None;
        }
        let text = std::fs::read_to_string(unit).unwrap();
        for (k, _) in service_settings(&text) {
            assert!(
                REPRODUCED.contains(&k.as_str()) || NOT_RESTRICTIONS.contains(&k.as_str()),
                "the unit sets {k}, which this test does not reproduce: reproduce it or say \
                 why it does not matter"
            );
        }
        std::fs::create_dir_all(scratch).unwrap();
        let out = Command::new("/usr/bin/python3")
            .arg(common::repo().join("tests/sandbox/unit_seccomp.py"))
            .arg(unit)
            .arg(scratch)
            .output();
        let compiled = out.as_ref().is_ok_and(|o| o.status.success());
        if missing(
            "Debian's python3 with python3-seccomp",
            compiled
                || !out
                    .as_ref()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("seccomp")),
        ) {
            return None;
        }
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "compiling the unit's filter: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let programs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
        let umask = service_settings(&text)
            .into_iter()
            .find(|(k, _)| k == "UMask")
            .map_or("0022".to_string(), |(_, v)| v);
        // Each compiled program on a descriptor of its own (8 and 9: a POSIX shell redirects
        // single-digit descriptors only), read by bubblewrap.
        assert!(programs.len() <= 2, "{programs:?}");
        let redirects: Vec<String> = programs
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}<'{p}'", 8 + i))
            .collect();
        let mut prefix: Vec<OsString> = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("exec \"$@\" {}", redirects.join(" ")).into(),
            "sh".into(),
        ];
        if is_root() {
            // The service's user: not root, no supplementary group.
            for a in [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ] {
                prefix.push(a.into());
            }
        }
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_pom"));
        for a in [
            "bwrap",
            // ProtectSystem=strict, then ReadWritePaths.
            "--ro-bind",
            "/",
            "/",
            // ProtectHome, PrivateTmp, PrivateDevices.
            "--tmpfs",
            "/home",
            "--tmpfs",
            "/root",
            "--tmpfs",
            "/run/user",
            "--tmpfs",
            "/tmp",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
        ] {
            prefix.push(a.into());
        }
        for p in [writable, bin.as_path()] {
            prefix.push(if p == writable { "--bind" } else { "--ro-bind" }.into());
            prefix.push(p.into());
            prefix.push(p.into());
        }
        // PrivateUsers, RemoveIPC, ProtectHostname, CapabilityBoundingSet=.
        for a in [
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-uts",
            "--cap-drop",
            "ALL",
            "--new-session",
            "--die-with-parent",
        ] {
            prefix.push(a.into());
        }
        // SystemCallFilter (and MemoryDenyWriteExecute if set); bubblewrap sets NoNewPrivileges.
        for i in 0..programs.len() {
            prefix.push("--add-seccomp-fd".into());
            prefix.push((8 + i).to_string().into());
        }
        for a in [
            "--",
            "/bin/sh",
            "-c",
            &format!("umask {umask}; exec \"$@\""),
            "sh",
        ] {
            prefix.push(a.into());
        }
        Some(Sandbox { prefix })
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.prefix[0]);
        c.args(&self.prefix[1..]).arg(program).args(args);
        c
    }
}

/// A model that generates code: writable and executable memory, machine code written into it
/// and called (on x86-64), as a JIT compiler does. Then its forecast.
const JIT_MODEL: &str = r#"/usr/bin/python3 - <<'PY'
import ctypes, mmap, platform
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
if platform.machine() == "x86_64":
    m.write(b"\xb8\x2a\x00\x00\x00\xc3")  # mov eax, 42; ret
    f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    print("generated code returned", f())
else:
    print("generated code returned 42 (mapped only on this architecture)")
PY
sed 's/Q.obs/Q.fcst/' input/jit_1.xml > output/forecast.xml"#;

fn chown_to_service_user(dir: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

#[test]
fn the_daemon_and_a_model_generating_code_run_under_the_units_restrictions() {
    let mut sandbox = None;
    let gw = common::chain_gateway_with(&[("jit", JIT_MODEL, "2m")], |gw| {
        sandbox = Sandbox::of_unit(
            Path::new(UNIT),
            &gw.dir.path().join("seccomp"),
            gw.dir.path(),
        );
        if let Some(s) = &sandbox {
            gw.wrapper = s.prefix.clone();
            chown_to_service_user(gw.dir.path());
        }
    });
    let Some(sandbox) = sandbox else {
        return;
    };
    // The daemon works: its web client answers, a file goes through, the model runs and its
    // output re-enters the chain.
    let (status, health) = gw.api("GET", "/api/health", None, None);
    assert_eq!(status, 200, "{health}");
    gw.drop_file("obs", "jit_1.xml", &pi_series(1, 3));
    let mut run = None;
    eventually(60, "the model's run ended", || {
        run = gw
            .ledger()
            .runs(Some("jit"), None, 1)
            .unwrap_or_default()
            .into_iter()
            .next()
            .filter(|r| !matches!(r.state, RunState::Queued | RunState::Running));
        run.is_some()
    });
    let run = run.unwrap();
    let dir = gw.spool().join(&run.run_dir);
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{run:?}\n{stderr}\n{}",
        gw.log()
    );
    let stdout = std::fs::read_to_string(dir.join("stdout.txt")).unwrap();
    assert!(stdout.contains("generated code returned 42"), "{stdout}");
    eventually(30, "the forecast archived from fcst", || {
        gw.submissions()
            .iter()
            .any(|s| s.channel == "fcst" && s.state == pom::ledger::State::Archived)
    });

    // The sandbox is not a formality: the same sandbox with MemoryDenyWriteExecute=yes
    // refuses that model, and refuses a call the unit denies to the daemon itself.
    let strict = gw.dir.path().join("strict.service");
    let text = std::fs::read_to_string(UNIT)
        .unwrap()
        .replace("[Service]\n", "[Service]\nMemoryDenyWriteExecute=yes\n");
    std::fs::write(&strict, text).unwrap();
    let scratch = gw.dir.path().join("seccomp-strict");
    let strict = Sandbox::of_unit(&strict, &scratch, gw.dir.path()).unwrap();
    let script = gw.dir.path().join("jit.sh");
    let out = strict
        .command(
            "/bin/sh",
            &[
                "-c",
                &format!("cd '{}' && /bin/sh '{}'", dir.display(), script.display()),
            ],
        )
        .env("POM_RUN_DIR", &dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the model ran with W^X memory denied"
    );
    assert!(err.contains("Operation not permitted"), "{err}");
    // Reading the clock's adjustment (adjtimex, in @clock) is allowed to any user, but not to
    // this service; lowering one's priority (setpriority, in @resources) is, as the station
    // index does.
    let probe = "import ctypes, os\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 os.setpriority(os.PRIO_PROCESS, 0, 5)\n\
                 r = libc.adjtimex(ctypes.create_string_buffer(512))\n\
                 print(r, ctypes.get_errno())";
    let plain = Command::new("/usr/bin/python3")
        .args(["-c", probe])
        .output()
        .unwrap();
    let boxed = sandbox
        .command("/usr/bin/python3", &["-c", probe])
        .output()
        .unwrap();
    let (plain, boxed) = (
        String::from_utf8_lossy(&plain.stdout).trim().to_string(),
        String::from_utf8_lossy(&boxed.stdout).trim().to_string(),
    );
    assert!(
        !plain.starts_with("-1"),
        "adjtimex outside the sandbox: {plain}"
    );
    assert_eq!(boxed, "-1 1", "adjtimex in the sandbox (EPERM expected)");
    eprintln!(
        "under the unit's restrictions: the daemon served, filed and ran a model that \
         generated code; with MemoryDenyWriteExecute=yes that model is refused"
    );
}

/// What the daemon tells the service manager: a notification socket read all along, each
/// message with the time it came.
struct Listener {
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let sock = UnixDatagram::bind(path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                into.lock().unwrap().push((Instant::now(), text));
            }
        });
        Listener { got }
    }

    /// The messages since `since`.
    fn since(&self, since: Instant) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

fn notified_gateway() -> (Gateway, Listener, PathBuf) {
    let mut gw = Gateway::new();
    let path = gw.dir.path().join("notify.sock");
    let listener = Listener::bind(&path);
    let fault = gw.dir.path().join("fault");
    gw.extra_env
        .push(("POM_FAULT_FILE".into(), fault.display().to_string()));
    gw.extra_env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    gw.extra_env.push(("WATCHDOG_USEC".into(), "400000".into()));
    (gw, listener, fault)
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_and_feeds_the_watchdog_until_a_stage_is_stuck() {
    let (mut gw, listener, fault) = notified_gateway();
    let t0 = Instant::now();
    gw.start();
    std::thread::sleep(Duration::from_secs(2));
    let first = listener.since(t0);
    assert_eq!(
        first.first().map(String::as_str),
        Some("READY=1"),
        "{first:?}"
    );
    let pings = first.iter().filter(|m| *m == "WATCHDOG=1").count();
    // Every 200 ms (half the 400 ms asked).
    assert!(pings >= 5, "{pings} pings in 2 s: {first:?}");

    std::fs::write(&fault, "stall dispatch").unwrap();
    let stalled = Instant::now();
    // The stage is stuck after 3 s without a sign of life; then no ping for a whole second.
    let mut quiet_at = None;
    while stalled.elapsed() < Duration::from_secs(10) {
        let from = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        if !listener.since(from).iter().any(|m| m == "WATCHDOG=1") {
            quiet_at = Some(from.duration_since(stalled));
            break;
        }
    }
    let quiet_at = quiet_at.expect("the watchdog was still fed 10 s after a stage stalled");
    eprintln!("watchdog pings withheld from {quiet_at:?} after the dispatch stage stalled");
    let log = gw.log();
    assert!(log.contains("watchdog: pings withheld"), "{log}");
    assert!(log.contains("dispatch stuck"), "{log}");
}

#[test]
fn sighup_reloads_the_rules_and_sigterm_says_stopping() {
    let (mut gw, listener, _) = notified_gateway();
    // Polling only and a long rescan: nothing but SIGHUP makes the daemon read its rules.
    gw.extra_args.extend(
        ["--poll", "0.2", "--scan-interval", "600"]
            .iter()
            .map(|s| s.to_string()),
    );
    gw.start();
    let channels = gw.rules().join("channels.toml");
    let text = std::fs::read_to_string(&channels).unwrap();
    std::fs::write(
        &channels,
        format!("{text}\n[channels.extra]\ncompletion = \"rename\"\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!gw.incoming("extra").exists(), "rules read without SIGHUP");
    let pid = gw.child.as_ref().unwrap().id() as i32;
    // SAFETY: signals the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    eventually(10, "the new channel's folder", || {
        gw.incoming("extra").exists()
    });
    assert!(gw.log().contains("SIGHUP: reloading rules"), "{}", gw.log());
    assert!(
        gw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "SIGHUP stopped the daemon"
    );
    let stop = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = gw.wait_exit(30);
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(100));
    let rest = listener.since(stop);
    assert!(rest.contains(&"STOPPING=1".to_string()), "{rest:?}");
}

#[test]
fn pom_serve_refuses_to_run_as_root_unless_told() {
    if !is_root() {
        eprintln!("SKIPPED: run as root to see the refusal (CI runs as root)");
        return;
    }
    let gw = Gateway::new();
    let out = gw
        .pom()
        .args(["serve", "--listen", "off"])
        .env_remove("POM_ALLOW_ROOT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pom serve ran as root");
    assert!(
        err.contains("refuses to run as root") && err.contains("--allow-root"),
        "{err}"
    );
    assert!(!gw.db().exists(), "a ledger was made before the refusal");
}
