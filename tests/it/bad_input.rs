//! Bad input gets a readable reason in `rejected/` and costs bounded time and memory, while good
//! files keep flowing.

use crate::common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, pi_series};
use pom::ledger::{State, Submission};

fn billion_laughs() -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        s.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    s.push_str("]>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">&lol9;</TimeSeries>\n");
    s.into_bytes()
}

fn quadratic_blowup() -> Vec<u8> {
    let big = "x".repeat(100_000);
    let refs = "&a;".repeat(100_000);
    format!("<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY a \"{big}\">]>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">{refs}</TimeSeries>\n").into_bytes()
}

fn external_entity(url: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY e SYSTEM \"{url}\">]>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"><timeZone>&e;</timeZone></TimeSeries>\n").into_bytes()
}

fn deep(levels: usize) -> Vec<u8> {
    format!(
        "<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">{}{}</TimeSeries>",
        "<a>".repeat(levels),
        "</a>".repeat(levels)
    )
    .into_bytes()
}

/// Drops a file under any name, as a well-behaved producer of a rename channel would: written
/// under a temporary name, then renamed.
fn write_raw(dir: &Path, name: &[u8], bytes: &[u8]) {
    let tmp = dir.join(".incoming.part");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(OsStr::from_bytes(name))).unwrap();
}

#[test]
fn each_bad_input_is_rejected_with_a_reason_while_good_files_flow() {
    // A listener that counts connections: no entity may ever reach the network.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let stop_listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::clone(&stop_listening);
    let accept = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok((mut s, _)) = listener.accept() {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nsecret");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    let mut gw = Gateway::new();
    gw.start();
    let obs = gw.incoming("obs");
    let valid = pi_series(1, 2);
    let truncated = &valid[..valid.len() / 2];
    let outside = gw.dir.path().join("outside-secret.xml");
    std::fs::write(&outside, pi_series(99, 1)).unwrap();

    // (name, content, expected kind)
    let mut bad: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (
            b"malformed.xml".to_vec(),
            b"<TimeSeries><a></TimeSeries>".to_vec(),
            "malformed",
        ),
        (b"truncated.xml".to_vec(), truncated.to_vec(), "malformed"),
        (b"empty.xml".to_vec(), Vec::new(), "malformed"),
        (
            b"binary.xml".to_vec(),
            vec![0u8, 159, 146, 150, 255, 0, 1],
            "malformed",
        ),
        (b"laughs.xml".to_vec(), billion_laughs(), "doctype"),
        (b"quadratic.xml".to_vec(), quadratic_blowup(), "doctype"),
        (
            b"xxe-file.xml".to_vec(),
            external_entity("file:///etc/passwd"),
            "doctype",
        ),
        (
            b"xxe-net.xml".to_vec(),
            external_entity(&format!("http://127.0.0.1:{port}/x")),
            "doctype",
        ),
        (b"deep.xml".to_vec(), deep(10_000), "too-deep"),
        (
            b"unknown.xml".to_vec(),
            b"<kml xmlns=\"http://www.opengis.net/kml/2.2\"/>".to_vec(),
            "unrecognised",
        ),
        (
            b"old-version.xml".to_vec(),
            String::from_utf8(pi_series(2, 1))
                .unwrap()
                .replace("version=\"1.2\"", "version=\"0.9\"")
                .into_bytes(),
            "version-not-accepted",
        ),
        (b"new\nline.xml".to_vec(), pi_series(3, 1), "unsafe-name"),
        (b"-rf.xml".to_vec(), pi_series(4, 1), "unsafe-name"),
        (b"x..y.xml".to_vec(), pi_series(5, 1), "unsafe-name"),
        (
            b"latin1-\xe9\xff.xml".to_vec(),
            pi_series(6, 1),
            "unsafe-name",
        ),
        (
            [b"n".repeat(251), b".xml".to_vec()].concat(),
            pi_series(7, 1),
            "unsafe-name",
        ),
    ];
    let mut good = Vec::new();
    for (i, (name, bytes, _)) in bad.iter().enumerate() {
        write_raw(&obs, name, bytes);
        let g = format!("good-{i}.xml");
        gw.drop_file("obs", &g, &pi_series(1000 + i, 2));
        good.push(g);
    }
    // A 100 MB file (over the default 64 MiB limit).
    {
        let mut f = std::fs::File::create(obs.join("huge.xml.part")).unwrap();
        f.write_all(b"<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">")
            .unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"</TimeSeries>").unwrap();
        std::fs::rename(obs.join("huge.xml.part"), obs.join("huge.xml")).unwrap();
    }
    bad.push((b"huge.xml".to_vec(), Vec::new(), "too-large"));
    // A link to a file outside the spool, and a named pipe.
    std::os::unix::fs::symlink(&outside, obs.join("link.xml")).unwrap();
    bad.push((b"link.xml".to_vec(), Vec::new(), "not-a-regular-file"));
    let fifo = std::ffi::CString::new(obs.join("pipe.xml").as_os_str().as_bytes()).unwrap();
    // SAFETY: creates a FIFO at a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    bad.push((b"pipe.xml".to_vec(), Vec::new(), "not-a-regular-file"));
    for i in 0..5 {
        let g = format!("good-late-{i}.xml");
        gw.drop_file("obs", &g, &pi_series(2000 + i, 2));
        good.push(g);
    }

    let started = Instant::now();
    let decided = gw.wait_for_decided(bad.len() + good.len(), 120);
    let took = started.elapsed();
    let by_name = |n: &[u8]| -> &Submission {
        decided
            .iter()
            .find(|s| s.original == n)
            .unwrap_or_else(|| panic!("{:?} not recorded", String::from_utf8_lossy(n)))
    };
    let mut report = String::new();
    for (name, _, kind) in &bad {
        let s = by_name(name);
        assert_eq!(
            s.state,
            State::Rejected,
            "{:?}: {s:?}",
            String::from_utf8_lossy(name)
        );
        assert_eq!(
            s.reject_kind.as_deref(),
            Some(*kind),
            "{:?}: {s:?}",
            String::from_utf8_lossy(name)
        );
        let reason = gw.reason_of(s);
        assert!(reason.contains("reason:") && reason.len() > 60, "{reason}");
        report.push_str(&format!(
            "{:<40} {:<22} {}\n",
            format!("{:?}", String::from_utf8_lossy(name)),
            kind,
            s.reason.as_deref().unwrap_or("")
        ));
    }
    println!("{report}decided in {took:?}");
    for g in &good {
        assert_eq!(by_name(g.as_bytes()).state, State::Archived, "{g}");
    }
    // The link was moved, not followed: what is in rejected/ is still a link, the target intact.
    let link = gw
        .spool()
        .join(by_name(b"link.xml").stored.as_ref().unwrap());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(outside.exists());
    // The truncated file says where it breaks.
    let t = by_name(b"truncated.xml");
    assert!(t.errors.iter().any(|e| e.line.is_some()), "{t:?}");
    // The original name is kept byte for byte.
    assert!(decided.iter().any(|s| s.original == b"latin1-\xe9\xff.xml"));
    // Nothing went to the network.
    stop_listening.store(true, Ordering::Relaxed);
    accept.join().unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "an external entity was fetched"
    );
    gw.stop();
}

