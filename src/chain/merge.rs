//! Several PI time-series documents delivered to one slot that names its file
//! (`file = "timeseries_import.xml"`), merged into the one document the model reads.
//!
//! In: the documents in arrival order (each already valid: it was archived). Out: one PI
//! time-series document with the series of all, in arrival order, where a later series replaces
//! an earlier one with the same location, parameter, qualifiers and ensemble member; the root
//! element and time zone of the first document, the highest version of all. Never: converting
//! times between time zones (documents in different zones are refused, with the reason) or
//! touching an archived original (the merge is written into the run folder only).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Why documents cannot be merged (the run fails with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A document that is not a PI time series as this module reads it.
    #[error("input {index} is not a PI time series: {why}")]
    NotTimeSeries {
        /// 1-based position in arrival order.
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// Documents whose root element is written differently (another prefix or namespace
    /// declaration): their series cannot be pasted into one document as they are.
    #[error("input {index} writes its root element as `{found}`, the first as `{first}`")]
    Form {
        /// 1-based position in arrival order.
        index: usize,
        /// How this document writes it.
        found: String,
        /// How the first one does.
        first: String,
    },
    /// Documents in different time zones.
    #[error("input {index} is in time zone {found}, the first in {first}: not merged")]
    TimeZone {
        /// 1-based position in arrival order.
        index: usize,
        /// Its time zone.
        found: String,
        /// The first document's.
        first: String,
    },
}

/// What identifies a series: its header's location, parameter, qualifiers, ensemble and member.
type Key = Vec<(String, String)>;

const KEY_ELEMENTS: &[&str] = &[
    "locationId",
    "parameterId",
    "qualifierId",
    "ensembleId",
    "ensembleMemberIndex",
    "ensembleMemberId",
];

struct Parsed<'a> {
    root: BytesStart<'a>,
    prefix: String,
    version: Option<String>,
    time_zone: Option<String>,
    series: Vec<(Key, &'a [u8])>,
}

fn parse(bytes: &[u8], index: usize) -> Result<Parsed<'_>, MergeError> {
    let bad = |why: String| MergeError::NotTimeSeries { index, why };
    let mut reader = Reader::from_reader(bytes);
    let mut depth = 0usize;
    let mut root: Option<BytesStart<'_>> = None;
    let mut time_zone = None;
    let mut series = Vec::new();
    let mut series_start = 0usize;
    let mut key: Key = Vec::new();
    let mut in_zone = false;
    let mut in_key: Option<String> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::Start(e) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match depth {
                    0 if local == "TimeSeries" => root = Some(e.into_owned()),
                    0 => return Err(bad(format!("its root element is `{local}`"))),
                    1 if local == "series" => {
                        series_start = before;
                        key.clear();
                    }
                    1 if local == "timeZone" => in_zone = true,
                    3 if KEY_ELEMENTS.contains(&local.as_str()) => in_key = Some(local),
                    _ => {}
                }
                depth += 1;
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if depth == 1 && e.local_name().as_ref() == b"series" {
                    let end = usize::try_from(reader.buffer_position()).unwrap_or(bytes.len());
                    if key.is_empty() {
                        return Err(bad("a series without location or parameter".into()));
                    }
                    series.push((std::mem::take(&mut key), &bytes[series_start..end]));
                }
                in_zone = false;
                in_key = None;
            }
            Event::Empty(e) if depth == 0 => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if local != "TimeSeries" {
                    return Err(bad(format!("its root element is `{local}`")));
                }
                root = Some(e.into_owned());
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| bad(e.to_string()))?
                    .trim()
                    .to_string();
                if in_zone {
                    time_zone = Some(text);
                } else if let Some(k) = &in_key {
                    key.push((k.clone(), text));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let root = root.ok_or_else(|| bad("no root element".into()))?;
    let name = String::from_utf8_lossy(root.name().as_ref()).into_owned();
    let prefix = name
        .rsplit_once(':')
        .map(|(p, _)| format!("{p}:"))
        .unwrap_or_default();
    let version = root
        .try_get_attribute("version")
        .ok()
        .flatten()
        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
    Ok(Parsed {
        root,
        prefix,
        version,
        time_zone,
        series,
    })
}

/// `1.10` after `1.9`: versions compared by their numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|n| n.parse().unwrap_or(0)).collect()
}

/// The root start tag as written, without its `version`: two documents of one producer write it
/// the same way.
fn form(root: &BytesStart<'_>) -> String {
    let mut text = String::from_utf8_lossy(root.name().as_ref()).into_owned();
    let mut attributes: Vec<String> = root
        .attributes()
        .with_checks(false)
        .flatten()
        .filter(|a| a.key.as_ref() != b"version")
        .map(|a| {
            format!(
                "{}=\"{}\"",
                String::from_utf8_lossy(a.key.as_ref()),
                String::from_utf8_lossy(&a.value)
            )
        })
        .collect();
    attributes.sort();
    for a in attributes {
        text.push(' ');
        text.push_str(&a);
    }
    text
}

