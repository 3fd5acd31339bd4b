//! The repository directory: which entries are backup data files, in what
//! order, and which of them form the chain that recovers a given date.
//!
//! Order is by stamp, and a full backup comes before an increment with the
//! same stamp (ZODB's repozo sorts by name, which puts `X.deltafs` before
//! `X.fs` and so drops such an increment from every recovery).
//!
//! A chain is named by its head stamp `S`: a full backup `S.fs` / `S.fsz`,
//! or a `S.dat`, which names the chain even when its full backup is gone
//! (then the chain is missing a file, an error, never a reason to fall back
//! to an older chain). The chain that recovers a date is the newest head
//! at or before it. A data file a `.dat` lists belongs to that chain,
//! wherever its stamp falls (ZODB's repozo, run twice in one second, stamps
//! an increment of the old chain and the next full backup alike); a data
//! file in a chain's span that no `.dat` lists is an orphan.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::dat::{self, DatFile, DatLine};
use crate::format::stamp::{DataName, Kind, Stamp};
use crate::log::Log;
use crate::repository::Repository;

/// A data file found in the repository.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFile {
    /// Decoded name (the sort key).
    pub name: DataName,
    /// Where it is.
    pub path: PathBuf,
}

impl DataFile {
    /// The entry's file name.
    pub fn file_name(&self) -> String {
        self.name.file_name()
    }

    /// Whether this is a full backup.
    pub fn is_full(&self) -> bool {
        self.name.kind == Kind::Full
    }
}

/// The result of listing a repository.
#[derive(Debug, Default)]
pub struct Listing {
    /// Data files, oldest first.
    pub files: Vec<DataFile>,
    /// Entries named like data files that are not regular files (skipped).
    pub skipped: Vec<PathBuf>,
    /// The newest stamp used by any repository entry that carries one
    /// (data, `.dat`, `.index`), so new backups can be named after it.
    pub newest_stamp: Option<Stamp>,
    /// Stamps of the `.dat` files, oldest first.
    pub dats: Vec<Stamp>,
}

