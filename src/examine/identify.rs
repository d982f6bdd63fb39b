//! Identify: what is this document? One streaming pass, bounded memory.
//!
//! In: the bytes of a claimed file and the catalog. Out: its root element and namespace, its
//! version (read where the catalog says the recognised format writes it), or the guard that
//! stopped the pass: a document type declaration (the door to entity bombs and external
//! entities, refused outright: PI-XML and SANDRE never use one), nesting deeper than the limit, or
//! a syntax error (libxml2 then gives the reference message). quick-xml never expands entities
//! and never touches the network.

use std::io::BufRead;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::config::catalog::{Catalog, VersionAt};

/// The root element of a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Root {
    /// Local name.
    pub local: String,
    /// Namespace URI, "" for none.
    pub namespace: String,
}

/// Why the identifying pass stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// A `<!DOCTYPE …>`: refused, since DTDs carry entity expansion and external entities.
    Doctype,
    /// Elements nested deeper than the limit.
    TooDeep(usize),
    /// The document is not well-formed here (message from quick-xml; libxml2 gives the reference).
    Syntax(String),
}

/// What the pass found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The root element, once seen.
    pub root: Option<Root>,
    /// The version, if the format is recognised and the version found.
    pub version: Option<String>,
    /// The guard that stopped the pass, if any.
    pub guard: Option<Guard>,
    /// The pass stopped as soon as the root and the version were known
    /// ([`identify_head`]): the nesting depth and the syntax of the rest are left to libxml2's
    /// pass ([`crate::examine::validate::Validator::check_within`]).
    pub head_only: bool,
}

/// Reads a whole document (or up to a guard) and identifies it, streaming: memory stays bounded
/// whatever the size of the document.
pub fn identify<R: BufRead>(input: R, catalog: &Catalog, max_depth: usize) -> Identity {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::with_capacity(4096);
    let mut pass = Pass::new(catalog, max_depth);
    loop {
        let event = reader.read_event_into(&mut buf);
        if let Some(id) = pass.step(event) {
            return id;
        }
        buf.clear();
    }
}

/// The same pass over a document already in memory, without copying its events.
pub fn identify_bytes(input: &[u8], catalog: &Catalog, max_depth: usize) -> Identity {
    in_memory(input, catalog, max_depth, false)
}

/// The pass over a document in memory, stopped as soon as its root and version are known
/// (`head_only` is then set): for a PI-XML file, its first lines. Whatever stops the pass before
/// that (a DOCTYPE, which comes before the root, too deep, a syntax error) stops it as in
/// [`identify_bytes`]. The caller checks the rest in libxml2's own pass, depth included, or
/// reads the whole document with [`identify_bytes`] where libxml2 will not.
pub fn identify_head(input: &[u8], catalog: &Catalog, max_depth: usize) -> Identity {
    in_memory(input, catalog, max_depth, true)
}

fn in_memory(input: &[u8], catalog: &Catalog, max_depth: usize, head: bool) -> Identity {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().check_end_names = true;
    let mut pass = Pass::new(catalog, max_depth);
    loop {
        if let Some(id) = pass.step(reader.read_event()) {
            return id;
        }
        if head && pass.id.root.is_some() && pass.id.version.is_some() {
            return Identity {
                head_only: true,
                ..std::mem::take(&mut pass.id)
            };
        }
    }
}

/// The identifying pass, one event at a time.
struct Pass<'c> {
    catalog: &'c Catalog,
    max_depth: usize,
    id: Identity,
    depth: usize,
    /// Where to look for the version as an element path, and how far along it we are.
    version_path: Option<Vec<String>>,
    path: Vec<Vec<u8>>,
    capturing: bool,
    text: String,
}

impl<'c> Pass<'c> {
    fn new(catalog: &'c Catalog, max_depth: usize) -> Self {
        Pass {
            catalog,
            max_depth,
            id: Identity::default(),
            depth: 0,
            version_path: None,
            path: Vec::new(),
            capturing: false,
            text: String::new(),
        }
    }

    /// Takes one event; the identity once the pass is over.
    fn step(&mut self, event: Result<Event<'_>, quick_xml::Error>) -> Option<Identity> {
        let event = match event {
            Ok(e) => e,
            Err(e) => return self.stop(Guard::Syntax(e.to_string())),
        };
        match event {
            Event::DocType(_) => return self.stop(Guard::Doctype),
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                if self.depth + 1 > self.max_depth {
                    return self.stop(Guard::TooDeep(self.max_depth));
                }
                if self.depth == 0 {
                    if self.id.root.is_some() {
                        return self.stop(Guard::Syntax("a second root element".into()));
                    }
                    let root = root_of(start);
                    if let Some(format) = self.catalog.recognise(&root.local, &root.namespace) {
                        match &format.version_at {
                            VersionAt::Attribute(name) => {
                                self.id.version = attribute(start, name.as_bytes());
                            }
                            VersionAt::Element(p) => self.version_path = Some(p.clone()),
                        }
                    }
                    self.id.root = Some(root);
                } else if let Some(want) = &self.version_path
                    && self.id.version.is_none()
                {
                    self.path.push(start.local_name().as_ref().to_vec());
                    self.capturing = self.path.len() == want.len()
                        && self.path.iter().zip(want).all(|(a, b)| a == b.as_bytes());
                    if empty {
                        if self.capturing {
                            self.id.version = Some(String::new());
                            self.capturing = false;
                        }
                        self.path.pop();
                    }
                }
                if !empty {
                    self.depth += 1;
                }
            }
            Event::End(_) => {
                self.depth = self.depth.saturating_sub(1);
                if self.version_path.is_some() && self.id.version.is_none() && self.depth > 0 {
                    if self.capturing {
                        self.id.version = Some(self.text.trim().to_string());
                        self.capturing = false;
                    }
                    self.path.pop();
                }
            }
            Event::Text(t) if self.capturing => {
                self.text.push_str(&String::from_utf8_lossy(t.as_ref()));
            }
            Event::CData(t) if self.capturing => {
                self.text.push_str(&String::from_utf8_lossy(t.as_ref()));
            }
            Event::Eof => {
                if self.id.root.is_none() {
                    return self.stop(Guard::Syntax("no root element".into()));
                } else if self.depth > 0 {
                    return self.stop(Guard::Syntax(
                        "the document ends before its root closes".into(),
                    ));
                }
                return Some(std::mem::take(&mut self.id));
            }
            _ => {}
        }
        None
    }

    fn stop(&mut self, guard: Guard) -> Option<Identity> {
        self.id.guard = Some(guard);
        Some(std::mem::take(&mut self.id))
    }
}

