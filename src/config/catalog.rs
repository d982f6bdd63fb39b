//! The format catalog: `schemas/catalog.toml`, parsed then compiled.
//!
//! In: the catalog file and the XSD files it names. Out: a [`Catalog`] that recognises a document
//! from its root element and namespace, tells where its version is written, and maps each accepted
//! version to an XSD or to an explicit, documented "well-formedness only". It never guesses: a
//! version that no group lists is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::problems::{Problem, Problems};

/// File name of the catalog inside the schemas folder.
pub const CATALOG_FILE: &str = "catalog.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    format: Vec<Spanned<RawFormat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    name: Spanned<String>,
    #[serde(default)]
    title: String,
    root: String,
    namespaces: Vec<String>,
    version: RawVersionAt,
    versions: Vec<Spanned<RawVersions>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersionAt {
    attribute: Option<String>,
    element: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersions {
    accept: Vec<String>,
    xsd: Option<Spanned<String>>,
    unvalidated: Option<String>,
}

/// Where a format writes its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionAt {
    /// An attribute of the root element (local name, any namespace).
    Attribute(String),
    /// The text of an element, by local names from the root's children down.
    Element(Vec<String>),
}

/// How a version of a format is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Validated by libxml2 against this XSD (absolute path).
    Xsd(PathBuf),
    /// Checked for well-formedness only, for the documented reason.
    WellFormedOnly(String),
}

/// One format of the catalog, compiled.
#[derive(Debug, Clone)]
pub struct Format {
    /// Short stable name, e.g. `pi-timeseries`.
    pub name: String,
    /// Human title.
    pub title: String,
    /// Root element local name.
    pub root: String,
    /// Accepted namespaces of the root ("" is no namespace).
    pub namespaces: Vec<String>,
    /// Where the version is written.
    pub version_at: VersionAt,
    /// Accepted versions, exactly as written in files, each with its check.
    pub versions: BTreeMap<String, Check>,
}

impl Format {
    /// The check for a version, or `None` when the version is not accepted.
    pub fn check_for(&self, version: &str) -> Option<&Check> {
        self.versions.get(version)
    }

    /// Accepted versions, for messages.
    pub fn accepted(&self) -> String {
        let mut v: Vec<&str> = self.versions.keys().map(String::as_str).collect();
        v.sort_by_key(|a| version_key(a));
        v.join(", ")
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The compiled catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    formats: Vec<Format>,
    by_root: HashMap<(String, String), usize>,
}

impl Catalog {
    /// Loads and compiles `<dir>/catalog.toml`, reporting every problem at once.
    pub fn load(dir: &Path) -> Result<Catalog, Problems> {
        let file = dir.join(CATALOG_FILE);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Problems(vec![Problem::in_file(&file, format!("cannot read: {e}"))]))?;
        Catalog::compile(dir, &file, &text)
    }

