//! `.repozo-sums`: fast checksums (xxh3-128) of the backup files we wrote,
//! kept beside the `.dat` md5 sums so that checking the source or a backup
//! costs a memory-speed hash instead of an md5.
//!
//! The file is ours alone: ZODB's repozo only looks at names ending in
//! `.fs`, `.fsz`, `.deltafs`, `.deltafsz`, `.dat` and `.index`, and never
//! reads it. One line per data file:
//!
//! ```text
//! <name> <start> <end> <md5> <xxh3 of the bytes> <stored size> <xxh3 as stored>
//! ```
//!
//! "The bytes" are the uncompressed bytes `[start, end)` of the source;
//! "as stored" are the file's bytes on disk (the gzip stream for `-z`),
//! recorded but never used to decide: every check hashes the bytes
//! (inflated for gzip), since a stream written wrong would pass on its
//! compressed bytes.
//! A line applies to a `.dat` line only when name, range and md5 are the
//! same, so a file replaced since (by another tool, or the same name
//! reused) is never judged by an old line.
//!
//! A second kind of line records which `.index` files were built by a
//! scan of the source (from its beginning, or on top of an `.index` that
//! was itself so built), with the xxh3-128 of the `.index` file's bytes:
//!
//! ```text
//! index <index name> <position> <xxh3 of the .index file>
//! ```
//!
//! Only such an `.index` is a shortcut for the next backup's scan (issue
//! 19, case 7): one built on top of the source's own `Data.fs.index` is as
//! good as that file was, and once the file is gone ZODB would rescan, so
//! we do too. Older versions of ours skip these lines (they have 4 fields).
//!
//! It is a cache: a match means the bytes are the ones whose md5 the `.dat`
//! records; anything else (no file, no line, a damaged line, a different
//! hash) sends the caller back to the md5 or byte comparison ZODB's repozo
//! makes, so a wrong line can cost time but never change a decision. It is
//! therefore written after the `.dat` line that commits a backup, without
//! `fsync`, and a failure to write it is a note, not an error.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::format::dat::DatLine;
use crate::io::durable::TempFile;
use crate::log::Log;
use crate::repository::Repository;

/// The file's name in a repository.
pub const SUMS_NAME: &str = ".repozo-sums";

const HEADER: &str =
    "# repozo-sums 1: xxh3-128 checksums of backup files, a cache kept by repozo (Rust); safe to delete";

/// What we know of one data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Base name of the data file.
    pub name: String,
    pub start: u64,
    pub end: u64,
    /// md5 hex, as in the `.dat`.
    pub md5: String,
    /// xxh3-128 of the uncompressed bytes.
    pub content: u128,
    /// Size of the file on disk.
    pub stored_len: u64,
    /// xxh3-128 of the file on disk.
    pub stored: u128,
}

impl Entry {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {:032x} {} {:032x}\n",
            self.name, self.start, self.end, self.md5, self.content, self.stored_len, self.stored
        )
    }

    /// Parse one line (bytes: the file is ours, but may be damaged). The
    /// name must be a base name in UTF-8 (ours are ASCII backup names).
    fn parse(line: &[u8]) -> Option<Entry> {
        let f: Vec<&str> = line
            .split(|&b| b == b' ')
            .map(|w| std::str::from_utf8(w).ok())
            .collect::<Option<_>>()?;
        if f.len() != 7 {
            return None;
        }
        let hex128 = |s: &str| {
            if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                u128::from_str_radix(s, 16).ok()
            } else {
                None
            }
        };
        let num = |s: &str| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u64>().ok()
            } else {
                None
            }
        };
        let e = Entry {
            name: f[0].to_string(),
            start: num(f[1])?,
            end: num(f[2])?,
            md5: f[3].to_string(),
            content: hex128(f[4])?,
            stored_len: num(f[5])?,
            stored: hex128(f[6])?,
        };
        let md5_ok = e.md5.len() == 32 && e.md5.bytes().all(|b| b.is_ascii_hexdigit());
        let name_ok = !e.name.is_empty()
            && !e.name.contains('/')
            && !e.name.chars().any(|c| c.is_whitespace() || c.is_control());
        (md5_ok && name_ok && e.start <= e.end).then_some(e)
    }

    /// Whether this entry describes the file `line` names, as `line` says.
    pub fn describes(&self, line: &DatLine) -> bool {
        self.name == line.name
            && self.start == line.start
            && self.end == line.end
            && self.md5.eq_ignore_ascii_case(&line.md5)
    }
}

/// An `.index` known to come from a scan of the source: its name, the
/// position it is valid up to and the xxh3-128 of the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexTrust {
    pub name: String,
    pub pos: u64,
    pub hash: u128,
}

