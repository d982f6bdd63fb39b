//! Content predicates: a path and a value (the first two lines), then any document. The filter
//! compiles or is refused; evaluated, it matches or not; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pom::config::content::{compile_filter, content_matches, content_values};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let (Some(path), Some(value)) = (lines.next(), lines.next()) else {
        return;
    };
    let document = lines.next().unwrap_or_default();
    let (Ok(path), Ok(value)) = (std::str::from_utf8(path), std::str::from_utf8(value)) else {
        return;
    };
    let Ok(filter) = compile_filter(path, value) else {
        return;
    };
    let matched = content_matches(document, &[&filter]);
    let values = content_values(document, &[&filter], 5);
    assert_eq!(matched.len(), 1);
    assert!(values[0].len() <= 5);
    if matched[0] && values[0].len() < 5 {
        assert!(
            values[0].contains(&filter.value),
            "a match is among the values"
        );
    }
});
