//! Ids: what names a claimed file (and a run) — UTC to the microsecond, written so that text
//! order is time order (`20261128T153613123456Z`), and never reused: each is later than the
//! last one issued, across restarts too (the generator starts after the newest id in the ledger).

use chrono::{DateTime, TimeZone, Utc};

/// A claimed file's id: UTC microseconds, written so that text order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimId(pub i64);

/// The text form of an id, as chrono writes it.
const TEXT_FORMAT: &str = "%Y%m%dT%H%M%S%6fZ";

impl ClaimId {
    /// The id as text, e.g. `20261128T153613123456Z`.
    pub fn text(&self) -> String {
        use chrono::{Datelike, Timelike};
        let t = self.time();
        // Written field by field: an id's text is made several times per file, and chrono's
        // format string is parsed again at each call. Years of other than four digits (never
        // from the clock) keep chrono's form.
        if !(0..=9999).contains(&t.year()) {
            return t.format(TEXT_FORMAT).to_string();
        }
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}{:06}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.timestamp_subsec_micros()
        )
    }

    /// The instant the id stands for (the claim time, unless bumped to stay unique).
    pub fn time(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0).single().unwrap_or_default()
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Option<ClaimId> {
        let s = s.strip_suffix('Z')?;
        // Digits only, but for the `T`: chrono's `%Y` alone would take a sign and its fields
        // padding, which give ids whose text is not the one parsed.
        if s.len() != 21
            || !s.bytes().enumerate().all(|(i, b)| {
                if i == 8 {
                    b == b'T'
                } else {
                    b.is_ascii_digit()
                }
            })
        {
            return None;
        }
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%6f").ok()?;
        Some(ClaimId(t.and_utc().timestamp_micros()))
    }
}

impl std::fmt::Display for ClaimId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// Issues strictly increasing ids from a clock; shared by the threads that claim (the intake and
/// the replay), so that no two claims ever get the same id.
#[derive(Debug)]
pub struct IdGenerator {
    last: std::sync::atomic::AtomicI64,
}

impl IdGenerator {
    /// A generator that only issues ids after `after`.
    pub fn after(after: Option<ClaimId>) -> Self {
        IdGenerator {
            last: std::sync::atomic::AtomicI64::new(after.map_or(0, |c| c.0)),
        }
    }

    /// The next id at time `now`: `now` itself, or one microsecond after the last id if the clock
    /// has not moved on (or went back).
    pub fn next(&self, now: DateTime<Utc>) -> ClaimId {
        use std::sync::atomic::Ordering;
        let now = now.timestamp_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let t = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return ClaimId(t),
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `names` fuzz target: a sign and a form feed in the date were taken, and the
    /// id's text was not the one parsed.
    #[test]
    fn only_the_exact_text_form_parses_and_it_reads_back_the_same() {
        for bad in [
            "-006\x0c128T001126346413Z",
            "+2026112T153613123456Z",
            "2026 128T153613123456Z",
            "20261128t153613123456Z",
            "20261128T15361312345Z",
        ] {
            assert_eq!(ClaimId::parse(bad), None, "{bad:?}");
        }
        let id = ClaimId::parse("20261128T153613123456Z").unwrap();
        assert_eq!(id.text(), "20261128T153613123456Z");
    }

    #[test]
    fn the_text_is_chronos_format_field_for_field() {
        let mut t: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
        let last: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        let step = (last - t) / 100_003;
        while t <= last {
            let id = ClaimId(t);
            assert_eq!(id.text(), id.time().format(TEXT_FORMAT).to_string());
            t += step;
        }
        for edge in [0, last, last + 1, i64::MAX, i64::MIN] {
            let id = ClaimId(edge);
            assert_eq!(id.text(), id.time().format(TEXT_FORMAT).to_string());
        }
    }

    #[test]
    fn ids_sort_by_time_and_never_repeat() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 15, 36, 13).unwrap();
        let g = IdGenerator::after(None);
        let a = g.next(t);
        let b = g.next(t);
        let c = g.next(t - chrono::Duration::seconds(5));
        assert!(a < b && b < c);
        assert!(a.text() < b.text() && b.text() < c.text());
        assert_eq!(a.text(), "20261128T153613000000Z");
        assert_eq!(ClaimId::parse(&b.text()), Some(b));
        let after_restart = IdGenerator::after(Some(c));
        assert!(after_restart.next(t) > c);
    }
}
