//! The repository: the one place that knows where backup files live.
//! Commands ask a [`Repository`] for its files and chains and hand it new
//! files to publish; it is a local directory or a prefix of a bucket on
//! S3-compatible object storage ([`remote`]), and the commands do not
//! tell the two apart but where a stream goes (a temporary file renamed
//! into place, or a multipart upload completed).
//!
//! Writing and removing go through its methods: new files come from
//! [`Repository::new_file`] and are published by [`publish`], whole chains
//! go by [`retention`]. Reading goes through [`Repository::open_data`],
//! [`Repository::hash_data`] and [`Repository::read_small`]: a local
//! directory's files are read in place (with the kernel's copy where the
//! commands copy a plain file), objects as streamed ranges.
//!
//! - [`chains`]: listing the files and grouping them into chains (which
//!   chain recovers a date, which files no chain lists).
//! - [`publish`]: new files in, in an order that keeps every earlier
//!   state recoverable.
//! - [`retention`]: `--keep`, `--kill-old-on-full`, orphans, temporaries.
//! - [`lock`]: one writer, or many readers (`flock`, or lock objects).
//! - [`sums`]: the cache of fast checksums of backup files.
//! - [`blobs`]: the blob store and blob lists.
//! - [`remote`]: the S3 client of an object-storage repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// A connected bucket, with its listings as last made (forgotten when
/// the repository writes or removes an object).
#[derive(Debug)]
struct Connected {
    remote: Remote,
    /// The objects directly under the prefix.
    objects: Mutex<Option<Arc<Objects>>>,
    /// The objects under the blob store.
    blobs: Mutex<Option<Arc<Objects>>>,
    /// The lock object of the exclusive lock this run holds, if any.
    held: Mutex<Option<String>>,
}

/// Object names (relative to the prefix) and their sizes.
type Objects = BTreeMap<String, u64>;

