//! Stations: which archived file holds which location's series, and a station's hydrograph (its
//! latest forecasts with the observations of the days before them).
//!
//! In: the ledger's decided submissions, in id order, and the archived PI time-series files they
//! point to (confined under the spool, never through a link). Out: the ledger's station index,
//! written through the ledger writer; a station's [`Hydrograph`]. Never: intake's CPU (the
//! indexer runs at the lowest priority, in batches, behind the decisions, and gives way while
//! operational files are being claimed, for ten seconds in a row at most), a replay's files, the
//! wall clock in a station's window (it is relative to the station's own latest forecast).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::series::{Hydrograph, Plotted, Series, merged, read_pi};
use crate::board::Board;
use crate::ledger::stations::{IndexRow, ToIndex};
use crate::ledger::{Ledger, LedgerError, Writer, timestamp};

/// Submissions read per step: with [`PACE`], at most this many files indexed per second, so
/// that catching up on a long history costs a few per cent of a core, never intake's CPU.
const BATCH: usize = 1000;
/// The pause between two steps.
const PACE: Duration = Duration::from_secs(1);
/// How far back a new index starts: the station view looks at most this far before a forecast.
pub const BACKFILL_DAYS: i64 = 30;
/// A file decided this recently may still be on its way to the archive: its turn waits.
const SETTLE_MS: i64 = 30_000;
/// While operational files are being claimed, the indexer gives way for at most this many steps
/// in a row: a burst takes every core, and a steady trickle still sees its files indexed.
const GIVE_WAY_STEPS: u32 = 10;
/// The largest file indexed (a bigger one is skipped, and said).
const INDEX_MAX_BYTES: u64 = 256 << 20;

/// Starts the indexer; it ends when `stop` is raised.
pub fn spawn(
    db: PathBuf,
    spool: PathBuf,
    writer: Writer,
    board: Arc<Board>,
    stop: Arc<AtomicBool>,
    clock: crate::clock::Clock,
) -> std::thread::JoinHandle<Result<(), LedgerError>> {
    board
        .health()
        .expect("stations", crate::health::STUCK_AFTER.max(PACE * 4));
    let health = Arc::clone(board.health());
    crate::health::spawn("stations", health, move || {
        crate::health::lowest_priority("stations");
        let reader = Ledger::open_readonly(&db)?;
        let mut gave_way = 0;
        while !stop.load(Ordering::Relaxed) {
            board.health().beat("stations");
            // Nice alone is not enough on two cores: the files being claimed come first.
            let busy = board.operational_busy(PACE.as_millis() as i64);
            let result = if busy && gave_way < GIVE_WAY_STEPS {
                gave_way += 1;
                Ok(None)
            } else {
                gave_way = 0;
                step(&reader, &spool, &writer, clock.now())
            };
            match result {
                Ok(None) => board.health().fault("stations", None),
                // A file it cannot read now (no descriptors, an I/O error): its turn waits.
                Ok(Some(why)) => {
                    tracing::warn!("stations: cannot index yet, trying again: {why}");
                    board.health().fault("stations", Some(why));
                }
                // Busy, no descriptors, a full disk: said, and tried again.
                Err(e) if !matches!(e, LedgerError::WriterGone) => {
                    tracing::warn!(error = %e, "stations: cannot index, trying again");
                    board
                        .health()
                        .fault("stations", Some(format!("cannot index: {e}")));
                }
                Err(e) if board.health().is_stopping() => {
                    tracing::debug!(error = %e, "stations: stopping");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            let mut waited = Duration::ZERO;
            while waited < PACE && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                waited += Duration::from_millis(100);
                board.health().beat("stations");
            }
        }
        Ok(())
    })
}

/// Indexes the next batch; says why when a file cannot be read now (it is then retried, never
/// skipped).
fn step(
    reader: &Ledger,
    spool: &Path,
    writer: &Writer,
    now: DateTime<Utc>,
) -> Result<Option<String>, LedgerError> {
    // A new index starts from the files of the last days, not from the whole history.
    let upto = match reader.series_indexed_upto()? {
        Some(u) => u,
        None => {
            crate::id::ClaimId((now - chrono::TimeDelta::days(BACKFILL_DAYS)).timestamp_micros())
                .text()
        }
    };
    let (batch, reached) = reader.to_index(&upto, BATCH)?;
    let settled = timestamp(now - chrono::TimeDelta::milliseconds(SETTLE_MS));
    let mut files: Vec<(String, Vec<IndexRow>)> = Vec::new();
    let mut last: Option<String> = None;
    let mut waiting = false;
    let mut stalled: Option<String> = None;
    let (mut gone, mut unreadable) = (0usize, 0usize);
    for sub in &batch {
        if sub.pi {
            match index_file(spool, sub) {
                Indexed::Rows(rows) => files.push((sub.id.clone(), rows)),
                // Not in the archive yet (the filer moves it after the decision is recorded):
                // its turn waits, unless it was decided long ago (then it is gone: counted,
                // said, skipped).
                Indexed::Missing if sub.decided_at.as_deref().is_none_or(|d| *d > *settled) => {
                    waiting = true;
                    break;
                }
                Indexed::Missing => gone += 1,
                // Not a path under the spool, or not a readable file: said, skipped.
                Indexed::Unreadable(why) => {
                    unreadable += 1;
                    tracing::debug!(file = %sub.id, "stations: not indexed: {why}");
                }
                Indexed::NotNow(why) => {
                    waiting = true;
                    stalled = Some(format!("file {}: {why}", sub.id));
                    break;
                }
            }
        }
        last = Some(sub.id.clone());
    }
    if gone + unreadable > 0 {
        tracing::warn!(
            gone,
            unreadable,
            "stations: archived files not indexed (no longer in the archive, or unreadable)"
        );
    }
    let upto_now = match (waiting, reached) {
        (false, Some(horizon)) => Some(horizon),
        _ => last,
    };
    let Some(upto_now) = upto_now.filter(|u| *u != upto) else {
        return Ok(stalled);
    };
    writer.with(move |l| l.index_series(&files, &upto_now))?;
    Ok(stalled)
}

enum Indexed {
    Rows(Vec<IndexRow>),
    Missing,
    Unreadable(String),
    NotNow(String),
}

/// A path refused or a file that is not one (a link, a folder) is for good; anything else (no
/// descriptors, an I/O error, a full disk) may pass.
fn not_read(e: std::io::Error) -> Indexed {
    use std::io::ErrorKind::{InvalidData, InvalidInput};
    if matches!(e.kind(), InvalidInput | InvalidData) || e.raw_os_error() == Some(libc::ELOOP) {
        Indexed::Unreadable(e.to_string())
    } else {
        Indexed::NotNow(e.to_string())
    }
}

fn index_file(spool: &Path, sub: &ToIndex) -> Indexed {
    let Some(stored) = sub.stored.as_deref() else {
        return Indexed::Missing;
    };
    let f = match crate::fs::open_confined(spool, Path::new(stored)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Indexed::Missing,
        Err(e) => return not_read(e),
    };
    let mut bytes = Vec::new();
    if let Err(e) = f.take(INDEX_MAX_BYTES).read_to_end(&mut bytes) {
        return not_read(e);
    }
    Indexed::Rows(summarise(&read_pi(&bytes, 4), sub.produced))
}

fn ms_text(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::from_timestamp_millis).map(timestamp)
}

