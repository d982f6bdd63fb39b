//! Impact of a rule change: what the rules in force and an edited set decide for the same
//! archived files, and what differs.
//!
//! In: both rule sets, each file's facts and (when either set asks about content) its bytes, and
//! for a file whose delivery to a model goes away, the runs that took it there (the caller reads
//! them from the ledger). Out: an [`Impact`]: files examined and changed, route changes
//! (from → to), deliveries and publications added and removed, deliveries the slot would refuse,
//! files that would become unrouted, dropped, held or refused (their channel gone), the runs that would lose an input, and the
//! runs that would gain one, per model, each with examples. Never: reading a file, the ledger or
//! the clock; running anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::routes::Action;
use crate::config::rules::RuleSet;
use crate::route::{Decision, Facts, route};

/// What a rule set decides for one file, in the terms the impact compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The rules that matched (`unrouted` when none; `refused` when the channel is not declared).
    pub route: String,
    /// Deliveries kept (`model.slot`).
    pub deliveries: BTreeSet<String>,
    /// Publications (`outgoing/<target>/`).
    pub publications: BTreeSet<String>,
    /// Deliveries a rule asks for that the slot refuses (`model.slot`: format, version or
    /// content it does not take).
    pub misfits: BTreeSet<String>,
    /// Held by a rule.
    pub held: bool,
    /// Dropped by a rule.
    pub dropped: bool,
}

/// What `rules` decides for a file.
pub fn outcome(rules: &RuleSet, facts: &Facts<'_>, content: Option<&[u8]>) -> Outcome {
    if !rules.channels.contains_key(facts.channel) {
        return Outcome {
            route: "refused".into(),
            ..Outcome::default()
        };
    }
    let (decision, misfits) = route(&rules.routes, &rules.models, facts, content);
    let mut o = Outcome {
        misfits: misfits
            .into_iter()
            .map(|m| format!("{}.{}", m.model, m.slot))
            .collect(),
        ..Outcome::default()
    };
    match decision {
        Decision::Unrouted => o.route = "unrouted".into(),
        Decision::Routed { rules, actions } => {
            o.route = rules.join(", ");
            for a in actions {
                match a {
                    Action::Deliver { model, slot } => {
                        o.deliveries.insert(format!("{model}.{slot}"));
                    }
                    Action::Publish { target, .. } => {
                        o.publications.insert(target);
                    }
                    Action::Hold { .. } => o.held = true,
                    Action::Drop { .. } => o.dropped = true,
                }
            }
        }
    }
    o
}

/// A count and its first examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Examples {
    /// How many.
    pub count: usize,
    /// The first ones (file or run ids).
    pub examples: Vec<String>,
}

impl Examples {
    fn add(&mut self, example: &str, most: usize) {
        self.count += 1;
        if self.examples.len() < most {
            self.examples.push(example.to_string());
        }
    }
}

/// The impact of a rule change over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Impact {
    /// Archived files examined.
    pub files: usize,
    /// Files decided differently.
    pub changed: usize,
    /// Files that could not be read (pruned or gone) where content decides: left out, counted.
    pub unreadable: Examples,
    /// Route changes: "from → to".
    pub routes: BTreeMap<String, Examples>,
    /// Deliveries added, per `model.slot`.
    pub deliveries_added: BTreeMap<String, Examples>,
    /// Deliveries removed, per `model.slot`.
    pub deliveries_removed: BTreeMap<String, Examples>,
    /// Publications added, per target.
    pub publications_added: BTreeMap<String, Examples>,
    /// Publications removed, per target.
    pub publications_removed: BTreeMap<String, Examples>,
    /// Files that would become unrouted.
    pub unrouted: Examples,
    /// Files that would be dropped by a rule.
    pub dropped: Examples,
    /// Files that would be held by a rule.
    pub held: Examples,
    /// Files whose channel the new rules no longer declare.
    pub refused: Examples,
    /// Deliveries a rule would ask for that the slot refuses, per `model.slot`.
    pub refused_by_slot: BTreeMap<String, Examples>,
    /// Runs that took a file through a delivery that would go away, per model: every one (they
    /// would have run without it, or not at all).
    pub runs_losing_input: BTreeMap<String, Vec<String>>,
    /// Runs that would gain an input, per model: one per file newly delivered to a model run on
    /// each arrival; for other triggers, the deliveries that would join its runs.
    pub runs_gaining_input: BTreeMap<String, Examples>,
}

