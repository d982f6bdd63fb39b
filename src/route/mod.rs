//! Route: where an accepted file goes, decided by the operators' rules.
//!
//! In: the compiled routes and models ([`crate::config`]), the facts of one file (channel, name,
//! format, version) and, when a rule or a slot asks about content, the file's bytes, read once by
//! the caller. Out: the rules that matched and their actions (deliver to model input slots,
//! publish to `outgoing/<target>/`, hold, drop with a reason), or `unrouted`: a file no rule
//! matches is never silently dropped; and the deliveries left out because the file does not fit
//! their slot. Whether the first matching rule applies or all of them is written in the rules.
//! Never: reading a file, the clock or anything else than its arguments. Everything here is pure.

pub mod impact;

use std::collections::BTreeMap;

use crate::config::content::{ContentFilter, content_matches, content_values};
use crate::config::model::Model;
use crate::config::routes::{Action, Apply, Route, Routes};

/// What routing knows of a file.
pub struct Facts<'a> {
    /// Channel it came in on.
    pub channel: &'a str,
    /// Name it was dropped under (relative to the channel folder).
    pub name: &'a [u8],
    /// Format.
    pub format: &'a str,
    /// Version.
    pub version: &'a str,
}

/// The routing decision for a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Decision {
    /// Rules matched: their names and actions, in order.
    Routed {
        /// Names of the rules that matched.
        rules: Vec<String>,
        /// Their actions.
        actions: Vec<Action>,
    },
    /// No rule matched.
    Unrouted,
}

/// A delivery a rule asked for that the file does not fit (format, version or content of the
/// slot): left out of the decision, and said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// Model.
    pub model: String,
    /// Its input slot.
    pub slot: String,
}

/// Whether deciding for this file needs its content: a rule that could match it, or a slot it
/// could be delivered to, asks about content. The caller reads the bytes only then.
pub fn needs_content(routes: &Routes, models: &BTreeMap<String, Model>, facts: &Facts<'_>) -> bool {
    routes.candidates(facts).iter().any(|r| {
        !r.filter.is_empty()
            || r.actions.iter().any(|a| match a {
                Action::Deliver { model, slot } => models
                    .get(model)
                    .and_then(|m| m.inputs.get(slot))
                    .is_some_and(|s| !s.filter.is_empty()),
                _ => false,
            })
    })
}

/// The whole routing of one accepted file: the rules' decision, then each delivery kept only if
/// the file fits its slot. `content` is the file's bytes when [`needs_content`] said so (a
/// content test without them is not satisfied).
pub fn route(
    routes: &Routes,
    models: &BTreeMap<String, Model>,
    facts: &Facts<'_>,
    content: Option<&[u8]>,
) -> (Decision, Vec<Misfit>) {
    let mut decision = routes.decide(facts, content);
    let misfits = fit(&mut decision, models, facts, content);
    (decision, misfits)
}

/// Keeps a decision's deliveries to the slots the file fits (format, version, content); returns
/// those left out.
pub fn fit(
    decision: &mut Decision,
    models: &BTreeMap<String, Model>,
    facts: &Facts<'_>,
    content: Option<&[u8]>,
) -> Vec<Misfit> {
    let mut out = Vec::new();
    if let Decision::Routed { actions, .. } = decision {
        actions.retain(|a| match a {
            Action::Deliver { model, slot } => {
                let fits = models
                    .get(model)
                    .and_then(|m| m.inputs.get(slot))
                    .is_some_and(|s| s.accepts(facts.format, facts.version, content));
                if !fits {
                    out.push(Misfit {
                        model: model.clone(),
                        slot: slot.clone(),
                    });
                }
                fits
            }
            _ => true,
        });
    }
    out
}

impl Routes {
    /// The rules whose channel, name, format and version match (content not yet looked at), in
    /// file order.
    fn candidates(&self, facts: &Facts<'_>) -> Vec<&Route> {
        self.by_name(facts.name)
            .into_iter()
            .map(|i| &self.routes[i])
            .filter(|r| r.matches_facts(facts))
            .collect()
    }

    /// The rules whose file pattern takes this name (its last component, or the whole relative
    /// name), or that have none: their indexes, in file order.
    fn by_name(&self, name: &[u8]) -> Vec<usize> {
        let name = String::from_utf8_lossy(name);
        let base = name.rsplit('/').next().unwrap_or(&name);
        let mut by_name: Vec<usize> = self.names.unconditional.clone();
        for m in self
            .names
            .set
            .matches(base)
            .into_iter()
            .chain(self.names.set.matches(name.as_ref()))
        {
            by_name.push(self.names.rule_of[m]);
        }
        by_name.sort_unstable();
        by_name.dedup();
        by_name
    }

