//! Examine: one claimed file in, one verdict out (identify, then validate).
//!
//! In: the path of a claimed file in `queue/`. Out: its size and SHA-256, and either the format
//! and version it was accepted as, or a [`Rejection`] a person can read. Never follows a link,
//! never opens a pipe for a blocking read, never reads more than the size limit allows into
//! memory: memory per file is a fixed buffer whatever the file's size.

pub mod identify;
pub mod validate;

use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::catalog::{Catalog, Check};
use crate::examine::identify::{Guard, Identity, Root, identify, identify_bytes, identify_head};
use crate::examine::validate::{Failure, Source, Validator, XmlError, well_formed_source};

/// Files up to this size are read once into memory; larger ones are streamed.
const INLINE_MAX: u64 = 1024 * 1024;

/// Size and depth limits ("how much": flags and environment, not rules).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_size: u64,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
}

/// Default size limit: 64 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;
/// Default depth limit: 100 levels (PI-XML and SANDRE use fewer than 10).
pub const DEFAULT_MAX_DEPTH: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a file was refused, by kind (stable names, stored in the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectKind {
    /// A symlink, pipe, socket or device.
    NotARegularFile,
    /// Over the size limit.
    TooLarge,
    /// Could not be read.
    Unreadable,
    /// Carries a DOCTYPE (entity expansion, external entities).
    Doctype,
    /// Nested beyond the depth limit.
    TooDeep,
    /// Not well-formed XML (truncated, broken).
    Malformed,
    /// No catalog format has this root element and namespace.
    Unrecognised,
    /// The version could not be found where the format writes it.
    NoVersion,
    /// The version is not one the catalog accepts.
    VersionNotAccepted,
    /// Not valid against the XSD.
    Invalid,
    /// The XSD for this version does not compile.
    SchemaBroken,
    /// The file name is unsafe to hand on (control characters, not UTF-8, leading `-`, `..`,
    /// too long).
    UnsafeName,
    /// Not a verdict: the file could not be read for a reason that passes (no descriptors left,
    /// no memory, an I/O error). It is examined again later, never recorded as refused.
    Transient,
}

impl RejectKind {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            RejectKind::NotARegularFile => "not-a-regular-file",
            RejectKind::TooLarge => "too-large",
            RejectKind::Unreadable => "unreadable",
            RejectKind::Doctype => "doctype",
            RejectKind::TooDeep => "too-deep",
            RejectKind::Malformed => "malformed",
            RejectKind::Unrecognised => "unrecognised",
            RejectKind::NoVersion => "no-version",
            RejectKind::VersionNotAccepted => "version-not-accepted",
            RejectKind::Invalid => "invalid",
            RejectKind::SchemaBroken => "schema-broken",
            RejectKind::UnsafeName => "unsafe-name",
            RejectKind::Transient => "transient",
        }
    }
}

/// A refusal: the kind, one sentence, and libxml2's messages when there are some.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Kind.
    pub kind: RejectKind,
    /// One sentence for a person.
    pub reason: String,
    /// Detailed messages with line numbers.
    pub errors: Vec<XmlError>,
}

impl Rejection {
    fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
            errors: Vec::new(),
        }
    }
}

/// The verdict on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recognised and valid.
    Accepted {
        /// Catalog format name.
        format: String,
        /// Version as written in the file.
        version: String,
        /// How it was checked: the XSD file name, or "well-formed".
        checked: String,
    },
    /// Refused.
    Rejected(Rejection),
}

/// What examining a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex (absent for what is not a regular file).
    pub sha256: Option<String>,
    /// Root element, when one was read.
    pub root: Option<Root>,
    /// Format and version, when recognised (refused files too).
    pub identified: Option<(String, String)>,
    /// The verdict.
    pub verdict: Verdict,
}

struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Longest accepted file name (one path component), in bytes: stored names add a 23-byte id, and
/// models add suffixes, within the 255 bytes a Linux name can hold.
pub const MAX_NAME: usize = 200;

