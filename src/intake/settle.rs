//! Settle: is a dropped file complete yet? Pure decisions, the clock passed in.
//!
//! In: a channel's completion policy, what a look at a directory entry saw (its kind and stat),
//! the previous look, and the time. Out: a [`Decision`]. Nothing here touches the disk; the intake
//! loop does the looking. A close-after-write event is never taken as proof of completion: only the
//! policy is.

use std::time::{Duration, Instant};

use crate::config::rules::{Channel, Completion};

/// What kind of directory entry was seen (never following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A folder: walked, never claimed.
    Dir,
    /// A symbolic link: never followed.
    Symlink,
    /// A named pipe, socket or device node.
    Special(&'static str),
}

/// The identity and shape of a file at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub ino: u64,
}

/// One look at a file, and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// What was seen.
    pub stat: Stat,
    /// When.
    pub at: Instant,
}

/// What to do with a directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a file to pick up (a temporary name, a marker, a folder).
    Ignore,
    /// Not complete yet. `look_again` is when a quiet period could end; `None` waits for an event
    /// or the next scan (a marker that has not come).
    NotYet {
        /// When to look again.
        look_again: Option<Instant>,
        /// The look to remember for next time.
        remember: Option<Look>,
    },
    /// Complete: claim it (with its marker, on a marker channel).
    Ready {
        /// The marker's file name, on a marker channel.
        marker: Option<Vec<u8>>,
    },
    /// Not something POM reads: claim it and set it aside with this reason.
    SetAside(String),
}

/// Decides for one entry of a channel folder.
///
/// `name` is the entry's last path component; `sibling_exists` answers whether a name exists in
/// the same folder (for markers); `previous` is the last look remembered for this entry.
pub fn decide(
    channel: &Channel,
    name: &[u8],
    kind: Kind,
    look: Option<Look>,
    previous: Option<Look>,
    sibling_exists: impl Fn(&[u8]) -> bool,
) -> Decision {
    if kind == Kind::Dir || channel.ignores(name) {
        return Decision::Ignore;
    }
    match kind {
        Kind::Symlink => {
            return Decision::SetAside(
                "a symbolic link: POM never follows links; drop the file itself".into(),
            );
        }
        Kind::Special(what) => {
            return Decision::SetAside(format!("not a regular file but a {what}"));
        }
        Kind::File | Kind::Dir => {}
    }
    match &channel.completion {
        Completion::Rename => Decision::Ready { marker: None },
        Completion::Marker(suffixes) => {
            if channel.marked_by(name).is_some() {
                return Decision::Ignore;
            }
            for s in suffixes {
                let mut marker = name.to_vec();
                marker.push(b'.');
                marker.extend_from_slice(s.as_bytes());
                if sibling_exists(&marker) {
                    return Decision::Ready {
                        marker: Some(marker),
                    };
                }
            }
            Decision::NotYet {
                look_again: None,
                remember: None,
            }
        }
        Completion::Quiet(period) => quiet(*period, look, previous),
    }
}

/// The quiet-period rule: unchanged size, mtime and inode across two looks `period` apart.
pub fn quiet(period: Duration, look: Option<Look>, previous: Option<Look>) -> Decision {
    let Some(look) = look else {
        return Decision::NotYet {
            look_again: None,
            remember: None,
        };
    };
    match previous {
        Some(prev) if prev.stat == look.stat => {
            if look.at.saturating_duration_since(prev.at) >= period {
                Decision::Ready { marker: None }
            } else {
                Decision::NotYet {
                    look_again: Some(prev.at + period),
                    remember: Some(prev),
                }
            }
        }
        _ => Decision::NotYet {
            look_again: Some(look.at + period),
            remember: Some(look),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::RuleSet;
    use std::path::Path;

    fn channel(completion: &str) -> Channel {
        let text = format!("[channels.c]\ncompletion = \"{completion}\"\n");
        RuleSet::compile_channels(Path::new("t"), &text)
            .unwrap()
            .channels["c"]
            .clone()
    }

    fn stat(size: u64) -> Stat {
        Stat {
            size,
            mtime_ns: 1,
            ino: 7,
        }
    }

    #[test]
    fn a_rename_channel_takes_final_names_and_ignores_temporary_ones() {
        let c = channel("rename");
        let ready = decide(&c, b"obs.xml", Kind::File, None, None, |_| false);
        assert_eq!(ready, Decision::Ready { marker: None });
        let part = decide(&c, b"obs.xml.part", Kind::File, None, None, |_| false);
        assert_eq!(part, Decision::Ignore);
    }

    #[test]
    fn links_and_pipes_are_set_aside_with_a_reason() {
        let c = channel("quiet");
        assert!(matches!(
            decide(&c, b"l.xml", Kind::Symlink, None, None, |_| false),
            Decision::SetAside(r) if r.contains("symbolic link")
        ));
        assert!(matches!(
            decide(&c, b"p.xml", Kind::Special("named pipe (FIFO)"), None, None, |_| false),
            Decision::SetAside(r) if r.contains("FIFO")
        ));
    }

    #[test]
    fn a_marker_releases_its_file_and_is_not_itself_a_file() {
        let c = channel("marker");
        let waiting = decide(&c, b"a.xml", Kind::File, None, None, |_| false);
        assert!(matches!(waiting, Decision::NotYet { .. }));
        let released = decide(&c, b"a.xml", Kind::File, None, None, |n| n == b"a.xml.done");
        assert_eq!(
            released,
            Decision::Ready {
                marker: Some(b"a.xml.done".to_vec())
            }
        );
        assert_eq!(
            decide(&c, b"a.xml.ok", Kind::File, None, None, |_| true),
            Decision::Ignore
        );
    }

    #[test]
    fn quiet_needs_two_identical_looks_a_period_apart() {
        let period = Duration::from_millis(2000);
        let t0 = Instant::now();
        let first = Look {
            stat: stat(10),
            at: t0,
        };
        let d = quiet(period, Some(first), None);
        assert_eq!(
            d,
            Decision::NotYet {
                look_again: Some(t0 + period),
                remember: Some(first)
            }
        );
        let early = Look {
            stat: stat(10),
            at: t0 + Duration::from_millis(1999),
        };
        assert!(matches!(
            quiet(period, Some(early), Some(first)),
            Decision::NotYet { .. }
        ));
        let grown = Look {
            stat: stat(11),
            at: t0 + period,
        };
        assert_eq!(
            quiet(period, Some(grown), Some(first)),
            Decision::NotYet {
                look_again: Some(grown.at + period),
                remember: Some(grown)
            }
        );
        let later = Look {
            stat: stat(10),
            at: t0 + period,
        };
        assert_eq!(
            quiet(period, Some(later), Some(first)),
            Decision::Ready { marker: None }
        );
    }

    #[test]
    fn a_replaced_file_restarts_the_quiet_period() {
        let period = Duration::from_millis(100);
        let t0 = Instant::now();
        let first = Look {
            stat: stat(10),
            at: t0,
        };
        let replaced = Look {
            stat: Stat { ino: 8, ..stat(10) },
            at: t0 + period,
        };
        assert!(matches!(
            quiet(period, Some(replaced), Some(first)),
            Decision::NotYet { .. }
        ));
    }
}