    /// Decides for one file, from its facts and, when a rule asks about content, its bytes.
    pub fn decide(&self, facts: &Facts<'_>, content: Option<&[u8]>) -> Decision {
        let candidates = self.candidates(facts);
        let filters: Vec<&ContentFilter> = candidates.iter().flat_map(|r| &r.filter).collect();
        let found = match content {
            _ if filters.is_empty() => Vec::new(),
            Some(bytes) => content_matches(bytes, &filters),
            None => vec![false; filters.len()],
        };
        let mut k = 0;
        let mut rules = Vec::new();
        let mut actions = Vec::new();
        for r in candidates {
            let n = r.filter.len();
            let ok = found[k..k + n].iter().all(|&f| f);
            k += n;
            if ok {
                rules.push(r.name.clone());
                actions.extend(r.actions.iter().cloned());
                if self.apply == Apply::First {
                    break;
                }
            }
        }
        if rules.is_empty() {
            Decision::Unrouted
        } else {
            Decision::Routed { rules, actions }
        }
    }
}

/// How near a rule came to taking a file: each of its conditions the file fails, with what the
/// rule wants and what the file has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nearness {
    /// The rule.
    pub rule: String,
    /// Its conditions the file fails (none: the rule matches).
    pub failed: Vec<Failed>,
}

/// One condition a file fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failed {
    /// `channel`, `file`, `format`, `versions`, or `where <path>`.
    pub condition: String,
    /// What the rule wants.
    pub wanted: String,
    /// What the file has.
    pub found: String,
}

