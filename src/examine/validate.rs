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
    /// Elements nested deeper than the limit given (seen in libxml2's own pass).
    TooDeep(usize),
    /// libxml2 could not open the document, or make the buffer it reads from: the OS error
    /// behind it (`ENOMEM` for a buffer). No verdict on the document: whether it passes with
    /// time is [`crate::examine::is_transient`]'s to say.
    Unopened(i32),
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
            Check::Xsd(xsd) => self.validate(source, xsd, None),
            Check::WellFormedOnly(_) => well_formed_source(source),
        }
    }

    /// Checks a document as [`Validator::check_source`] does, and its nesting depth in the same
    /// pass: deeper than `max_depth` levels (the root is level 1) is [`Failure::TooDeep`],
    /// whatever else is wrong. The depth is watched only where libxml2 validates against an XSD;
    /// a document checked for well-formedness only must have had its depth checked before.
    pub fn check_within(
        &mut self,
        source: Source<'_>,
        check: &Check,
        max_depth: usize,
    ) -> Result<(), Failure> {
        match check {
            Check::Xsd(xsd) => self.validate(source, xsd, Some(max_depth)),
            Check::WellFormedOnly(_) => well_formed_source(source),
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

    fn validate(
        &mut self,
        source: Source<'_>,
        xsd: &Path,
        max_depth: Option<usize>,
    ) -> Result<(), Failure> {
        let compiled = self
            .schema(xsd)
            .map_err(|e| Failure::Schema(xsd.to_path_buf(), e))?;
        install_sink();
        let _ = take_errors();
        // The element events of libxml2's pass also go to a handler that keeps the depth: no
        // second pass over the document is needed for it. The handler only counts (the
        // validator's own handlers run after it, unchanged); libxml2 stops on its own at 256
        // levels, so a deep document costs no more than its size.
        let mut depth = Depth::default();
        // SAFETY: an all-null handler is valid; the two callbacks are set below.
        let mut sax: bindings::xmlSAXHandler = unsafe { std::mem::zeroed() };
        sax.initialized = bindings::XML_SAX2_MAGIC;
        sax.startElementNs = Some(element_in);
        sax.endElementNs = Some(element_out);
        let (sax_ptr, depth_ptr): (bindings::xmlSAXHandlerPtr, *mut c_void) = match max_depth {
            Some(_) => (&raw mut sax, (&raw mut depth).cast()),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let input = match source {
            Source::File(file) => {
                let c = cstring(file);
                clear_errno();
                // SAFETY: the path lives for the call.
                unsafe {
                    bindings::xmlParserInputBufferCreateFilename(
                        c.as_ptr(),
                        bindings::xmlCharEncoding_XML_CHAR_ENCODING_NONE,
                    )
                }
            }
            Source::Bytes(bytes) => {
                let Ok(len) = i32::try_from(bytes.len()) else {
                    return Err(Failure::Malformed(vec![message(
                        "too large to hold in memory",
                    )]));
                };
                // SAFETY: libxml2 copies the bytes into the buffer it returns.
                unsafe {
                    bindings::xmlParserInputBufferCreateMem(
                        bytes.as_ptr().cast(),
                        len,
                        bindings::xmlCharEncoding_XML_CHAR_ENCODING_NONE,
                    )
                }
            }
        };
        if input.is_null() {
            return Err(unopened(source));
        }
        // SAFETY: the validation call takes the buffer over and frees it; `sax` and `depth`
        // outlive the call, which is the only user of both; errors go to the sink.
        let rc = unsafe {
            bindings::xmlSchemaValidateStream(
                compiled.ctxt.as_ptr(),
                input,
                bindings::xmlCharEncoding_XML_CHAR_ENCODING_NONE,
                sax_ptr,
                depth_ptr,
            )
        };
        let errors = take_errors();
        if let Some(max) = max_depth
            && depth.deepest > max
        {
            return Err(Failure::TooDeep(max));
        }
        if rc == 0 && errors.is_empty() {
            return Ok(());
        }
        // Tell a document that is not well-formed from one that breaks the schema.
        well_formed_source(source)?;
        if errors.is_empty() {
            return Err(Failure::Invalid(vec![message(&format!(
                "schema validation failed (libxml2 status {rc})"
            ))]));
        }
        Err(Failure::Invalid(errors))
    }
}

/// The nesting depth seen so far in libxml2's pass.
#[derive(Default)]
struct Depth {
    now: usize,
    deepest: usize,
}

unsafe extern "C" fn element_in(
    ctx: *mut c_void,
    _local: *const bindings::xmlChar,
    _prefix: *const bindings::xmlChar,
    _uri: *const bindings::xmlChar,
    _namespaces: std::ffi::c_int,
    _ns: *mut *const bindings::xmlChar,
    _attributes: std::ffi::c_int,
    _defaulted: std::ffi::c_int,
    _attrs: *mut *const bindings::xmlChar,
) {
    // SAFETY: `ctx` is the `Depth` handed to libxml2 with this handler, alive for the parse.
    let depth = unsafe { &mut *ctx.cast::<Depth>() };
    depth.now += 1;
    depth.deepest = depth.deepest.max(depth.now);
}

unsafe extern "C" fn element_out(
    ctx: *mut c_void,
    _local: *const bindings::xmlChar,
    _prefix: *const bindings::xmlChar,
    _uri: *const bindings::xmlChar,
) {
    // SAFETY: as in `element_in`.
    let depth = unsafe { &mut *ctx.cast::<Depth>() };
    depth.now = depth.now.saturating_sub(1);
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
pub fn well_formed(file: &Path) -> Result<(), Failure> {
    well_formed_source(Source::File(file))
}

/// Whether a document is well-formed XML.
pub fn well_formed_source(source: Source<'_>) -> Result<(), Failure> {
    init();
    install_sink();
    let _ = take_errors();
    let options = (bindings::xmlParserOption_XML_PARSE_NONET
        | bindings::xmlParserOption_XML_PARSE_NOWARNING) as i32;
    let reader = match source {
        Source::File(file) => {
            let c = cstring(file);
            clear_errno();
            // SAFETY: the path lives for the call; the reader is freed below.
            unsafe { bindings::xmlReaderForFile(c.as_ptr(), std::ptr::null(), options) }
        }
        Source::Bytes(bytes) => {
            let Ok(len) = i32::try_from(bytes.len()) else {
                return Err(Failure::Malformed(vec![message(
                    "too large to hold in memory",
                )]));
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
        return Err(unopened(source));
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
        (_, false) => Err(Failure::Malformed(errors)),
        (_, true) => Err(Failure::Malformed(vec![message(
            "the document is not well-formed",
        )])),
    }
}

/// Clears `errno` before a libxml2 call that opens a file, so that an error seen after it is
/// that call's.
fn clear_errno() {
    // SAFETY: this thread's errno, always valid to write.
    unsafe { *libc::__errno_location() = 0 };
}

/// Why libxml2 gave no input for `source`: the OS error its open left (read right after the
/// call, before anything else can change it), and for a buffer in memory, or a failure that left
/// no OS error, the allocation libxml2 could not make.
fn unopened(source: Source<'_>) -> Failure {
    let errno = match source {
        Source::File(_) => std::io::Error::last_os_error()
            .raw_os_error()
            .filter(|&e| e != 0),
        Source::Bytes(_) => None,
    };
    Failure::Unopened(errno.unwrap_or(libc::ENOMEM))
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
    fn a_document_libxml2_cannot_open_is_an_os_error_not_a_verdict() {
        let mut v = Validator::new();
        let xsd = Check::Xsd(here("schemas/pi-xml/pi_run.xsd"));
        let gone = here("tests/corpus/no-such-file.xml");
        let enoent = Err(Failure::Unopened(libc::ENOENT));
        assert_eq!(v.check(&gone, &xsd), enoent);
        assert_eq!(well_formed(&gone), enoent);
        // With no descriptor left (in a process of its own: descriptors are the process's), the
        // error is the one that passes with time, for the examiner to retry.
        const CHILD: &str = "POM_TEST_NO_DESCRIPTORS";
        let name =
            "examine::validate::tests::a_document_libxml2_cannot_open_is_an_os_error_not_a_verdict";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let file = here("tests/corpus/pi-xml/instances/wflow_run_info.xml");
        assert_eq!(v.check(&file, &xsd), Ok(()), "the schema compiled first");
        // SAFETY: this process's own limit, lowered for the rest of its short life.
        unsafe {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            while libc::dup(2) >= 0 {}
        }
        let emfile = Err(Failure::Unopened(libc::EMFILE));
        assert_eq!(v.check(&file, &xsd), emfile);
        assert_eq!(well_formed(&file), emfile);
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
    fn the_depth_is_watched_in_the_validating_pass() {
        let mut v = Validator::new();
        let check = Check::Xsd(here("schemas/pi-xml/pi_timeseries.xsd"));
        let deep = format!(
            r#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2">{}{}</TimeSeries>"#,
            "<a>".repeat(150),
            "</a>".repeat(150)
        );
        let deep = Source::Bytes(deep.as_bytes());
        assert_eq!(
            v.check_within(deep, &check, 100),
            Err(Failure::TooDeep(100))
        );
        // Within the limit, the same document is refused for what it is.
        assert!(matches!(
            v.check_within(deep, &check, 200),
            Err(Failure::Invalid(_))
        ));
        // A valid document passes, from memory and from disk, and the limit is the deepest level
        // allowed (this file goes 4 deep).
        let file = here("tests/corpus/pi-xml/instances/rtctools_timeseries_import.xml");
        let bytes = std::fs::read(&file).unwrap();
        for source in [Source::Bytes(&bytes), Source::File(&file)] {
            assert_eq!(v.check_within(source, &check, 100), Ok(()));
            assert_eq!(v.check_within(source, &check, 4), Ok(()));
            assert_eq!(v.check_within(source, &check, 3), Err(Failure::TooDeep(3)));
        }
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
