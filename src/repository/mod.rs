//! The repository: the one place that knows where backup files live.
//! Commands ask a [`Repository`] for its files and chains and hand it new
//! files to publish; a local directory is its only kind today, and the
//! seam where another kind of storage will plug in.
//!
//! Writing and removing go through its methods: new files come from
//! [`Repository::new_file`] and are published by [`publish`], whole chains
//! go by [`retention`]. Reading goes by the paths it hands out (a
//! [`chains::DataFile`]'s path, [`Repository::index_path`]): a local
//! directory's files are read in place, with the kernel's copy.
//!
//! - [`chains`]: listing the files and grouping them into chains (which
//!   chain recovers a date, which files no chain lists).
//! - [`publish`]: new files in, in an order that keeps every earlier
//!   state recoverable.
//! - [`retention`]: `--keep`, `--kill-old-on-full`, orphans, temporaries.
//! - [`lock`]: one writer, or many readers.
//! - [`sums`]: the cache of fast checksums of backup files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod blobs;
pub mod chains;
pub mod lock;
pub mod publish;
pub mod retention;
pub mod sums;

/// A repository directory.
#[derive(Clone, Debug)]
pub struct Repository {
    /// The directory exactly as given (it is written into `.dat` lines as
    /// is, like ZODB's repozo does).
    dir: PathBuf,
}

impl Repository {
    /// The repository at `dir`, which must exist and be a directory.
    pub fn open(dir: &Path) -> Result<Repository> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io("open repository", dir, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                "open repository",
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Ok(Repository {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory, as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `dir` is the repository's directory (the same one, reached
    /// by any path); `false` when either cannot be examined.
    pub fn is_at(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(dir), std::fs::metadata(&self.dir)) {
            (Ok(d), Ok(r)) => d.dev() == r.dev() && d.ino() == r.ino(),
            _ => false,
        }
    }

    /// The name of the repository entry that is the same file as `meta` (a
    /// hard link, or the same file reached through a bind mount), if any.
    pub fn name_of(&self, meta: &std::fs::Metadata) -> Option<String> {
        use std::os::unix::fs::{DirEntryExt, MetadataExt};
        let r = std::fs::metadata(&self.dir).ok()?;
        if r.dev() != meta.dev() {
            return None;
        }
        std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.ino() == meta.ino())
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }

    /// Where the file `name` of the repository is.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