/// Merges PI time-series documents given in arrival order into one.
pub fn merge(documents: &[&[u8]]) -> Result<Vec<u8>, MergeError> {
    let parsed: Vec<Parsed<'_>> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| parse(d, i + 1))
        .collect::<Result<_, _>>()?;
    let Some(first) = parsed.first() else {
        return Err(MergeError::NotTimeSeries {
            index: 0,
            why: "no document to merge".into(),
        });
    };
    let first_form = form(&first.root);
    for (i, p) in parsed.iter().enumerate().skip(1) {
        let found = form(&p.root);
        if found != first_form {
            return Err(MergeError::Form {
                index: i + 1,
                found,
                first: first_form,
            });
        }
        if p.time_zone != first.time_zone {
            let zone = |z: &Option<String>| z.clone().unwrap_or_else(|| "(none given)".into());
            return Err(MergeError::TimeZone {
                index: i + 1,
                found: zone(&p.time_zone),
                first: zone(&first.time_zone),
            });
        }
    }
    let version = parsed
        .iter()
        .filter_map(|p| p.version.as_deref())
        .max_by_key(|v| version_key(v));
    // Later series replace earlier ones of the same key, and take their place in arrival order.
    let mut kept: Vec<(&Key, &[u8])> = Vec::new();
    for p in &parsed {
        for (key, bytes) in &p.series {
            kept.retain(|(k, _)| *k != key);
            kept.push((key, bytes));
        }
    }
    let name = String::from_utf8_lossy(first.root.name().as_ref()).into_owned();
    let mut root = BytesStart::new(name.as_str());
    for a in first.root.attributes().with_checks(false).flatten() {
        if a.key.as_ref() == b"version" {
            continue;
        }
        root.push_attribute(a);
    }
    if let Some(v) = version {
        root.push_attribute(("version", v));
    }
    let mut out = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<".to_vec();
    out.extend_from_slice(&root);
    out.extend_from_slice(b">\n");
    if let Some(zone) = &first.time_zone {
        let zone = quick_xml::escape::escape(zone.as_str());
        out.extend_from_slice(
            format!("    <{p}timeZone>{zone}</{p}timeZone>\n", p = first.prefix).as_bytes(),
        );
    }
    for (_, bytes) in kept {
        out.extend_from_slice(b"    ");
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("</{name}>\n").as_bytes());
    Ok(out)
}

