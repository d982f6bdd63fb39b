//! Hydrographs: the PI time series of archived files, for the pages to plot.
//!
//! In: the bytes of a PI time-series document (read by the caller from the archive). Out: its
//! series (location, parameter and its family, qualifiers, ensemble member, forecast date, unit)
//! with their times (milliseconds since the epoch, UTC) and values (`None` where missing),
//! thinned to at most a given number of points per series by keeping the lowest and highest value
//! of each slice of time: a peak is never lost, and a 100,000-value file plots at once. Never: the
//! disk, the ledger or the clock.

use chrono::{NaiveDate, NaiveTime};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// One series, ready to plot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Series {
    /// `locationId`.
    pub location: String,
    /// `parameterId`.
    pub parameter: String,
    /// The parameter's family: what comes before its first `.` (`Q` for `Q.obs`, `Q.sim` and
    /// `Q.fcst`): a forecast is plotted against the observations of its family.
    pub family: String,
    /// `qualifierId`s.
    pub qualifiers: Vec<String>,
    /// `ensembleMemberIndex` (or `ensembleMemberId`), for a member of an ensemble.
    pub member: Option<String>,
    /// `forecastDate`, ms since the epoch.
    pub forecast_date: Option<i64>,
    /// `units`.
    pub unit: String,
    /// How many events the file holds for it.
    pub points: usize,
    /// Its first and last event, ms since the epoch (before any thinning).
    pub first: Option<i64>,
    /// See `first`.
    pub last: Option<i64>,
    /// Times, ms since the epoch (UTC).
    pub t: Vec<i64>,
    /// Values; `None` where missing.
    pub v: Vec<Option<f64>>,
}

