//! Generates the Rust types of the PI run and diagnostics formats from the XSDs in
//! `schemas/pi-xml/` (xsd-parser, at build time), so that the model contract's files are read and
//! written by the types their schemas define.

use std::path::Path;

use xsd_parser::config::{Namespace, Schema};
use xsd_parser::pipeline::renderer::NamespaceSerialization;
use xsd_parser::{Config, IdentType};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pi-xml");
    for f in ["pi_run.xsd", "pi_diag.xsd", "pi_sharedtypes.xsd"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    let config = Config::default()
        .with_schema(Schema::File(dir.join("pi_run.xsd")))
        .with_schema(Schema::File(dir.join("pi_diag.xsd")))
        .with_quick_xml_deserialize()
        // PI documents as Delft-FEWS writes them: the PI namespace as the default one, no prefix
        // (models that read their run file without a namespace-aware parser exist).
        .with_quick_xml_serialize_config(
            NamespaceSerialization::Global,
            Some(Namespace::new_const(b"http://www.wldelft.nl/fews/PI")),
        )
        .with_generate([
            (IdentType::Element, "fews:Run"),
            (IdentType::Element, "fews:Diag"),
        ]);
    let code = xsd_parser::generate(config).expect("generating the PI types from schemas/pi-xml");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("pi_types.rs");
    std::fs::write(&out, code.to_string()).expect("writing the generated PI types");
}
