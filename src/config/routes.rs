//! Routes: `rules/routes.toml`, parsed then compiled. Each rule says which files it takes
//! (channel, name pattern, format, versions, content) and what it does with them (deliver to
//! model input slots, publish to `outgoing/<target>/`, hold, drop with a reason). Deliver targets
//! are checked against the models; every problem is reported with its line. Deciding for a file
//! is [`crate::route`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::content::{ContentFilter, compile_filter};
use super::model::Model;
use super::problems::Problem;

/// File that holds the routes.
pub const ROUTES_FILE: &str = "routes.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    apply: Option<Spanned<String>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    channel: Option<String>,
    file: Option<String>,
    format: Option<String>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(rename = "where", default)]
    filter: BTreeMap<String, String>,
    #[serde(default)]
    deliver: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    hold: Option<String>,
    drop: Option<String>,
}

/// Whether the first matching rule applies, or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Apply {
    /// The first matching rule, in file order.
    #[default]
    First,
    /// Every matching rule.
    All,
}

/// What a rule does with a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Becomes an input of a model.
    Deliver {
        /// Model name.
        model: String,
        /// Input slot.
        slot: String,
    },
    /// Copied to `outgoing/<target>/`.
    Publish {
        /// Target folder.
        target: String,
    },
    /// Kept aside until an operator releases it.
    Hold {
        /// Why.
        reason: String,
    },
    /// Not used, on purpose.
    Drop {
        /// Why.
        reason: String,
    },
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name, recorded with each decision.
    pub name: String,
    pub(crate) channel: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) versions: Vec<String>,
    /// Content the file must hold.
    pub filter: Vec<ContentFilter>,
    /// What it does.
    pub actions: Vec<Action>,
}

/// The compiled routes.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// First or all.
    pub apply: Apply,
    /// Rules, in file order.
    pub routes: Vec<Route>,
    /// Every rule's file pattern in one set (one pass over a name finds all the rules it
    /// matches), with the rule each pattern belongs to.
    pub(crate) names: NameIndex,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct NameIndex {
    pub(crate) set: GlobSet,
    pub(crate) rule_of: Vec<usize>,
    pub(crate) unconditional: Vec<usize>,
}

impl Routes {
    /// Compiles routes text; deliver targets are checked against `models`.
    pub fn compile(
        file: &Path,
        text: &str,
        models: &BTreeMap<String, Model>,
        problems: &mut Vec<Problem>,
    ) -> Routes {
        let raw: RawRoutes = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::from_toml(file, text, &e));
                return Routes::default();
            }
        };
        let apply = match raw.apply.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("first") => Apply::First,
            Some("all") => Apply::All,
            Some(other) => {
                let at = raw.apply.as_ref().map(|a| a.span().start);
                problems.push(Problem::at(
                    file,
                    text,
                    at,
                    format!("apply = `{other}` is not `first` or `all`"),
                ));
                Apply::First
            }
        };
        let mut routes = Vec::new();
        let mut raw_globs: Vec<Option<Glob>> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for raw in raw.route {
            let at = raw.span().start;
            let r = raw.into_inner();
            let mut problem = |m: String| {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(at),
                    format!("route `{}`: {m}", r.name),
                ));
            };
            if !names.insert(r.name.clone()) {
                problem("the name is used twice".into());
            }
            raw_globs.push(match r.file.as_deref().map(Glob::new) {
                Some(Ok(g)) => Some(g),
                Some(Err(e)) => {
                    problem(format!("file pattern: {e}"));
                    None
                }
                None => None,
            });
            let mut filter = Vec::new();
            for (path, value) in &r.filter {
                match compile_filter(path, value) {
                    Ok(f) => filter.push(f),
                    Err(e) => problem(e),
                }
            }
            let mut actions = Vec::new();
            for target in &r.deliver {
                let Some((model, slot)) = target.split_once('.') else {
                    problem(format!("deliver `{target}` is not `model.slot`"));
                    continue;
                };
                match models.get(model) {
                    None => problem(format!(
                        "deliver `{target}`: no model `{model}` in rules/models/"
                    )),
                    Some(m) if !m.inputs.contains_key(slot) => problem(format!(
                        "deliver `{target}`: model `{model}` has no input `{slot}` (it has: {})",
                        m.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    Some(_) => actions.push(Action::Deliver {
                        model: model.into(),
                        slot: slot.into(),
                    }),
                }
            }
            for target in &r.publish {
                if target.is_empty()
                    || !target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    problem(format!("publish target `{target}` is not a folder name"));
                } else {
                    actions.push(Action::Publish {
                        target: target.clone(),
                    });
                }
            }
            if let Some(reason) = &r.hold {
                actions.push(Action::Hold {
                    reason: reason.clone(),
                });
            }
            if let Some(reason) = &r.drop {
                actions.push(Action::Drop {
                    reason: reason.clone(),
                });
            }
            let exclusive = r.hold.is_some() as usize + r.drop.is_some() as usize;
            if exclusive > 1 || (exclusive == 1 && actions.len() > 1) {
                problem(
                    "`hold` and `drop` stand alone: not with each other, deliver or publish".into(),
                );
            }
            if r.deliver.is_empty() && r.publish.is_empty() && exclusive == 0 {
                problem("no action: give deliver, publish, hold or drop".into());
            }
            routes.push(Route {
                name: r.name.clone(),
                channel: r.channel.clone(),
                format: r.format.clone(),
                versions: r.versions.clone(),
                filter,
                actions,
            });
        }
        let mut builder = GlobSetBuilder::new();
        let mut names = NameIndex::default();
        for (i, r) in raw_globs.iter().enumerate() {
            match r {
                Some(g) => {
                    builder.add(g.clone());
                    names.rule_of.push(i);
                }
                None => names.unconditional.push(i),
            }
        }
        names.set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        Routes {
            apply,
            routes,
            names,
        }
    }
}
