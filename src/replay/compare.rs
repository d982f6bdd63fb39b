//! Compare: at the end of a replay session, each replay output beside the output of the original
//! run it mirrors. Pairs are matched by run (the run a replay run mirrors) and output name (a
//! name holding its run's id is matched without it);
//! original outputs with no replay counterpart are *missing*, replay outputs with no original
//! are *extra*. For PI time series, per series (location, parameter, ensemble member): the
//! largest absolute difference and the RMSE over the common times, and the Nash–Sutcliffe
//! efficiency of both against an observed series of the same location when the replay holds one.
//!
//! The report is a JSON file and a page a person can read, with a plot per series that differs,
//! in `spool/reports/replay/`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ledger::{Ledger, LedgerError, timestamp};

/// A PI time series: its key and its values by time (`date time`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Location.
    pub location: String,
    /// Parameter.
    pub parameter: String,
    /// Ensemble member, if any.
    pub member: Option<String>,
    /// Values by time, missing values left out.
    pub values: BTreeMap<String, f64>,
}

impl Series {
    /// `location/parameter[/member]`.
    pub fn key(&self) -> String {
        match &self.member {
            Some(m) => format!("{}/{}/{m}", self.location, self.parameter),
            None => format!("{}/{}", self.location, self.parameter),
        }
    }
}

/// Reads the series of a PI time series document (leniently: what is not a series is skipped),
/// with the hydrographs' reader: times in UTC (`YYYY-MM-DD HH:MM:SS`), missing values left out.
pub fn read_series(bytes: &[u8]) -> Vec<Series> {
    crate::supervise::series::read_pi(bytes, usize::MAX)
        .into_iter()
        .map(|s| Series {
            values: s
                .t
                .iter()
                .zip(&s.v)
                .filter_map(|(t, v)| {
                    let at = chrono::DateTime::from_timestamp_millis(*t)?;
                    Some((at.format("%Y-%m-%d %H:%M:%S").to_string(), (*v)?))
                })
                .collect(),
            location: s.location,
            parameter: s.parameter,
            member: s.member,
        })
        .collect()
}

/// A time and the values there: original, replay, observed.
pub type Point = (String, Option<f64>, Option<f64>, Option<f64>);

/// How two series compare over their common times.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesDiff {
    /// `location/parameter[/member]`.
    pub series: String,
    /// Times in both.
    pub common: usize,
    /// Times in one only.
    pub unmatched: usize,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
    /// Root mean square of the differences.
    pub rmse: f64,
    /// Nash–Sutcliffe efficiency of the original against the observed series, if one.
    pub nse_original: Option<f64>,
    /// The same for the replay.
    pub nse_replay: Option<f64>,
    /// The observed series used.
    pub observed: Option<String>,
    /// Identical (same times, same values).
    pub identical: bool,
    /// Values for the plot: (time, original, replay, observed).
    #[serde(skip)]
    pub points: Vec<Point>,
}

/// Nash–Sutcliffe efficiency of `sim` against `obs` over their common times.
pub fn nse(sim: &BTreeMap<String, f64>, obs: &BTreeMap<String, f64>) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = obs
        .iter()
        .filter_map(|(t, o)| sim.get(t).map(|s| (*s, *o)))
        .collect();
    if pairs.len() < 2 {
        return None;
    }
    let mean = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64;
    let den: f64 = pairs.iter().map(|p| (p.1 - mean).powi(2)).sum();
    if den == 0.0 {
        return None;
    }
    let num: f64 = pairs.iter().map(|p| (p.0 - p.1).powi(2)).sum();
    Some(1.0 - num / den)
}

/// Compares two series (same key), with an observed series if one.
pub fn diff(original: &Series, replay: &Series, observed: Option<&Series>) -> SeriesDiff {
    let mut common = 0;
    let mut unmatched = 0;
    let (mut max, mut sq_sum) = (0.0f64, 0.0f64);
    let mut times: Vec<&String> = original.values.keys().chain(replay.values.keys()).collect();
    times.sort();
    times.dedup();
    let mut points = Vec::new();
    for t in times {
        let (a, b) = (original.values.get(t), replay.values.get(t));
        match (a, b) {
            (Some(a), Some(b)) => {
                common += 1;
                let d = (a - b).abs();
                max = max.max(d);
                sq_sum += d * d;
            }
            _ => unmatched += 1,
        }
        points.push((
            t.clone(),
            a.copied(),
            b.copied(),
            observed.and_then(|o| o.values.get(t).copied()),
        ));
    }
    let rmse = if common > 0 {
        (sq_sum / common as f64).sqrt()
    } else {
        0.0
    };
    SeriesDiff {
        series: original.key(),
        common,
        unmatched,
        max_abs_diff: max,
        rmse,
        nse_original: observed.and_then(|o| nse(&original.values, &o.values)),
        nse_replay: observed.and_then(|o| nse(&replay.values, &o.values)),
        observed: observed.map(Series::key),
        identical: unmatched == 0 && max == 0.0,
        points,
    }
}