/// The series of a PI time-series document, each thinned to at most `most` points (at least
/// 4). Whatever is not a PI time series gives none.
pub fn read_pi(bytes: &[u8], most: usize) -> Vec<Series> {
    let most = most.max(4);
    let mut reader = Reader::from_reader(bytes);
    let mut out: Vec<Series> = Vec::new();
    let mut zone_ms = 0i64;
    let mut field: Option<String> = None;
    let mut miss: Option<String> = None;
    let mut in_header = false;
    loop {
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(e) => e,
        };
        match event {
            Event::Start(e) => {
                let name = local(&e);
                match name.as_str() {
                    "series" => {
                        out.push(empty());
                        miss = None;
                    }
                    "header" => in_header = true,
                    "event" => push_event(out.last_mut(), &e, zone_ms, miss.as_deref()),
                    _ => field = Some(name),
                }
            }
            Event::Empty(e) => match local(&e).as_str() {
                "event" => push_event(out.last_mut(), &e, zone_ms, miss.as_deref()),
                "forecastDate" if in_header => {
                    if let Some(s) = out.last_mut() {
                        s.forecast_date = stamp(&e).map(|t| t - zone_ms);
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                let Some(f) = &field else { continue };
                let text = t.decode().map(|s| s.trim().to_string()).unwrap_or_default();
                if f == "timeZone" && !in_header {
                    zone_ms = text
                        .parse::<f64>()
                        .map(|h| (h * 3_600_000.0).round() as i64)
                        .unwrap_or(0);
                    continue;
                }
                let Some(s) = out.last_mut().filter(|_| in_header) else {
                    continue;
                };
                match f.as_str() {
                    "locationId" => s.location = text,
                    "parameterId" => {
                        s.family = text.split('.').next().unwrap_or(&text).to_string();
                        s.parameter = text;
                    }
                    "qualifierId" => s.qualifiers.push(text),
                    "ensembleMemberIndex" | "ensembleMemberId" => s.member = Some(text),
                    "missVal" => miss = Some(text),
                    "units" => s.unit = text,
                    _ => {}
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"header" {
                    in_header = false;
                }
                field = None;
            }
            _ => {}
        }
    }
    for s in &mut out {
        thin(s, most);
    }
    out
}

fn empty() -> Series {
    Series {
        location: String::new(),
        parameter: String::new(),
        family: String::new(),
        qualifiers: Vec::new(),
        member: None,
        forecast_date: None,
        unit: String::new(),
        points: 0,
        first: None,
        last: None,
        t: Vec::new(),
        v: Vec::new(),
    }
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// The `date` and `time` attributes of a PI element, as ms since the epoch (in the document's
/// zone; the caller shifts it to UTC).
fn stamp(e: &BytesStart<'_>) -> Option<i64> {
    let attr = |name: &[u8]| e.try_get_attribute(name).ok().flatten().map(|a| a.value);
    let (date, time) = (attr(b"date")?, attr(b"time")?);
    // `YYYY-MM-DD` and `HH:MM:SS`, read as digits: a long series has hundreds of thousands.
    let num = |b: &[u8]| -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (d, t) = (date.as_ref(), time.as_ref());
    if d.len() != 10 || d[4] != b'-' || d[7] != b'-' || t.len() < 8 || t[2] != b':' || t[5] != b':'
    {
        return None;
    }
    let day = NaiveDate::from_ymd_opt(num(&d[..4])? as i32, num(&d[5..7])?, num(&d[8..])?)?;
    let at = NaiveTime::from_hms_opt(num(&t[..2])?, num(&t[3..5])?, num(&t[6..8])?)?;
    Some(day.and_time(at).and_utc().timestamp_millis())
}

fn push_event(series: Option<&mut Series>, e: &BytesStart<'_>, zone_ms: i64, miss: Option<&str>) {
    let (Some(s), Some(t)) = (series, stamp(e)) else {
        return;
    };
    let value = e
        .try_get_attribute("value")
        .ok()
        .flatten()
        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string());
    let v = value
        .filter(|v| Some(v.as_str()) != miss)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && miss.and_then(|m| m.parse::<f64>().ok()) != Some(*v));
    let t = t - zone_ms;
    s.first = Some(s.first.map_or(t, |f| f.min(t)));
    s.last = Some(s.last.map_or(t, |l| l.max(t)));
    s.t.push(t);
    s.v.push(v);
    s.points += 1;
}

/// One series from the parts several files hold of it (each in time order; a later part wins
/// where two give the same time), from `from` on (ms since the epoch), thinned to `most` points.
/// The header is the last part's.
pub fn merged(parts: Vec<Series>, from: i64, most: usize) -> Option<Series> {
    let mut head = parts.last()?.clone();
    let mut events: std::collections::BTreeMap<i64, Option<f64>> = Default::default();
    for p in parts {
        for (t, v) in p.t.into_iter().zip(p.v) {
            if t >= from {
                events.insert(t, v);
            }
        }
    }
    head.points = events.len();
    head.first = events.keys().next().copied();
    head.last = events.keys().next_back().copied();
    (head.t, head.v) = events.into_iter().unzip();
    thin(&mut head, most.max(4));
    Some(head)
}

/// Keeps at most `most` points: the series cut into `most / 2` slices of equal count, and of
/// each the lowest and the highest value, in time order (a slice with no value keeps a gap).
fn thin(s: &mut Series, most: usize) {
    let n = s.t.len();
    if n <= most {
        return;
    }
    let slices = most / 2;
    let mut t = Vec::with_capacity(most);
    let mut v = Vec::with_capacity(most);
    for k in 0..slices {
        let (a, b) = (k * n / slices, (k + 1) * n / slices);
        let mut lo: Option<usize> = None;
        let mut hi: Option<usize> = None;
        for i in a..b {
            if let Some(x) = s.v[i] {
                if lo.is_none_or(|j| x < s.v[j].unwrap_or(f64::INFINITY)) {
                    lo = Some(i);
                }
                if hi.is_none_or(|j| x > s.v[j].unwrap_or(f64::NEG_INFINITY)) {
                    hi = Some(i);
                }
            }
        }
        match (lo, hi) {
            (Some(l), Some(h)) => {
                let (first, second) = if l <= h { (l, h) } else { (h, l) };
                t.push(s.t[first]);
                v.push(s.v[first]);
                if second != first {
                    t.push(s.t[second]);
                    v.push(s.v[second]);
                }
            }
            _ => {
                t.push(s.t[a]);
                v.push(None);
            }
        }
    }
    s.t = t;
    s.v = v;
}

/// A series as a page plots it: which file it comes from, and in what role.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plotted {
    /// `input` or `output` of a run, or `file`.
    pub role: &'static str,
    /// The file's id.
    pub file: String,
    /// Its name as dropped.
    pub name: String,
    /// The series.
    #[serde(flatten)]
    pub series: Series,
}

/// What a hydrograph shows: series, and the run's time0 if it is a run's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hydrograph {
    /// The run's time0, ms since the epoch.
    pub time0: Option<i64>,
    /// Its series.
    pub series: Vec<Plotted>,
}

/// The largest archived file read for a plot.
const PLOT_MAX_BYTES: u64 = 256 << 20;

