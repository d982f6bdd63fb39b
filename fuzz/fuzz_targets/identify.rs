//! Identification on any bytes, with the repository's catalog: the root element, its namespace
//! and the version are found or not, in bounded depth, never a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pom::config::catalog::Catalog;
use pom::examine::identify::identify_bytes;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
            .expect("the repository's catalog")
    })
}

fuzz_target!(|data: &[u8]| {
    let identity = identify_bytes(data, catalog(), pom::examine::DEFAULT_MAX_DEPTH);
    let _ = format!("{identity:?}");
});