/// An output pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputPair {
    /// Output name.
    pub name: String,
    /// The original output (submission id).
    pub original: String,
    /// The replay output.
    pub replay: String,
    /// Identical bytes.
    pub same_bytes: bool,
    /// Per series.
    pub series: Vec<SeriesDiff>,
    /// Series in one output only.
    pub unmatched_series: Vec<String>,
}

/// A run pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPair {
    /// Model.
    pub model: String,
    /// time0.
    pub time0: String,
    /// The original run.
    pub original: String,
    /// The replay run.
    pub replay: String,
    /// The replay run's state.
    pub state: String,
    /// Output pairs.
    pub outputs: Vec<OutputPair>,
    /// Original outputs with no replay counterpart.
    pub missing: Vec<String>,
    /// Replay outputs with no original.
    pub extra: Vec<String>,
}

/// The comparison report of a session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Session id.
    pub session: String,
    /// Its name.
    pub name: String,
    /// When the report was made.
    pub made_at: String,
    /// Pairs of outputs matched.
    pub matched: usize,
    /// Of which identical.
    pub identical: usize,
    /// Original outputs with no replay counterpart.
    pub missing: usize,
    /// Replay outputs with no original.
    pub extra: usize,
    /// Replay runs that mirror no original run.
    pub unmirrored_runs: Vec<String>,
    /// Series that differ: (run pair, output, series diff) flattened for people.
    pub differing_series: Vec<String>,
    /// Forecasts the replay did not make again: original runs that succeeded on the replayed
    /// files (or down the chain) which no replay run mirrors, flattened for people.
    pub not_made_again: Vec<String>,
    /// Per run pair.
    pub runs: Vec<RunPair>,
}

fn outputs(reader: &Ledger, run: &str) -> Result<Vec<(String, String, String)>, LedgerError> {
    reader.stored_outputs(run)
}

/// Observed series in the session's files: `location → series` for parameters ending in `.obs`
/// (`Q.obs` is observed discharge, against which `Q.fcst` or `Q.sim` are judged).
fn observed(reader: &Ledger, spool: &Path, session: &str) -> Result<Vec<Series>, LedgerError> {
    let stored = reader.session_observations(session)?;
    let mut out = Vec::new();
    for s in stored.iter().take(10_000) {
        if let Ok(bytes) = std::fs::read(spool.join(s)) {
            out.extend(
                read_series(&bytes)
                    .into_iter()
                    .filter(|s| s.parameter.ends_with(".obs")),
            );
        }
    }
    Ok(out)
}