/// Whether a dropped name (relative to its channel folder) is safe to keep and hand on to models:
/// UTF-8, no control character (newline, tab…), no component starting with `-`, no `..`, no
/// component longer than [`MAX_NAME`] bytes. `None` when it is safe.
pub fn unsafe_name(original: &[u8]) -> Option<String> {
    let Ok(name) = std::str::from_utf8(original) else {
        return Some(format!(
            "the file name is not valid UTF-8 (hex {})",
            hex::encode(original)
        ));
    };
    if name.chars().any(char::is_control) {
        return Some(format!(
            "the file name {name:?} holds a control character (newline, tab…)"
        ));
    }
    for part in name.split('/') {
        if part.starts_with('-') {
            return Some(format!(
                "the file name {name:?} starts with `-`, which tools would take for an option"
            ));
        }
        if part.contains("..") {
            return Some(format!(
                "the file name {name:?} holds `..`, which could be taken for a parent folder"
            ));
        }
        if part.len() > MAX_NAME {
            return Some(format!(
                "the file name is {} bytes long; at most {MAX_NAME} are accepted",
                part.len()
            ));
        }
    }
    None
}

/// Examines one dropped file: `path` is where it is now, `original` the name it was dropped under.
pub fn examine_dropped(
    path: &Path,
    original: &[u8],
    catalog: &Catalog,
    validator: &mut Validator,
    limits: Limits,
) -> Examined {
    let mut examined = examine(path, catalog, validator, limits);
    if let (Some(why), Verdict::Accepted { .. }) = (unsafe_name(original), &examined.verdict) {
        examined.verdict = Verdict::Rejected(Rejection::new(RejectKind::UnsafeName, why));
    }
    examined
}

/// Whether an I/O error passes with time (descriptors, memory, space, a failing disk): such a
/// file is examined again later instead of being refused.
pub fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::EIO
                | libc::EAGAIN
                | libc::EINTR
                | libc::ENOBUFS
        )
    )
}

fn unreadable(e: &std::io::Error) -> RejectKind {
    if is_transient(e) {
        RejectKind::Transient
    } else {
        RejectKind::Unreadable
    }
}

/// The refusal, or the wait, when libxml2 could not open a file examining had opened already
/// (reopened from its path, or a buffer it could not allocate): `transient` when the cause
/// passes with time, as for the first open.
fn unopened(e: &std::io::Error) -> Rejection {
    Rejection::new(
        unreadable(e),
        format!("cannot be opened for validation: {e}"),
    )
}

