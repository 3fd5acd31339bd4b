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
//! - [`remote`]: a repository on S3-compatible object storage (`-L` only
//!   in this version: listing and reading small files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use remote::Remote;

pub mod blobs;
pub mod chains;
pub mod lock;
pub mod publish;
pub mod remote;
pub mod retention;
pub mod sums;

/// A repository: a directory, or a prefix in an object-storage bucket
/// ([`remote`]).
#[derive(Clone, Debug)]
pub struct Repository {
    /// The directory exactly as given (it is written into `.dat` lines as
    /// is, like ZODB's repozo does), or the `s3://` URL.
    dir: PathBuf,
    /// The bucket, for an `s3://` repository, with its listing once made.
    remote: Option<Arc<Connected>>,
}

/// A connected bucket and its listing, made once.
type Connected = (Remote, OnceLock<BTreeMap<String, u64>>);

impl Repository {
    /// The repository at `dir`, which must exist and be a directory; an
    /// `s3://` URL is an error naming the modes that take one.
    pub fn open(dir: &Path) -> Result<Repository> {
        if dir.to_str().is_some_and(|d| d.starts_with(remote::SCHEME)) {
            return Err(Error::Remote(format!(
                "{}: object storage repositories work with -L only in this version \
                 (-B, -R and -V need a directory: copy the prefix down with \
                 `aws s3 sync` or `rclone copy`)",
                dir.display()
            )));
        }
        Repository::open_dir(dir)
    }

    /// The repository at `dir`, or at an `s3://BUCKET/PREFIX` URL
    /// (connected and listed once now): for the modes that read through
    /// the repository's methods only (`-L`).
    pub fn open_any(dir: &Path) -> Result<Repository> {
        match dir.to_str().filter(|d| d.starts_with(remote::SCHEME)) {
            Some(url) => {
                // the listing made to check the connection is the one used
                let (remote, objects) = Remote::connect(url)?;
                Ok(Repository {
                    dir: dir.to_path_buf(),
                    remote: Some(Arc::new((remote, OnceLock::from(objects)))),
                })
            }
            None => Repository::open_dir(dir),
        }
    }

    fn open_dir(dir: &Path) -> Result<Repository> {
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
            remote: None,
        })
    }

    /// The bucket, for an `s3://` repository.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref().map(|(r, _)| r)
    }

    /// The objects of an `s3://` repository with their sizes, listed once.
    fn remote_listing(&self) -> Result<Option<&BTreeMap<String, u64>>> {
        let Some((r, cache)) = self.remote.as_deref() else {
            return Ok(None);
        };
        if cache.get().is_none() {
            let _ = cache.set(r.list()?);
        }
        Ok(cache.get())
    }

    /// The bytes of every object directly under the prefix, for an `s3://`
    /// repository (as the regular files of a directory).
    pub fn object_bytes(&self) -> Option<u64> {
        self.remote_listing().ok()?.map(|l| l.values().sum())
    }

    /// The size of the file `name` when it is a regular file (following
    /// symbolic links) or an object; `None` when there is none.
    pub fn size_of(&self, name: &str) -> Option<u64> {
        match self.remote_listing() {
            Ok(Some(l)) => l.get(name).copied(),
            Ok(None) => std::fs::metadata(self.path(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Err(_) => None,
        }
    }

    /// The whole file `name` (a `.dat`, a blob list: small files); `None`
    /// when there is none.
    pub fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if let Some(r) = self.remote() {
            return r.read(name);
        }
        let p = self.path(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &p, e)),
        }
    }

    /// The directory, as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `dir` is the repository's directory (the same one, reached
    /// by any path); `false` when either cannot be examined.
    pub fn is_at(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.remote.is_some() {
            return false;
        }
        match (std::fs::metadata(dir), std::fs::metadata(&self.dir)) {
            (Ok(d), Ok(r)) => d.dev() == r.dev() && d.ino() == r.ino(),
            _ => false,
        }
    }

    /// The name of the repository entry that is the same file as `meta` (a
    /// hard link, or the same file reached through a bind mount), if any.
    pub fn name_of(&self, meta: &std::fs::Metadata) -> Option<String> {
        use std::os::unix::fs::{DirEntryExt, MetadataExt};
        if self.remote.is_some() {
            return None;
        }
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
