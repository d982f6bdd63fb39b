//! The rule parsers on any text: channels, a model declaration and routes (three texts
//! separated by NUL bytes). Every outcome is a rule set or problems with file and line, never
//! a panic.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pom::config::model::Model;
use pom::config::routes::Routes;
use pom::config::rules::RuleSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (channels, model, routes) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Err(problems) = RuleSet::compile_channels(Path::new("channels.toml"), channels) {
        let _ = problems.to_string();
    }
    let mut problems = Vec::new();
    let mut models = BTreeMap::new();
    if let Some(m) = Model::compile("m", Path::new("models/m.toml"), model, &mut problems) {
        models.insert("m".to_string(), m);
    }
    let _ = Routes::compile(Path::new("routes.toml"), routes, &models, &mut problems);
    for p in &problems {
        let _ = p.to_string();
    }
});