/// Examines one file's content.
pub fn examine(
    path: &Path,
    catalog: &Catalog,
    validator: &mut Validator,
    limits: Limits,
) -> Examined {
    let rejected = |size, sha256, root, r: Rejection| Examined {
        size,
        sha256,
        root,
        identified: None,
        verdict: Verdict::Rejected(r),
    };
    // Opened without following a link and without blocking on a pipe; what it is comes from the
    // open descriptor itself.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let target = std::fs::read_link(path)
                .map(|t| format!(" (pointing to {})", t.display()))
                .unwrap_or_default();
            let what =
                format!("a symbolic link{target}: POM never follows links; drop the file itself");
            return rejected(
                0,
                None,
                None,
                Rejection::new(RejectKind::NotARegularFile, what),
            );
        }
        Err(e) => {
            let r = Rejection::new(unreadable(&e), format!("cannot be opened: {e}"));
            return rejected(0, None, None, r);
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            let r = Rejection::new(unreadable(&e), format!("cannot be read: {e}"));
            return rejected(0, None, None, r);
        }
    };
    if !meta.file_type().is_file() {
        let what = format!(
            "not a regular file but a {}",
            special_kind(&meta.file_type())
        );
        return rejected(
            0,
            None,
            None,
            Rejection::new(RejectKind::NotARegularFile, what),
        );
    }
    let size = meta.size();
    if size > limits.max_size {
        let reader = BufReader::with_capacity(
            64 * 1024,
            Hashing {
                inner: file,
                hash: Sha256::new(),
            },
        );
        let sha = drain(reader);
        return rejected(
            size,
            sha,
            None,
            Rejection::new(
                RejectKind::TooLarge,
                format!(
                    "{size} bytes is over the size limit of {} bytes (--max-size)",
                    limits.max_size
                ),
            ),
        );
    }
    // Small files (nearly all) are read once into memory, hashed, identified and validated from
    // there; larger ones are streamed twice (identify, then libxml2), in fixed memory.
    let mut held = Vec::new();
    let (identity, sha) = if size <= INLINE_MAX {
        let mut file = file;
        if let Err(e) = read_whole(&mut file, usize::try_from(size).unwrap_or(0), &mut held) {
            return rejected(
                size,
                None,
                None,
                Rejection::new(unreadable(&e), format!("cannot be read: {e}")),
            );
        }
        let sha = Some(hex::encode(Sha256::digest(&held)));
        // Only the head is read here when libxml2 validates the rest against an XSD, depth
        // included: one pass over the document instead of two.
        let head = identify_head(&held, catalog, limits.max_depth);
        let identity = if head.head_only && !checked_by_xsd(&head, catalog) {
            identify_bytes(&held, catalog, limits.max_depth)
        } else {
            head
        };
        (identity, sha)
    } else {
        let mut reader = BufReader::with_capacity(
            64 * 1024,
            Hashing {
                inner: file,
                hash: Sha256::new(),
            },
        );
        let identity = identify(&mut reader, catalog, limits.max_depth);
        (identity, drain(reader))
    };
    let source = if size <= INLINE_MAX {
        Source::Bytes(&held)
    } else {
        Source::File(path)
    };
    let root = identity.root.clone();
    let reject = |r: Rejection| rejected(size, sha.clone(), root.clone(), r);
    if let Some(guard) = &identity.guard {
        return reject(guarded(guard, source));
    }
    let Some(r) = &identity.root else {
        return reject(Rejection::new(RejectKind::Malformed, "no root element"));
    };
    let Some(format) = catalog.recognise(&r.local, &r.namespace) else {
        let ns = if r.namespace.is_empty() {
            "no namespace".to_string()
        } else {
            format!("namespace `{}`", r.namespace)
        };
        return reject(Rejection::new(
            RejectKind::Unrecognised,
            format!(
                "no format in schemas/catalog.toml has root element `{}` in {ns}",
                r.local
            ),
        ));
    };
    let Some(version) = identity.version.clone() else {
        let place = match &format.version_at {
            crate::config::catalog::VersionAt::Attribute(a) => {
                format!("attribute `{a}` of the root")
            }
            crate::config::catalog::VersionAt::Element(p) => format!("element `{}`", p.join("/")),
        };
        return reject(Rejection::new(
            RejectKind::NoVersion,
            format!(
                "{} file without a version ({place} is missing)",
                format.name
            ),
        ));
    };
    let identified = Some((format.name.clone(), version.clone()));
    let reject = |r: Rejection| Examined {
        identified: identified.clone(),
        ..reject(r)
    };
    let Some(check) = format.check_for(&version) else {
        return reject(Rejection::new(
            RejectKind::VersionNotAccepted,
            format!(
                "{} version `{version}` is not accepted (accepted: {})",
                format.name,
                format.accepted()
            ),
        ));
    };
    let checked = if identity.head_only {
        validator.check_within(source, check, limits.max_depth)
    } else {
        validator.check_source(source, check)
    };
    match checked {
        Ok(()) => Examined {
            size,
            sha256: sha,
            root,
            identified,
            verdict: Verdict::Accepted {
                format: format.name.clone(),
                version,
                checked: describe(check),
            },
        },
        Err(Failure::Malformed(errors)) => reject(Rejection {
            kind: RejectKind::Malformed,
            reason: "the document is not well-formed XML (truncated or broken)".into(),
            errors,
        }),
        Err(Failure::Invalid(errors)) => reject(Rejection {
            kind: RejectKind::Invalid,
            reason: format!(
                "{} {version} is not valid against {}",
                format.name,
                describe(check)
            ),
            errors,
        }),
        Err(Failure::TooDeep(n)) => reject(too_deep(n)),
        Err(Failure::Unopened(errno)) => {
            reject(unopened(&std::io::Error::from_raw_os_error(errno)))
        }
        // The schema is the operator's problem; what the whole identifying pass refuses before
        // any schema is looked at is still refused for that, as when the pass read everything.
        Err(Failure::Schema(..))
            if let Some(guard) = identity
                .head_only
                .then(|| identify_bytes(&held, catalog, limits.max_depth).guard)
                .flatten() =>
        {
            rejected(size, sha.clone(), root.clone(), guarded(&guard, source))
        }
        Err(Failure::Schema(xsd, errors)) => reject(Rejection {
            kind: RejectKind::SchemaBroken,
            reason: format!(
                "the schema {} for {} {version} does not compile; fix it (pom check) and re-inject",
                xsd.display(),
                format.name
            ),
            errors,
        }),
    }
}

