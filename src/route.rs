//! Route: where an accepted file goes, decided by the operators' rules.
//!
//! In: `rules/routes.toml`, compiled, and the facts of one file (channel, name, format, version,
//! content). Out: the rules that matched and their actions (deliver to model input slots, publish
//! to `outgoing/<target>/`, hold, drop with a reason), or `unrouted`: a file no rule matches is
//! never silently dropped. Whether the first matching rule applies or all of them is written in
//! the file. A pure function: the content a rule asks about is read once, up front.

use std::collections::BTreeMap;
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use quick_xml::Reader;
use quick_xml::events::Event;
use serde::Deserialize;
use toml::Spanned;

use crate::model::Model;
use crate::problems::Problem;

/// File that holds the routes.
pub const ROUTES_FILE: &str = "routes.toml";

/// A test on a file's content: the value of an element's text or of an attribute, found by a
/// short path of local names from the root's children (`series/header/locationId`,
/// `series/header/timeStep/@unit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFilter {
    /// The path as written.
    pub written: String,
    /// Element local names below the root.
    pub path: Vec<String>,
    /// Attribute local name, when the path ends in `@name`.
    pub attribute: Option<String>,
    /// The value wanted (any occurrence equal to it matches).
    pub value: String,
}

/// Compiles a content filter.
pub fn compile_filter(path: &str, value: &str) -> Result<ContentFilter, String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let attribute = match parts.last() {
        Some(last) if last.starts_with('@') => {
            let a = last[1..].to_string();
            parts.pop();
            Some(a)
        }
        _ => None,
    };
    if parts.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('@')) {
        return Err(format!(
            "content path `{path}` is not of the form `a/b/c` or `a/b/@attr`"
        ));
    }
    Ok(ContentFilter {
        written: path.to_string(),
        path: parts,
        attribute,
        value: value.to_string(),
    })
}

/// Reads, in one pass, whether each filter is satisfied by a document.
pub fn content_matches(document: &[u8], filters: &[&ContentFilter]) -> Vec<bool> {
    let mut found = vec![false; filters.len()];
    if filters.is_empty() {
        return found;
    }
    let mut reader = Reader::from_reader(document);
    let mut buf = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut depth = 0usize;
    let mut text: Option<(usize, String)> = None;
    let at = |stack: &[Vec<u8>], f: &ContentFilter| {
        stack.len() == f.path.len() && stack.iter().zip(&f.path).all(|(a, b)| a == b.as_bytes())
    };
    while let Ok(event) = reader.read_event_into(&mut buf) {
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if depth > 0 {
                    stack.push(e.local_name().as_ref().to_vec());
                    for (i, f) in filters.iter().enumerate() {
                        if found[i] || !at(&stack, f) {
                            continue;
                        }
                        match &f.attribute {
                            Some(a) => {
                                found[i] = e.attributes().with_checks(false).flatten().any(|x| {
                                    x.key.local_name().as_ref() == a.as_bytes()
                                        && x.value.as_ref() == f.value.as_bytes()
                                });
                            }
                            None if empty => found[i] = f.value.is_empty(),
                            None => text = Some((stack.len(), String::new())),
                        }
                    }
                    if empty {
                        stack.pop();
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(t) => {
                if let Some((_, s)) = &mut text {
                    s.push_str(&String::from_utf8_lossy(t.as_ref()));
                }
            }
            Event::End(_) => {
                if let Some((level, s)) = &text
                    && *level == stack.len()
                {
                    let value = s.trim();
                    for (i, f) in filters.iter().enumerate() {
                        if !found[i] && f.attribute.is_none() && at(&stack, f) && f.value == value {
                            found[i] = true;
                        }
                    }
                    text = None;
                }
                depth = depth.saturating_sub(1);
                if depth > 0 {
                    stack.pop();
                }
            }
            Event::Eof => break,
            _ => {}
        }
        if found.iter().all(|&f| f) {
            break;
        }
        buf.clear();
    }
    found
}

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
    channel: Option<String>,
    format: Option<String>,
    versions: Vec<String>,
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
    names: NameIndex,
}

#[derive(Debug, Clone, Default)]
struct NameIndex {
    set: GlobSet,
    rule_of: Vec<usize>,
    unconditional: Vec<usize>,
}

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
    /// Where the document is, read only if a rule asks about content.
    pub document: &'a Path,
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

    /// Decides for one file.
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let name = String::from_utf8_lossy(facts.name);
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
        let candidates: Vec<&Route> = by_name
            .into_iter()
            .map(|i| &self.routes[i])
            .filter(|r| r.matches_facts(facts))
            .collect();
        let filters: Vec<&ContentFilter> = candidates.iter().flat_map(|r| &r.filter).collect();
        let found = if filters.is_empty() {
            Vec::new()
        } else {
            match std::fs::read(facts.document) {
                Ok(bytes) => content_matches(&bytes, &filters),
                Err(_) => vec![false; filters.len()],
            }
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

    const PI: &[u8] = br#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><series><header><type>instantaneous</type><locationId> Y1232010 </locationId><parameterId>P.obs</parameterId><timeStep unit="second" multiplier="3600"/></header></series></TimeSeries>"#;

    fn doc() -> &'static Path {
        static ONCE: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
            std::sync::OnceLock::new();
        let (_, p) = ONCE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("pi.xml");
            std::fs::write(&p, PI).unwrap();
            (dir, p)
        });
        p
    }

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
            document: doc(),
        }
    }

    #[test]
    fn content_filters_read_element_text_and_attributes() {
        let f = [
            compile_filter("series/header/locationId", "Y1232010").unwrap(),
            compile_filter("series/header/timeStep/@unit", "second").unwrap(),
            compile_filter("series/header/parameterId", "Q.obs").unwrap(),
        ];
        let refs: Vec<&ContentFilter> = f.iter().collect();
        assert_eq!(content_matches(PI, &refs), vec![true, true, false]);
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
        let d = first.decide(&facts("obs", b"a.xml"));
        assert_eq!(
            d,
            Decision::Routed {
                rules: vec!["rain".into()],
                actions: vec![Action::Publish {
                    target: "rain".into()
                }]
            }
        );
        let all = routes(&format!("apply = \"all\"\n{text}"));
        let Decision::Routed { rules, .. } = all.decide(&facts("obs", b"a.xml")) else {
            panic!()
        };
        assert_eq!(rules, vec!["rain", "everything"]);
        // Another channel: only the catch-all.
        let Decision::Routed { rules, .. } = first.decide(&facts("other", b"a.xml")) else {
            panic!()
        };
        assert_eq!(rules, vec!["everything"]);
    }

    #[test]
    fn a_file_no_rule_matches_is_unrouted() {
        let r = routes("[[route]]\nname = \"x\"\nfile = \"rain_*.xml\"\ndrop = \"not wanted\"\n");
        assert_eq!(r.decide(&facts("obs", b"q.xml")), Decision::Unrouted);
        assert!(matches!(
            r.decide(&facts("obs", b"d/rain_1.xml")),
            Decision::Routed { .. }
        ));
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
}
