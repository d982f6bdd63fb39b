//! The station index: which archived operational PI time-series file holds which location's
//! series. Written by the background indexer ([`crate::supervise::stations`]) through the writer,
//! read by the station view: a station's files are found by an indexed query, never by reading
//! the archive.

use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, sq};

/// A submission the indexer has not seen yet.
#[derive(Debug, Clone)]
pub struct ToIndex {
    /// Its id.
    pub id: String,
    /// Where it is stored, relative to the spool.
    pub stored: Option<String>,
    /// An archived operational PI time-series file: the only kind indexed.
    pub pi: bool,
    /// A run produced it (its series are forecasts).
    pub produced: bool,
    /// When it was decided.
    pub decided_at: Option<String>,
}

/// What a file holds of one location and parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// `locationId`.
    pub location: String,
    /// `parameterId`.
    pub parameter: String,
    /// A forecast (a `forecastDate`, or a run's output), not an observation.
    pub forecast: bool,
    /// Its series (each ensemble member counts one).
    pub members: i64,
    /// Its first event, UTC.
    pub first_at: Option<String>,
    /// Its last event, UTC.
    pub last_at: Option<String>,
    /// Its `forecastDate`, UTC.
    pub forecast_date: Option<String>,
}

/// A station as the list shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StationRow {
    /// `locationId`.
    pub location: String,
    /// The parameters its files hold.
    pub parameters: Vec<String>,
    /// Its last observed event.
    pub observed_to: Option<String>,
    /// Its latest forecast's `forecastDate` (or its first event).
    pub forecast_at: Option<String>,
    /// How many files hold it.
    pub files: i64,
}

/// A file holding a station's series: (submission, parameter, its reference time: the
/// `forecastDate` or else the first event, its last event).
pub type StationFile = (String, String, Option<String>, Option<String>);

impl Ledger {
    /// How far the index has read: every submission up to this id is indexed (or not PI).
    pub fn series_indexed_upto(&self) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT upto FROM series_indexed WHERE one = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq(self.path(), "read the station index"))
    }

    /// The next submissions to index, in id order: after `upto`, and before the oldest one still
    /// undecided (a file decided later keeps its place). With the last id they reach when fewer
    /// than `limit` come back.
    pub fn to_index(
        &self,
        upto: &str,
        limit: usize,
    ) -> Result<(Vec<ToIndex>, Option<String>), LedgerError> {
        let horizon: Option<String> = self
            .conn
            .query_row(
                "SELECT max(id) FROM submissions WHERE id > ?1 AND id < coalesce(
                   (SELECT min(id) FROM submissions WHERE state = 'claimed'), '~')",
                [upto],
                |r| r.get(0),
            )
            .map_err(sq(self.path(), "read the station index"))?;
        let Some(horizon) = horizon else {
            return Ok((Vec::new(), None));
        };
        let rows = self
            .conn
            .prepare_cached(
                "SELECT id, stored, state = 'archived' AND session IS NULL
                        AND format = 'pi-timeseries' AND stored IS NOT NULL,
                        produced_by IS NOT NULL, decided_at
                 FROM submissions WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![upto, horizon, limit as i64], |r| {
                    Ok(ToIndex {
                        id: r.get(0)?,
                        stored: r.get(1)?,
                        pi: r.get(2)?,
                        produced: r.get(3)?,
                        decided_at: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sq(self.path(), "read the station index"))?;
        let reached = (rows.len() < limit).then_some(horizon);
        Ok((rows, reached))
    }

    /// Records what files hold, and how far the index has read, in one transaction.
    pub fn index_series(
        &mut self,
        files: &[(String, Vec<IndexRow>)],
        upto: &str,
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sq(&path, "index stations"))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO series_index (submission, location, parameter,
                       forecast, members, first_at, last_at, forecast_date)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sq(&path, "index stations"))?;
            for (id, rows) in files {
                for r in rows {
                    ins.execute(params![
                        id,
                        r.location,
                        r.parameter,
                        r.forecast,
                        r.members,
                        r.first_at,
                        r.last_at,
                        r.forecast_date
                    ])
                    .map_err(sq(&path, "index stations"))?;
                }
            }
            tx.execute(
                "INSERT INTO series_indexed (one, upto) VALUES (1, ?1)
                 ON CONFLICT (one) DO UPDATE SET upto = excluded.upto",
                [upto],
            )
            .map_err(sq(&path, "index stations"))?;
        }
        tx.commit().map_err(sq(&path, "index stations"))
    }

    /// The stations, by location.
    pub fn stations(&self, limit: usize) -> Result<Vec<StationRow>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT location, group_concat(DISTINCT parameter),
                        max(CASE WHEN forecast = 0 THEN last_at END),
                        max(CASE WHEN forecast = 1 THEN coalesce(forecast_date, first_at) END),
                        count(DISTINCT submission)
                 FROM series_index GROUP BY location ORDER BY location LIMIT ?1",
            )
            .and_then(|mut st| {
                st.query_map([limit as i64], |r| {
                    let parameters: Option<String> = r.get(1)?;
                    let mut parameters: Vec<String> = parameters
                        .unwrap_or_default()
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    parameters.sort();
                    Ok(StationRow {
                        location: r.get(0)?,
                        parameters,
                        observed_to: r.get(2)?,
                        forecast_at: r.get(3)?,
                        files: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read stations"))
    }

    /// A station's forecast files (newest reference time first), or its observation files
    /// whose last event is at or after `since` (newest first), at most `limit`.
    pub fn station_files(
        &self,
        location: &str,
        forecast: bool,
        since: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StationFile>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT submission, parameter, coalesce(forecast_date, first_at), last_at
                 FROM series_index
                 WHERE location = ?1 AND forecast = ?2 AND (?3 IS NULL OR last_at >= ?3)
                 ORDER BY coalesce(forecast_date, first_at) DESC, submission DESC LIMIT ?4",
            )
            .and_then(|mut st| {
                st.query_map(params![location, forecast, since, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read a station's files"))
    }
}
