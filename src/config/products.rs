//! Products: the forecasts that must be issued, and when (`rules/products.toml`, optional).
//!
//! In: the text of `products.toml` and the compiled models. Out: [`Product`]s: which model's
//! operational runs issue it, when each issue is due (the times of a cron pattern in a time zone,
//! or a delay after each run's time0), the chance of missing above which it is "at risk", and
//! an optional fallback (a run with the inputs that have arrived, at a set time before the
//! deadline, marked degraded). Never: a product of a model that does not exist, a threshold
//! outside (0, 1), a fallback that does not come before its deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::str::FromStr;
use toml::Spanned;

use super::model::{Model, parse_duration};
use super::problems::Problem;

/// The file, under the rules folder.
pub const PRODUCTS_FILE: &str = "products.toml";

/// The chance of missing from which a product is at risk, unless its rule says otherwise:
/// likely to miss, not merely possibly (the deadlines benchmark prints the trade-off: lower
/// warns earlier and more often in vain, as when a feed's transfer is retried).
pub const DEFAULT_RISK: f64 = 0.7;

/// A forecast that must be issued.
#[derive(Debug, Clone)]
pub struct Product {
    /// Its name (letters, digits, `-`, `_`).
    pub name: String,
    /// What operators call it.
    pub description: Option<String>,
    /// The model whose succeeded operational run issues it.
    pub model: String,
    /// When each issue is due.
    pub due: Due,
    /// "At risk" above this chance of missing.
    pub risk: f64,
    /// How long before the deadline the fallback runs, if the issue is still at risk.
    pub fallback: Option<Duration>,
}

/// When each issue of a product is due.
#[derive(Debug, Clone)]
pub enum Due {
    /// At the times of a cron pattern in a time zone.
    Schedule {
        /// The pattern, as written.
        pattern: String,
        /// The pattern, compiled.
        cron: Box<croner::Cron>,
        /// Its time zone.
        zone: chrono_tz::Tz,
    },
    /// This long after the time0 of the run that issues it.
    AfterTime0(Duration),
}

