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

/// Writes a document of one of the generated types under its root element `root`, indented, with
/// the XML declaration.
pub fn write<T>(value: &T, root: &str) -> Result<String, xsd_parser_types::quick_xml::Error>
where
    T: xsd_parser_types::quick_xml::WithSerializer,
{
    use xsd_parser_types::quick_xml::{BytesDecl, Event, SerializeSync, Writer};
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 4);
    writer
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(|e| xsd_parser_types::quick_xml::Error::from(quick_xml::Error::Io(e.into())))?;
    value.serialize(root, &mut writer)?;
    let mut text = String::from_utf8_lossy(&writer.into_inner()).into_owned();
    text.push('\n');
    Ok(text)
}
