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

use crate::chain::pi;

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
    /// Where the model writes its diagnostics, relative to the run folder.
    pub diagnostics: String,
    /// Slots whose files the model gets with time0 as their `forecastDate`.
    pub forecast_date_slots: Vec<String>,
    /// The state it starts from: each file's path under `input/`, and the file to copy there.
    pub state: Vec<(String, PathBuf)>,
    /// The PI state description the model writes under `output/` (and reads under `input/`
    /// when its state has one), named in the run file.
    pub state_description: Option<String>,
}

fn date_time(t: DateTime<Utc>) -> pi::DateTimeComplexType {
    pi::DateTimeComplexType {
        date: t.format("%Y-%m-%d").to_string(),
        time: t.format("%H:%M:%S").to_string(),
    }
}

/// The PI run file for a plan laid out in `dir` (valid against `pi_run.xsd`, version 1.5),
/// written by the types generated from that schema.
pub fn run_file(plan: &RunPlan, dir: &Path) -> io::Result<String> {
    let d = |p: &Path| p.display().to_string();
    let mut props = plan.properties.clone();
    props.insert("runId".into(), plan.id.clone());
    props.insert("model".into(), plan.model.clone());
    props.insert("mode".into(), plan.mode.name().into());
    for (slot, name, _) in &plan.inputs {
        props.insert(format!("input.{slot}"), name.clone());
    }
    let properties = props
        .into_iter()
        .map(|(key, value)| pi::PropertiesComplexContent2Type {
            content: pi::PropertiesComplexContent2TypeContent::String(
                pi::StringPropertyComplexType {
                    key,
                    value,
                    content: pi::StringPropertyComplexTypeContent { description: None },
                },
            ),
        })
        .collect();
    let run = pi::Run {
        version: pi::VersionStringType::_15,
        content: pi::RunComplexTypeContent {
            log_level: Some(pi::LogLevelStringType::Info),
            time_zone: 0.0,
            start_date_time: date_time(plan.start),
            end_date_time: date_time(plan.end),
            time_0: date_time(plan.time0),
            last_observation_date_time: None,
            work_dir: d(dir),
            input_parameter_file: Vec::new(),
            input_state_description_file: plan
                .state_description
                .iter()
                .filter(|desc| plan.state.iter().any(|(into, _)| into == *desc))
                .map(|desc| d(&dir.join("input").join(desc)))
                .collect(),
            input_time_series_file: plan
                .inputs
                .iter()
                .map(|(_, name, _)| d(&dir.join("input").join(name)))
                .collect(),
            input_map_stack_file: Vec::new(),
            input_netcdf_file: Vec::new(),
            input_longitudinal_profiles_file: Vec::new(),
            input_rating_curve_file: Vec::new(),
            output_diagnostic_file: d(&dir.join(&plan.diagnostics)),
            output_state_description_file: plan
                .state_description
                .as_ref()
                .map(|desc| d(&dir.join("output").join(desc))),
            output_time_series_file: vec![d(&dir.join("output"))],
            output_map_stack_file: Vec::new(),
            output_netcdf_file: Vec::new(),
            output_longitudinal_profiles_file: Vec::new(),
            properties: Some(pi::PropertiesComplexType {
                content: pi::PropertiesComplexTypeContent {
                    description: None,
                    content_2: properties,
                },
            }),
        },
    };
    pi::write(&run, "Run").map_err(io::Error::other)
}

/// Makes the run folder: `input/` with the inputs (hard links, copies across file systems; the
/// PI time series given one name are merged into it), `output/`, and the run file. Returns the
/// run file's path.
pub fn lay_out(plan: &RunPlan, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("input"))?;
    std::fs::create_dir_all(dir.join("output"))?;
    let mut by_name: Vec<(&str, &str, Vec<&Path>)> = Vec::new();
    for (slot, name, from) in &plan.inputs {
        match by_name.iter_mut().find(|(_, n, _)| n == name) {
            Some((_, _, files)) => files.push(from),
            None => by_name.push((slot, name, vec![from])),
        }
    }
    for (slot, name, files) in by_name {
        let to = dir.join("input").join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if to.exists() {
            continue;
        }
        let invalid = |e: crate::chain::merge::MergeError| {
            io::Error::new(io::ErrorKind::InvalidData, format!("input/{name}: {e}"))
        };
        if plan.forecast_date_slots.iter().any(|s| s == slot) {
            // A copy of its own, never a link: the archived original stays as it came.
            let bytes = match files[..] {
                [from] => std::fs::read(from)?,
                _ => {
                    let documents = files
                        .iter()
                        .map(std::fs::read)
                        .collect::<io::Result<Vec<_>>>()?;
                    let documents: Vec<&[u8]> = documents.iter().map(Vec::as_slice).collect();
                    crate::chain::merge::merge(&documents).map_err(invalid)?
                }
            };
            let stamped =
                crate::chain::merge::with_forecast_date(&bytes, plan.time0).map_err(invalid)?;
            std::fs::write(&to, stamped)?;
            continue;
        }
        if let [from] = files[..] {
            if std::fs::hard_link(from, &to).is_err() {
                std::fs::copy(from, &to)?;
            }
            continue;
        }
        let documents = files
            .iter()
            .map(std::fs::read)
            .collect::<io::Result<Vec<_>>>()?;
        let documents: Vec<&[u8]> = documents.iter().map(Vec::as_slice).collect();
        let merged = crate::chain::merge::merge(&documents).map_err(invalid)?;
        std::fs::write(&to, merged)?;
    }
    for (into, from) in &plan.state {
        // A copy of its own: a model that changes its state in place never alters the one saved.
        let to = dir.join("input").join(into);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, &to)
            .map_err(|e| io::Error::new(e.kind(), format!("the state {}: {e}", from.display())))?;
    }
    let file = dir.join(RUN_FILE);
    std::fs::write(&file, run_file(plan, dir)?)?;
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
            diagnostics: DIAG_FILE.into(),
            forecast_date_slots: Vec::new(),
            state: Vec::new(),
            state_description: None,
        }
    }

    #[test]
    fn the_run_file_is_valid_pi_run_xml() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("run.xml");
        std::fs::write(
            &f,
            run_file(&plan(), Path::new("/spool/runs/rr/1")).unwrap(),
        )
        .unwrap();
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
        // As Delft-FEWS writes it: the PI namespace as the default one, no prefix.
        assert!(text.contains("<Run xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.5\">"));
        assert!(!text.contains("fews:"), "{text}");
    }

    #[test]
    fn the_run_file_reads_back_with_the_types_generated_from_pi_run_xsd() {
        let text = run_file(&plan(), Path::new("/spool/runs/rr/1")).unwrap();
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
