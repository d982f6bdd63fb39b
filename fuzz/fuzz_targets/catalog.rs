//! The format catalog's parser on any text (`schemas/catalog.toml`): a catalog or problems,
//! never a panic. The folder it names holds no XSD, so every schema it asks for is missing.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pom::config::catalog::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = Catalog::compile(
        Path::new("/nonexistent/schemas"),
        Path::new("catalog.toml"),
        text,
    ) {
        let _ = problems.to_string();
    }
});