/// Compares a session's outputs with the original ones.
pub fn compare(reader: &Ledger, spool: &Path, session: &str) -> Result<Report, LedgerError> {
    let name = reader.session_name(session)?;
    let runs = reader.session_runs(session)?;
    let observed = observed(reader, spool, session)?;
    let read = |stored: &str| std::fs::read(spool.join(stored)).unwrap_or_default();
    let mut report = Report {
        session: session.to_string(),
        name,
        made_at: timestamp(chrono::Utc::now()),
        matched: 0,
        identical: 0,
        missing: 0,
        extra: 0,
        unmirrored_runs: Vec::new(),
        differing_series: Vec::new(),
        not_made_again: reader
            .not_made_again(session)?
            .into_iter()
            .map(|(run, model, time0)| format!("{model} {run} (time0 {time0})"))
            .collect(),
        runs: Vec::new(),
    };
    for (id, model, time0, mirrors, state) in runs {
        let Some(original) = mirrors else {
            report.unmirrored_runs.push(id);
            continue;
        };
        let orig = outputs(reader, &original)?;
        let mine = outputs(reader, &id)?;
        let mut pair = RunPair {
            model,
            time0,
            original: original.clone(),
            replay: id.clone(),
            state,
            outputs: Vec::new(),
            missing: Vec::new(),
            extra: Vec::new(),
        };
        // Names that hold their run's id (`forecast_<run>.xml`) are matched without it.
        let orig_key = |n: &str| n.replace(original.as_str(), "{run}");
        let mine_key = |n: &str| n.replace(id.as_str(), "{run}");
        for (oname, osub, ostored) in &orig {
            let Some((_, rsub, rstored)) =
                mine.iter().find(|(n, _, _)| mine_key(n) == orig_key(oname))
            else {
                pair.missing.push(oname.clone());
                continue;
            };
            let (a, b) = (read(ostored), read(rstored));
            let (sa, sb) = (read_series(&a), read_series(&b));
            let mut out = OutputPair {
                name: oname.clone(),
                original: osub.clone(),
                replay: rsub.clone(),
                same_bytes: a == b,
                series: Vec::new(),
                unmatched_series: Vec::new(),
            };
            for s in &sa {
                match sb.iter().find(|x| x.key() == s.key()) {
                    Some(r) => {
                        // Observed at the same place, of the same quantity (Q.obs for Q.sim).
                        let quantity = |p: &str| p.split('.').next().unwrap_or(p).to_string();
                        let obs = observed.iter().find(|o| {
                            o.location == s.location
                                && quantity(&o.parameter) == quantity(&s.parameter)
                        });
                        let d = diff(s, r, obs);
                        if !d.identical {
                            report.differing_series.push(format!(
                                "{} {} {}: max |diff| {:.4}, RMSE {:.4}",
                                pair.model, oname, d.series, d.max_abs_diff, d.rmse
                            ));
                        }
                        out.series.push(d);
                    }
                    None => out.unmatched_series.push(s.key()),
                }
            }
            for s in &sb {
                if !sa.iter().any(|x| x.key() == s.key()) {
                    out.unmatched_series.push(s.key());
                }
            }
            report.matched += 1;
            if out.same_bytes
                || (out.unmatched_series.is_empty() && out.series.iter().all(|s| s.identical))
            {
                report.identical += 1;
            }
            pair.outputs.push(out);
        }
        for (rname, _, _) in &mine {
            if !orig.iter().any(|(n, _, _)| orig_key(n) == mine_key(rname)) {
                pair.extra.push(rname.clone());
            }
        }
        report.missing += pair.missing.len();
        report.extra += pair.extra.len();
        report.runs.push(pair);
    }
    Ok(report)
}

