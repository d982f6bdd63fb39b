//! time0 and the run period, as Delft-FEWS sets them: pure functions of the model's rule, the
//! clock and what the inputs say.
//!
//! In: the model's [`Time0`] rule, now, the time0 of the runs that produced the inputs, and the
//! time a PI input gives (its `forecastDate`, else its last value that is not missing). Out: the
//! run's time0 and its period. Never: reading a file or the clock (the dispatcher reads them and
//! passes them in).

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::config::model::{Time0, Time0Source};

/// `t` rounded down to a cardinal step (a divisor of a day), counted from midnight UTC.
pub fn round_down(t: DateTime<Utc>, step: std::time::Duration) -> DateTime<Utc> {
    let step = i64::try_from(step.as_secs()).unwrap_or(1).max(1);
    let secs = t.timestamp();
    Utc.timestamp_opt(secs - secs.rem_euclid(step), 0)
        .single()
        .unwrap_or(t)
}

/// The time0 of a run started now: from the chain (the latest time0 of the runs that produced
/// its inputs), from an input's content, or from the clock (rounded as the rule says, to the
/// second at least), as the model's rule says; the clock when what it asks for is missing.
pub fn choose(
    rule: &Time0,
    now: DateTime<Utc>,
    chain: Option<DateTime<Utc>>,
    content: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let clock = round_down(now, rule.round.unwrap_or(std::time::Duration::from_secs(1)));
    match rule.source {
        Time0Source::Chain => chain.unwrap_or(clock),
        Time0Source::Clock => clock,
        Time0Source::Input { .. } => content.unwrap_or(clock),
    }
}

/// The period of a run at `time0`: (start, end).
pub fn period(rule: &Time0, time0: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let d = |x: std::time::Duration| chrono::Duration::from_std(x).unwrap_or_default();
    (time0 - d(rule.period.0), time0 + d(rule.period.1))
}

