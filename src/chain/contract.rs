//! The model contract, after Delft-FEWS's General Adapter: a run folder, a PI run file, a PI
//! diagnostics file.
//!
//! In: a model, its inputs (archived files by slot) and time0. Out: `runs/<model>/<run-id>/` with
//! `input/` (the files under their original names), `output/`, `run.xml` in PI run format (time0,
//! start and end, work dir, input and output files, diagnostics file, properties with the run id
//! and mode) and the environment a run gets. After the run: the diagnostics read back, a fatal
//! line failing the run even on exit 0.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;

/// Name of the run file in the run folder.
pub const RUN_FILE: &str = "run.xml";
/// Name of the diagnostics file the model writes.
pub const DIAG_FILE: &str = "diag.xml";

/// Whether a run is operational or part of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live traffic.
    Normal,
    /// A replay of the past.
    Replay,
}

impl Mode {
    /// As written in `POM_MODE` and the run file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Replay => "replay",
        }
    }
}

/// Everything needed to lay out a run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Run id.
    pub id: String,
    /// Model name.
    pub model: String,
    /// The forecast time.
    pub time0: DateTime<Utc>,
    /// Start and end of the period the model covers.
    pub start: DateTime<Utc>,
    /// End of the period.
    pub end: DateTime<Utc>,
    /// Mode.
    pub mode: Mode,
    /// Inputs: slot, file name in `input/`, and where the file is now.
    pub inputs: Vec<(String, String, PathBuf)>,
    /// Extra properties for the run file.
    pub properties: BTreeMap<String, String>,
}

/// Text made safe for XML and HTML (quick-xml's escaper: the project has no other).
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn date_time(name: &str, t: DateTime<Utc>) -> String {
    format!(
        "    <{name} date=\"{}\" time=\"{}\"/>\n",
        t.format("%Y-%m-%d"),
        t.format("%H:%M:%S")
    )
}

/// The PI run file for a plan laid out in `dir` (valid against `pi_run.xsd`, version 1.5).
pub fn run_file(plan: &RunPlan, dir: &Path) -> String {
    let d = |p: &Path| esc(&p.display().to_string());
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Run xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.5\">\n",
    );
    x.push_str("    <logLevel>info</logLevel>\n    <timeZone>0.0</timeZone>\n");
    x.push_str(&date_time("startDateTime", plan.start));
    x.push_str(&date_time("endDateTime", plan.end));
    x.push_str(&date_time("time0", plan.time0));
    x.push_str(&format!("    <workDir>{}</workDir>\n", d(dir)));
    for (_, name, _) in &plan.inputs {
        x.push_str(&format!(
            "    <inputTimeSeriesFile>{}</inputTimeSeriesFile>\n",
            d(&dir.join("input").join(name))
        ));
    }
    x.push_str(&format!(
        "    <outputDiagnosticFile>{}</outputDiagnosticFile>\n",
        d(&dir.join(DIAG_FILE))
    ));
    x.push_str(&format!(
        "    <outputTimeSeriesFile>{}</outputTimeSeriesFile>\n",
        d(&dir.join("output"))
    ));
    x.push_str("    <properties>\n");
    let mut props = plan.properties.clone();
    props.insert("runId".into(), plan.id.clone());
    props.insert("model".into(), plan.model.clone());
    props.insert("mode".into(), plan.mode.name().into());
    for (slot, name, _) in &plan.inputs {
        props.insert(format!("input.{slot}"), name.clone());
    }
    for (k, v) in props {
        x.push_str(&format!(
            "        <string key=\"{}\" value=\"{}\"/>\n",
            esc(&k),
            esc(&v)
        ));
    }
    x.push_str("    </properties>\n</Run>\n");
    x
}

/// Makes the run folder: `input/` with the inputs (hard links, copies across file systems),
/// `output/`, and the run file. Returns the run file's path.
pub fn lay_out(plan: &RunPlan, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("input"))?;
    std::fs::create_dir_all(dir.join("output"))?;
    for (_, name, from) in &plan.inputs {
        let to = dir.join("input").join(name);
        if to.exists() {
            continue;
        }
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to)?;
        }
    }
    let file = dir.join(RUN_FILE);
    std::fs::write(&file, run_file(plan, dir))?;
    Ok(file)
}

