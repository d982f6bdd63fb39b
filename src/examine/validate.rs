//! Validate: libxml2, the reference validator, on the thread that owns it.
//!
//! In: a claimed file's path and the check the catalog gives for its format and version. Out: valid,
//! or the errors libxml2 reports, with line numbers (the same verdicts as `xmllint --schema`).
//! Compiled schemas are cached per XSD on each worker thread (libxml2's validation context is not
//! `Send`) and rebuilt when the schemas change. No network access ever: the entity loader refuses
//! every non-local address, and documents with a DTD never reach this module.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use libxml::bindings;
use libxml::error::StructuredError;
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};

use crate::config::catalog::Check;

/// Errors kept per document; the rest are counted.
pub const MAX_ERRORS: usize = 50;

/// One message from libxml2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XmlError {
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Why a document failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not well-formed.
    Malformed(Vec<XmlError>),
    /// Well-formed but not valid against the XSD.
    Invalid(Vec<XmlError>),
    /// The XSD itself could not be compiled (an operator's problem, reported as such).
    Schema(PathBuf, Vec<XmlError>),
}

static SCHEMA_GENERATION: AtomicU64 = AtomicU64::new(0);
static INIT: Once = Once::new();

/// Tells every validator that files under `schemas/` changed: caches are rebuilt on next use.
pub fn schemas_changed() {
    SCHEMA_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Initialises libxml2 once per process, from the calling thread: parser globals, and an entity
/// loader that never goes to the network.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: global initialisation, called once before any other libxml2 use.
        unsafe {
            bindings::xmlInitParser();
            bindings::xmlSetExternalEntityLoader(Some(bindings::xmlNoNetExternalEntityLoader));
        }
    });
}

#[derive(Default)]
struct Sink {
    errors: Vec<XmlError>,
    more: usize,
}

thread_local! {
    static SINK: RefCell<Sink> = RefCell::new(Sink::default());
}

unsafe extern "C" fn collect(_ctx: *mut c_void, error: bindings::xmlErrorPtr) {
    if error.is_null() {
        return;
    }
    // SAFETY: libxml2 hands a valid error for the duration of the callback.
    let e = unsafe { StructuredError::from_raw(error) };
    if matches!(e.level, libxml::error::XmlErrorLevel::Warning) {
        return;
    }
    SINK.with(|s| {
        let mut s = s.borrow_mut();
        if s.errors.len() < MAX_ERRORS {
            s.errors.push(XmlError {
                line: e.line.and_then(|l| u32::try_from(l).ok()),
                column: e.col.and_then(|c| u32::try_from(c).ok()).filter(|&c| c > 0),
                message: e.message.unwrap_or_default().trim_end().to_string(),
            });
        } else {
            s.more += 1;
        }
    });
}

fn take_errors() -> Vec<XmlError> {
    SINK.with(|s| {
        let mut s = s.borrow_mut();
        let mut errors = std::mem::take(&mut s.errors);
        if s.more > 0 {
            errors.push(XmlError {
                line: None,
                column: None,
                message: format!("… and {} more error(s)", s.more),
            });
        }
        s.more = 0;
        errors
    })
}

struct Compiled {
    ctxt: SchemaValidationContext,
}

/// A validator owned by one thread, with its cache of compiled schemas.
pub struct Validator {
    generation: u64,
    schemas: HashMap<PathBuf, Result<Compiled, Vec<XmlError>>>,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// A validator for the current thread.
    pub fn new() -> Self {
        init();
        Validator {
            generation: SCHEMA_GENERATION.load(Ordering::SeqCst),
            schemas: HashMap::new(),
        }
    }

    /// Checks a file as the catalog says: against an XSD, or for well-formedness only.
    pub fn check(&mut self, file: &Path, check: &Check) -> Result<(), Failure> {
        self.check_source(Source::File(file), check)
    }

    /// Checks a document already in memory, or a file streamed from disk.
    pub fn check_source(&mut self, source: Source<'_>, check: &Check) -> Result<(), Failure> {
        match check {
            Check::Xsd(xsd) => self.validate(source, xsd),
            Check::WellFormedOnly(_) => well_formed_source(source).map_err(Failure::Malformed),
        }
    }

