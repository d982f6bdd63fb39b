//! The operator's commands: `pom check`, `pom status`, `pom files`.

use crate::common;

use common::{Gateway, pi_series};

#[test]
fn pom_check_prints_every_problem_with_file_and_line_and_fails() {
    let gw = Gateway::with_channels(
        "[channels.a]\ncompletion = \"sometimes\"\n\n[channels.b]\ncompletion = \"rename\"\nignore = [\"[\"]\n",
    );
    std::fs::write(
        gw.dir.path().join("schemas/catalog.toml"),
        std::fs::read_to_string(gw.dir.path().join("schemas/catalog.toml"))
            .unwrap()
            .replace("pi-xml/pi_diag.xsd", "pi-xml/missing.xsd"),
    )
    .unwrap();
    let out = gw.pom().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("channels.toml:2: channel `a`: completion `sometimes`"),
        "{text}"
    );
    assert!(
        text.contains("channels.toml:6: channel `b`: ignore pattern `[`"),
        "{text}"
    );
    assert!(
        text.contains("catalog.toml:") && text.contains("missing.xsd` not found"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
}

#[test]
fn pom_check_reports_an_xsd_that_does_not_compile() {
    let gw = Gateway::new();
    std::fs::write(
        gw.dir.path().join("schemas/pi-xml/pi_diag.xsd"),
        "<schema><broken",
    )
    .unwrap();
    let out = gw.pom().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("pi_diag.xsd"), "{text}");
}

#[test]
fn the_repository_rules_and_schemas_pass_pom_check() {
    // The sample models are the repository's examples, on the PATH as scripts/serve puts them.
    let path = format!(
        "{}:{}",
        common::repo().join("target/debug/examples").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pom"))
        .current_dir(common::repo())
        .env("PATH", path)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn status_and_files_read_the_ledger_as_text_and_json() {
    let mut gw = Gateway::new();
    gw.start();
    gw.drop_file("obs", "good.xml", &pi_series(1, 1));
    gw.wait_for_decided(1, 20);
    gw.drop_file("obs", "bad.xml", b"<nope");
    gw.wait_for_decided(2, 20);
    gw.stop();

    let out = gw.pom().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queue_depth"], 0);
    let obs = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "obs")
        .unwrap();
    assert_eq!(obs["states"]["archived"], 1);
    assert_eq!(obs["states"]["rejected"], 1);

    let out = gw
        .pom()
        .args(["files", "--state", "rejected", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["original"], "bad.xml");
    assert_eq!(rows[0]["reject_kind"], "malformed");
    let id = rows[0]["id"].as_str().unwrap();
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("file rejected") && l.contains(&format!("file.id={id}"))),
        "{}",
        gw.log()
    );

    let out = gw
        .pom()
        .args(["files", "--channel", "obs", "--limit", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "a header and one file: {text}");
    assert!(
        text.lines().next().unwrap().starts_with("file ")
            && text.lines().next().unwrap().contains("mode"),
        "{text}"
    );
    assert!(text.contains("bad.xml"), "newest first: {text}");
    assert!(text.contains("operational"), "{text}");

    // An empty list says so; replay traffic has its own view.
    let out = gw.pom().args(["runs"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no operational runs match\n"
    );
    let out = gw
        .pom()
        .args(["files", "--mode", "replay"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no replay files match\n"
    );

    let out = gw.pom().args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("obs") && text.contains("queue: 0"), "{text}");
    assert!(
        text.contains("last arrival (UTC)") && text.contains("Z "),
        "{text}"
    );
    // With --local, times are the machine's, with their offset, and the header says so.
    let out = gw
        .pom()
        .env("TZ", "Europe/Paris")
        .args(["status", "--local"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let received = chrono::DateTime::parse_from_rfc3339(rows[0]["received_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Paris);
    let offset = received.format("%:z").to_string();
    assert!(
        text.contains("last arrival (local)") && text.contains(&format!(" {offset}")),
        "{offset}: {text}"
    );

    let out = gw
        .pom()
        .args(["files", "--state", "lost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_alert_command_writes_a_mail_for_the_local_mta() {
    // The MTA's sendmail interface (`sendmail -t` reads the message, headers first): a stand-in
    // that keeps what it is given, as the MTA would queue it.
    let d = tempfile::tempdir().unwrap();
    let queued = d.path().join("queued.eml");
    let sendmail = d.path().join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\n[ \"$1\" = -t ] || exit 64\ncat > {}\n",
            queued.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(common::repo().join("scripts/alert-mail"))
        .arg("duty@centre.example")
        .env("SENDMAIL", &sendmail)
        .env("POM_ALERT_STATE", "raised")
        .env("POM_ALERT_KIND", "late_feed")
        .env("POM_ALERT_SUBJECT", "obs")
        .env(
            "POM_ALERT_MESSAGE",
            "channel `obs` is late:\nlast file at 06:00",
        )
        .env("POM_ALERT_SINCE", "2026-11-30T07:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mail = std::fs::read_to_string(&queued).unwrap();
    let (head, body) = mail.split_once("\n\n").unwrap();
    assert!(
        head.starts_with("To: duty@centre.example\nSubject: [POM "),
        "{mail}"
    );
    assert!(
        head.lines()
            .any(|l| l.starts_with("Subject: ") && l.ends_with("raised late_feed: obs")),
        "{mail}"
    );
    assert_eq!(
        head.lines().count(),
        3,
        "no line break gets into a header: {mail}"
    );
    assert!(
        body.contains("channel `obs` is late") && body.contains("Since:  2026-11-30T07:00:00Z")
    );
}
