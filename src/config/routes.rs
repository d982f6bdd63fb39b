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
    publish: Vec<RawPublish>,
    hold: Option<String>,
    drop: Option<String>,
}

/// A publication: a target folder, or a target and the name to publish under.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPublish {
    To(String),
    Named { to: String, name: String },
}

/// What a publication name may hold.
pub const PUBLISH_PLACEHOLDERS: &str =
    "{name}, {stem}, {ext}, {time0} or {time0:FORMAT} (strftime), {run}, {id}";

/// The parts of a publication name: the file's original name, and the time0 and run it comes
/// from (a model's output: its run's; any other file: the time it arrived, and its own id).
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    /// Original name (last component).
    pub name: &'a str,
    /// time0 of the producing run, or the file's arrival.
    pub time0: chrono::DateTime<chrono::Utc>,
    /// The producing run, or the file's id.
    pub run: &'a str,
    /// The file's id.
    pub id: &'a str,
}

/// The name a template makes for a file: `{stem}_{time0:%Y%m%d%H}{ext}` gives
/// `forecast_2026113006.xml` for `forecast.xml` of a run at 06:00. An error names what is wrong;
/// the result is always one safe path component.
pub fn publish_name(template: &str, p: &Published<'_>) -> Result<String, String> {
    use std::fmt::Write as _;
    let (stem, ext) = match p.name.rfind('.') {
        Some(i) if i > 0 => (&p.name[..i], &p.name[i..]),
        _ => (p.name, ""),
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| "a `{` is not closed".to_string())?;
        let ph = &rest[open + 1..open + close];
        match ph.split_once(':') {
            Some(("time0", format)) => {
                let items: Vec<chrono::format::Item<'_>> =
                    chrono::format::StrftimeItems::new(format).collect();
                if items.contains(&chrono::format::Item::Error) {
                    return Err(format!("`{format}` is not a strftime format"));
                }
                write!(out, "{}", p.time0.format_with_items(items.into_iter()))
                    .map_err(|e| e.to_string())?;
            }
            _ => match ph {
                "name" => out.push_str(p.name),
                "stem" => out.push_str(stem),
                "ext" => out.push_str(ext),
                "time0" => out.push_str(&p.time0.format("%Y%m%dT%H%MZ").to_string()),
                "run" => out.push_str(p.run),
                "id" => out.push_str(p.id),
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} (known: {PUBLISH_PLACEHOLDERS})"
                    ));
                }
            },
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if !crate::fs::safe_component(&out) || out.starts_with('.') {
        return Err(format!("it makes `{out}`, not a plain file name"));
    }
    Ok(out)
}

/// Checks a publication name template when the rules are compiled: it must make a plain name,
/// and keep the outputs of one run apart (`{name}` or `{stem}`, since a run's outputs have
/// distinct names).
fn check_publish_name(template: &str) -> Result<(), String> {
    if !template.contains("{name}") && !template.contains("{stem}") {
        return Err(
            "it needs {name} or {stem}: otherwise two outputs of one run would \
                    publish under one name"
                .into(),
        );
    }
    let sample = Published {
        name: "forecast.xml",
        time0: chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000),
        run: "model-20260101T000000000000Z",
        id: "20260101T000000000000Z",
    };
    publish_name(template, &sample).map(|_| ())
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
    /// Copied to `outgoing/<target>/`, under its own name or the name `name` makes of it
    /// (see [`publish_name`]), replacing the previous file of that name.
    Publish {
        /// Target folder.
        target: String,
        /// Naming template, such as `{stem}_{time0:%Y%m%d%H}{ext}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
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

impl std::fmt::Display for Action {
    /// In words: `deliver to model.slot`, `publish to outgoing/web/`, `hold: why`, `drop: why`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Deliver { model, slot } => write!(f, "deliver to {model}.{slot}"),
            Action::Publish { target, name: None } => write!(f, "publish to outgoing/{target}/"),
            Action::Publish {
                target,
                name: Some(n),
            } => write!(f, "publish to outgoing/{target}/ as {n}"),
            Action::Hold { reason } => write!(f, "hold: {reason}"),
            Action::Drop { reason } => write!(f, "drop: {reason}"),
        }
    }
}

impl Route {
    /// Its conditions in words (`channel obs`, `file rain_*.xml`, `where a/b = v`); none: it
    /// takes every file.
    pub fn conditions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.channel {
            out.push(format!("channel {c}"));
        }
        if let Some(f) = &self.file {
            out.push(format!("file {f}"));
        }
        if let Some(f) = &self.format {
            out.push(format!("format {f}"));
        }
        if !self.versions.is_empty() {
            out.push(format!("versions {}", self.versions.join(", ")));
        }
        for w in &self.filter {
            out.push(format!("where {} = {}", w.written, w.value));
        }
        out
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name, recorded with each decision.
    pub name: String,
    pub(crate) channel: Option<String>,
    /// The file pattern, as written.
    pub(crate) file: Option<String>,
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
            for p in &r.publish {
                let (target, name) = match p {
                    RawPublish::To(t) => (t, None),
                    RawPublish::Named { to, name } => (to, Some(name)),
                };
                if target.is_empty()
                    || !target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    problem(format!("publish target `{target}` is not a folder name"));
                } else if let Some(Err(e)) = name.map(|n| check_publish_name(n)) {
                    problem(format!(
                        "publish name `{}`: {e}",
                        name.cloned().unwrap_or_default()
                    ));
                } else {
                    actions.push(Action::Publish {
                        target: target.clone(),
                        name: name.cloned(),
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
                file: r.file.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_name_is_made_from_the_file_its_run_and_time0() {
        let p = Published {
            name: "forecast.xml",
            time0: chrono::DateTime::parse_from_rfc3339("2026-11-30T06:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            run: "propagation-20261130T060012000000Z",
            id: "20261130T060100000000Z",
        };
        assert_eq!(
            publish_name("{stem}_{time0:%Y%m%d%H}{ext}", &p).unwrap(),
            "forecast_2026113006.xml"
        );
        assert_eq!(
            publish_name("{run}_{name}", &p).unwrap(),
            "propagation-20261130T060012000000Z_forecast.xml"
        );
        assert!(
            publish_name("{stem}_{time0:%Y/%m}{ext}", &p).is_err(),
            "a slash"
        );
        assert!(
            publish_name("{stem}{nope}", &p)
                .unwrap_err()
                .contains("unknown placeholder")
        );
        let compile = |publish: &str| {
            let mut problems = Vec::new();
            Routes::compile(
                Path::new("routes.toml"),
                &format!("[[route]]\nname = \"r\"\nchannel = \"c\"\npublish = [{publish}]\n"),
                &BTreeMap::new(),
                &mut problems,
            );
            problems
        };
        assert!(compile("\"web\"").is_empty());
        assert!(compile("{ to = \"web\", name = \"{stem}_{time0:%Y%m%d%H}{ext}\" }").is_empty());
        let p = compile("{ to = \"web\", name = \"latest.xml\" }");
        assert!(p[0].to_string().contains("needs {name} or {stem}"), "{p:?}");
    }
}
