//! What operators edit: the `rules/` folder, parsed then compiled into a [`RuleSet`].
//!
//! In: `rules/channels.toml`, `rules/models/*.toml` and `rules/routes.toml`. Out: a validated
//! rule set with a version (a hash of every file it was built from), or every problem found, each
//! with its file and line. Code further down trusts a compiled rule set and never re-checks it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::config::model::Model;
use crate::config::problems::{Problem, Problems};
use crate::config::routes::{ROUTES_FILE, Routes};

/// File that declares the channels.
pub const CHANNELS_FILE: &str = "channels.toml";
/// Folder of model declarations, one file per model.
pub const MODELS_DIR: &str = "models";

/// Names that a `rename` channel ignores until the producer renames them.
pub const DEFAULT_IGNORE: &[&str] = &["*.part", "*.filepart", "*.tmp", ".*", ".in.*"];

/// Marker suffixes that release a file on a `marker` channel (`X.ok` releases `X`).
pub const DEFAULT_MARKERS: &[&str] = &["ok", "done"];

/// Default quiet period of a `quiet` channel.
pub const DEFAULT_QUIET_MS: u64 = 2_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    #[serde(default)]
    channels: BTreeMap<String, Spanned<RawChannel>>,
}

/// One channel as written in `rules/channels.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    /// What feeds this channel, for people.
    #[serde(default)]
    title: String,
    /// `rename`, `marker` or `quiet`.
    completion: Spanned<String>,
    /// Glob patterns of names never picked up (temporary names). Default: [`DEFAULT_IGNORE`].
    ignore: Option<Spanned<Vec<String>>>,
    /// `quiet` only: milliseconds between two identical looks. Default: [`DEFAULT_QUIET_MS`].
    quiet_ms: Option<u64>,
    /// `marker` only: marker suffixes. Default: [`DEFAULT_MARKERS`].
    markers: Option<Vec<String>>,
    /// How often a file is expected (`15m`, `1h`): none within cadence plus grace raises a
    /// "late feed" alert.
    cadence: Option<Spanned<String>>,
    /// Slack after the cadence before the alert. Default: a quarter of the cadence.
    grace: Option<Spanned<String>>,
    /// Every accepted file of this channel must be routed: an unrouted one raises an alert.
    #[serde(default)]
    expect_routed: bool,
    /// How long its files (archived, duplicates, rejected) are kept (`400d`); absent: for ever.
    keep: Option<Spanned<String>>,
}

/// When a dropped file is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Complete as soon as it appears under a name that is not ignored.
    Rename,
    /// `X` is complete once `X.<suffix>` exists for one of these suffixes.
    Marker(Vec<String>),
    /// Complete when size, mtime and inode are unchanged across two looks this far apart.
    Quiet(Duration),
}

/// A compiled channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Folder name under `spool/incoming/`.
    pub name: String,
    /// What feeds it.
    pub title: String,
    /// Completion policy.
    pub completion: Completion,
    /// Names never picked up.
    pub ignore: GlobSet,
    /// The patterns behind `ignore`, for display.
    pub ignore_patterns: Vec<String>,
    /// Expected cadence and grace: a feed is late when nothing came within both.
    pub cadence: Option<(Duration, Duration)>,
    /// Every accepted file must be routed: an unrouted one raises an alert.
    pub expect_routed: bool,
    /// How long its stored files are kept after their arrival; `None`: for ever.
    pub keep: Option<Duration>,
}

impl Channel {
    /// Whether a file name (last path component) is ignored on this channel.
    pub fn ignores(&self, file_name: &[u8]) -> bool {
        let name = String::from_utf8_lossy(file_name);
        self.ignore.is_match(name.as_ref())
    }

    /// For a marker channel: if `file_name` is a marker, the name of the file it releases.
    pub fn marked_by<'a>(&self, file_name: &'a [u8]) -> Option<&'a [u8]> {
        let Completion::Marker(suffixes) = &self.completion else {
            return None;
        };
        suffixes.iter().find_map(|s| {
            let s = s.as_bytes();
            let n = file_name.len();
            (n > s.len() + 1 && file_name.ends_with(s) && file_name[n - s.len() - 1] == b'.')
                .then(|| &file_name[..n - s.len() - 1])
        })
    }
}

