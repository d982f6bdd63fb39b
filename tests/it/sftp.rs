//! Real uploads over SFTP, against OpenSSH's sshd started on 127.0.0.1 by the test: in place,
//! `.part` then rename, and an upload killed half-way.

use crate::common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, eventually, pi_series};
use pom::ledger::State;

struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian package openssh-client; .ci/run installs it)");
    assert!(st.success());
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd missing (Debian package openssh-server; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
             PidFile {d}/sshd.pid\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let check = Command::new(sshd)
            .arg("-t")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "sshd -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            dir,
            port,
            child,
            user,
        }
    }

    /// An sftp client running `commands` in batch mode.
    fn sftp(&self, commands: &str, extra: &[&str]) -> Command {
        let batch = self.dir.path().join(format!("batch-{}", commands.len()));
        std::fs::write(&batch, commands).unwrap();
        let mut c = Command::new("sftp");
        c.arg("-i")
            .arg(self.dir.path().join("client_key"))
            .arg("-P")
            .arg(self.port.to_string())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
            ])
            .args(extra)
            .arg("-b")
            .arg(batch)
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn run(&self, commands: &str) {
        let out = self
            .sftp(commands, &[])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sftp failed: {}\nsshd: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
        );
    }
}

fn local_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn sftp_uploads_in_place_with_rename_and_killed_half_way() {
    let sshd = Sshd::start();
    let mut gw = Gateway::new();
    gw.start();
    let local = tempfile::tempdir().unwrap();
    let obs = gw.incoming("obs");
    let still = gw.incoming("still");

    // 1. In place, under the final name, on a quiet channel.
    let a = local_file(local.path(), "inplace.xml", &pi_series(1, 200));
    sshd.run(&format!(
        "put {} {}/inplace.xml\n",
        a.display(),
        still.display()
    ));

    // 2. Under a temporary name, then renamed (the standard SFTP rename is link + unlink).
    let b = local_file(local.path(), "renamed.xml", &pi_series(2, 200));
    sshd.run(&format!(
        "put {b} {o}/renamed.xml.part\nrename {o}/renamed.xml.part {o}/renamed.xml\n",
        b = b.display(),
        o = obs.display()
    ));

    let decided = gw.wait_for_decided(2, 60);
    for s in &decided {
        assert_eq!(s.state, State::Archived, "{s:?}");
    }

    // 3. A 20 MB upload, throttled, killed half-way: in place on the quiet channel, and as .part
    //    on the rename channel.
    let mut big = pi_series(3, 20 * 1024);
    big.truncate(big.len() - 100);
    big.extend_from_slice(b"\n  </series>\n</TimeSeries>\n");
    let c = local_file(local.path(), "big.xml", &big);
    for (dest, dir) in [("killed.xml", &still), ("killed-part.xml.part", &obs)] {
        let mut upload = sshd
            .sftp(
                &format!("put {} {}/{dest}\n", c.display(), dir.display()),
                &["-l", "16000"],
            )
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let target = dir.join(dest);
        eventually(30, "the upload to start", || {
            std::fs::metadata(&target)
                .map(|m| m.len() > 1 << 20)
                .unwrap_or(false)
        });
        upload.kill().unwrap();
        upload.wait().unwrap();
        let _ = std::io::stdout().flush();
    }
    let decided = gw.wait_for_decided(3, 60);
    let killed = decided
        .iter()
        .find(|s| s.original == b"killed.xml")
        .expect("killed upload recorded");
    assert_eq!(
        killed.state,
        State::Rejected,
        "a truncated upload was archived: {killed:?}"
    );
    assert_eq!(killed.reject_kind.as_deref(), Some("malformed"));
    assert!(
        (killed.size.unwrap() as usize) < big.len(),
        "the upload was not cut"
    );
    // The .part of the killed rename-upload is never taken.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(obs.join("killed-part.xml.part").exists());
    assert_eq!(gw.decided().len(), 3);
    assert!(
        gw.decided()
            .iter()
            .all(|s| s.original != b"killed-part.xml.part")
    );
    gw.stop();
}
