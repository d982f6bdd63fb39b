//! Safe file operations on names read from files (manifests, session files, the theme, the
//! ledger): every such name is hostile until shown to be one plain path component, or a relative
//! path of plain components confined under its root; and links are never followed.
//!
//! In: a root the daemon owns and a name someone else wrote. Out: a path under that root, or an
//! open regular file, or a refusal saying why. Never: a `..`, an absolute path or a symbolic link
//! leading anywhere else.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Whether `name` is one safe path component: not empty, not `.` or `..`, no `/`, no NUL and no
/// control character, not starting with `-`, at most 255 bytes.
pub fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.starts_with('-')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// `p` with `suffix` added to its last component (`a.xml` + `.reason` → `a.xml.reason`).
pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `rel` joined under `root`, if `rel` is relative and made of plain components only (no `..`,
/// no root, no `.`, no empty name).
pub fn confined(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut any = false;
    for c in rel.components() {
        match c {
            Component::Normal(n) if safe_component(&n.to_string_lossy()) => any = true,
            _ => return None,
        }
    }
    any.then(|| root.join(rel))
}

/// Opens `root/rel` for reading without following a link anywhere below `root`: `rel` must be
/// [`confined`], every folder on the way a real folder, and the file itself a regular file (the
/// last step is opened with `O_NOFOLLOW`, then checked on the open descriptor).
pub fn open_confined(root: &Path, rel: &Path) -> io::Result<File> {
    let path = confined(root, rel).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a plain relative path", rel.display()),
        )
    })?;
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len() - 1] {
        at.push(c.as_os_str());
        let m = std::fs::symlink_metadata(&at)?;
        if !m.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a folder (a link is never followed)",
                    at.display()
                ),
            ));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a link, never followed", path.display()),
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Reads `root/rel` whole, as [`open_confined`] opens it, refusing more than `max` bytes.
pub fn read_confined(root: &Path, rel: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_confined(root, rel)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", rel.display()),
        ));
    }
    Ok(bytes)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Renames `from` to `to` atomically, failing with `AlreadyExists` rather than replacing `to`.
/// Links are moved, never followed.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cpath(from)?, cpath(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // A file system without RENAME_NOREPLACE: link + unlink gives the same no-overwrite
        // guarantee for regular files.
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(err)
}

/// Flushes the file system holding `dir` (one sync for a whole batch of renames).
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_component_only() {
        for bad in ["", ".", "..", "a/b", "../x", "-rf", "a\nb", "a\0b"] {
            assert!(!safe_component(bad), "{bad:?}");
        }
        for good in ["obs", "obs-pi", "a.b", "Catchment_A.xml", "x..y"] {
            assert!(safe_component(good), "{good:?}");
        }
    }

    #[test]
    fn confined_refuses_what_leaves_the_root() {
        let root = Path::new("/spool");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//.."] {
            assert_eq!(confined(root, Path::new(bad)), None, "{bad:?}");
        }
        assert_eq!(
            confined(root, Path::new("rejected/2026-01-01/x.xml")),
            Some(PathBuf::from("/spool/rejected/2026-01-01/x.xml"))
        );
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("secret"), "token").unwrap();
        std::fs::create_dir(root.join("rejected")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("rejected/x.xml")).unwrap();
        std::os::unix::fs::symlink(root.join("rejected"), root.join("via")).unwrap();
        std::fs::write(root.join("rejected/ok.xml"), "<a/>").unwrap();
        assert!(read_confined(root, Path::new("rejected/x.xml"), 100).is_err());
        assert!(read_confined(root, Path::new("via/ok.xml"), 100).is_err());
        assert_eq!(
            read_confined(root, Path::new("rejected/ok.xml"), 100).unwrap(),
            b"<a/>"
        );
        assert!(read_confined(root, Path::new("rejected/ok.xml"), 2).is_err());
    }

    #[test]
    fn a_rename_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "2").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
    }
}