/// Everything in `rules/`, compiled.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Models by name (`rules/models/<name>.toml`).
    pub models: BTreeMap<String, Model>,
    /// Routes (`rules/routes.toml`).
    pub routes: Routes,
    /// Products by name (`rules/products.toml`, if there is one).
    pub products: BTreeMap<String, crate::config::products::Product>,
    /// SHA-256 over the files the set was built from (name and content), hex; short form in logs.
    pub version: String,
    /// The files read.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// Loads and compiles the rules folder (channels, models, routes), reporting every problem
    /// at once. The whole set compiles, or none of it is used.
    pub fn load(dir: &Path) -> Result<RuleSet, Problems> {
        let mut problems = Vec::new();
        let mut hash = Sha256::new();
        let mut files = Vec::new();
        let mut read = |path: PathBuf, problems: &mut Vec<Problem>| -> Option<String> {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    hash.update(rel.to_string_lossy().as_bytes());
                    hash.update([0]);
                    hash.update(text.as_bytes());
                    hash.update([0]);
                    files.push(path);
                    Some(text)
                }
                Err(e) => {
                    problems.push(Problem::in_file(&path, format!("cannot read: {e}")));
                    None
                }
            }
        };
        let channels_file = dir.join(CHANNELS_FILE);
        let mut set = match read(channels_file.clone(), &mut problems) {
            Some(text) => match RuleSet::compile_channels(&channels_file, &text) {
                Ok(set) => set,
                Err(p) => {
                    problems.extend(p.0);
                    RuleSet::default()
                }
            },
            None => RuleSet::default(),
        };
        let mut model_files: Vec<PathBuf> = std::fs::read_dir(dir.join(MODELS_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        model_files.sort();
        for path in model_files {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some(text) = read(path.clone(), &mut problems) else {
                continue;
            };
            if !valid_name(&name) {
                problems.push(Problem::in_file(
                    &path,
                    "a model's file name is its name: letters, digits, `-` and `_` only",
                ));
                continue;
            }
            if let Some(m) = Model::compile(&name, &path, &text, &mut problems) {
                if let Some(crate::config::model::Outputs { channel, .. }) = &m.outputs
                    && !set.channels.contains_key(channel)
                {
                    problems.push(Problem::in_file(
                        &path,
                        format!(
                            "model `{name}`: outputs go to channel `{channel}`, which \
                             channels.toml does not declare"
                        ),
                    ));
                }
                set.models.insert(name, m);
            }
        }
        let routes_file = dir.join(ROUTES_FILE);
        if routes_file.exists()
            && let Some(text) = read(routes_file.clone(), &mut problems)
        {
            set.routes = Routes::compile(&routes_file, &text, &set.models, &mut problems);
        }
        let products_file = dir.join(crate::config::products::PRODUCTS_FILE);
        if products_file.exists()
            && let Some(text) = read(products_file.clone(), &mut problems)
        {
            set.products =
                crate::config::products::compile(&products_file, &text, &set.models, &mut problems);
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        set.version = hex::encode(hash.finalize());
        set.files = files;
        Ok(set)
    }

    /// Copies the files [`RuleSet::load`] reads (channels, routes, products and each model's)
    /// from `from` into `to`, created. Each is read without following a link, and a link, or
    /// anything but a regular file, where a rule file is expected is refused: an edit kept for a
    /// later reading (a replay routed by it) is a copy, never a reference. Returns the files
    /// copied.
    pub fn copy_files(from: &Path, to: &Path) -> std::io::Result<usize> {
        const MAX: u64 = 16 << 20;
        let mut rels = vec![PathBuf::from(CHANNELS_FILE)];
        for optional in [ROUTES_FILE, crate::config::products::PRODUCTS_FILE] {
            if std::fs::symlink_metadata(from.join(optional)).is_ok() {
                rels.push(PathBuf::from(optional));
            }
        }
        match std::fs::read_dir(from.join(MODELS_DIR)) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    let name = e.file_name();
                    if Path::new(&name).extension().is_some_and(|x| x == "toml") {
                        rels.push(Path::new(MODELS_DIR).join(name));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        rels.sort();
        std::fs::create_dir_all(to.join(MODELS_DIR))?;
        for rel in &rels {
            let bytes = crate::fs::read_confined(from, rel, MAX)?;
            std::fs::write(to.join(rel), bytes)?;
        }
        Ok(rels.len())
    }

    /// Compiles the text of a channels file.
    pub fn compile_channels(file: &Path, text: &str) -> Result<RuleSet, Problems> {
        let raw: RawChannels =
            toml::from_str(text).map_err(|e| Problems(vec![Problem::from_toml(file, text, &e)]))?;
        let mut problems = Vec::new();
        let mut set = RuleSet::default();
        for (name, raw) in raw.channels {
            let at = raw.span().start;
            let raw = raw.into_inner();
            if !valid_name(&name) {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(at),
                    format!(
                        "channel `{name}`: a channel name is a folder name: letters, digits, \
                         `-` and `_` only"
                    ),
                ));
            }
            let completion = match raw.completion.get_ref().as_str() {
                "rename" => Completion::Rename,
                "marker" => Completion::Marker(
                    raw.markers
                        .clone()
                        .unwrap_or_else(|| DEFAULT_MARKERS.iter().map(|s| s.to_string()).collect()),
                ),
                "quiet" => Completion::Quiet(Duration::from_millis(
                    raw.quiet_ms.unwrap_or(DEFAULT_QUIET_MS),
                )),
                other => {
                    problems.push(Problem::at(
                        file,
                        text,
                        Some(raw.completion.span().start),
                        format!(
                            "channel `{name}`: completion `{other}` is not one of rename, marker, quiet"
                        ),
                    ));
                    continue;
                }
            };
            if raw.quiet_ms.is_some() && !matches!(completion, Completion::Quiet(_)) {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(at),
                    format!("channel `{name}`: `quiet_ms` only applies to completion = \"quiet\""),
                ));
            }
            if raw.markers.is_some() && !matches!(completion, Completion::Marker(_)) {
                problems.push(Problem::at(
                    file,
                    text,
                    Some(at),
                    format!("channel `{name}`: `markers` only applies to completion = \"marker\""),
                ));
            }
            let (patterns, ignore_at) = match &raw.ignore {
                Some(list) => (list.get_ref().clone(), Some(list.span().start)),
                None => (DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(), None),
            };
            let mut builder = GlobSetBuilder::new();
            for p in &patterns {
                match Glob::new(p) {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => problems.push(Problem::at(
                        file,
                        text,
                        ignore_at,
                        format!("channel `{name}`: ignore pattern `{p}`: {e}"),
                    )),
                }
            }
            let ignore = builder.build().unwrap_or_else(|_| GlobSet::empty());
            let mut duration = |v: &Option<Spanned<String>>, what: &str| {
                v.as_ref().and_then(
                    |v| match crate::config::model::parse_duration(v.get_ref()) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            problems.push(Problem::at(
                                file,
                                text,
                                Some(v.span().start),
                                format!("channel `{name}`: {what}: {e}"),
                            ));
                            None
                        }
                    },
                )
            };
            let cadence = duration(&raw.cadence, "cadence");
            let grace = duration(&raw.grace, "grace");
            let cadence = cadence.map(|c| (c, grace.unwrap_or(c / 4)));
            let keep =
                raw.keep.as_ref().and_then(|k| {
                    match crate::config::model::parse_retention(k.get_ref()) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            problems.push(Problem::at(
                                file,
                                text,
                                Some(k.span().start),
                                format!("channel `{name}`: keep: {e}"),
                            ));
                            None
                        }
                    }
                });
            set.channels.insert(
                name.clone(),
                Channel {
                    name,
                    title: raw.title,
                    completion,
                    ignore,
                    ignore_patterns: patterns,
                    cadence,
                    expect_routed: raw.expect_routed,
                    keep,
                },
            );
        }
        if set.channels.is_empty() && problems.is_empty() {
            problems.push(Problem::in_file(
                file,
                "no channel is declared: POM would pick up nothing",
            ));
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(Problems(problems))
        }
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<RuleSet, Problems> {
        RuleSet::compile_channels(Path::new("channels.toml"), text)
    }

    #[test]
    fn defaults_ignore_temporary_names() {
        let set = compile("[channels.obs]\ncompletion = \"rename\"\n").unwrap();
        let c = &set.channels["obs"];
        for name in ["a.xml.part", "a.filepart", "x.tmp", ".hidden", ".in.a.xml"] {
            assert!(c.ignores(name.as_bytes()), "{name}");
        }
        assert!(!c.ignores(b"a.xml"));
    }

    #[test]
    fn a_marker_names_the_file_it_releases() {
        let set = compile("[channels.m]\ncompletion = \"marker\"\n").unwrap();
        let c = &set.channels["m"];
        assert_eq!(c.marked_by(b"a.xml.ok"), Some(&b"a.xml"[..]));
        assert_eq!(c.marked_by(b"a.xml.done"), Some(&b"a.xml"[..]));
        assert_eq!(c.marked_by(b".ok"), None);
        assert_eq!(c.marked_by(b"a.xml"), None);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = compile(
            "[channels.a]\ncompletion = \"sometimes\"\n\n[channels.b]\ncompletion = \"rename\"\nignore = [\"[\"]\n\n[channels.c]\ncompletion = \"rename\"\nquiet_ms = 5\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert_eq!(err.0[0].line, Some(2), "{err}");
        assert_eq!(err.0[1].line, Some(6), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = compile("[channels.a]\ncompletion = \"rename\"\ncompletoin = 1\n").unwrap_err();
        assert_eq!(err.0[0].line, Some(3), "{err}");
    }
}