/// The environment of a run.
pub fn environment(plan: &RunPlan, dir: &Path) -> Vec<(String, String)> {
    vec![
        ("POM_RUN_ID".into(), plan.id.clone()),
        ("POM_RUN_DIR".into(), dir.display().to_string()),
        (
            "POM_RUN_FILE".into(),
            dir.join(RUN_FILE).display().to_string(),
        ),
        (
            "POM_T0".into(),
            plan.time0.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        ("POM_MODE".into(), plan.mode.name().into()),
    ]
}

/// Fills the placeholders of a command.
pub fn command(argv: &[String], dir: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{run_dir}", &dir.display().to_string())
                .replace("{run_file}", &dir.join(RUN_FILE).display().to_string())
                .replace("{input_dir}", &dir.join("input").display().to_string())
                .replace("{output_dir}", &dir.join("output").display().to_string())
        })
        .collect()
}

/// One line of a PI diagnostics file, as the ledger keeps it.
pub use crate::ledger::runs::DiagLine;

/// Reads a PI diagnostics file (`<Diag><line level=".." description=".."/>…`) with the types
/// generated from `pi_diag.xsd`; a file that does not fit them (a newer PI revision, prefixed
/// names) is read leniently, line by line. A file that cannot be read gives no lines.
pub fn read_diag(path: &Path) -> Vec<DiagLine> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    if let Ok(diag) = crate::chain::pi::read::<crate::chain::pi::Diag>(&bytes) {
        return diag
            .content
            .line
            .into_iter()
            .take(1000)
            .map(|l| DiagLine {
                level: u8::try_from(l.level).unwrap_or(3),
                description: l.description,
            })
            .collect();
    }
    let mut reader = Reader::from_reader(&bytes[..]);
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    while let Ok(event) = reader.read_event_into(&mut buf) {
        match event {
            Event::Start(ref e) | Event::Empty(ref e) if e.local_name().as_ref() == b"line" => {
                let mut level = 3;
                let mut description = String::new();
                for a in e.attributes().with_checks(false).flatten() {
                    let value = a
                        .decode_and_unescape_value(reader.decoder())
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match a.key.local_name().as_ref() {
                        b"level" => level = value.trim().parse().unwrap_or(3),
                        b"description" => description = value,
                        _ => {}
                    }
                }
                lines.push(DiagLine { level, description });
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
        if lines.len() >= 1000 {
            break;
        }
    }
    lines
}

/// The first fatal line, if any.
pub fn fatal(lines: &[DiagLine]) -> Option<&DiagLine> {
    lines.iter().find(|l| l.level == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plan() -> RunPlan {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        RunPlan {
            id: "rr-20261128T120000000000Z".into(),
            model: "rr".into(),
            time0: t0,
            start: t0 - chrono::Duration::days(2),
            end: t0 + chrono::Duration::days(2),
            mode: Mode::Normal,
            inputs: vec![("rain".into(), "rain & more.xml".into(), PathBuf::from("/x"))],
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn the_run_file_is_valid_pi_run_xml() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("run.xml");
        std::fs::write(&f, run_file(&plan(), Path::new("/spool/runs/rr/1"))).unwrap();
        let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pi-xml/pi_run.xsd");
        let mut v = crate::examine::validate::Validator::new();
        assert_eq!(
            v.check(&f, &crate::config::catalog::Check::Xsd(xsd)),
            Ok(())
        );
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("<time0 date=\"2026-11-28\" time=\"12:00:00\"/>"));
        assert!(text.contains("rain &amp; more.xml"));
        assert!(text.contains("key=\"mode\" value=\"normal\""));
    }

    #[test]
    fn the_run_file_reads_back_with_the_types_generated_from_pi_run_xsd() {
        let text = run_file(&plan(), Path::new("/spool/runs/rr/1"));
        let run: crate::chain::pi::Run =
            crate::chain::pi::read(text.as_bytes()).expect("typed read");
        assert_eq!(run.content.time_0.date, "2026-11-28");
        assert_eq!(run.content.work_dir, "/spool/runs/rr/1");
        assert_eq!(run.content.input_time_series_file.len(), 1);
    }

    #[test]
    fn a_fatal_diagnostic_is_found() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("diag.xml");
        std::fs::write(
            &f,
            r#"<Diag xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><line level="3" description="start"/><line level="0" description="no rain &amp; no flow"/></Diag>"#,
        )
        .unwrap();
        // Read by the types generated from pi_diag.xsd.
        let typed: crate::chain::pi::Diag =
            crate::chain::pi::read(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(typed.content.line.len(), 2);
        let lines = read_diag(&f);
        assert_eq!(lines.len(), 2);
        assert_eq!(fatal(&lines).unwrap().description, "no rain & no flow");
        assert!(read_diag(&d.path().join("missing.xml")).is_empty());
    }
}
