//! Names: any dropped name becomes one safe stored name; any relative path read from a file is
//! confined under its root or refused; claim ids, durations and retentions parse or are refused.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stored = pom::spool::stored_name("20261201T000000000000Z", data);
    assert!(pom::fs::safe_component(&stored), "{stored:?} from {data:?}");
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pom::fs::safe_component(s);
    if let Some(p) = pom::fs::confined(Path::new("/spool"), Path::new(s)) {
        assert!(p.starts_with("/spool"), "{p:?}");
        assert!(
            p.components()
                .skip(2)
                .all(|c| matches!(c, Component::Normal(_))),
            "{p:?}"
        );
    }
    if let Some(id) = pom::id::ClaimId::parse(s) {
        assert_eq!(pom::id::ClaimId::parse(&id.text()), Some(id));
    }
    let _ = pom::config::model::parse_duration(s);
    let _ = pom::config::model::parse_retention(s);
});
