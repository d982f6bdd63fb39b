//! Identification on any bytes, with the repository's catalog: the root element, its namespace
//! and the version are found or not, in bounded depth, never a panic; and the pass that stops at
//! the head finds the same root and version as the whole pass wherever the whole pass finds no
//! fault.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pom::config::catalog::Catalog;
use pom::examine::identify::{identify_bytes, identify_head};

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
    let head = identify_head(data, catalog(), pom::examine::DEFAULT_MAX_DEPTH);
    if identity.guard.is_none() {
        assert_eq!(head.guard, None, "{head:?}");
        assert_eq!(head.root, identity.root);
        assert_eq!(head.version, identity.version);
    }
});