impl IndexTrust {
    fn line(&self) -> String {
        format!("index {} {} {:032x}\n", self.name, self.pos, self.hash)
    }

    fn parse(line: &str) -> Option<IndexTrust> {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 4 || f[0] != "index" || f[1].is_empty() || f[1].contains('/') {
            return None;
        }
        if f[3].len() != 32 || f[2].is_empty() || !f[2].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(IndexTrust {
            name: f[1].to_string(),
            pos: f[2].parse().ok()?,
            hash: u128::from_str_radix(f[3], 16).ok()?,
        })
    }
}

/// The entries of a repository's `.repozo-sums`, by file name.
#[derive(Clone, Debug, Default)]
pub struct Sums {
    entries: HashMap<String, Entry>,
    indexes: HashMap<String, IndexTrust>,
}

impl Sums {
    /// Read a repository's sums. A missing, unreadable or damaged file
    /// gives what could be read (often nothing); damaged lines are skipped.
    pub fn load(repo: &Path) -> Sums {
        Sums::parse(&std::fs::read(repo.join(SUMS_NAME)).unwrap_or_default())
    }

    /// The sums in the bytes of a `.repozo-sums`; damaged lines skipped.
    pub fn parse(bytes: &[u8]) -> Sums {
        let mut entries = HashMap::new();
        let mut indexes = HashMap::new();
        for line in bytes.split(|&b| b == b'\n') {
            if let Some(e) = Entry::parse(line) {
                entries.insert(e.name.clone(), e);
            } else if let Some(t) = std::str::from_utf8(line).ok().and_then(IndexTrust::parse) {
                indexes.insert(t.name.clone(), t);
            }
        }
        Sums { entries, indexes }
    }

    /// Whether the `.index` named `name`, valid up to `pos`, whose bytes
    /// hash to `hash`, is one we built by a scan.
    pub fn index_trusted(&self, name: &str, pos: u64, hash: u128) -> bool {
        self.indexes
            .get(name)
            .is_some_and(|t| t.pos == pos && t.hash == hash)
    }

