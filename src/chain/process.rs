//! Model processes: started clean, their output bounded, their whole tree stopped.
//!
//! In: a model's argv, its run folder, its declared environment and the `POM_*` contract. Out: a
//! child process that starts as if from a login shell (an empty signal mask, default signal
//! dispositions, an environment built from an allow-list), its stdout and stderr captured to
//! files of bounded size, and, at its end, every process it left behind stopped. Never: a
//! daemon's secret (`POM_TOKEN`) or its blocked signals handed down to a model.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

/// Variables of the daemon's environment that a model inherits; every other one is left out
/// (the model's own `env` and the `POM_*` contract are added on top).
pub const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "SLURM_CONF",
];

/// Largest part of a model's stdout or stderr kept, in bytes: its first quarter and its last
/// three quarters, with a line saying how much was cut between them.
pub const OUTPUT_CAP: usize = 4 * 1024 * 1024;

/// Whether a variable of the daemon's environment passes to models.
pub fn inherited(name: &str) -> bool {
    INHERITED.contains(&name) || name.starts_with("LC_")
}

/// The command of a model run: argv, run folder as working directory, the allow-listed
/// environment plus `env` (the model's, then the contract's), stdin from /dev/null, stdout and
/// stderr piped (see [`capture`]), its own process group, and signals reset before `exec`.
pub fn model_command(
    argv: &[String],
    dir: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(
            std::env::vars_os()
                .filter(|(k, _)| inherited(&k.to_string_lossy()))
                .collect::<Vec<(OsString, OsString)>>(),
        )
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask, signal) between fork and
    // exec, on the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            reset_signals();
            Ok(())
        });
    }
    cmd
}

/// Empty signal mask and default dispositions, as a process started from a shell has: the
/// daemon blocks SIGTERM, SIGINT and SIGHUP for its own `sigwait`, and a model must not inherit
/// that (a `timeout` inside it would never fire).
fn reset_signals() {
    // SAFETY: async-signal-safe libc calls on a local set and this process's dispositions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Copies a model's stream into `path`, keeping at most [`OUTPUT_CAP`] bytes: the first quarter
/// as it comes, then the latest bytes in memory, written at the end after a line that says how
/// many bytes were cut. Returns the number of bytes cut.
pub fn capture(stream: impl Read + Send + 'static, path: &Path) -> io::Result<JoinHandle<u64>> {
    let file = std::fs::File::create(path)?;
    std::thread::Builder::new()
        .name("run-output".into())
        .spawn(move || copy_capped(stream, file, OUTPUT_CAP))
}

fn copy_capped(mut stream: impl Read, mut file: impl Write, cap: usize) -> u64 {
    let head_cap = cap / 4;
    let tail_cap = cap - head_cap;
    let mut head = 0usize;
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut cut = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut chunk = &buf[..n];
        if head < head_cap {
            let take = chunk.len().min(head_cap - head);
            let _ = file.write_all(&chunk[..take]);
            head += take;
            chunk = &chunk[take..];
        }
        tail.extend(chunk);
        if tail.len() > tail_cap {
            let over = tail.len() - tail_cap;
            tail.drain(..over);
            cut += over as u64;
        }
    }
    if cut > 0 {
        let _ = writeln!(
            file,
            "\n[pom: {cut} bytes cut here; at most {cap} bytes of each output are kept]"
        );
    }
    let (a, b) = tail.as_slices();
    let _ = file.write_all(a);
    let _ = file.write_all(b);
    let _ = file.flush();
    cut
}

/// Stops a run's whole tree with SIGKILL: the process group of `pid`, every descendant of `pid`
/// (also those that left the group with `setsid`), and every process whose environment names
/// the run (`POM_RUN_ID`), which finds descendants whose parent already died. Returns how many
/// processes were signalled.
pub fn kill_tree(pid: u32, run: &str) -> usize {
    kill_run(Some(pid), run)
}

/// Kills every live process of `run`: the group and descendants of `leader` when it is known,
/// and any process whose environment names the run, with its descendants. A daemon that died
/// between starting a model and recording its pid leaves no leader: the run id finds it.
/// Returns how many processes were found beyond the group signal.
pub fn kill_run(leader: Option<u32>, run: &str) -> usize {
    if let Some(pid) = leader {
        // SAFETY: signals the run's own process group; it may already be gone.
        unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
    }
    let mut total = 0;
    // A process may fork while the tree is walked: walk again until nothing is left.
    for _ in 0..5 {
        let found = run_processes(leader, run);
        if found.is_empty() {
            break;
        }
        for p in &found {
            // SAFETY: a process shown above to descend from the run or to carry its id.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        total += found.len();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    total
}

/// The live processes of a run: descendants of `leader`, and those whose environment holds
/// `POM_RUN_ID=<run>` with their descendants. Zombies are left out.
fn run_processes(leader: Option<u32>, run: &str) -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    let wanted = format!("POM_RUN_ID={run}");
    let mut parents: Vec<(i32, i32)> = Vec::new();
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if p == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if state == "Z" || state == "X" {
            continue;
        }
        parents.push((p, ppid));
        if std::fs::read(format!("/proc/{p}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()))
        {
            found.insert(p);
        }
    }
    let mut seen: BTreeSet<i32> = found.clone();
    if let Some(pid) = leader {
        seen.insert(pid as i32);
    }
    let mut frontier: Vec<i32> = seen.iter().copied().collect();
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && seen.insert(p) {
                found.insert(p);
                frontier.push(p);
            }
        }
    }
    found.remove(&me);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_in_the_middle_and_says_so() {
        let input: Vec<u8> = (0..10_000u32)
            .flat_map(|i| format!("{i:05}\n").into_bytes())
            .collect();
        let mut out = Vec::new();
        let cut = copy_capped(&input[..], &mut out, 4_000);
        assert_eq!(cut, input.len() as u64 - 4_000);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("00000\n"));
        assert!(text.ends_with("09999\n"));
        assert!(text.contains(&format!("[pom: {cut} bytes cut here")));
        let mut small = Vec::new();
        assert_eq!(copy_capped(&b"hello\n"[..], &mut small, 4_000), 0);
        assert_eq!(small, b"hello\n");
    }

    #[test]
    fn only_allow_listed_variables_pass() {
        assert!(inherited("PATH") && inherited("LC_ALL") && inherited("HOME"));
        assert!(!inherited("POM_TOKEN") && !inherited("AWS_SECRET_ACCESS_KEY"));
    }
}