#[test]
fn a_100_mb_file_costs_bounded_memory() {
    // With the size limit raised, a 100 MB PI file is read, hashed and validated in streaming:
    // the daemon's peak memory stays far below the file's size.
    let mut gw = Gateway::new();
    gw.extra_args = vec!["--max-size".into(), (200u64 << 20).to_string()];
    gw.start();
    let path = gw.incoming("obs").join(".big.xml.part");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let head = pi_series(1, 1);
        let text = String::from_utf8(head).unwrap();
        let (start, _) = text.split_once("  </series>").unwrap();
        f.write_all(start.as_bytes()).unwrap();
        let mut written = start.len();
        let mut i = 0u64;
        while written < 100 << 20 {
            let line = format!(
                "    <event date=\"2026-01-01\" time=\"00:00:00\" value=\"{i}.0\" flag=\"0\"/>\n"
            );
            f.write_all(line.as_bytes()).unwrap();
            written += line.len();
            i += 1;
        }
        f.write_all(b"  </series>\n</TimeSeries>\n").unwrap();
    }
    std::fs::rename(&path, gw.incoming("obs").join("big.xml")).unwrap();
    let decided = gw.wait_for_decided(1, 120);
    assert_eq!(decided[0].state, State::Archived, "{:?}", decided[0]);
    let pid = gw.child.as_ref().unwrap().id();
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))
        .unwrap()
        .read_to_string(&mut status)
        .unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!(
        "peak RSS while examining a 100 MB file: {} MB",
        hwm_kb / 1024
    );
    assert!(hwm_kb < 64 * 1024, "peak RSS {} kB", hwm_kb);
    gw.stop();
}
