//! The architecture, checked: the tree tells the pipeline only if its rules hold.
//!
//! - SQL lives in `src/ledger/` only: no other file of the library or the binary names
//!   `rusqlite` or holds an SQL statement.
//! - The top-level modules (`config`, `intake`, `examine`, `route`, `ledger`, `archive`,
//!   `chain`, …) form no import cycle: each may use those below it, never one that uses it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The file's code without its comments (line comments, doc comments).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string (a URL) is kept: only a comment that starts the line's
            // code, or follows code after a space, is cut.
            Some(i)
                if l[..i].trim().is_empty() || l[..i].ends_with(' ') && !l[..i].contains('"') =>
            {
                &l[..i]
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn relative(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(p)
        .display()
        .to_string()
}

/// SQL keywords that begin a statement, as they are written in this code base.
const STATEMENTS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "INSERT OR ",
    "DELETE FROM",
    "CREATE TABLE",
    "CREATE INDEX",
    "CREATE UNIQUE",
    "ALTER TABLE",
    "PRAGMA ",
];

fn sql_in(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let hit = line.contains("rusqlite")
            || STATEMENTS.iter().any(|k| line.contains(k))
            || (line.contains("UPDATE ") && line.contains(" SET "));
        if hit {
            found.push(format!("line {}: {}", n + 1, line.trim()));
        }
    }
    found
}

#[test]
fn sql_appears_only_in_the_ledger() {
    let ledger = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger");
    let mut outside = Vec::new();
    for f in sources() {
        if f.starts_with(&ledger) {
            continue;
        }
        for hit in sql_in(&code(&f)) {
            outside.push(format!("{}: {hit}", relative(&f)));
        }
    }
    assert!(
        outside.is_empty(),
        "SQL outside src/ledger/ (move it into a ledger function):\n{}",
        outside.join("\n")
    );
    // The check itself sees SQL where there is some.
    assert!(!sql_in(&code(&ledger.join("mod.rs"))).is_empty());
}

/// The top-level module a source file belongs to (`src/intake/settle.rs` → `intake`), or none
/// for the crate roots.
fn top_module(path: &Path) -> Option<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None if first == "cli" => None,
        None => Some(first),
    }
}

/// `crate::x` names in a file's code.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let before = rest[..i].chars().last();
        // `crate::x`, not `some_crate::x`.
        if !name.is_empty() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(name);
        }
        rest = after;
    }
    out
}

/// Every cycle's modules, each cycle once (strongly connected components of more than one
/// module, by Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.g.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    c.sort();
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Which file makes each edge, to say where a cycle comes from.
    let mut by: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in sources() {
        let Some(top) = top_module(&f) else { continue };
        let entry = graph.entry(top.clone()).or_default();
        for used in uses(&code(&f)) {
            if used != top {
                entry.insert(used.clone());
                by.entry((top.clone(), used))
                    .or_default()
                    .push(relative(&f));
            }
        }
    }
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| c.iter().map(move |b| (a, b)))
                .filter_map(|(a, b)| {
                    by.get(&(a.clone(), b.clone()))
                        .map(|files| format!("  {a} -> {b} ({})", files.join(", ")))
                })
                .collect();
            format!("cycle {}:\n{}", c.join(", "), edges.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
    // The check finds a cycle where there is one.
    let mut g = graph.clone();
    g.entry("ledger".into())
        .or_default()
        .insert("daemon".into());
    assert!(!cycles(&g).is_empty());
    // And it saw the modules it guards.
    for m in [
        "config", "intake", "examine", "route", "ledger", "archive", "chain",
    ] {
        assert!(graph.contains_key(m), "no module {m}");
    }
}