    /// Compiles (or reuses) an XSD; the errors if it does not compile.
    pub fn compile(&mut self, xsd: &Path) -> Result<(), Vec<XmlError>> {
        self.schema(xsd).map(|_| ())
    }

    fn schema(&mut self, xsd: &Path) -> Result<&mut Compiled, Vec<XmlError>> {
        let generation = SCHEMA_GENERATION.load(Ordering::SeqCst);
        if generation != self.generation {
            self.schemas.clear();
            self.generation = generation;
        }
        let entry = self.schemas.entry(xsd.to_path_buf()).or_insert_with(|| {
            install_sink();
            let _ = take_errors();
            let Some(path) = xsd.to_str() else {
                return Err(vec![message("the XSD path is not UTF-8")]);
            };
            let mut parser = SchemaParserContext::from_file(path);
            match SchemaValidationContext::from_parser(&mut parser) {
                Ok(ctxt) => {
                    // Route validation errors to this thread's bounded sink.
                    // SAFETY: the context is alive; the handler only touches thread-local state.
                    unsafe {
                        bindings::xmlSchemaSetValidStructuredErrors(
                            ctxt.as_ptr(),
                            Some(collect),
                            std::ptr::null_mut(),
                        );
                    }
                    Ok(Compiled { ctxt })
                }
                Err(errors) => {
                    let mut out: Vec<XmlError> = errors
                        .into_iter()
                        .map(|e| XmlError {
                            line: e.line.and_then(|l| u32::try_from(l).ok()),
                            column: None,
                            message: format!(
                                "{}{}",
                                e.filename.map(|f| format!("{f}: ")).unwrap_or_default(),
                                e.message.unwrap_or_default().trim_end()
                            ),
                        })
                        .collect();
                    out.extend(take_errors());
                    if out.is_empty() {
                        out.push(message("the XSD does not compile"));
                    }
                    Err(out)
                }
            }
        });
        entry.as_mut().map_err(|e| e.clone())
    }