fn root_of(start: &BytesStart<'_>) -> Root {
    let name = start.name();
    let (prefix, local) = match name.prefix() {
        Some(p) => (
            Some(p.as_ref().to_vec()),
            start.local_name().as_ref().to_vec(),
        ),
        None => (None, name.as_ref().to_vec()),
    };
    let wanted: Vec<u8> = match &prefix {
        Some(p) => [b"xmlns:".as_slice(), p].concat(),
        None => b"xmlns".to_vec(),
    };
    let namespace = start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.as_ref() == wanted.as_slice())
        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
        .unwrap_or_default();
    Root {
        local: String::from_utf8_lossy(&local).into_owned(),
        namespace,
    }
}

fn attribute(start: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.prefix().is_none() && a.key.as_ref() == local)
        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn catalog() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn id(text: &str) -> Identity {
        let streamed = identify(text.as_bytes(), &catalog(), 100);
        assert_eq!(identify_bytes(text.as_bytes(), &catalog(), 100), streamed);
        streamed
    }

    #[test]
    fn a_pi_file_is_known_by_root_namespace_and_version_attribute() {
        let i = id(
            r#"<?xml version="1.0"?><pi:TimeSeries xmlns:pi="http://www.wldelft.nl/fews/PI" version="1.25"><pi:timeZone>0</pi:timeZone></pi:TimeSeries>"#,
        );
        assert_eq!(i.root.unwrap().namespace, "http://www.wldelft.nl/fews/PI");
        assert_eq!(i.version.as_deref(), Some("1.25"));
        assert_eq!(i.guard, None);
    }

    #[test]
    fn a_sandre_file_carries_its_version_in_the_content() {
        let i = id(
            "<hydrometrie><Scenario><CodeScenario>hydrometrie</CodeScenario>\
             <VersionScenario> 2 </VersionScenario></Scenario><x/></hydrometrie>",
        );
        assert_eq!(i.root.unwrap().namespace, "");
        assert_eq!(i.version.as_deref(), Some("2"));
    }

    #[test]
    fn a_doctype_is_refused_before_any_entity_is_seen() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(id(bomb).guard, Some(Guard::Doctype));
    }

    #[test]
    fn nesting_beyond_the_limit_stops_the_pass() {
        let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
        assert_eq!(id(&deep).guard, Some(Guard::TooDeep(100)));
    }

    #[test]
    fn the_head_of_a_document_gives_its_root_and_version_and_no_more() {
        let catalog = catalog();
        let pi = r#"<?xml version="1.0"?><TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><a><b></a>"#;
        let head = identify_head(pi.as_bytes(), &catalog, 100);
        assert_eq!(head.version.as_deref(), Some("1.2"));
        assert!(head.head_only && head.guard.is_none(), "{head:?}");
        // The whole pass sees what follows the head.
        assert!(matches!(
            identify_bytes(pi.as_bytes(), &catalog, 100).guard,
            Some(Guard::Syntax(_))
        ));
        let sandre = "<hydrometrie><Scenario><VersionScenario>2</VersionScenario></Scenario><x></hydrometrie>";
        let head = identify_head(sandre.as_bytes(), &catalog, 100);
        assert_eq!(head.version.as_deref(), Some("2"));
        assert!(head.head_only, "{head:?}");
        // What stops the pass before the version stops the head alike.
        let bomb = r#"<!DOCTYPE x [<!ENTITY a "a">]><TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"/>"#;
        assert_eq!(
            identify_head(bomb.as_bytes(), &catalog, 100).guard,
            Some(Guard::Doctype)
        );
        let unversioned = format!(
            "<hydrometrie>{}{}</hydrometrie>",
            "<a>".repeat(200),
            "</a>".repeat(200)
        );
        let head = identify_head(unversioned.as_bytes(), &catalog, 100);
        assert_eq!(head.guard, Some(Guard::TooDeep(100)));
        assert!(!head.head_only);
    }

    #[test]
    fn a_truncated_document_is_not_complete() {
        let i = id(
            r#"<Diag xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><line level="3" description="x"/>"#,
        );
        assert!(matches!(i.guard, Some(Guard::Syntax(_))), "{i:?}");
    }
}