impl Due {
    /// The first scheduled deadline strictly after `after` (none for a delay after time0).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Due::Schedule { cron, zone, .. } = self else {
            return None;
        };
        cron.find_next_occurrence(&after.with_timezone(zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest `most` scheduled deadlines at or before `at`, oldest first (none for a delay
    /// after time0).
    pub fn latest(&self, at: DateTime<Utc>, most: usize) -> Vec<DateTime<Utc>> {
        let Due::Schedule { cron, zone, .. } = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut t = at.with_timezone(zone);
        let mut inclusive = true;
        while out.len() < most {
            match cron.find_previous_occurrence(&t, inclusive) {
                Ok(prev) => {
                    out.push(prev.with_timezone(&Utc));
                    t = prev;
                    inclusive = false;
                }
                Err(_) => break,
            }
        }
        out.reverse();
        out
    }

    /// The scheduled deadlines in `(from, to]`, oldest first, at most `most` of them.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        most: usize,
    ) -> Vec<DateTime<Utc>> {
        let Due::Schedule { cron, zone, .. } = self else {
            return Vec::new();
        };
        cron.iter_after(from.with_timezone(zone))
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t <= to)
            .take(most)
            .collect()
    }

    /// As written, for people.
    pub fn describe(&self) -> String {
        match self {
            Due::Schedule { pattern, zone, .. } => format!("at `{pattern}` ({zone})"),
            Due::AfterTime0(d) => format!("{} min after time0", d.as_secs() / 60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProducts {
    #[serde(default)]
    product: Vec<Spanned<RawProduct>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    name: String,
    description: Option<String>,
    model: String,
    due: RawDue,
    risk: Option<f64>,
    fallback: Option<RawFallback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDue {
    cron: Option<String>,
    timezone: Option<String>,
    after_time0: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    before: String,
}

/// Compiles the text of a products file against the models, reporting every problem.
pub fn compile(
    file: &Path,
    text: &str,
    models: &BTreeMap<String, Model>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Product> {
    let raw: RawProducts = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem::from_toml(file, text, &e));
            return BTreeMap::new();
        }
    };
    let mut products = BTreeMap::new();
    for raw in raw.product {
        let offset = raw.span().start;
        let raw = raw.into_inner();
        let name = raw.name.clone();
        let before = problems.len();
        let mut at = |message: String| {
            problems.push(Problem::at(
                file,
                text,
                Some(offset),
                format!("product `{name}`: {message}"),
            ));
        };
        if !super::rules::valid_name(&raw.name) {
            at("a product's name is letters, digits, `-` and `_` only".into());
        }
        if products.contains_key(&raw.name) {
            at("declared twice".into());
        }
        if !models.contains_key(&raw.model) {
            at(format!("model `{}` is not in rules/models/", raw.model));
        }
        let risk = raw.risk.unwrap_or(DEFAULT_RISK);
        if !(risk > 0.0 && risk < 1.0) {
            at(format!("`risk` {risk} is not a chance between 0 and 1"));
        }
        let due = match (&raw.due.cron, &raw.due.after_time0) {
            (Some(pattern), None) => {
                let zone = raw.due.timezone.as_deref().unwrap_or("UTC");
                let zone = zone
                    .parse::<chrono_tz::Tz>()
                    .map_err(|_| at(format!("unknown time zone `{zone}`")))
                    .ok();
                let cron = croner::Cron::from_str(pattern)
                    .map_err(|e| at(format!("cron `{pattern}`: {e}")))
                    .ok();
                zone.zip(cron).map(|(zone, cron)| Due::Schedule {
                    pattern: pattern.clone(),
                    cron: Box::new(cron),
                    zone,
                })
            }
            (None, Some(delay)) => {
                if raw.due.timezone.is_some() {
                    at("`timezone` goes with `cron`, not `after_time0`".into());
                }
                parse_duration(delay)
                    .map_err(|e| at(format!("`after_time0`: {e}")))
                    .ok()
                    .map(Due::AfterTime0)
            }
            _ => {
                at("`due` needs one of `cron` (with `timezone`) or `after_time0`".into());
                None
            }
        };
        let fallback = raw.fallback.as_ref().and_then(|f| {
            parse_duration(&f.before)
                .map_err(|e| at(format!("fallback `before`: {e}")))
                .ok()
                .filter(|d| {
                    let ok = !d.is_zero();
                    if !ok {
                        at("fallback `before` must come before the deadline (more than 0)".into());
                    }
                    ok
                })
        });
        if problems.len() != before {
            continue;
        }
        if let Some(due) = due {
            products.insert(
                raw.name.clone(),
                Product {
                    name: raw.name,
                    description: raw.description,
                    model: raw.model,
                    due,
                    risk,
                    fallback,
                },
            );
        }
    }
    products
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn models() -> BTreeMap<String, Model> {
        let mut p = Vec::new();
        let m = Model::compile(
            "propagation",
            Path::new("propagation.toml"),
            "command = [\"run\", \"{run_file}\"]\n[trigger]\nkind = \"arrival\"\n",
            &mut p,
        )
        .unwrap();
        BTreeMap::from([("propagation".to_string(), m)])
    }

    fn compiled(text: &str) -> Result<BTreeMap<String, Product>, Vec<String>> {
        let mut p = Vec::new();
        let out = compile(Path::new("products.toml"), text, &models(), &mut p);
        if p.is_empty() {
            Ok(out)
        } else {
            Err(p.iter().map(|p| p.to_string()).collect())
        }
    }

    #[test]
    fn a_product_due_every_morning_in_paris_is_due_at_six_local_time_across_the_clock_change() {
        let p = compiled(
            "[[product]]\nname = \"bulletin\"\nmodel = \"propagation\"\n\
             due = { cron = \"0 6 * * *\", timezone = \"Europe/Paris\" }\n\
             fallback = { before = \"45m\" }\n",
        )
        .unwrap();
        let b = &p["bulletin"];
        assert_eq!(b.risk, DEFAULT_RISK);
        assert_eq!(b.fallback, Some(Duration::from_secs(45 * 60)));
        let winter = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let days = b
            .due
            .between(winter, winter + chrono::Duration::days(2), 10);
        assert_eq!(
            days,
            vec![
                Utc.with_ymd_and_hms(2026, 3, 29, 4, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 3, 30, 4, 0, 0).unwrap(),
            ]
        );
        assert_eq!(
            b.due
                .next_after(Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap()),
            Some(Utc.with_ymd_and_hms(2026, 3, 28, 5, 0, 0).unwrap())
        );
        // Backwards across the change too, the deadline itself included.
        assert_eq!(
            b.due
                .latest(Utc.with_ymd_and_hms(2026, 3, 30, 4, 0, 0).unwrap(), 3),
            vec![
                Utc.with_ymd_and_hms(2026, 3, 28, 5, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 3, 29, 4, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 3, 30, 4, 0, 0).unwrap(),
            ]
        );
    }

    #[test]
    fn each_problem_is_named_with_its_product_and_line() {
        let err = compiled(
            "[[product]]\nname = \"a\"\nmodel = \"nowhere\"\ndue = { after_time0 = \"2h\" }\n\
             risk = 1.5\n\n\
             [[product]]\nname = \"b\"\nmodel = \"propagation\"\ndue = { cron = \"0 6 * * *\", timezone = \"Mars/Olympus\" }\n\n\
             [[product]]\nname = \"c\"\nmodel = \"propagation\"\ndue = {}\n\n\
             [[product]]\nname = \"d\"\nmodel = \"propagation\"\ndue = { after_time0 = \"2h\" }\nfallback = { before = \"0s\" }\n",
        )
        .unwrap_err()
        .join("\n");
        for expected in [
            "product `a`: model `nowhere` is not in rules/models/",
            "product `a`: `risk` 1.5 is not a chance between 0 and 1",
            "product `b`: unknown time zone `Mars/Olympus`",
            "product `c`: `due` needs one of",
            "product `d`: fallback `before` must come before the deadline",
        ] {
            assert!(err.contains(expected), "{expected:?} not in:\n{err}");
        }
        assert!(err.contains(":1:") || err.contains("line 1"), "{err}");
    }
}