    /// Compiles catalog text; XSD paths are relative to `dir`.
    pub fn compile(dir: &Path, file: &Path, text: &str) -> Result<Catalog, Problems> {
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| Problems(vec![Problem::from_toml(file, text, &e)]))?;
        let mut problems = Vec::new();
        let mut catalog = Catalog::default();
        let mut names = HashMap::new();
        for raw_format in raw.format {
            let at = raw_format.span().start;
            let raw_format = raw_format.into_inner();
            let name_at = raw_format.name.span().start;
            let name = raw_format.name.into_inner();
            if names.insert(name.clone(), ()).is_some() {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(name_at),
                    format!("format `{name}` is declared twice"),
                ));
            }
            let version_at = match (raw_format.version.attribute, raw_format.version.element) {
                (Some(a), None) if !a.is_empty() => VersionAt::Attribute(a),
                (None, Some(e)) if !e.is_empty() => {
                    VersionAt::Element(e.split('/').map(str::to_string).collect())
                }
                _ => {
                    problems.push(Problem::at(
                        file,
                        text,
                        Some(at),
                        format!(
                            "format `{name}`: `version` needs exactly one of `attribute` or `element`"
                        ),
                    ));
                    continue;
                }
            };
            let mut versions = BTreeMap::new();
            for group in raw_format.versions {
                let group_at = group.span().start;
                let group = group.into_inner();
                let check = match (group.xsd, group.unvalidated) {
                    (Some(xsd), None) => {
                        let path = dir.join(xsd.get_ref());
                        if !path.is_file() {
                            problems.push(Problem::at(
                                file,
                                text,
                                Some(xsd.span().start),
                                format!("format `{name}`: XSD `{}` not found", xsd.get_ref()),
                            ));
                        }
                        Check::Xsd(path)
                    }
                    (None, Some(why)) if !why.trim().is_empty() => Check::WellFormedOnly(why),
                    _ => {
                        problems.push(Problem::at(
                            file,
                            text,
                            Some(group_at),
                            format!(
                                "format `{name}`: each version group needs either `xsd` or \
                                 `unvalidated = \"why no schema\"`, not both, not neither"
                            ),
                        ));
                        continue;
                    }
                };
                for v in group.accept {
                    if versions.insert(v.clone(), check.clone()).is_some() {
                        problems.push(Problem::at(
                            file,
                            text,
                            Some(group_at),
                            format!("format `{name}`: version `{v}` is listed twice"),
                        ));
                    }
                }
            }
            if versions.is_empty() {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(at),
                    format!("format `{name}` accepts no version"),
                ));
            }
            let index = catalog.formats.len();
            for ns in &raw_format.namespaces {
                let key = (raw_format.root.clone(), ns.clone());
                if let Some(other) = catalog.by_root.insert(key, index) {
                    problems.push(Problem::at(
                        file,
                        text,
                        Some(name_at),
                        format!(
                            "format `{name}` and format `{}` are both recognised by root `{}` in \
                             namespace `{ns}`",
                            catalog.formats[other].name, raw_format.root
                        ),
                    ));
                }
            }
            catalog.formats.push(Format {
                name,
                title: raw_format.title,
                root: raw_format.root,
                namespaces: raw_format.namespaces,
                version_at,
                versions,
            });
        }
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(Problems(problems))
        }
    }

    /// The format recognised by this root element, if any.
    pub fn recognise(&self, root: &str, namespace: &str) -> Option<&Format> {
        self.by_root
            .get(&(root.to_string(), namespace.to_string()))
            .map(|&i| &self.formats[i])
    }

    /// All formats, in catalog order.
    pub fn formats(&self) -> &[Format] {
        &self.formats
    }

    /// Every XSD the catalog names, deduplicated.
    pub fn xsds(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .formats
            .iter()
            .flat_map(|f| f.versions.values())
            .filter_map(|c| match c {
                Check::Xsd(p) => Some(p.clone()),
                Check::WellFormedOnly(_) => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Catalog, Problems> {
        Catalog::compile(Path::new("/nonexistent"), Path::new("catalog.toml"), text)
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = compile(
            r#"
[[format]]
name = "a"
root = "R"
namespaces = [""]
version = { attribute = "version" }
[[format.versions]]
accept = ["1"]
xsd = "missing.xsd"

[[format]]
name = "a"
root = "R"
namespaces = [""]
version = { attribute = "v", element = "x" }
versions = []
"#,
        )
        .unwrap_err();
        let lines: Vec<_> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(lines.contains(&Some(9)), "{err}");
        assert!(lines.contains(&Some(12)), "{err}");
    }

    #[test]
    fn a_version_not_listed_is_not_accepted() {
        let c = compile(
            r#"
[[format]]
name = "s"
root = "hydrometrie"
namespaces = [""]
version = { element = "Scenario/VersionScenario" }
[[format.versions]]
accept = ["1.1", "2"]
unvalidated = "no public XSD"
"#,
        )
        .unwrap();
        let f = c.recognise("hydrometrie", "").unwrap();
        assert!(f.check_for("1.1").is_some());
        assert!(f.check_for("1.10").is_none());
        assert_eq!(
            f.version_at,
            VersionAt::Element(vec!["Scenario".into(), "VersionScenario".into()])
        );
        assert!(c.recognise("hydrometrie", "urn:other").is_none());
    }
}