/// The refusal for what stopped the identifying pass.
fn guarded(guard: &Guard, source: Source<'_>) -> Rejection {
    match guard {
        Guard::Doctype => Rejection::new(
            RejectKind::Doctype,
            "the document has a DOCTYPE declaration: DTDs are refused (entity expansion and \
             external entities are never processed)",
        ),
        Guard::TooDeep(n) => too_deep(*n),
        Guard::Syntax(msg) => Rejection {
            kind: RejectKind::Malformed,
            reason: "the document is not well-formed XML (truncated or broken)".into(),
            errors: match well_formed_source(source) {
                Err(Failure::Malformed(errors)) => errors,
                _ => vec![XmlError {
                    line: None,
                    column: None,
                    message: msg.clone(),
                }],
            },
        },
    }
}

fn too_deep(levels: usize) -> Rejection {
    Rejection::new(
        RejectKind::TooDeep,
        format!("elements are nested deeper than {levels} levels (--max-depth)"),
    )
}

/// Whether the format and version an identifying pass found are validated against an XSD: only
/// then may the pass stop at the head (libxml2 reads the rest, depth included).
fn checked_by_xsd(identity: &Identity, catalog: &Catalog) -> bool {
    let (Some(root), Some(version)) = (&identity.root, &identity.version) else {
        return false;
    };
    catalog
        .recognise(&root.local, &root.namespace)
        .and_then(|f| f.check_for(version))
        .is_some_and(|c| matches!(c, Check::Xsd(_)))
}