/// Writes the report as JSON and as a page, under `spool/reports/replay/`; returns the JSON's
/// path relative to the spool.
pub fn write(spool: &Path, report: &Report) -> std::io::Result<String> {
    let dir = spool.join("reports/replay");
    std::fs::create_dir_all(&dir)?;
    let rel = format!("reports/replay/{}.json", report.session);
    std::fs::write(
        spool.join(&rel),
        serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(dir.join(format!("{}.html", report.session)), page(report))?;
    Ok(rel)
}

/// Text made safe for XML and HTML (quick-xml's escaper: the project has no other).
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// An SVG plot of a series: original, replay and observed.
fn plot(d: &SeriesDiff) -> String {
    let (w, h, pad) = (720.0, 220.0, 30.0);
    let vals: Vec<f64> = d
        .points
        .iter()
        .flat_map(|p| [p.1, p.2, p.3])
        .flatten()
        .collect();
    if vals.is_empty() || d.points.len() < 2 {
        return String::new();
    }
    let (lo, hi) = vals
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = (d.points.len() - 1) as f64;
    let line = |pick: &dyn Fn(&Point) -> Option<f64>, colour: &str| {
        let pts: Vec<String> = d
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                pick(p).map(|v| {
                    format!(
                        "{:.1},{:.1}",
                        pad + i as f64 / n * (w - 2.0 * pad),
                        h - pad - (v - lo) / span * (h - 2.0 * pad)
                    )
                })
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\" stroke=\"#ccc\"/>\
         <text x=\"{pad}\" y=\"16\" font-size=\"11\">{hi:.3}</text>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"11\">{lo:.3}</text>{}{}{}</svg>",
        h - 8.0,
        line(&|p| p.3, "#999"),
        line(&|p| p.1, "#0b5394"),
        line(&|p| p.2, "#c62828"),
    )
}

/// The page of a report: a summary, a table per run, a plot per series that differs.
pub fn page(r: &Report) -> String {
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Replay {name}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2rem;color:#1d2730}}table{{border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}}.same{{color:#2e7d32}}\
         .diff{{color:#c62828}}</style></head><body><h1>Replay <code>{name}</code>: comparison with the original runs</h1>\
         <p>Session <code>{id}</code>, report made {made}. {m} output pair(s) matched, {i} identical; \
         {mi} missing, {ex} extra; {u} replay run(s) mirror no original run; \
         {n} original forecast(s) not made again.</p>{lost}\
         <p>Plots: <span style=\"color:#0b5394\">original</span>, <span style=\"color:#c62828\">replay</span>, \
         <span style=\"color:#999\">observed</span>.</p>",
        name = esc(&r.name),
        id = esc(&r.session),
        made = esc(&r.made_at),
        m = r.matched,
        i = r.identical,
        mi = r.missing,
        ex = r.extra,
        u = r.unmirrored_runs.len(),
        n = r.not_made_again.len(),
        lost = if r.not_made_again.is_empty() {
            String::new()
        } else {
            format!(
                "<p class=\"diff\">Not made again: {}</p>",
                esc(&r.not_made_again.join("; "))
            )
        },
    );
    for run in &r.runs {
        h.push_str(&format!(
            "<h2>{} at {} — original <code>{}</code>, replay <code>{}</code> ({})</h2>",
            esc(&run.model),
            esc(&run.time0),
            esc(&run.original),
            esc(&run.replay),
            esc(&run.state)
        ));
        if !run.missing.is_empty() || !run.extra.is_empty() {
            h.push_str(&format!(
                "<p class=\"diff\">missing: {}; extra: {}</p>",
                esc(&run.missing.join(", ")),
                esc(&run.extra.join(", "))
            ));
        }
        h.push_str("<table><tr><th>Output</th><th>Series</th><th>Max |diff|</th><th>RMSE</th><th>NSE original</th><th>NSE replay</th></tr>");
        for o in &run.outputs {
            for s in &o.series {
                let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
                h.push_str(&format!(
                    "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>",
                    if s.identical { "same" } else { "diff" },
                    esc(&o.name),
                    esc(&s.series),
                    s.max_abs_diff,
                    s.rmse,
                    f(s.nse_original),
                    f(s.nse_replay)
                ));
            }
        }
        h.push_str("</table>");
        for o in &run.outputs {
            for s in o.series.iter().filter(|s| !s.identical) {
                h.push_str(&format!(
                    "<h3>{} — {}</h3>{}",
                    esc(&o.name),
                    esc(&s.series),
                    plot(s)
                ));
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><series><header>
<type>instantaneous</type><locationId>A</locationId><parameterId>Q.fcst</parameterId>
<missVal>-999</missVal></header>
<event date="2026-01-01" time="00:00:00" value="1.0"/>
<event date="2026-01-01" time="01:00:00" value="-999"/>
<event date="2026-01-01" time="02:00:00" value="3.0"/></series></TimeSeries>"#;

    #[test]
    fn series_are_read_without_missing_values_and_compared() {
        let s = read_series(DOC.as_bytes());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].key(), "A/Q.fcst");
        assert_eq!(s[0].values.len(), 2);
        let mut other = s[0].clone();
        other.values.insert("2026-01-01 02:00:00".into(), 5.0);
        let d = diff(&s[0], &other, None);
        assert_eq!((d.common, d.unmatched), (2, 0));
        assert_eq!(d.max_abs_diff, 2.0);
        assert!((d.rmse - 2f64.sqrt()).abs() < 1e-12);
        assert!(!d.identical);
        assert!(diff(&s[0], &s[0], None).identical);
    }

    #[test]
    fn nash_sutcliffe_is_one_for_a_perfect_simulation_and_zero_for_the_mean() {
        let obs: BTreeMap<String, f64> = [("a", 1.0), ("b", 2.0), ("c", 3.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(nse(&obs, &obs), Some(1.0));
        let mean: BTreeMap<String, f64> = obs.keys().map(|k| (k.clone(), 2.0)).collect();
        assert_eq!(nse(&mean, &obs), Some(0.0));
    }
}
