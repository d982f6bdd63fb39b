//! Just enough PI-XML for the sample models: read a run file and time series, write a time series
//! and a diagnostics file. A real model keeps its own PI adapter; POM runs it unchanged.

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use quick_xml::Reader;
use quick_xml::events::Event;

/// What a model needs from the PI run file.
pub struct RunFile {
    pub work_dir: PathBuf,
    pub inputs: Vec<PathBuf>,
    pub diag: PathBuf,
    pub output_dir: PathBuf,
    /// The forecast time: observations end there, the forecast starts there.
    pub time0: NaiveDateTime,
    /// The end of the run's period: how far the forecast goes (its lead time past time0).
    pub end: NaiveDateTime,
}

/// A PI `date` and `time` pair.
pub fn parse_time(date: &str, time: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S").ok()
}

/// A time as PI writes it: (date, time).
pub fn pi_time(t: NaiveDateTime) -> (String, String) {
    (
        t.format("%Y-%m-%d").to_string(),
        t.format("%H:%M:%S").to_string(),
    )
}

fn text_of(bytes: &[u8], wanted: &[&str]) -> Vec<(String, String)> {
    let mut r = Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut current: Option<String> = None;
    let mut out = Vec::new();
    while let Ok(e) = r.read_event_into(&mut buf) {
        match e {
            Event::Start(s) => {
                let n = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                current = wanted.contains(&n.as_str()).then_some(n);
            }
            Event::Text(t) => {
                if let Some(n) = &current {
                    out.push((n.clone(), t.decode().unwrap_or_default().trim().to_string()));
                }
            }
            Event::End(_) => current = None,
            Event::Empty(s)
                if wanted.contains(&&*String::from_utf8_lossy(s.local_name().as_ref())) =>
            {
                let attr = |k: &[u8]| {
                    s.try_get_attribute(k)
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                        .unwrap_or_default()
                };
                out.push((
                    String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    format!("{} {}", attr(b"date"), attr(b"time")),
                ));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

/// Reads the run file given as the first argument.
pub fn run_file() -> Result<RunFile, String> {
    let path = std::env::args().nth(1).ok_or("usage: MODEL RUN_FILE")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let fields = text_of(
        &bytes,
        &[
            "workDir",
            "inputTimeSeriesFile",
            "outputDiagnosticFile",
            "outputTimeSeriesFile",
            "time0",
            "endDateTime",
        ],
    );
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| PathBuf::from(v))
    };
    let time = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.split_once(' '))
            .and_then(|(d, t)| parse_time(d, t))
            .ok_or(format!("no {k} in the run file"))
    };
    Ok(RunFile {
        work_dir: get("workDir").ok_or("no workDir")?,
        inputs: fields
            .iter()
            .filter(|(n, _)| n == "inputTimeSeriesFile")
            .map(|(_, v)| PathBuf::from(v))
            .collect(),
        diag: get("outputDiagnosticFile").ok_or("no outputDiagnosticFile")?,
        output_dir: get("outputTimeSeriesFile").ok_or("no outputTimeSeriesFile")?,
        time0: time("time0")?,
        end: time("endDateTime")?,
    })
}

/// One PI series: its header fields and its events.
pub struct Series {
    pub location: String,
    pub parameter: String,
    /// The forecast's time0, for a forecast.
    pub forecast: Option<NaiveDateTime>,
    pub events: Vec<(String, String, f64)>,
}

impl Series {
    /// The events with their times.
    pub fn timed(&self) -> impl Iterator<Item = (NaiveDateTime, f64)> + '_ {
        self.events
            .iter()
            .filter_map(|(d, t, v)| parse_time(d, t).map(|at| (at, *v)))
    }
}

/// Reads the first series of a PI time series file.
pub fn read_series(path: &Path) -> Result<Series, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fields = text_of(&bytes, &["locationId", "parameterId"]);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut r = Reader::from_reader(&bytes[..]);
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while let Ok(e) = r.read_event_into(&mut buf) {
        match e {
            Event::Empty(s) | Event::Start(s) if s.local_name().as_ref() == b"event" => {
                let (mut d, mut t, mut v) = (String::new(), String::new(), f64::NAN);
                for a in s.attributes().flatten() {
                    let val = String::from_utf8_lossy(&a.value).into_owned();
                    match a.key.local_name().as_ref() {
                        b"date" => d = val,
                        b"time" => t = val,
                        b"value" => v = val.parse().unwrap_or(f64::NAN),
                        _ => {}
                    }
                }
                events.push((d, t, v));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(Series {
        location: get("locationId"),
        parameter: get("parameterId"),
        forecast: None,
        events,
    })
}

/// Writes a PI time series (version 1.2, valid against pi_timeseries.xsd).
pub fn write_series(path: &Path, s: &Series, units: &str) -> std::io::Result<()> {
    let first = s.events.first().cloned().unwrap_or_default();
    let last = s.events.last().cloned().unwrap_or_default();
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">\n  <timeZone>0.0</timeZone>\n  <series>\n    <header>\n      <type>instantaneous</type>\n",
    );
    x.push_str(&format!(
        "      <locationId>{}</locationId>\n      <parameterId>{}</parameterId>\n      <timeStep unit=\"second\" multiplier=\"3600\"/>\n      <startDate date=\"{}\" time=\"{}\"/>\n      <endDate date=\"{}\" time=\"{}\"/>\n",
        s.location, s.parameter, first.0, first.1, last.0, last.1
    ));
    if let Some(t0) = s.forecast {
        let (d, t) = pi_time(t0);
        x.push_str(&format!(
            "      <forecastDate date=\"{d}\" time=\"{t}\"/>\n"
        ));
    }
    x.push_str(&format!(
        "      <missVal>-999.0</missVal>\n      <units>{units}</units>\n    </header>\n"
    ));
    for (d, t, v) in &s.events {
        x.push_str(&format!(
            "    <event date=\"{d}\" time=\"{t}\" value=\"{v:.3}\" flag=\"0\"/>\n"
        ));
    }
    x.push_str("  </series>\n</TimeSeries>\n");
    std::fs::write(path, x)
}

/// Writes a PI diagnostics file: (level, message) lines, 0 fatal … 3 info.
pub fn write_diag(path: &Path, lines: &[(u8, String)]) -> std::io::Result<()> {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Diag xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\">\n",
    );
    for (level, m) in lines {
        let m = m
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;");
        x.push_str(&format!(
            "  <line level=\"{level}\" description=\"{m}\"/>\n"
        ));
    }
    x.push_str("</Diag>\n");
    std::fs::write(path, x)
}

/// Runs a model body, writing its diagnostics; a failure is a fatal line and exit 1.
pub fn main_with(name: &str, body: impl FnOnce(&RunFile) -> Result<Vec<String>, String>) {
    let run = match run_file() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    let mut lines = vec![(3u8, format!("{name} started, time0 {}", run.time0))];
    let code = match body(&run) {
        Ok(info) => {
            lines.extend(info.into_iter().map(|m| (3, m)));
            0
        }
        Err(e) => {
            lines.push((0, e));
            1
        }
    };
    if let Err(e) = write_diag(&run.diag, &lines) {
        eprintln!("{name}: cannot write {}: {e}", run.diag.display());
    }
    let _ = &run.work_dir;
    std::process::exit(code);
}
