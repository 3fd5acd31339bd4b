//! The repository directory: which entries are backup data files, in what
//! order, and which of them form the chain that recovers a given date.
//!
//! Order is by stamp, and a full backup comes before an increment with the
//! same stamp (ZODB's repozo sorts by name, which puts `X.deltafs` before
//! `X.fs` and so drops such an increment from every recovery).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dat::{self, DatFile, DatLine};
use crate::error::{Error, Result};
use crate::stamp::{DataName, Kind, Stamp};
use crate::Log;

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
}

/// Check that the repository exists and is a directory.
pub fn check_dir(repo: &Path) -> Result<()> {
    let meta = std::fs::metadata(repo).map_err(|e| Error::io("open repository", repo, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "open repository",
            repo,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

/// List the backup data files of `repo`, oldest first.
pub fn list(repo: &Path) -> Result<Listing> {
    check_dir(repo)?;
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
    Ok(out)
}

/// The chain that recovers the state as of `until` (`None`: the newest
/// state): the newest full backup stamped at or before `until`, then its
/// increments stamped up to `until`.
pub fn chain_at(files: &[DataFile], until: Option<Stamp>) -> Vec<DataFile> {
    let upto: Vec<&DataFile> = files
        .iter()
        .filter(|f| until.is_none_or(|u| f.name.stamp <= u))
        .collect();
    match upto.iter().rposition(|f| f.is_full()) {
        Some(i) => upto[i..].iter().map(|f| (*f).clone()).collect(),
        None => Vec::new(),
    }
}

/// The `.dat` file of the chain headed by `full`.
pub fn dat_path(repo: &Path, full: &DataFile) -> PathBuf {
    repo.join(full.name.dat_name())
}

/// The `.index` file beside a data file.
pub fn index_path(repo: &Path, file: &DataFile) -> PathBuf {
    repo.join(file.name.index_name())
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
    /// Data files of the chain's span that its `.dat` does not list (left
    /// by a crash between publishing a file and recording it): not used.
    pub orphans: Vec<DataFile>,
}

/// Find the files that recover `until` (`None`: newest), checked against
/// the chain's `.dat`.
pub fn resolve(repo_dir: &Path, until: Option<Stamp>, log: &Log) -> Result<Option<Resolved>> {
    let listing = list(repo_dir)?;
    resolve_in(repo_dir, &listing, until, log)
}

/// [`resolve`] over a listing already made.
pub fn resolve_in(
    repo_dir: &Path,
    listing: &Listing,
    until: Option<Stamp>,
    log: &Log,
) -> Result<Option<Resolved>> {
    for p in &listing.skipped {
        log.note(format_args!(
            "ignoring {} (not a regular file)",
            p.display()
        ));
    }
    let chain = chain_at(&listing.files, until);
    let Some(head) = chain.first() else {
        return Ok(None);
    };
    let dat_path = dat_path(repo_dir, head);
    let Some(dat_file) = dat::read(&dat_path)? else {
        log.note(format_args!(
            "{} is missing: using the directory listing",
            dat_path.display()
        ));
        return Ok(Some(Resolved {
            files: chain
                .into_iter()
                .map(|file| ChainFile { file, line: None })
                .collect(),
            dat: dat_path,
            has_dat: false,
            dat_file: None,
            orphans: Vec::new(),
        }));
    };
    if let Some(t) = &dat_file.torn {
        log.note(format_args!(
            "ignoring the torn last line of {} (an interrupted append): {t:?}",
            dat_path.display()
        ));
    }
    let lines = dat_file.lines.clone();
    let present: HashMap<String, DataFile> =
        chain.iter().map(|f| (f.file_name(), f.clone())).collect();
    let mut files = Vec::new();
    let mut expected_start = 0u64;
    for line in lines {
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
    let mut orphans = Vec::new();
    for f in &chain {
        if !files.iter().any(|c| c.file.name == f.name) {
            log.note(format_args!(
                "ignoring {}: not listed in {}",
                f.path.display(),
                dat_path.display()
            ));
            orphans.push(f.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::BadDat {
            path: dat_path,
            line: 1,
            reason: "lists no file of its chain".into(),
        });
    }
    Ok(Some(Resolved {
        files,
        dat: dat_path,
        has_dat: true,
        dat_file: Some(dat_file),
        orphans,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<DataFile> {
        let mut v: Vec<DataFile> = names
            .iter()
            .map(|n| DataFile {
                name: DataName::parse(n).unwrap(),
                path: PathBuf::from(n),
            })
            .collect();
        v.sort();
        v
    }

    fn names(v: &[DataFile]) -> Vec<String> {
        v.iter().map(|f| f.file_name()).collect()
    }

    #[test]
    fn chain_selection() {
        let all = files(&[
            "2026-01-01-00-00-00.fs",
            "2026-01-02-00-00-00.deltafs",
            "2026-01-03-00-00-00.fsz",
            "2026-01-04-00-00-00.deltafsz",
            "2026-01-05-00-00-00.deltafsz",
        ]);
        let d = |s| Some(Stamp::parse_date(s).unwrap());
        assert_eq!(
            names(&chain_at(&all, None)),
            [
                "2026-01-03-00-00-00.fsz",
                "2026-01-04-00-00-00.deltafsz",
                "2026-01-05-00-00-00.deltafsz"
            ]
        );
        assert_eq!(
            names(&chain_at(&all, d("2026-01-04"))),
            ["2026-01-03-00-00-00.fsz", "2026-01-04-00-00-00.deltafsz"]
        );
        assert_eq!(
            names(&chain_at(&all, d("2026-01-02-23-59-59"))),
            ["2026-01-01-00-00-00.fs", "2026-01-02-00-00-00.deltafs"]
        );
        assert!(chain_at(&all, d("2025-12-31")).is_empty());
    }

    /// Regression (R1): a full backup and an increment in the same second.
    #[test]
    fn same_second_full_then_increment() {
        let all = files(&["2026-01-01-00-00-00.deltafs", "2026-01-01-00-00-00.fs"]);
        assert_eq!(
            names(&chain_at(&all, None)),
            ["2026-01-01-00-00-00.fs", "2026-01-01-00-00-00.deltafs"]
        );
    }
}