impl Impact {
    /// Adds one file's two outcomes; `runs` gives the runs that took the file in a delivery
    /// (`model.slot`) that goes away. `most` examples are kept of each kind.
    pub fn add(
        &mut self,
        id: &str,
        old: &Outcome,
        new: &Outcome,
        mut runs: impl FnMut(&str) -> Vec<String>,
        most: usize,
    ) {
        self.files += 1;
        if old == new {
            return;
        }
        self.changed += 1;
        if old.route != new.route {
            self.routes
                .entry(format!("{} → {}", old.route, new.route))
                .or_default()
                .add(id, most);
        }
        for d in new.deliveries.difference(&old.deliveries) {
            self.deliveries_added
                .entry(d.clone())
                .or_default()
                .add(id, most);
            let model = d.split('.').next().unwrap_or(d);
            self.runs_gaining_input
                .entry(model.to_string())
                .or_default()
                .add(id, most);
        }
        for d in old.deliveries.difference(&new.deliveries) {
            self.deliveries_removed
                .entry(d.clone())
                .or_default()
                .add(id, most);
            let model = d.split('.').next().unwrap_or(d);
            let lost = self.runs_losing_input.entry(model.to_string()).or_default();
            for r in runs(d) {
                if !lost.contains(&r) {
                    lost.push(r);
                }
            }
        }
        for p in new.publications.difference(&old.publications) {
            self.publications_added
                .entry(p.clone())
                .or_default()
                .add(id, most);
        }
        for p in old.publications.difference(&new.publications) {
            self.publications_removed
                .entry(p.clone())
                .or_default()
                .add(id, most);
        }
        for m in new.misfits.difference(&old.misfits) {
            self.refused_by_slot
                .entry(m.clone())
                .or_default()
                .add(id, most);
        }
        if new.route == "unrouted" && old.route != "unrouted" {
            self.unrouted.add(id, most);
        }
        if new.route == "refused" && old.route != "refused" {
            self.refused.add(id, most);
        }
        if new.dropped && !old.dropped {
            self.dropped.add(id, most);
        }
        if new.held && !old.held {
            self.held.add(id, most);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(route: &str, deliveries: &[&str], publications: &[&str]) -> Outcome {
        Outcome {
            route: route.into(),
            deliveries: deliveries.iter().map(|d| d.to_string()).collect(),
            publications: publications.iter().map(|d| d.to_string()).collect(),
            misfits: BTreeSet::new(),
            held: false,
            dropped: false,
        }
    }

    #[test]
    fn a_parameter_sent_to_the_wrong_slot_moves_its_deliveries_and_names_the_runs_it_fed() {
        let mut impact = Impact::default();
        let same = o("observed-rainfall", &["rainfall-runoff.rain"], &[]);
        impact.add("f1", &same, &same, |_| unreachable!(), 5);
        let before = o("observed-discharge", &["rainfall-runoff.discharge"], &[]);
        let after = o("observed-discharge", &["rainfall-runoff.rain"], &[]);
        for (f, run) in [("f2", "r1"), ("f3", "r2"), ("f4", "r2")] {
            impact.add(
                f,
                &before,
                &after,
                |d| {
                    assert_eq!(d, "rainfall-runoff.discharge");
                    vec![run.to_string()]
                },
                2,
            );
        }
        assert_eq!((impact.files, impact.changed), (4, 3));
        assert!(impact.routes.is_empty(), "the same rule, another slot");
        assert_eq!(
            impact.deliveries_removed["rainfall-runoff.discharge"].count,
            3
        );
        assert_eq!(
            impact.deliveries_added["rainfall-runoff.rain"].examples,
            vec!["f2", "f3"]
        );
        assert_eq!(
            impact.runs_losing_input["rainfall-runoff"],
            vec!["r1", "r2"]
        );
        assert_eq!(impact.runs_gaining_input["rainfall-runoff"].count, 3);
        assert_eq!(impact.unrouted.count, 0);
    }

    #[test]
    fn a_file_no_rule_takes_any_more_is_unrouted_and_its_publication_removed() {
        let mut impact = Impact::default();
        impact.add(
            "f1",
            &o("published-forecasts", &[], &["forecasts"]),
            &o("unrouted", &[], &[]),
            |_| Vec::new(),
            5,
        );
        assert_eq!(impact.unrouted.examples, vec!["f1"]);
        assert_eq!(impact.publications_removed["forecasts"].count, 1);
        assert_eq!(impact.routes["published-forecasts → unrouted"].count, 1);
    }
}