/// The series of archived files, `(role, file id)` each: read from the archive (confined under
/// the spool, never through a link), PI time series only; a file that is gone or not PI gives
/// none.
pub fn of_files(
    reader: &crate::ledger::Ledger,
    spool: &std::path::Path,
    files: &[(&'static str, String)],
    most: usize,
) -> Result<Vec<Plotted>, crate::ledger::LedgerError> {
    use std::io::Read;
    let mut out = Vec::new();
    for (role, id) in files {
        let Some(sub) = reader.get(id)? else { continue };
        let Some(stored) = sub.stored.as_deref() else {
            continue;
        };
        let Ok(f) = crate::fs::open_confined(spool, std::path::Path::new(stored)) else {
            continue;
        };
        let mut bytes = Vec::new();
        if f.take(PLOT_MAX_BYTES).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let name = String::from_utf8_lossy(&sub.original).into_owned();
        out.extend(read_pi(&bytes, most).into_iter().map(|series| Plotted {
            role,
            file: id.clone(),
            name: name.clone(),
            series,
        }));
    }
    Ok(out)
}

/// A run's hydrograph: its inputs and outputs, and its time0.
pub fn of_run(
    reader: &crate::ledger::Ledger,
    spool: &std::path::Path,
    run: &str,
    most: usize,
) -> Result<Option<Hydrograph>, crate::ledger::LedgerError> {
    let Some(r) = reader.run(run)? else {
        return Ok(None);
    };
    let mut files: Vec<(&'static str, String)> = reader
        .run_inputs(run)?
        .into_iter()
        .map(|(_, f)| ("input", f))
        .collect();
    files.extend(
        reader
            .run_outputs(run)?
            .into_iter()
            .filter_map(|(_, _, f)| f.map(|f| ("output", f))),
    );
    let time0 = chrono::DateTime::parse_from_rfc3339(&r.time0)
        .ok()
        .map(|t| t.timestamp_millis());
    Ok(Some(Hydrograph {
        time0,
        series: of_files(reader, spool, &files, most)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: &str = r#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2">
  <timeZone>1.0</timeZone>
  <series><header><type>instantaneous</type><locationId>Y1232010</locationId>
    <parameterId>Q.fcst</parameterId><ensembleMemberIndex>3</ensembleMemberIndex>
    <timeStep unit="second" multiplier="3600"/>
    <startDate date="2026-11-28" time="12:00:00"/><endDate date="2026-11-28" time="14:00:00"/>
    <forecastDate date="2026-11-28" time="12:00:00"/>
    <missVal>-999.0</missVal><units>m3/s</units></header>
    <event date="2026-11-28" time="12:00:00" value="1.5" flag="0"/>
    <event date="2026-11-28" time="13:00:00" value="-999.0" flag="0"/>
    <event date="2026-11-28" time="14:00:00" value="2.5" flag="0"/>
  </series>
</TimeSeries>"#;

    #[test]
    fn a_pi_file_gives_its_series_in_utc_with_missing_values_as_gaps() {
        let s = read_pi(PI.as_bytes(), 100);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(
            (s.location.as_str(), s.parameter.as_str(), s.family.as_str()),
            ("Y1232010", "Q.fcst", "Q")
        );
        assert_eq!(s.member.as_deref(), Some("3"));
        assert_eq!(s.unit, "m3/s");
        let noon_utc = chrono::DateTime::parse_from_rfc3339("2026-11-28T11:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(s.t[0], noon_utc, "12:00 at UTC+1 is 11:00Z");
        assert_eq!(s.forecast_date, Some(noon_utc));
        assert_eq!(s.v, [Some(1.5), None, Some(2.5)]);
        assert!(read_pi(b"<Diag/>", 10).is_empty());
    }

    #[test]
    fn a_long_series_is_thinned_without_losing_its_peak() {
        let mut doc = String::from(
            "<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\"><series><header>\
             <locationId>L</locationId><parameterId>Q.obs</parameterId></header>",
        );
        let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        for i in 0..100_000i64 {
            let t = start + chrono::Duration::minutes(i);
            let v = if i == 54_321 { 999.0 } else { (i % 7) as f64 };
            doc.push_str(&format!(
                "<event date=\"{}\" time=\"{}\" value=\"{v}\"/>",
                t.format("%Y-%m-%d"),
                t.format("%H:%M:%S")
            ));
        }
        doc.push_str("</series></TimeSeries>");
        let s = &read_pi(doc.as_bytes(), 2000)[0];
        assert_eq!(s.points, 100_000);
        assert!(s.t.len() <= 2000, "{}", s.t.len());
        assert!(s.t.windows(2).all(|w| w[0] <= w[1]), "in time order");
        assert!(s.v.contains(&Some(999.0)), "the peak is kept");
    }
}