    /// The entry that applies to `line`, if any.
    pub fn for_line(&self, line: &DatLine) -> Option<&Entry> {
        self.entries.get(&line.name).filter(|e| e.describes(line))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Repository {
    /// The fast checksums recorded for this repository's files.
    pub fn sums(&self) -> Sums {
        if self.is_remote() {
            return Sums::parse(
                &self
                    .read_small(SUMS_NAME)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            );
        }
        Sums::load(self.dir())
    }

    /// Add `entry` to the repository's sums, dropping entries whose data file
    /// is gone. Never fails: the sums are a cache, and a backup that is already
    /// committed must not be reported as failed because of them.
    ///
    /// `trust` records the backup's `.index` as built by a scan (see the
    /// module's documentation); `None` leaves it untrusted.
    pub fn record(&self, entry: Entry, trust: Option<IndexTrust>, log: &Log) {
        let repo = self.dir();
        if let Err(e) = self.try_record(entry, trust) {
            log.warn(format_args!(
                "could not update {} (only a cache; later checks fall back to md5): {e}",
                repo.join(SUMS_NAME).display()
            ));
        }
    }

    fn try_record(&self, entry: Entry, trust: Option<IndexTrust>) -> Result<()> {
        let repo = self.dir();
        let mut sums = self.sums();
        // keep entries whose file exists (or cannot be checked)
        let exists = |name: &str| {
            if self.is_remote() {
                return self.size_of(name).is_some();
            }
            !matches!(std::fs::symlink_metadata(repo.join(name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound)
        };
        sums.entries.retain(|name, _| exists(name));
        sums.indexes.retain(|name, _| exists(name));
        if let Some(name) = entry
            .name
            .rsplit_once('.')
            .map(|(stem, _)| format!("{stem}.index"))
        {
            // a new backup's .index replaces any earlier one of that name
            sums.indexes.remove(&name);
        }
        sums.entries.insert(entry.name.clone(), entry);
        if let Some(t) = trust {
            sums.indexes.insert(t.name.clone(), t);
        }
        let mut list: Vec<&Entry> = sums.entries.values().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let mut trusted: Vec<&IndexTrust> = sums.indexes.values().collect();
        trusted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut text = String::with_capacity(64 + list.len() * 160);
        text.push_str(HEADER);
        text.push('\n');
        for e in list {
            text.push_str(&e.line());
        }
        for t in trusted {
            text.push_str(&t.line());
        }
        if let Some(r) = self.remote() {
            r.write_small(SUMS_NAME, text.as_bytes())?;
            self.changed();
            return Ok(());
        }
        let mut tmp = TempFile::new_in(repo)?;
        let p = tmp.path().to_path_buf();
        tmp.file().write_all(text.as_bytes()).ctx("write", &p)?;
        tmp.publish_unsynced(&repo.join(SUMS_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            start: 4,
            end: 100,
            md5: "0123456789abcdef0123456789abcdef".into(),
            content: 0xdead_beef,
            stored_len: 96,
            stored: u128::MAX,
        }
    }

    #[test]
    fn lines_round_trip_and_damage_is_skipped() {
        let e = entry("2026-01-01-00-00-00.deltafs");
        let l = e.line();
        assert_eq!(Entry::parse(l.trim_end().as_bytes()), Some(e.clone()));
        // every truncation of a line is rejected, never misread
        for cut in 0..l.len() - 1 {
            let p = Entry::parse(&l.as_bytes()[..cut]);
            assert!(p.is_none() || p == Some(e.clone()), "{:?}", &l[..cut]);
        }
        assert!(Entry::parse(l.replace(" 96 ", " x ").as_bytes()).is_none());
        assert!(Entry::parse(l.replace(&e.md5, "nothex").as_bytes()).is_none());
        // a name that is not UTF-8 (never ours) is skipped, not an error
        let mut bad = b"\xff".to_vec();
        bad.extend_from_slice(l.trim_end().as_bytes());
        assert!(Entry::parse(&bad).is_none());
        // a damaged line whose name holds a CR is not taken for a name
        assert!(Entry::parse(format!("\r{}", l.trim_end()).as_bytes()).is_none());
    }

    #[test]
    fn index_trust_lines_round_trip_and_are_not_entries() {
        let t = IndexTrust {
            name: "2026-01-01-00-00-00.index".into(),
            pos: 1234,
            hash: 0xfeed,
        };
        let l = t.line();
        assert_eq!(IndexTrust::parse(l.trim_end()), Some(t.clone()));
        // older versions of ours parse entries only: this is not one
        assert_eq!(Entry::parse(l.trim_end().as_bytes()), None);
        assert_eq!(IndexTrust::parse(entry("a.fs").line().trim_end()), None);
        let dir = tempfile::tempdir().unwrap();
        let log = Log::quiet();
        for n in ["a.fs", "2026-01-01-00-00-00.index"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        Repository::open(dir.path())
            .unwrap()
            .record(entry("a.fs"), Some(t.clone()), &log);
        let s = Sums::load(dir.path());
        assert!(s.index_trusted(&t.name, 1234, 0xfeed));
        assert!(!s.index_trusted(&t.name, 1235, 0xfeed));
        assert!(!s.index_trusted(&t.name, 1234, 0xfeee));
        assert!(s
            .for_line(&DatLine::parse(format!("r/a.fs 4 100 {}", entry("a.fs").md5)).unwrap())
            .is_some());
        // gone with its .index
        std::fs::remove_file(dir.path().join(&t.name)).unwrap();
        Repository::open(dir.path())
            .unwrap()
            .record(entry("a.fs"), None, &log);
        assert!(!Sums::load(dir.path()).index_trusted(&t.name, 1234, 0xfeed));
    }

    #[test]
    fn an_entry_applies_only_to_the_same_line() {
        let e = entry("a.deltafs");
        let line = DatLine::parse(format!("/r/a.deltafs 4 100 {}", e.md5)).unwrap();
        assert!(e.describes(&line));
        for other in [
            format!("/r/a.deltafs 4 101 {}", e.md5),
            format!("/r/a.deltafs 5 100 {}", e.md5),
            "/r/a.deltafs 4 100 ffffffffffffffffffffffffffffffff".to_string(),
            format!("/r/b.deltafs 4 100 {}", e.md5),
        ] {
            assert!(!e.describes(&DatLine::parse(&other).unwrap()), "{other}");
        }
    }

    #[test]
    fn record_keeps_entries_of_existing_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::quiet();
        std::fs::write(dir.path().join("a.fs"), b"x").unwrap();
        Repository::open(dir.path())
            .unwrap()
            .record(entry("a.fs"), None, &log);
        Repository::open(dir.path())
            .unwrap()
            .record(entry("gone.deltafs"), None, &log);
        let s = Sums::load(dir.path());
        assert_eq!(s.len(), 2);
        // gone.deltafs does not exist: dropped at the next write
        std::fs::write(dir.path().join("b.deltafs"), b"y").unwrap();
        Repository::open(dir.path())
            .unwrap()
            .record(entry("b.deltafs"), None, &log);
        let s = Sums::load(dir.path());
        assert_eq!(s.len(), 2);
        assert!(s.entries.contains_key("a.fs") && s.entries.contains_key("b.deltafs"));
        // a damaged file loads what it can
        std::fs::write(dir.path().join(SUMS_NAME), b"garbage\n\xff\xfe").unwrap();
        assert!(Sums::load(dir.path()).is_empty());
    }
}