impl Repository {
    /// The repository at `dir`, which must exist and be a directory, or
    /// at an `s3://BUCKET/PREFIX` URL (connected and listed now).
    pub fn open(dir: &Path) -> Result<Repository> {
        match dir.to_str().filter(|d| d.starts_with(remote::SCHEME)) {
            Some(url) => {
                // the listing made to check the connection is the one used
                let (remote, objects) = Remote::connect(url)?;
                Ok(Repository {
                    dir: dir.to_path_buf(),
                    remote: Some(Arc::new(Connected {
                        remote,
                        objects: Mutex::new(Some(Arc::new(objects))),
                        blobs: Mutex::new(None),
                        held: Mutex::new(None),
                    })),
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
        self.remote.as_deref().map(|c| &c.remote)
    }

    /// The objects of an `s3://` repository with their sizes (listed
    /// when first needed after a change).
    fn remote_listing(&self) -> Result<Option<Arc<Objects>>> {
        let Some(c) = self.remote.as_deref() else {
            return Ok(None);
        };
        let mut cache = c.objects.lock().expect("no panic while held");
        if cache.is_none() {
            *cache = Some(Arc::new(c.remote.list()?));
        }
        Ok(cache.clone())
    }

    /// The objects of an `s3://` repository's blob store with their sizes
    /// (listed when first needed after a change).
    pub(crate) fn remote_blob_listing(&self) -> Result<Option<Arc<Objects>>> {
        let Some(c) = self.remote.as_deref() else {
            return Ok(None);
        };
        let mut cache = c.blobs.lock().expect("no panic while held");
        if cache.is_none() {
            *cache = Some(Arc::new(c.remote.list_under(blobs::STORE)?));
        }
        Ok(cache.clone())
    }

    /// Forget the listings of an `s3://` repository: an object was written
    /// or removed.
    pub(crate) fn changed(&self) {
        if let Some(c) = self.remote.as_deref() {
            *c.objects.lock().expect("no panic while held") = None;
            *c.blobs.lock().expect("no panic while held") = None;
        }
    }

    /// The bytes of every object directly under the prefix, for an `s3://`
    /// repository (as the regular files of a directory).
    pub fn object_bytes(&self) -> Option<u64> {
        self.remote_listing().ok()?.map(|l| l.values().sum())
    }

    /// The size of the file `name` when it is a regular file (following
    /// symbolic links) or an object; `None` when there is none.
    pub fn size_of(&self, name: &str) -> Option<u64> {
        if name.starts_with(&format!("{}/", blobs::STORE)) {
            if let Ok(Some(l)) = self.remote_blob_listing() {
                return l.get(name).copied();
            }
        }
        match self.remote_listing() {
            Ok(Some(l)) => l.get(name).copied(),
            Ok(None) => std::fs::metadata(self.path(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Err(_) => None,
        }
    }

    /// Whether this is an object-storage repository.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The uncompressed bytes of the data file `name` (stored compressed
    /// when `gzip`), streamed: from the directory, or ranges of the object
    /// fetched in parallel and handed out in order. A missing file is the
    /// error opening it gives.
    pub fn open_data(&self, name: &str, gzip: bool) -> Result<Box<dyn std::io::Read>> {
        let path = self.path(name);
        let Some(r) = self.remote() else {
            return crate::io::read::open_data(&path, gzip);
        };
        let Some(len) = self.size_of(name) else {
            return Err(Error::io(
                "open",
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "No such object"),
            ));
        };
        crate::io::read::uncompressed(Box::new(r.reader(name, len)?), &path, gzip)
    }

    /// The whole stored bytes of the file `name` (any size), as
    /// [`Repository::open_data`] without inflating.
    pub fn open_stored(&self, name: &str) -> Result<Box<dyn std::io::Read>> {
        self.open_data(name, false)
    }

    /// xxh3-128 and length of the uncompressed bytes of the data file
    /// `name`, counted as read.
    pub fn hash_data(&self, name: &str, gzip: bool) -> Result<(u128, u64)> {
        if !self.is_remote() {
            return crate::io::xxh3::hash_data(&self.path(name), gzip);
        }
        let mut h = crate::io::xxh3::Hasher::new();
        let n = crate::io::read::for_each_chunk_in(
            self.open_data(name, gzip)?,
            &self.path(name),
            gzip,
            |c| {
                h.update(c);
                Ok(())
            },
        )?;
        Ok((h.digest128(), n))
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

    /// The name in the repository of `path` (one of its files' paths).
    fn name_in<'p>(&self, path: &'p Path) -> Option<&'p str> {
        path.strip_prefix(&self.dir).ok()?.to_str()
    }

    /// The size of the repository's file at `path` (not following a
    /// symbolic link); `None` when there is none.
    pub fn file_len(&self, path: &Path) -> std::io::Result<Option<u64>> {
        if self.is_remote() {
            // a listing that fails is an error, not "no such object"
            self.remote_listing()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            return Ok(self.name_in(path).and_then(|n| self.size_of(n)));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Remove the repository's file at `path` (an error `NotFound` when
    /// there is none, as for a file; on object storage, when the listing
    /// did not show it, after removing it all the same).
    pub fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        let Some(r) = self.remote() else {
            return std::fs::remove_file(path);
        };
        let name = self
            .name_in(path)
            .ok_or_else(|| std::io::Error::other("not in the repository"))?;
        // removed whether or not the listing (made before, or failed)
        // shows it: removing a missing object is no error in S3
        let listed = self.size_of(name).is_some();
        let r = r
            .delete(name)
            .map_err(|e| std::io::Error::other(e.to_string()));
        self.changed();
        match r {
            Ok(()) if !listed => Err(std::io::ErrorKind::NotFound.into()),
            r => r,
        }
    }

    /// Make the renames and removals in the directory durable (nothing to
    /// do on object storage, where each call is).
    pub fn sync_dir(&self) -> Result<()> {
        if self.is_remote() {
            return Ok(());
        }
        crate::io::durable::sync_dir(&self.dir)
    }

    /// The names of the entries directly in the repository.
    pub fn entries(&self) -> std::io::Result<Vec<String>> {
        if self.is_remote() {
            let l = self
                .remote_listing()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .expect("remote");
            return Ok(l.keys().cloned().collect());
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
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
