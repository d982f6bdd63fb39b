//! Every file of the real-world corpus gets, from the running gateway, the verdict that
//! `xmllint` gives against the same XSD (or for well-formedness, where the catalog has no XSD).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Gateway, repo};
use pom::config::catalog::{Catalog, Check};
use pom::ledger::State;

fn corpus_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["pi-xml/instances", "sandre/1.1", "sandre/2"] {
        for e in std::fs::read_dir(common::corpus(dir)).unwrap().flatten() {
            out.push(e.path());
        }
    }
    out.sort();
    assert!(out.len() >= 11, "corpus missing: {out:?}");
    out
}

/// What xmllint says, given the check the catalog names for this file.
fn xmllint_accepts(file: &Path, check: Option<&Check>) -> bool {
    let mut cmd = Command::new("xmllint");
    cmd.arg("--noout").arg("--nonet");
    if let Some(Check::Xsd(xsd)) = check {
        cmd.arg("--schema").arg(xsd);
    }
    let out = cmd
        .arg(file)
        .output()
        .expect("xmllint must be installed (Debian package libxml2-utils; .ci/run installs it)");
    out.status.success()
}

#[test]
fn every_corpus_file_gets_the_verdict_of_xmllint() {
    let catalog = Catalog::load(&repo().join("schemas")).unwrap();
    let mut gw = Gateway::new();
    gw.start();
    let files = corpus_files();
    for (i, f) in files.iter().enumerate() {
        let name = format!("{i:02}_{}", f.file_name().unwrap().to_string_lossy());
        gw.drop_file("obs", &name, &std::fs::read(f).unwrap());
    }
    gw.wait_for_decided(files.len(), 60);
    let mut table = String::new();
    let mut disagreements = 0;
    for (i, f) in files.iter().enumerate() {
        let name = format!("{i:02}_{}", f.file_name().unwrap().to_string_lossy());
        let s = gw.find(name.as_bytes()).expect("recorded");
        // The check the catalog gives this file: from the format and version the gateway found.
        let check = s
            .format
            .as_ref()
            .and_then(|fmt| catalog.formats().iter().find(|x| &x.name == fmt))
            .and_then(|fmt| fmt.check_for(s.version.as_deref().unwrap_or("")));
        let lint = xmllint_accepts(f, check);
        let ours = s.state == State::Archived;
        if lint != ours {
            disagreements += 1;
        }
        table.push_str(&format!(
            "{name:<50} xmllint {:<8} pom {:<9} {}\n",
            if lint { "valid" } else { "invalid" },
            s.state.name(),
            s.reason.as_deref().unwrap_or("")
        ));
    }
    println!("{table}");
    assert_eq!(disagreements, 0, "pom and xmllint disagree:\n{table}");
    // Both verdicts occur in this corpus: the comparison is not vacuous.
    assert!(table.contains("pom archived") || table.contains("archived "));
    assert!(gw.decided().iter().any(|s| s.state == State::Rejected));
    gw.stop();
}

#[test]
fn pom_validate_gives_the_same_verdicts_and_exits_non_zero_on_any_invalid_file() {
    let catalog = Catalog::load(&repo().join("schemas")).unwrap();
    let gw = Gateway::new();
    let files = corpus_files();
    let out = gw
        .pom()
        .arg("validate")
        .arg("--json")
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "some corpus files are invalid");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (f, verdict) in files.iter().zip(v.as_array().unwrap()) {
        let check = verdict["format"]
            .as_str()
            .and_then(|fmt| catalog.formats().iter().find(|x| x.name == fmt))
            .and_then(|fmt| fmt.check_for(verdict["version"].as_str().unwrap_or("")));
        // For refused files the format is not in the output: recompute it from the identity.
        let check = check.cloned().or_else(|| {
            let text = std::fs::read(f).unwrap();
            let id = pom::examine::identify::identify(&text[..], &catalog, 100);
            let root = id.root?;
            catalog
                .recognise(&root.local, &root.namespace)?
                .check_for(id.version.as_deref()?)
                .cloned()
        });
        assert_eq!(
            verdict["valid"].as_bool().unwrap(),
            xmllint_accepts(f, check.as_ref()),
            "{}: {verdict}",
            f.display()
        );
    }
    let ok = gw
        .pom()
        .arg("validate")
        .arg(common::corpus("pi-xml/instances/wflow_run_info.xml"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("valid: pi-run 1.8 (pi_run.xsd)"), "{text}");
}
