//! The PI run and diagnostics formats as Rust types, generated at build time from
//! `schemas/pi-xml/pi_run.xsd` and `pi_diag.xsd` by xsd-parser (see `build.rs`), read and written
//! with quick-xml's serde support.

#![allow(
    unused,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    reason = "generated code: its shape is the generator's"
)]

include!(concat!(env!("OUT_DIR"), "/pi_types.rs"));

/// Reads a document of one of the generated types.
pub fn read<T>(bytes: &[u8]) -> Result<T, xsd_parser_types::quick_xml::Error>
where
    T: xsd_parser_types::quick_xml::WithDeserializer,
{
    use xsd_parser_types::quick_xml::{DeserializeSync, SliceReader};
    T::deserialize(&mut SliceReader::from_bytes(bytes))
}