/// How a check is described: the XSD's file name, or "well-formedness only (why)".
pub fn describe(check: &Check) -> String {
    match check {
        Check::Xsd(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Check::WellFormedOnly(why) => format!("well-formedness only ({why})"),
    }
}

/// Reads a file of `size` bytes (as its metadata said) into `held`, with no look at its size or
/// position again: one read, and the one that finds its end. A file that grew is still read whole.
fn read_whole(file: &mut std::fs::File, size: usize, held: &mut Vec<u8>) -> io::Result<()> {
    // Room for one byte more than the size said, to see a file that grew.
    held.resize(size + 1, 0);
    let mut filled = 0;
    while filled < held.len() {
        match file.read(&mut held[filled..]) {
            Ok(0) => {
                held.truncate(filled);
                return Ok(());
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.read_to_end(held).map(|_| ())
}

fn drain<R: Read>(mut reader: BufReader<Hashing<R>>) -> Option<String> {
    io::copy(&mut reader, &mut io::sink()).ok()?;
    Some(hex::encode(reader.into_inner().hash.finalize()))
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "named pipe (FIFO)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device node"
    } else if ft.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the identifying pass refuses, it refuses whether it read the whole file or stopped at
    /// the version and left the rest to libxml2: deep, broken after its head, and so when the
    /// XSD itself does not compile.
    #[test]
    fn a_file_read_up_to_its_version_gets_the_verdict_of_the_whole_pass() {
        let d = tempfile::tempdir().unwrap();
        let schemas = d.path().join("schemas");
        std::fs::create_dir(&schemas).unwrap();
        std::fs::write(
            schemas.join("catalog.toml"),
            "[[format]]\nname = \"t\"\nroot = \"T\"\nnamespaces = [\"\"]\n\
             version = { attribute = \"version\" }\n\
             [[format.versions]]\naccept = [\"1\"]\nxsd = \"t.xsd\"\n\
             [[format.versions]]\naccept = [\"2\"]\nxsd = \"broken.xsd\"\n",
        )
        .unwrap();
        std::fs::write(
            schemas.join("t.xsd"),
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
                 <xs:element name="T"><xs:complexType><xs:sequence>
                   <xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/>
                 </xs:sequence><xs:attribute name="version"/></xs:complexType></xs:element>
               </xs:schema>"#,
        )
        .unwrap();
        std::fs::write(schemas.join("broken.xsd"), "<xs:schema").unwrap();
        let catalog = Catalog::load(&schemas).unwrap();
        let mut validator = Validator::new();
        let limits = Limits {
            max_size: DEFAULT_MAX_SIZE,
            max_depth: 10,
        };
        let mut verdict = |version: &str, body: &str| {
            let file = d.path().join("f.xml");
            std::fs::write(&file, format!(r#"<T version="{version}">{body}</T>"#)).unwrap();
            match examine(&file, &catalog, &mut validator, limits).verdict {
                Verdict::Accepted { .. } => "accepted",
                Verdict::Rejected(r) => r.kind.name(),
            }
        };
        let deep = format!("{}{}", "<a>".repeat(20), "</a>".repeat(20));
        let broken = "<a></b>";
        assert_eq!(verdict("1", "<a/>"), "accepted");
        assert_eq!(verdict("1", &deep), "too-deep");
        assert_eq!(verdict("1", broken), "malformed");
        assert_eq!(verdict("2", "<a/>"), "schema-broken");
        assert_eq!(verdict("2", &deep), "too-deep");
        assert_eq!(verdict("2", broken), "malformed");
    }

    #[test]
    fn a_file_libxml2_cannot_open_waits_while_the_cause_passes_and_is_refused_otherwise() {
        let kind = |errno| unopened(&std::io::Error::from_raw_os_error(errno)).kind;
        assert_eq!(kind(libc::EMFILE), RejectKind::Transient);
        assert_eq!(kind(libc::ENOMEM), RejectKind::Transient);
        assert_eq!(kind(libc::ENOENT), RejectKind::Unreadable);
    }

    #[test]
    fn a_file_is_read_whole_whatever_size_its_metadata_said() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f.xml");
        std::fs::write(&path, b"0123456789").unwrap();
        // The size said, more (the file shrank), less (it grew), nothing.
        for said in [10, 64, 3, 0] {
            let mut held = Vec::new();
            let mut file = std::fs::File::open(&path).unwrap();
            read_whole(&mut file, said, &mut held).unwrap();
            assert_eq!(held, b"0123456789", "size said: {said}");
        }
    }

    #[test]
    fn hostile_names_are_refused_with_a_reason() {
        for bad in [
            &b"new\nline.xml"[..],
            b"-rf.xml",
            b"a/-x.xml",
            b"x..y.xml",
            b"\xff\xfe.xml",
            &[b'a'; 255],
        ] {
            assert!(
                unsafe_name(bad).is_some(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"obs_2026-11-28T12:00.xml"[..],
            b"a/b/c.xml",
            "débit.xml".as_bytes(),
        ] {
            assert_eq!(unsafe_name(good), None);
        }
    }
}