    fn validate(&mut self, source: Source<'_>, xsd: &Path) -> Result<(), Failure> {
        let compiled = self
            .schema(xsd)
            .map_err(|e| Failure::Schema(xsd.to_path_buf(), e))?;
        install_sink();
        let _ = take_errors();
        let rc = match source {
            Source::File(file) => {
                let c = cstring(file);
                // SAFETY: the context and the path live for the call; errors go to the sink.
                unsafe { bindings::xmlSchemaValidateFile(compiled.ctxt.as_ptr(), c.as_ptr(), 0) }
            }
            Source::Bytes(bytes) => {
                let Ok(len) = i32::try_from(bytes.len()) else {
                    return Err(Failure::Malformed(vec![message(
                        "too large to hold in memory",
                    )]));
                };
                // SAFETY: libxml2 copies the bytes into a buffer that the validation call takes
                // over and frees.
                unsafe {
                    let input = bindings::xmlParserInputBufferCreateMem(
                        bytes.as_ptr().cast(),
                        len,
                        bindings::xmlCharEncoding_XML_CHAR_ENCODING_NONE,
                    );
                    if input.is_null() {
                        return Err(Failure::Malformed(vec![message(
                            "cannot buffer the document",
                        )]));
                    }
                    bindings::xmlSchemaValidateStream(
                        compiled.ctxt.as_ptr(),
                        input,
                        bindings::xmlCharEncoding_XML_CHAR_ENCODING_NONE,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                }
            }
        };
        let errors = take_errors();
        if rc == 0 && errors.is_empty() {
            return Ok(());
        }
        // Tell a document that is not well-formed from one that breaks the schema.
        match well_formed_source(source) {
            Err(parse) => Err(Failure::Malformed(parse)),
            Ok(()) if errors.is_empty() => Err(Failure::Invalid(vec![message(&format!(
                "schema validation failed (libxml2 status {rc})"
            ))])),
            Ok(()) => Err(Failure::Invalid(errors)),
        }
    }
}

/// Where a document is read from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Streamed from a file (memory does not grow with its size).
    File(&'a Path),
    /// Already in memory.
    Bytes(&'a [u8]),
}

/// Whether a file is well-formed XML, streaming (memory does not grow with the file).
pub fn well_formed(file: &Path) -> Result<(), Vec<XmlError>> {
    well_formed_source(Source::File(file))
}

/// Whether a document is well-formed XML.
pub fn well_formed_source(source: Source<'_>) -> Result<(), Vec<XmlError>> {
    init();
    install_sink();
    let _ = take_errors();
    let options = (bindings::xmlParserOption_XML_PARSE_NONET
        | bindings::xmlParserOption_XML_PARSE_NOWARNING) as i32;
    let reader = match source {
        Source::File(file) => {
            let c = cstring(file);
            // SAFETY: the path lives for the call; the reader is freed below.
            unsafe { bindings::xmlReaderForFile(c.as_ptr(), std::ptr::null(), options) }
        }
        Source::Bytes(bytes) => {
            let Ok(len) = i32::try_from(bytes.len()) else {
                return Err(vec![message("too large to hold in memory")]);
            };
            // SAFETY: `bytes` outlives the reader, which is freed below, before returning.
            unsafe {
                bindings::xmlReaderForMemory(
                    bytes.as_ptr().cast(),
                    len,
                    std::ptr::null(),
                    std::ptr::null(),
                    options,
                )
            }
        }
    };
    if reader.is_null() {
        return Err(vec![message("cannot open the file")]);
    }
    let mut rc;
    loop {
        // SAFETY: `reader` is a live reader.
        rc = unsafe { bindings::xmlTextReaderRead(reader) };
        if rc != 1 {
            break;
        }
    }
    // SAFETY: freed once, not used after.
    unsafe { bindings::xmlFreeTextReader(reader) };
    let errors = take_errors();
    match (rc, errors.is_empty()) {
        (0, true) => Ok(()),
        (_, false) => Err(errors),
        (_, true) => Err(vec![message("the document is not well-formed")]),
    }
}

fn install_sink() {
    // SAFETY: sets this thread's structured error handler; it only touches thread-local state.
    unsafe { bindings::xmlSetStructuredErrorFunc(std::ptr::null_mut(), Some(collect)) };
}

fn message(m: &str) -> XmlError {
    XmlError {
        line: None,
        column: None,
        message: m.to_string(),
    }
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    }

    #[test]
    fn schema_errors_come_with_line_numbers() {
        let mut v = Validator::new();
        let xsd = here("schemas/pi-xml/pi_run.xsd");
        let ok = v.check(
            &here("tests/corpus/pi-xml/instances/wflow_run_info.xml"),
            &Check::Xsd(xsd.clone()),
        );
        assert_eq!(ok, Ok(()));
        let bad = v.check(
            &here("tests/corpus/pi-xml/instances/rtctools_pi_run.xml"),
            &Check::Xsd(xsd),
        );
        let Err(Failure::Invalid(errors)) = bad else {
            panic!("{bad:?}")
        };
        assert!(errors[0].line.is_some(), "{errors:?}");
    }

    #[test]
    fn a_truncated_file_is_malformed_with_a_line() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t.xml");
        let full = std::fs::read(here("tests/corpus/pi-xml/instances/wflow_run_info.xml")).unwrap();
        std::fs::write(&f, &full[..full.len() / 2]).unwrap();
        let mut v = Validator::new();
        let r = v.check(&f, &Check::Xsd(here("schemas/pi-xml/pi_run.xsd")));
        let Err(Failure::Malformed(errors)) = r else {
            panic!("{r:?}")
        };
        assert!(errors.iter().any(|e| e.line.is_some()), "{errors:?}");
        let r = v.check(&f, &Check::WellFormedOnly("x".into()));
        assert!(matches!(r, Err(Failure::Malformed(_))), "{r:?}");
    }
}