impl Listing {
    /// Chain heads: the stamps of full backups and of `.dat` files, oldest
    /// first, each once.
    pub fn heads(&self) -> Vec<Stamp> {
        let mut v: Vec<Stamp> = self
            .files
            .iter()
            .filter(|f| f.is_full())
            .map(|f| f.name.stamp)
            .chain(self.dats.iter().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The listing of an object-storage repository's objects (all of them
/// regular files), as a directory of the same files gives.
fn listing_of_objects(repo: &Path, objects: &std::collections::BTreeMap<String, u64>) -> Listing {
    let mut out = Listing::default();
    for fname in objects.keys() {
        if let Some((stem, ext)) = fname.split_once('.') {
            if matches!(ext, "dat" | "index") {
                if let Ok(st) = Stamp::parse_date(stem) {
                    if stem.len() == 19 {
                        out.newest_stamp = out.newest_stamp.max(Some(st));
                        if ext == "dat" {
                            out.dats.push(st);
                        }
                    }
                }
            }
        }
        if let Some(name) = DataName::parse(fname) {
            out.newest_stamp = out.newest_stamp.max(Some(name.stamp));
            out.files.push(DataFile {
                name,
                path: repo.join(fname),
            });
        }
    }
    out.files.sort();
    out.dats.sort();
    out
}

impl Repository {
    /// List the backup data files of `repo`, oldest first.
    pub fn list(&self) -> Result<Listing> {
        // a signal interrupting the directory's open is not a failure
        loop {
            match self.list_once() {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn list_once(&self) -> Result<Listing> {
        let repo = self.dir();
        if let Some(objects) = self.remote_listing()? {
            return Ok(listing_of_objects(repo, &objects));
        }
        Repository::open(repo)?;
        let mut out = Listing::default();
        for entry in walkdir::WalkDir::new(repo).min_depth(1).max_depth(1) {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(repo).to_path_buf();
                Error::io("list", &path, e.into())
            })?;
            let Some(fname) = entry.file_name().to_str() else {
                continue;
            };
            if let Some((stem, ext)) = fname.split_once('.') {
                if matches!(ext, "dat" | "index") {
                    if let Ok(st) = Stamp::parse_date(stem) {
                        if stem.len() == 19 {
                            out.newest_stamp = out.newest_stamp.max(Some(st));
                            // a .dat names a chain, even without its full backup
                            if ext == "dat"
                                && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
                            {
                                out.dats.push(st);
                            }
                        }
                    }
                }
            }
            let Some(name) = DataName::parse(fname) else {
                continue;
            };
            let path = entry.path().to_path_buf();
            // follow symlinks for reading, but only regular files are backups
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    out.skipped.push(path);
                    continue;
                }
                // a dangling symlink named like a backup is not one
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    out.skipped.push(path);
                    continue;
                }
                Err(e) => return Err(Error::io("inspect", &path, e)),
            }
            out.newest_stamp = out.newest_stamp.max(Some(name.stamp));
            out.files.push(DataFile { name, path });
        }
        out.files.sort();
        out.dats.sort();
        Ok(out)
    }

    /// Read and parse the `.dat` at `path` (one of [`Repository::dat_path_at`]),
    /// from the directory or the bucket; `Ok(None)` when there is none.
    pub fn read_dat(&self, path: &Path) -> Result<Option<DatFile>> {
        if self.remote().is_none() {
            return dat::read(path);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.read_small(&name)?
            .map(|b| dat::parse(&b, path))
            .transpose()
    }

    /// The `.dat` file of the chain headed by `full`.
    pub fn dat_path(&self, full: &DataFile) -> PathBuf {
        self.dat_path_at(full.name.stamp)
    }

    /// The `.dat` file of the chain whose head is stamped `head`.
    pub fn dat_path_at(&self, head: Stamp) -> PathBuf {
        let repo = self.dir();
        repo.join(format!("{head}.dat"))
    }

    /// The `.index` file beside a data file.
    pub fn index_path(&self, file: &DataFile) -> PathBuf {
        let repo = self.dir();
        repo.join(file.name.index_name())
    }

    /// The chain that recovers `until` (`None`: newest) with its `.dat` read;
    /// `None` when no chain begins at or before `until`.
    pub fn span_at(&self, listing: &Listing, until: Option<Stamp>) -> Result<Option<Span>> {
        let Some((head, files)) = chain_at(listing, until) else {
            return Ok(None);
        };
        let dat = self.dat_path_at(head);
        let dat_file = self.read_dat(&dat)?;
        Ok(Some(Span {
            head,
            files,
            dat,
            dat_file,
        }))
    }

    /// The names among `files` that a `.dat` other than the one of the chain
    /// headed at `head` lists: files of another chain. `None` when one of those
    /// `.dat` files cannot be read (then nobody can tell).
    fn listed_elsewhere(
        &self,
        listing: &Listing,
        head: Stamp,
        files: &[DataFile],
        log: &Log,
    ) -> Option<HashSet<String>> {
        let mut out = HashSet::new();
        if files.is_empty() {
            return Some(out);
        }
        for &s in listing.dats.iter().filter(|s| **s != head) {
            let p = self.dat_path_at(s);
            match self.read_dat(&p) {
                Ok(Some(d)) => {
                    for f in files {
                        let name = f.file_name();
                        if d.lines.iter().any(|l| l.name == name) && out.insert(name) {
                            log.note(format_args!(
                                "{} is listed in {}: part of that chain",
                                f.path.display(),
                                p.display()
                            ));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    log.note(format_args!(
                        "cannot tell which chain lists the files stamped after {head}: {e}"
                    ));
                    return None;
                }
            }
        }
        Some(out)
    }

    /// The data files of `span` that no `.dat` lists (left by a crash between
    /// publishing a file and recording it, or put there by hand): orphans,
    /// never used. A file another chain's `.dat` lists is that chain's, not an
    /// orphan; when another `.dat` cannot be read, nothing is called an orphan.
    /// A chain without a `.dat` has no orphans.
    pub fn orphans(&self, listing: &Listing, span: &Span, log: &Log) -> Vec<DataFile> {
        let Some(dat_file) = &span.dat_file else {
            return Vec::new();
        };
        let unlisted: Vec<DataFile> = span
            .files
            .iter()
            .filter(|f| {
                let name = f.file_name();
                !dat_file.lines.iter().any(|l| l.name == name)
            })
            .cloned()
            .collect();
        let Some(elsewhere) = self.listed_elsewhere(listing, span.head, &unlisted, log) else {
            return Vec::new();
        };
        unlisted
            .into_iter()
            .filter(|f| !elsewhere.contains(&f.file_name()))
            .collect()
    }

    /// Find the files that recover `until` (`None`: newest), checked against
    /// the chain's `.dat`.
    pub fn resolve(&self, until: Option<Stamp>, log: &Log) -> Result<Option<Resolved>> {
        let listing = self.list()?;
        self.resolve_in(&listing, until, log)
    }

    /// [`Repository::resolve`] over a listing already made. Every file the `.dat` lists up
    /// to `until` must be present, the full backup included: a chain missing a
    /// listed file is an error, never a reason to use an older chain.
    pub fn resolve_in(
        &self,
        listing: &Listing,
        until: Option<Stamp>,
        log: &Log,
    ) -> Result<Option<Resolved>> {
        let repo_dir = self.dir();
        for p in &listing.skipped {
            log.note(format_args!(
                "ignoring {} (not a regular file)",
                p.display()
            ));
        }
        let Some(span) = self.span_at(listing, until)? else {
            return Ok(None);
        };
        let Some(dat_file) = span.dat_file.clone() else {
            return self.listing_chain(listing, span, log).map(Some);
        };
        let dat_path = span.dat.clone();
        if let Some(t) = &dat_file.torn {
            log.note(format_args!(
                "ignoring the torn last line of {} (an interrupted append): {t:?}",
                dat_path.display()
            ));
        }
        let present: HashMap<String, DataFile> = span
            .files
            .iter()
            .map(|f| (f.file_name(), f.clone()))
            .collect();
        let mut files = Vec::new();
        let mut expected_start = 0u64;
        for line in dat_file.lines.iter().cloned() {
            let Some(name) = DataName::parse(&line.name) else {
                return Err(Error::BadDat {
                    path: dat_path.clone(),
                    line: files.len() + 1,
                    reason: format!("{:?} is not a backup file name", line.name),
                });
            };
            if until.is_some_and(|u| name.stamp > u) {
                break;
            }
            if line.start != expected_start {
                return Err(Error::BadDat {
                    path: dat_path.clone(),
                    line: files.len() + 1,
                    reason: format!(
                        "{} starts at {} but the chain so far ends at {expected_start}",
                        line.name, line.start
                    ),
                });
            }
            expected_start = line.end;
            let Some(file) = present.get(&line.name).cloned() else {
                let twin = DataName {
                    gzip: !name.gzip,
                    ..name.clone()
                };
                if present.contains_key(&twin.file_name()) {
                    log.note(format_args!(
                        "{} has the stamp of the missing {} but is not the file {} lists",
                        twin.file_name(),
                        line.name,
                        dat_path.display()
                    ));
                }
                return Err(Error::MissingFile {
                    path: repo_dir.join(&line.name),
                    listed_in: dat_path.clone(),
                });
            };
            files.push(ChainFile {
                file,
                line: Some(line),
            });
        }
        if files.is_empty() {
            return Err(Error::BadDat {
                path: dat_path,
                line: 1,
                reason: "lists no file of its chain".into(),
            });
        }
        let orphans = self.orphans(listing, &span, log);
        for f in &orphans {
            log.note(format_args!(
                "ignoring {}: not listed in {}",
                f.path.display(),
                dat_path.display()
            ));
        }
        Ok(Some(Resolved {
            files,
            dat: dat_path,
            has_dat: true,
            dat_file: Some(dat_file),
            orphans,
        }))
    }

    /// A chain without a `.dat` (ZODB's repozo crashed before writing it, or
    /// it was removed): its files are taken from the listing, the full backup
    /// first, leaving out files another chain's `.dat` lists. Two full backups
    /// with the head's stamp (`.fs` and `.fsz`) are an error naming both:
    /// nothing says which one heads the chain.
    fn listing_chain(&self, listing: &Listing, span: Span, log: &Log) -> Result<Resolved> {
        let fulls: Vec<&DataFile> = span
            .files
            .iter()
            .filter(|f| f.is_full() && f.name.stamp == span.head)
            .collect();
        match fulls[..] {
            [_] => {}
            [] => {
                return Err(Error::io(
                    "read",
                    &span.dat,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
                ))
            }
            [a, b, ..] => {
                return Err(Error::SameStamp {
                    first: a.path.clone(),
                    second: b.path.clone(),
                    dat: span.dat.clone(),
                })
            }
        }
        log.note(format_args!(
            "{} is missing: using the directory listing",
            span.dat.display()
        ));
        let rest: Vec<DataFile> = span.files[1..].to_vec();
        let elsewhere = self
            .listed_elsewhere(listing, span.head, &rest, log)
            .unwrap_or_default();
        let files = span
            .files
            .into_iter()
            .filter(|f| !elsewhere.contains(&f.file_name()))
            .map(|file| ChainFile { file, line: None })
            .collect();
        Ok(Resolved {
            files,
            dat: span.dat,
            has_dat: false,
            dat_file: None,
            orphans: Vec::new(),
        })
    }

    /// Every data file of the listing assigned to a chain: the chain whose
    /// `.dat` lists it, else the newest head stamped at or before it. Returns
    /// the increments stamped before every head, then the chains, oldest
    /// first. An unreadable `.dat` claims nothing.
    pub fn groups(&self, listing: &Listing) -> (Vec<DataFile>, Vec<Group>) {
        let heads = listing.heads();
        let mut groups: Vec<Group> = heads
            .iter()
            .map(|&head| Group {
                head,
                files: Vec::new(),
            })
            .collect();
        let mut claimed: HashMap<String, usize> = HashMap::new();
        for &s in &listing.dats {
            let i = heads.binary_search(&s).expect("a .dat stamp is a head");
            if let Ok(Some(d)) = self.read_dat(&self.dat_path_at(s)) {
                for l in d.lines {
                    claimed.entry(l.name).or_insert(i);
                }
            }
        }
        let mut strays = Vec::new();
        for f in &listing.files {
            let i = match claimed.get(&f.file_name()) {
                Some(&i) => Some(i),
                None => heads.iter().rposition(|h| *h <= f.name.stamp),
            };
            match i {
                Some(i) => groups[i].files.push(f.clone()),
                None => strays.push(f.clone()),
            }
        }
        (strays, groups)
    }
}

/// The head of the chain that recovers the state as of `until` (`None`:
/// the newest state): the newest head stamped at or before `until`.
pub fn head_at(listing: &Listing, until: Option<Stamp>) -> Option<Stamp> {
    listing
        .heads()
        .into_iter()
        .rev()
        .find(|h| until.is_none_or(|u| *h <= u))
}

/// The chain that recovers the state as of `until` (`None`: the newest
/// state), from the listing alone: its head and the data files stamped
/// from the head up to `until` (its span), oldest first.
pub fn chain_at(listing: &Listing, until: Option<Stamp>) -> Option<(Stamp, Vec<DataFile>)> {
    let head = head_at(listing, until)?;
    let files = listing
        .files
        .iter()
        .filter(|f| f.name.stamp >= head && until.is_none_or(|u| f.name.stamp <= u))
        .cloned()
        .collect();
    Some((head, files))
}

/// The chain that recovers a date, before its files are checked against
/// its `.dat`.
#[derive(Clone, Debug)]
pub struct Span {
    pub head: Stamp,
    /// The data files stamped from the head up to the date, oldest first.
    pub files: Vec<DataFile>,
    /// The chain's `.dat` path.
    pub dat: PathBuf,
    /// The parsed `.dat`, `None` when there is none.
    pub dat_file: Option<DatFile>,
}

/// One file of a resolved chain, with its `.dat` line when there is one.
#[derive(Clone, Debug)]
pub struct ChainFile {
    pub file: DataFile,
    pub line: Option<DatLine>,
}

/// A chain resolved against its `.dat`.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub files: Vec<ChainFile>,
    /// The `.dat` path and whether it exists.
    pub dat: PathBuf,
    pub has_dat: bool,
    /// The parsed `.dat` (with its torn last line, if any).
    pub dat_file: Option<DatFile>,
    /// Data files of the chain's span that no `.dat` lists (left by a crash
    /// between publishing a file and recording it): not used.
    pub orphans: Vec<DataFile>,
}

/// A chain as the directory holds it (for `-L` and for removing old
/// chains): its head and its data files.
#[derive(Clone, Debug)]
pub struct Group {
    pub head: Stamp,
    /// The data files its `.dat` lists that are present, and the files of
    /// its span that no `.dat` lists (its orphans, when it has a `.dat`),
    /// oldest first.
    pub files: Vec<DataFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Listing {
        let mut out = Listing::default();
        for n in names {
            match n.strip_suffix(".dat") {
                Some(stem) => out.dats.push(Stamp::parse_date(stem).unwrap()),
                None => out.files.push(DataFile {
                    name: DataName::parse(n).unwrap(),
                    path: PathBuf::from(n),
                }),
            }
        }
        out.files.sort();
        out.dats.sort();
        out
    }

    fn names(chain: Option<(Stamp, Vec<DataFile>)>) -> Vec<String> {
        chain
            .map(|(_, v)| v.iter().map(|f| f.file_name()).collect())
            .unwrap_or_default()
    }

    fn d(s: &str) -> Option<Stamp> {
        Some(Stamp::parse_date(s).unwrap())
    }

    #[test]
    fn chain_selection() {
        let all = listing(&[
            "2026-01-01-00-00-00.fs",
            "2026-01-02-00-00-00.deltafs",
            "2026-01-03-00-00-00.fsz",
            "2026-01-04-00-00-00.deltafsz",
            "2026-01-05-00-00-00.deltafsz",
        ]);
        assert_eq!(
            names(chain_at(&all, None)),
            [
                "2026-01-03-00-00-00.fsz",
                "2026-01-04-00-00-00.deltafsz",
                "2026-01-05-00-00-00.deltafsz"
            ]
        );
        assert_eq!(
            names(chain_at(&all, d("2026-01-04"))),
            ["2026-01-03-00-00-00.fsz", "2026-01-04-00-00-00.deltafsz"]
        );
        assert_eq!(
            names(chain_at(&all, d("2026-01-02-23-59-59"))),
            ["2026-01-01-00-00-00.fs", "2026-01-02-00-00-00.deltafs"]
        );
        assert!(chain_at(&all, d("2025-12-31")).is_none());
    }

    /// Regression (R1): a full backup and an increment in the same second.
    #[test]
    fn same_second_full_then_increment() {
        let all = listing(&["2026-01-01-00-00-00.deltafs", "2026-01-01-00-00-00.fs"]);
        assert_eq!(
            names(chain_at(&all, None)),
            ["2026-01-01-00-00-00.fs", "2026-01-01-00-00-00.deltafs"]
        );
    }

    /// Issue 19 case 6: a `.dat` names a chain whose full backup is gone;
    /// that chain, not the older one, recovers the dates after its stamp.
    #[test]
    fn a_dat_heads_a_chain_without_its_full_backup() {
        let all = listing(&[
            "2026-01-01-00-00-00.fs",
            "2026-01-01-00-00-00.dat",
            "2026-01-02-00-00-00.deltafs",
            "2026-01-03-00-00-00.dat",
            "2026-01-04-00-00-00.deltafs",
        ]);
        let (head, files) = chain_at(&all, None).unwrap();
        assert_eq!(head, d("2026-01-03").unwrap());
        assert_eq!(
            files.iter().map(|f| f.file_name()).collect::<Vec<_>>(),
            ["2026-01-04-00-00-00.deltafs"]
        );
        assert_eq!(
            chain_at(&all, d("2026-01-03-12")).unwrap().0,
            d("2026-01-03").unwrap()
        );
        assert_eq!(
            names(chain_at(&all, d("2026-01-02"))),
            ["2026-01-01-00-00-00.fs", "2026-01-02-00-00-00.deltafs"]
        );
    }
}