/// A PI time-series document with every series' `forecastDate` set to `time0` (replaced, or
/// added after `endDate` where the schema puts it), in the document's own time zone: the copy a
/// model gets when its slot asks for `forecastDate = "time0"`. The archived original is never
/// touched: the caller writes the result into the run folder.
pub fn with_forecast_date(
    bytes: &[u8],
    time0: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, MergeError> {
    use quick_xml::Writer;
    let bad = |why: String| MergeError::NotTimeSeries { index: 1, why };
    // The time zone comes first in a PI document: read it before rewriting.
    let zone_hours: f64 = {
        let mut r = Reader::from_reader(bytes);
        let mut in_zone = false;
        let mut zone = 0.0;
        loop {
            match r.read_event().map_err(|e| bad(e.to_string()))? {
                Event::Start(e) if e.local_name().as_ref() == b"timeZone" => in_zone = true,
                Event::Text(t) if in_zone => {
                    zone = t
                        .decode()
                        .ok()
                        .and_then(|z| z.trim().parse().ok())
                        .unwrap_or(0.0);
                    break;
                }
                Event::Start(e) if e.local_name().as_ref() == b"series" => break,
                Event::Eof => break,
                _ => {}
            }
        }
        zone
    };
    let local = time0 + chrono::Duration::seconds((zone_hours * 3600.0).round() as i64);
    let (date, time) = (
        local.format("%Y-%m-%d").to_string(),
        local.format("%H:%M:%S").to_string(),
    );
    let forecast = |name: &[u8]| {
        let mut e = BytesStart::new(String::from_utf8_lossy(name).into_owned());
        e.push_attribute(("date", date.as_str()));
        e.push_attribute(("time", time.as_str()));
        e
    };
    let mut reader = Reader::from_reader(bytes);
    let mut writer = Writer::new(Vec::with_capacity(bytes.len() + 64));
    // After a header's `endDate`: the qualified name to give a `forecastDate` if none follows.
    let mut after_end: Option<Vec<u8>> = None;
    loop {
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        let starts = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e.local_name().as_ref().to_vec()),
            Event::End(_) => Some(Vec::new()),
            _ => None,
        };
        // `take` on every element boundary: a forecastDate is added only right after endDate.
        if let Some(local) = starts
            && let Some(name) = after_end.take()
            && local != b"forecastDate"
        {
            writer
                .write_event(Event::Empty(forecast(&name)))
                .map_err(|e| bad(e.to_string()))?;
        }
        let event = match event {
            Event::Empty(e) if e.local_name().as_ref() == b"forecastDate" => {
                Event::Empty(forecast(e.name().as_ref()))
            }
            Event::Empty(e) if e.local_name().as_ref() == b"endDate" => {
                let name = e.name().as_ref().to_vec();
                let prefix = name
                    .iter()
                    .rposition(|&b| b == b':')
                    .map_or(Vec::new(), |i| name[..=i].to_vec());
                after_end = Some([prefix, b"forecastDate".to_vec()].concat());
                Event::Empty(e)
            }
            Event::Eof => break,
            other => other,
        };
        writer.write_event(event).map_err(|e| bad(e.to_string()))?;
    }
    Ok(writer.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(version: &str, zone: &str, series: &[(&str, &str, &str)]) -> Vec<u8> {
        let mut s = format!(
            "<?xml version=\"1.0\"?>\n<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"{version}\">\n<timeZone>{zone}</timeZone>\n"
        );
        for (location, parameter, value) in series {
            s.push_str(&format!(
                "<series><header><type>instantaneous</type><locationId>{location}</locationId><parameterId>{parameter}</parameterId><timeStep unit=\"second\" multiplier=\"3600\"/><startDate date=\"2026-01-01\" time=\"00:00:00\"/><endDate date=\"2026-01-01\" time=\"00:00:00\"/><missVal>-999.0</missVal><units>m3/s</units></header><event date=\"2026-01-01\" time=\"00:00:00\" value=\"{value}\" flag=\"0\"/></series>\n"
            ));
        }
        s.push_str("</TimeSeries>\n");
        s.into_bytes()
    }

    #[test]
    fn later_series_replace_earlier_ones_of_the_same_key_in_arrival_order() {
        let a = doc("1.2", "0.0", &[("A", "Q.obs", "1"), ("B", "Q.obs", "2")]);
        let b = doc("1.5", "0.0", &[("A", "Q.obs", "3"), ("A", "H.obs", "4")]);
        let merged = String::from_utf8(merge(&[&a, &b]).unwrap()).unwrap();
        let values: Vec<&str> = merged
            .match_indices("value=\"")
            .map(|(i, _)| &merged[i + 7..i + 8])
            .collect();
        assert_eq!(values, vec!["2", "3", "4"], "{merged}");
        assert!(merged.contains("version=\"1.5\""), "{merged}");
        assert!(merged.contains("<timeZone>0.0</timeZone>"), "{merged}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("timeseries_import.xml");
        std::fs::write(&f, &merged).unwrap();
        let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/pi-xml/pi_timeseries.xsd");
        let mut v = crate::examine::validate::Validator::new();
        assert_eq!(
            v.check(&f, &crate::config::catalog::Check::Xsd(xsd)),
            Ok(()),
            "{merged}"
        );
    }

    #[test]
    fn documents_that_cannot_share_one_file_are_refused_with_the_reason() {
        let a = doc("1.2", "0.0", &[("A", "Q.obs", "1")]);
        let b = doc("1.2", "1.0", &[("A", "Q.obs", "1")]);
        assert!(matches!(
            merge(&[&a, &b]),
            Err(MergeError::TimeZone { index: 2, .. })
        ));
        let diag = b"<Diag xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"/>";
        let e = merge(&[&a, diag]).unwrap_err();
        assert!(e.to_string().contains("root element is `Diag`"), "{e}");
        let prefixed = b"<pi:TimeSeries xmlns:pi=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"><pi:timeZone>0.0</pi:timeZone></pi:TimeSeries>";
        assert!(matches!(
            merge(&[&a, prefixed]),
            Err(MergeError::Form { .. })
        ));
    }

    #[test]
    fn the_copy_a_model_gets_can_carry_time0_as_its_forecast_date() {
        let time0 = chrono::DateTime::parse_from_rfc3339("2024-03-01T06:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let a = doc("1.2", "1.0", &[("A", "Q.obs", "1"), ("B", "Q.obs", "2")]);
        let out = String::from_utf8(with_forecast_date(&a, time0).unwrap()).unwrap();
        assert_eq!(
            out.matches("<forecastDate date=\"2024-03-01\" time=\"07:00:00\"/>")
                .count(),
            2,
            "in the document's time zone (UTC+1), after endDate: {out}"
        );
        let again = String::from_utf8(
            with_forecast_date(out.as_bytes(), time0 + chrono::Duration::hours(1)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            again.matches("<forecastDate").count(),
            2,
            "replaced, not added: {again}"
        );
        assert!(again.contains("time=\"08:00:00\""), "{again}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("timeseries_import.xml");
        std::fs::write(&f, &again).unwrap();
        let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/pi-xml/pi_timeseries.xsd");
        let mut v = crate::examine::validate::Validator::new();
        assert_eq!(
            v.check(&f, &crate::config::catalog::Check::Xsd(xsd)),
            Ok(()),
            "{again}"
        );
    }
}