impl Routes {
    /// Why rules do not take a file: for the `most` nearest rules (fewest conditions failed,
    /// then values nearest to those wanted, then file order), each condition failed with the value wanted and the value found.
    /// `content` is the file's bytes (a content test without them shows nothing found).
    pub fn explain(&self, facts: &Facts<'_>, content: Option<&[u8]>, most: usize) -> Vec<Nearness> {
        let name = String::from_utf8_lossy(facts.name);
        let by_name = self.by_name(facts.name);
        let filters: Vec<&ContentFilter> = self.routes.iter().flat_map(|r| &r.filter).collect();
        let values = content.map(|bytes| content_values(bytes, &filters, 3));
        let mut k = 0;
        let mut out: Vec<(usize, Nearness)> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let mut failed = Vec::new();
            let mut fail = |condition: &str, wanted: String, found: String| {
                failed.push(Failed {
                    condition: condition.into(),
                    wanted,
                    found,
                })
            };
            if let Some(c) = r.channel.as_deref().filter(|c| *c != facts.channel) {
                fail("channel", c.into(), facts.channel.into());
            }
            if let Some(f) = r
                .file
                .as_deref()
                .filter(|_| by_name.binary_search(&i).is_err())
            {
                fail("file", f.into(), name.clone().into_owned());
            }
            if let Some(f) = r.format.as_deref().filter(|f| *f != facts.format) {
                fail("format", f.into(), facts.format.into());
            }
            if !r.versions.is_empty() && !r.versions.iter().any(|v| v == facts.version) {
                fail("versions", r.versions.join(", "), facts.version.into());
            }
            for f in &r.filter {
                let found = values.as_ref().map(|v| v[k].clone()).unwrap_or_default();
                if !found.contains(&f.value) {
                    let found = if found.is_empty() {
                        "nothing there".into()
                    } else {
                        found.join(", ")
                    };
                    fail(&format!("where {}", f.written), f.value.clone(), found);
                }
                k += 1;
            }
            out.push((
                i,
                Nearness {
                    rule: r.name.clone(),
                    failed,
                },
            ));
        }
        // Nearest first: fewest conditions failed, then values nearest to those wanted (a
        // typo in a rule is a value one letter off), then file order.
        let distance = |n: &Nearness| -> f64 {
            n.failed
                .iter()
                .map(|f| 1.0 - strsim::jaro_winkler(&f.wanted, &f.found))
                .sum()
        };
        out.sort_by(|(i, a), (j, b)| {
            (a.failed.len(), distance(a), i)
                .partial_cmp(&(b.failed.len(), distance(b), j))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        out.into_iter().take(most).map(|(_, n)| n).collect()
    }
}

impl Route {
    /// Channel, format and version (the file name is matched by the routes' name index).
    fn matches_facts(&self, f: &Facts<'_>) -> bool {
        self.channel.as_deref().is_none_or(|c| c == f.channel)
            && self.format.as_deref().is_none_or(|x| x == f.format)
            && (self.versions.is_empty() || self.versions.iter().any(|v| v == f.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PI: &[u8] = br#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><series><header><type>instantaneous</type><locationId> Y1232010 </locationId><parameterId>P.obs</parameterId><timeStep unit="second" multiplier="3600"/></header></series></TimeSeries>"#;

    fn routes(text: &str) -> Routes {
        let mut p = Vec::new();
        let r = Routes::compile(Path::new("routes.toml"), text, &BTreeMap::new(), &mut p);
        assert!(p.is_empty(), "{p:?}");
        r
    }

    fn facts<'a>(channel: &'a str, name: &'a [u8]) -> Facts<'a> {
        Facts {
            channel,
            name,
            format: "pi-timeseries",
            version: "1.2",
        }
    }

    #[test]
    fn the_first_matching_rule_applies_unless_all_are_asked_for() {
        let text = r#"
[[route]]
name = "rain"
channel = "obs"
where = { "series/header/parameterId" = "P.obs" }
publish = ["rain"]

[[route]]
name = "everything"
publish = ["all"]
"#;
        let first = routes(text);
        let d = first.decide(&facts("obs", b"a.xml"), Some(PI));
        assert_eq!(
            d,
            Decision::Routed {
                rules: vec!["rain".into()],
                actions: vec![Action::Publish {
                    name: None,
                    target: "rain".into()
                }]
            }
        );
        let all = routes(&format!("apply = \"all\"\n{text}"));
        let Decision::Routed { rules, .. } = all.decide(&facts("obs", b"a.xml"), Some(PI)) else {
            panic!()
        };
        assert_eq!(rules, vec!["rain", "everything"]);
        // Another channel: only the catch-all.
        let Decision::Routed { rules, .. } = first.decide(&facts("other", b"a.xml"), Some(PI))
        else {
            panic!()
        };
        assert_eq!(rules, vec!["everything"]);
    }

    #[test]
    fn a_file_no_rule_matches_is_unrouted() {
        let r = routes("[[route]]\nname = \"x\"\nfile = \"rain_*.xml\"\ndrop = \"not wanted\"\n");
        assert_eq!(
            r.decide(&facts("obs", b"q.xml"), Some(PI)),
            Decision::Unrouted
        );
        assert!(matches!(
            r.decide(&facts("obs", b"d/rain_1.xml"), Some(PI)),
            Decision::Routed { .. }
        ));
    }

    #[test]
    fn an_unrouted_file_is_told_which_condition_of_the_nearest_rules_failed_and_on_what_value() {
        let r = routes(
            "[[route]]\nname = \"rain\"\nchannel = \"obs\"\n\
             where = { \"series/header/parameterId\" = \"P.obs\" }\ndrop = \"x\"\n\
             [[route]]\nname = \"far\"\nchannel = \"sandre\"\nfile = \"*.csv\"\nformat = \"sandre\"\n\
             drop = \"x\"\n\
             [[route]]\nname = \"discharge\"\nchannel = \"obs\"\n\
             where = { \"series/header/parameterId\" = \"Q.obs\" }\ndrop = \"x\"\n",
        );
        let doc = String::from_utf8_lossy(PI).replace("P.obs", "P.ob");
        let near = r.explain(&facts("obs", b"rain.xml"), Some(doc.as_bytes()), 2);
        assert_eq!(near.len(), 2);
        assert_eq!(near[0].rule, "rain");
        assert_eq!(
            near[0].failed,
            [Failed {
                condition: "where series/header/parameterId".into(),
                wanted: "P.obs".into(),
                found: "P.ob".into(),
            }]
        );
        assert_eq!(near[1].rule, "discharge");
        let far = r.explain(&facts("obs", b"rain.xml"), None, 3);
        assert_eq!(far[2].rule, "far");
        assert_eq!(
            far[2]
                .failed
                .iter()
                .map(|f| (f.condition.as_str(), f.found.as_str()))
                .collect::<Vec<_>>(),
            [
                ("channel", "obs"),
                ("file", "rain.xml"),
                ("format", "pi-timeseries")
            ]
        );
        assert_eq!(far[0].failed[0].found, "nothing there");
    }

    #[test]
    fn a_deliver_to_an_unknown_model_or_slot_is_a_problem_with_its_line() {
        let mut p = Vec::new();
        Routes::compile(
            Path::new("routes.toml"),
            "[[route]]\nname = \"a\"\ndeliver = [\"nowhere.rain\"]\n\n[[route]]\nname = \"b\"\nhold = \"x\"\ndrop = \"y\"\n",
            &BTreeMap::new(),
            &mut p,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].line, Some(1));
        assert_eq!(p[1].line, Some(5));
        assert!(p[0].message.contains("no model `nowhere`"));
    }

    fn models() -> BTreeMap<String, Model> {
        let mut p = Vec::new();
        let m = Model::compile(
            "flow",
            Path::new("flow.toml"),
            r#"
command = ["run"]
[inputs.rain]
formats = ["pi-timeseries"]
versions = ["1.2"]
where = { "series/header/parameterId" = "P.obs" }
[inputs.any]
formats = ["pi-timeseries", "sandre"]
[trigger]
kind = "arrival"
"#,
            &mut p,
        )
        .unwrap_or_else(|| panic!("{p:?}"));
        BTreeMap::from([("flow".to_string(), m)])
    }

    fn deliver(slots: &[&str]) -> Decision {
        Decision::Routed {
            rules: vec!["r".into()],
            actions: slots
                .iter()
                .map(|s| Action::Deliver {
                    model: "flow".into(),
                    slot: s.to_string(),
                })
                .chain([Action::Publish {
                    name: None,
                    target: "out".into(),
                }])
                .collect(),
        }
    }

    #[test]
    fn a_delivery_is_kept_only_to_a_slot_the_file_fits() {
        let models = models();
        // Fits both: format, version and content.
        let mut d = deliver(&["rain", "any"]);
        let misfits = fit(&mut d, &models, &facts("obs", b"a.xml"), Some(PI));
        assert!(misfits.is_empty());
        assert_eq!(d, deliver(&["rain", "any"]));
        // Content that does not hold what the slot asks: left out of that slot only, and said.
        let other = String::from_utf8_lossy(PI).replace("P.obs", "Q.obs");
        let other = other.as_bytes();
        let mut d = deliver(&["rain", "any"]);
        let misfits = fit(&mut d, &models, &facts("obs", b"a.xml"), Some(other));
        assert_eq!(
            misfits,
            vec![Misfit {
                model: "flow".into(),
                slot: "rain".into()
            }]
        );
        assert_eq!(d, deliver(&["any"]));
        // A version the slot does not take; a slot that asks about content, no content read.
        let mut f = facts("obs", b"a.xml");
        f.version = "1.10";
        let mut d = deliver(&["rain"]);
        assert_eq!(fit(&mut d, &models, &f, Some(PI)).len(), 1);
        let mut d = deliver(&["rain"]);
        assert_eq!(fit(&mut d, &models, &facts("obs", b"a.xml"), None).len(), 1);
        // Publishing is never filtered by slots; an unknown slot is never fitted.
        assert_eq!(d, deliver(&[]));
        let mut d = deliver(&["nothing"]);
        assert_eq!(
            fit(&mut d, &models, &facts("obs", b"a.xml"), Some(PI)).len(),
            1
        );
    }

    #[test]
    fn content_is_read_only_when_a_rule_or_a_slot_asks_about_it() {
        let models = models();
        let plain = routes("[[route]]\nname = \"p\"\npublish = [\"out\"]\n");
        assert!(!needs_content(&plain, &models, &facts("obs", b"a.xml")));
        let by_content = routes(
            "[[route]]\nname = \"p\"\nwhere = { \"series/header/locationId\" = \"X\" }\npublish = [\"out\"]\n",
        );
        assert!(needs_content(&by_content, &models, &facts("obs", b"a.xml")));
        // A rule that cannot match this file (another channel) does not ask.
        let elsewhere = routes(
            "[[route]]\nname = \"p\"\nchannel = \"x\"\nwhere = { \"series/header/locationId\" = \"X\" }\npublish = [\"out\"]\n",
        );
        assert!(!needs_content(&elsewhere, &models, &facts("obs", b"a.xml")));
        let mut p = Vec::new();
        let to_slot = Routes::compile(
            Path::new("routes.toml"),
            "[[route]]\nname = \"d\"\ndeliver = [\"flow.rain\"]\n",
            &models,
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(needs_content(&to_slot, &models, &facts("obs", b"a.xml")));
    }
}