/// One row per location and parameter: its members counted, its events' span.
pub fn summarise(series: &[Series], produced: bool) -> Vec<IndexRow> {
    let mut rows: BTreeMap<(String, String), IndexRow> = BTreeMap::new();
    for s in series.iter().filter(|s| !s.location.is_empty()) {
        let row = rows
            .entry((s.location.clone(), s.parameter.clone()))
            .or_insert_with(|| IndexRow {
                location: s.location.clone(),
                parameter: s.parameter.clone(),
                forecast: false,
                members: 0,
                first_at: None,
                last_at: None,
                forecast_date: None,
            });
        row.members += 1;
        row.forecast |= produced || s.forecast_date.is_some();
        let first = ms_text(s.first);
        if first.is_some() && (row.first_at.is_none() || first < row.first_at) {
            row.first_at = first;
        }
        let last = ms_text(s.last);
        if last > row.last_at {
            row.last_at = last;
        }
        let date = ms_text(s.forecast_date);
        if date > row.forecast_date {
            row.forecast_date = date;
        }
    }
    rows.into_values().collect()
}

/// How many of a station's files a hydrograph reads, at most.
const STATION_FILES: usize = 500;

/// A station's hydrograph: the latest forecast of each of its forecast parameters, and its
/// observations from `days` before the latest forecast's reference time (its time0) on, each
/// parameter merged from every file that holds it into one series. `None`: no such station.
pub fn hydrograph(
    reader: &Ledger,
    spool: &Path,
    location: &str,
    days: u32,
    most: usize,
) -> Result<Option<Hydrograph>, LedgerError> {
    let forecasts = reader.station_files(location, true, None, STATION_FILES)?;
    let mut latest: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (file, parameter, reference, _) in forecasts {
        latest.entry(parameter).or_insert((file, reference));
    }
    let time0 = latest
        .values()
        .filter_map(|(_, r)| r.clone())
        .max()
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis());
    let since_ms = match time0 {
        Some(t) => Some(t),
        None => reader
            .station_files(location, false, None, 1)?
            .into_iter()
            .next()
            .and_then(|(_, _, _, last)| last)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis()),
    }
    .map(|t| t - i64::from(days) * 86_400_000);
    let since = ms_text(since_ms);
    let observed = match &since {
        Some(s) => reader.station_files(location, false, Some(s), STATION_FILES)?,
        None => Vec::new(),
    };
    if latest.is_empty() && observed.is_empty() {
        return Ok(None);
    }
    let mut series: Vec<Plotted> = Vec::new();
    let forecast_files: Vec<(&'static str, String)> = {
        let mut ids: Vec<String> = latest.into_values().map(|(f, _)| f).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter().map(|f| ("forecast", f)).collect()
    };
    series.extend(
        super::series::of_files(reader, spool, &forecast_files, most)?
            .into_iter()
            .filter(|p| p.series.location == location),
    );
    // Observations: oldest file first, so that a later delivery of the same time wins.
    let mut ids: Vec<(&'static str, String)> = Vec::new();
    for (file, _, _, _) in observed.into_iter().rev() {
        if !ids.iter().any(|(_, f)| *f == file) {
            ids.push(("observed", file));
        }
    }
    // Per parameter, qualifiers and member: its parts, and the last file's to label it.
    type Key = (String, Vec<String>, Option<String>);
    let mut parts: BTreeMap<Key, (Vec<Series>, Plotted)> = BTreeMap::new();
    for p in super::series::of_files(reader, spool, &ids, usize::MAX)? {
        if p.series.location != location || p.series.forecast_date.is_some() {
            continue;
        }
        let key = (
            p.series.parameter.clone(),
            p.series.qualifiers.clone(),
            p.series.member.clone(),
        );
        let entry = parts.entry(key).or_insert_with(|| (Vec::new(), p.clone()));
        entry.0.push(p.series.clone());
        entry.1 = p;
    }
    for (_, (list, last)) in parts {
        if let Some(s) = merged(list, since_ms.unwrap_or(i64::MIN), most) {
            series.push(Plotted { series: s, ..last });
        }
    }
    Ok(Some(Hydrograph { time0, series }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi(location: &str, parameter: &str, forecast: bool, member: Option<u32>) -> String {
        format!(
            "<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\"><timeZone>0.0</timeZone>\
             <series><header><type>instantaneous</type><locationId>{location}</locationId>\
             <parameterId>{parameter}</parameterId>{}{}</header>\
             <event date=\"2026-11-28\" time=\"10:00:00\" value=\"1\"/>\
             <event date=\"2026-11-28\" time=\"12:00:00\" value=\"2\"/></series></TimeSeries>",
            member
                .map(|m| format!("<ensembleMemberIndex>{m}</ensembleMemberIndex>"))
                .unwrap_or_default(),
            if forecast {
                "<forecastDate date=\"2026-11-28\" time=\"11:00:00\"/>"
            } else {
                ""
            }
        )
    }

    #[test]
    fn a_file_is_indexed_by_location_and_parameter_with_its_span_and_members() {
        let mut doc = pi("A", "Q.ens", true, Some(0));
        for m in 1..3 {
            let other = pi("A", "Q.ens", true, Some(m));
            let s = other.find("<series>").unwrap();
            let e = other.find("</TimeSeries>").unwrap();
            doc = doc.replace("</TimeSeries>", &format!("{}</TimeSeries>", &other[s..e]));
        }
        let rows = summarise(&read_pi(doc.as_bytes(), 4), false);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!((r.location.as_str(), r.parameter.as_str()), ("A", "Q.ens"));
        assert_eq!(r.members, 3);
        assert!(r.forecast, "a forecastDate makes it a forecast");
        assert_eq!(r.first_at.as_deref(), Some("2026-11-28T10:00:00.000000Z"));
        assert_eq!(r.last_at.as_deref(), Some("2026-11-28T12:00:00.000000Z"));
        assert_eq!(
            r.forecast_date.as_deref(),
            Some("2026-11-28T11:00:00.000000Z")
        );

        let obs = summarise(&read_pi(pi("A", "Q.obs", false, None).as_bytes(), 4), false);
        assert!(!obs[0].forecast, "no forecastDate: an observation");
        let produced = summarise(&read_pi(pi("A", "Q.sim", false, None).as_bytes(), 4), true);
        assert!(produced[0].forecast, "a run's output is a forecast");
        assert!(summarise(&read_pi(b"<Diag/>", 4), false).is_empty());
    }

    #[test]
    fn parts_of_one_series_merge_in_time_order_and_the_later_part_wins() {
        let a = read_pi(pi("A", "Q.obs", false, None).as_bytes(), 100).remove(0);
        let mut b = a.clone();
        b.t = vec![a.t[1], a.t[1] + 3_600_000];
        b.v = vec![Some(5.0), Some(6.0)];
        let m = merged(vec![a.clone(), b], a.t[1], 100).unwrap();
        assert_eq!(m.t, [a.t[1], a.t[1] + 3_600_000], "from `from` on");
        assert_eq!(m.v, [Some(5.0), Some(6.0)], "the later part wins");
        assert_eq!((m.first, m.last), (Some(a.t[1]), Some(a.t[1] + 3_600_000)));
    }
}