/// The valid time a PI state description (`pi_state.xsd`) gives: its `dateTime`, in UTC (its
/// `timeZone` is its offset in hours). `None` when it gives none.
pub fn state_time(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let mut reader = Reader::from_reader(bytes);
    let mut zone_hours = 0.0f64;
    let mut in_zone = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == b"timeZone" => in_zone = true,
            Ok(Event::Text(t)) if in_zone => {
                zone_hours = t.decode().ok()?.trim().parse().ok()?;
            }
            Ok(Event::End(_)) => in_zone = false,
            Ok(Event::Empty(e) | Event::Start(e)) if e.local_name().as_ref() == b"dateTime" => {
                let at = stamp(&e)?;
                let offset = chrono::Duration::seconds((zone_hours * 3600.0).round() as i64);
                return Some(at.and_utc() - offset);
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// The `date` and `time` attributes of a PI date element.
fn stamp(e: &quick_xml::events::BytesStart<'_>) -> Option<chrono::NaiveDateTime> {
    let attr = |name: &[u8]| {
        e.try_get_attribute(name)
            .ok()
            .flatten()
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
    };
    let date = NaiveDate::parse_from_str(&attr(b"date")?, "%Y-%m-%d").ok()?;
    let time = NaiveTime::parse_from_str(&attr(b"time")?, "%H:%M:%S").ok()?;
    Some(date.and_time(time))
}

/// The time a PI time-series document gives for its forecast: the first series' `forecastDate`,
/// else the time of its last event whose value is not the series' missing value; in UTC (the
/// document's `timeZone` is its offset in hours). `None` when it gives neither.
pub fn content_time(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let mut reader = Reader::from_reader(bytes);
    let mut zone_hours = 0.0f64;
    let mut in_zone = false;
    let mut in_miss = false;
    let mut miss: Option<String> = None;
    let mut forecast: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"timeZone" => in_zone = true,
                b"missVal" => in_miss = true,
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"forecastDate" if forecast.is_none() => {
                    forecast = stamp(&e).map(|t| t.and_utc());
                }
                b"event" => {
                    let value = e
                        .try_get_attribute("value")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string());
                    let missing = match (&value, &miss) {
                        (Some(v), Some(m)) => v == m || v.parse::<f64>().ok() == m.parse().ok(),
                        (None, _) => true,
                        _ => v_is_nan(value.as_deref()),
                    };
                    if !missing && let Some(t) = stamp(&e) {
                        let t = t.and_utc();
                        last = Some(last.map_or(t, |l| l.max(t)));
                    }
                }
                _ => {}
            },
            Ok(Event::Text(t)) => {
                let text = t.decode().map(|s| s.trim().to_string()).unwrap_or_default();
                if in_zone {
                    zone_hours = text.parse().unwrap_or(0.0);
                } else if in_miss {
                    miss = Some(text);
                }
            }
            Ok(Event::End(e)) => {
                if e.local_name().as_ref() == b"header" && forecast.is_some() {
                    break;
                }
                in_zone = false;
                in_miss = false;
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let offset = chrono::Duration::seconds((zone_hours * 3600.0).round() as i64);
    forecast.or(last).map(|t| t - offset)
}

fn v_is_nan(value: Option<&str>) -> bool {
    value.is_none_or(|v| v.eq_ignore_ascii_case("nan"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_clock_is_rounded_down_to_a_cardinal_step() {
        let rule = Time0 {
            source: Time0Source::Clock,
            round: Some(Duration::from_secs(3600)),
            ..Time0::default()
        };
        let now = at("2026-11-30T06:47:12.345Z");
        assert_eq!(choose(&rule, now, None, None), at("2026-11-30T06:00:00Z"));
        let quarter = Time0 {
            round: Some(Duration::from_secs(900)),
            ..rule.clone()
        };
        assert_eq!(
            choose(&quarter, now, None, None),
            at("2026-11-30T06:45:00Z")
        );
        // No rounding asked: to the second.
        assert_eq!(
            choose(&Time0::default(), now, None, None),
            at("2026-11-30T06:47:12Z")
        );
    }

    #[test]
    fn a_chain_keeps_one_time0_and_an_input_can_give_it() {
        let now = at("2026-11-30T07:10:00Z");
        let upstream = at("2026-11-30T06:00:00Z");
        assert_eq!(
            choose(&Time0::default(), now, Some(upstream), None),
            upstream
        );
        let clock = Time0 {
            source: Time0Source::Clock,
            ..Time0::default()
        };
        assert_eq!(choose(&clock, now, Some(upstream), None), now);
        let input = Time0 {
            source: Time0Source::Input { slot: "obs".into() },
            ..Time0::default()
        };
        let forecast = at("2024-03-01T06:00:00Z");
        assert_eq!(
            choose(&input, now, Some(upstream), Some(forecast)),
            forecast
        );
        assert_eq!(
            choose(&input, now, None, None),
            now,
            "the clock when missing"
        );
        let rule = Time0 {
            period: (
                Duration::from_secs(2 * 86_400),
                Duration::from_secs(3 * 86_400),
            ),
            ..Time0::default()
        };
        assert_eq!(
            period(&rule, forecast),
            (at("2024-02-28T06:00:00Z"), at("2024-03-04T06:00:00Z"))
        );
    }

    #[test]
    fn a_pi_input_gives_its_forecast_date_else_its_last_value_in_utc() {
        let doc = |header: &str, events: &str, zone: &str| {
            format!(
                "<TimeSeries xmlns=\"http://www.wldelft.nl/fews/PI\" version=\"1.2\"><timeZone>{zone}</timeZone><series><header><type>instantaneous</type><locationId>A</locationId><parameterId>Q</parameterId>{header}<missVal>-999.0</missVal></header>{events}</series></TimeSeries>"
            )
        };
        let events = "<event date=\"2024-03-01\" time=\"05:00:00\" value=\"1.5\"/>\
                      <event date=\"2024-03-01\" time=\"06:00:00\" value=\"2.5\"/>\
                      <event date=\"2024-03-01\" time=\"07:00:00\" value=\"-999.0\"/>";
        let with_forecast = doc(
            "<forecastDate date=\"2024-03-01\" time=\"06:00:00\"/>",
            events,
            "0.0",
        );
        assert_eq!(
            content_time(with_forecast.as_bytes()),
            Some(at("2024-03-01T06:00:00Z"))
        );
        let observed = doc("", events, "1.0");
        assert_eq!(
            content_time(observed.as_bytes()),
            Some(at("2024-03-01T05:00:00Z")),
            "the last value that is not missing, 06:00 at UTC+1"
        );
        assert_eq!(content_time(doc("", "", "0.0").as_bytes()), None);
    }

    #[test]
    fn a_pi_state_description_gives_its_date_time_as_the_states_valid_time() {
        let state = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/pi-xml/instances/wflow_state.xml"
        ))
        .unwrap();
        assert_eq!(state_time(&state), Some(at("2005-01-08T23:00:00Z")));
        let shifted = b"<State xmlns=\"http://www.wldelft.nl/fews/PI\"><stateId>s</stateId>\
            <timeZone>1.0</timeZone><dateTime date=\"2026-11-30\" time=\"06:00:00\"/></State>";
        assert_eq!(state_time(shifted), Some(at("2026-11-30T05:00:00Z")));
        assert_eq!(state_time(b"<State><stateId>s</stateId></State>"), None);
    }
}
