//! The blob store: every blob revision a backup refers to is kept once,
//! as `blobs/<xx>/<oid>.<tid>.blob` (`xx`: the oid's low byte, so that no
//! directory grows past a few thousand entries), and each backup made with
//! `--blob-dir` has a blob list `<stamp>.blobs` beside its data file naming
//! the revisions its range refers to, with their sizes and md5s (see
//! [`crate::format::blob::BlobList`]).
//!
//! New revisions are written as temporaries in the repository, made
//! durable together (one `syncfs`), then renamed into the store, which is
//! synced again, before anything lists them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::blob::{BlobList, Layout, ListedBlob};
use crate::format::filestorage::BlobRecord;
use crate::format::stamp::Stamp;
use crate::io::durable::{self, TempFile};
use crate::io::{copy, read};
use crate::log::Log;
use crate::repository::chains::Listing;
use crate::repository::remote::Remote;
use crate::repository::Repository;

/// The blob store's directory in the repository.
pub const STORE: &str = "blobs";

/// Extension of a backup's blob list.
pub const LIST_EXT: &str = "blobs";

/// New bytes written to temporaries before they are synced and renamed
/// into the store, so that a large first backup does not hold its whole
/// blob directory in temporary files.
const BATCH_BYTES: u64 = 1 << 30;

/// Size and md5 of each stored revision, as blob lists record them.
pub type Known = HashMap<(u64, u64), (u64, String)>;

impl Repository {
    /// Where the revision `tid` of `oid` is stored.
    pub fn stored_blob(&self, oid: u64, tid: u64) -> PathBuf {
        self.path(STORE)
            .join(format!("{:02x}", oid & 0xff))
            .join(format!("{oid:016x}.{tid:016x}.blob"))
    }

    /// The name in the repository of the revision `tid` of `oid`.
    pub fn stored_blob_name(oid: u64, tid: u64) -> String {
        format!("{STORE}/{:02x}/{oid:016x}.{tid:016x}.blob", oid & 0xff)
    }

    /// The blob list of the backup stamped `stamp`.
    pub fn blob_list_path(&self, stamp: Stamp) -> PathBuf {
        self.path(&format!("{stamp}.{LIST_EXT}"))
    }

    /// Whether the backup stamped `stamp` has a blob list.
    pub fn has_blob_list(&self, stamp: Stamp) -> Result<bool> {
        if self.is_remote() {
            return Ok(self.size_of(&format!("{stamp}.{LIST_EXT}")).is_some());
        }
        let path = self.blob_list_path(stamp);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", &path, e)),
        }
    }

    /// Read the blob list of the backup stamped `stamp`; `None` when it
    /// has none (made without `--blob-dir`, or by ZODB's repozo).
    pub fn read_blob_list(&self, stamp: Stamp) -> Result<Option<BlobList>> {
        let path = self.blob_list_path(stamp);
        let Some(bytes) = self.read_small(&format!("{stamp}.{LIST_EXT}"))? else {
            return Ok(None);
        };
        BlobList::parse(&bytes)
            .map(Some)
            .map_err(|reason| Error::BadBlobList { path, reason })
    }

    /// Size and md5 of every revision the blob lists of `listing`'s data
    /// files record. A list that cannot be read is skipped with a warning
    /// (its revisions then count as unknown: read again, never trusted).
    pub fn known_blobs(&self, listing: &Listing, log: &Log) -> Result<Known> {
        let mut known = Known::new();
        let mut stamps: Vec<Stamp> = listing.files.iter().map(|f| f.name.stamp).collect();
        stamps.dedup();
        for s in stamps {
            let list = match self.read_blob_list(s) {
                Ok(l) => l,
                Err(e @ Error::BadBlobList { .. }) => {
                    log.warn(format_args!("{e}"));
                    None
                }
                Err(e) => return Err(e),
            };
            for b in list.into_iter().flat_map(|l| l.blobs) {
                if let Some(f) = b.file {
                    known.insert((b.oid, b.tid), f);
                }
            }
        }
        Ok(known)
    }

    /// Store the blob revisions of `records` from the blob directory
    /// `blob_dir` (laid out as `layout`), each once: a revision already in
    /// the store is not copied again. Returns the new backup's blob list.
    /// A revision whose file is missing from `blob_dir` is listed as
    /// missing, with a warning.
    pub fn store_blobs(
        &self,
        blob_dir: &Path,
        layout: Layout,
        records: &[BlobRecord],
        known: &Known,
        log: &Log,
    ) -> Result<BlobList> {
        // first what each revision needs, then the copies, on two cores
        let mut blobs = Vec::with_capacity(records.len());
        let mut to_copy: Vec<(usize, PathBuf, PathBuf, u64)> = Vec::new();
        // a stored revision that no committed list names was reused
        let mut unlisted = false;
        // (a revision is one record of one transaction: each comes once)
        for r in records {
            let src = blob_dir.join(layout.revision_path(r.oid, r.tid));
            let stored = self.stored_blob(r.oid, r.tid);
            let src_len = match std::fs::metadata(&src) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("stat", &src, e)),
            };
            let in_store = match std::fs::symlink_metadata(&stored) {
                _ if self.is_remote() => self.size_of(&Repository::stored_blob_name(r.oid, r.tid)),
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("stat", &stored, e)),
            };
            let file = match (in_store, src_len) {
                (Some(have), src_len) => {
                    if src_len.is_some_and(|n| n != have) {
                        return Err(Error::BlobChanged { path: src, stored });
                    }
                    match known.get(&(r.oid, r.tid)) {
                        Some((size, sum)) if *size == have => Some((have, sum.clone())),
                        // stored by a run that did not commit: its md5; that
                        // run may have been killed before the syncfs that
                        // makes its renames durable
                        _ => {
                            unlisted = true;
                            Some((have, self.md5_of_stored(r.oid, r.tid)?))
                        }
                    }
                }
                (None, None) => {
                    log.warn(format_args!(
                        "blob oid {} tid {} is missing from the blob directory ({}): \
                         listed as missing",
                        crate::format::blob::repr(r.oid),
                        crate::format::blob::repr(r.tid),
                        src.display()
                    ));
                    None
                }
                (None, Some(len)) => {
                    to_copy.push((blobs.len(), src, stored, len));
                    None // filled in below
                }
            };
            blobs.push(ListedBlob {
                oid: r.oid,
                tid: r.tid,
                file,
            });
        }
        let (copied, copied_bytes) = (to_copy.len(), to_copy.iter().map(|c| c.3).sum::<u64>());
        if let Some(remote) = self.remote() {
            // each upload visible once complete: nothing to settle
            let done = copy::each_on(&to_copy, UPLOADS, |(_, src, stored, _)| {
                let name = stored
                    .strip_prefix(self.dir())
                    .ok()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                upload_blob(remote, src, name)
            });
            self.changed();
            for ((i, ..), (len, sum)) in to_copy.iter().zip(done?) {
                blobs[*i].file = Some((len, sum));
            }
            log.note(format_args!(
                "blobs: {} revision(s) in the range, {copied} new ({copied_bytes} bytes uploaded)",
                blobs.len()
            ));
            return Ok(BlobList { layout, blobs });
        }
        if to_copy.is_empty() && unlisted {
            // durable before a list names them (each batch syncs otherwise)
            durable::sync_fs(self.dir())?;
        }
        // in batches of about BATCH_BYTES, each made durable at once
        let mut rest = &to_copy[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0u64;
            while n < rest.len() && (n == 0 || bytes < BATCH_BYTES) {
                bytes += rest[n].3;
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            rest = later;
            let done = copy::each_in_parallel(batch, bytes, |(_, src, _, _)| {
                let mut tmp = self.new_file()?;
                let (len, sum) = copy_blob(src, &tmp)?;
                // one descriptor per pending file would hit the limit on
                // open files (1024 by default) on a big first backup
                tmp.close();
                Ok((tmp, len, sum))
            })?;
            let mut pending = Vec::with_capacity(done.len());
            for ((i, _, stored, _), (tmp, len, sum)) in batch.iter().zip(done) {
                blobs[*i].file = Some((len, sum));
                pending.push((tmp, stored.clone()));
            }
            self.settle(pending)?;
        }
        log.note(format_args!(
            "blobs: {} revision(s) in the range, {copied} new ({copied_bytes} bytes copied)",
            blobs.len()
        ));
        Ok(BlobList { layout, blobs })
    }

    /// Make the temporaries durable, rename them into the store, and make
    /// the renames durable.
    fn settle(&self, pending: Vec<(TempFile, PathBuf)>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        durable::sync_fs(self.dir())?;
        for (tmp, dest) in pending {
            let dir = dest.parent().expect("a store path has a directory");
            std::fs::create_dir_all(dir).ctx("create", dir)?;
            tmp.rename_into(&dest, true)?;
        }
        durable::sync_fs(self.dir())
    }
}

/// Blob revisions uploaded at the same time to object storage.
const UPLOADS: usize = 8;

/// Upload the blob file `src` as the object `name`; returns its size and
/// md5. A small file is one request; a large one a multipart upload.
fn upload_blob(remote: &Remote, src: &Path, name: &str) -> Result<(u64, String)> {
    use std::io::{Read, Write};
    let mut f = File::open(src).ctx("open", src)?;
    let len = f.metadata().ctx("stat", src)?.len();
    let mut md5 = crate::io::md5::Md5::new();
    if len <= crate::repository::remote::PART as u64 {
        let mut bytes = Vec::with_capacity(len as usize);
        f.read_to_end(&mut bytes).ctx("read", src)?;
        if bytes.len() as u64 != len {
            return Err(Error::BlobChanged {
                path: src.to_path_buf(),
                stored: PathBuf::from(remote.url_of(name)),
            });
        }
        md5.update(&bytes);
        remote.write_small(name, &bytes)?;
        return Ok((len, crate::io::md5::hex(&md5.finalize())));
    }
    let mut w = remote.writer(name)?;
    let werr = |e: std::io::Error| Error::Remote(format!("write {}: {e}", remote.url_of(name)));
    let n = read::for_each_chunk_in(Box::new(f), src, false, |chunk| {
        md5.update(chunk);
        w.write_all(chunk).map_err(werr)
    })?;
    if n != len {
        return Err(Error::BlobChanged {
            path: src.to_path_buf(),
            stored: PathBuf::from(remote.url_of(name)),
        });
    }
    w.finish()?;
    Ok((len, crate::io::md5::hex(&md5.finalize())))
}

/// Copy the blob file `src` into `tmp` (not synced); returns its size and
/// md5.
fn copy_blob(src: &Path, tmp: &TempFile) -> Result<(u64, String)> {
    let f = File::open(src).ctx("open", src)?;
    let len = f.metadata().ctx("stat", src)?.len();
    let sum = copy::copy_file_md5(&f, src, len, tmp.as_file(), tmp.path())?;
    Ok((len, sum))
}

impl Repository {
    /// The md5 of the stored revision `tid` of `oid`, read whole.
    fn md5_of_stored(&self, oid: u64, tid: u64) -> Result<String> {
        let p = self.stored_blob(oid, tid);
        if !self.is_remote() {
            return read::md5_file(&p);
        }
        let mut m = crate::io::md5::Md5::new();
        let r = self.open_stored(&Repository::stored_blob_name(oid, tid))?;
        read::stream_data_from(r, &p, false, Some(&mut m), None)?;
        Ok(crate::io::md5::hex(&m.finalize()))
    }

    /// Problems of the stored revisions that the blob lists of `stamps`
    /// name, one line each: missing, another size, and (unless `quick`)
    /// another md5. Returns them with the number of revisions and bytes
    /// checked.
    pub fn check_blobs(&self, stamps: &[Stamp], quick: bool) -> (Vec<String>, u64, u64) {
        let mut bad = Vec::new();
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut seen = std::collections::HashSet::new();
        for &s in stamps {
            let list = match self.read_blob_list(s) {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(e) => {
                    bad.push(e.to_string());
                    continue;
                }
            };
            for b in list.blobs {
                let Some((size, sum)) = b.file else { continue };
                if !seen.insert((b.oid, b.tid)) {
                    continue;
                }
                let p = self.stored_blob(b.oid, b.tid);
                let what = || {
                    format!(
                        "blob oid {} tid {} ({}, listed in {})",
                        crate::format::blob::repr(b.oid),
                        crate::format::blob::repr(b.tid),
                        p.display(),
                        self.blob_list_path(s).display()
                    )
                };
                n += 1;
                let name = Repository::stored_blob_name(b.oid, b.tid);
                let meta = match self.is_remote() {
                    true => match self.size_of(&name) {
                        Some(len) => Ok(len),
                        None => Err(std::io::ErrorKind::NotFound.into()),
                    },
                    false => std::fs::metadata(&p).map(|m| m.len()),
                };
                match meta {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        bad.push(format!("{} is missing", what()));
                        continue;
                    }
                    Err(e) => {
                        bad.push(format!("{}: {e}", what()));
                        continue;
                    }
                    Ok(len) if len != size => {
                        bad.push(format!("{} has {len} bytes, expected {size}", what()));
                        continue;
                    }
                    Ok(_) => {}
                }
                bytes += size;
                if !quick {
                    match self.md5_of_stored(b.oid, b.tid) {
                        Ok(got) if got == sum => {}
                        Ok(got) => bad.push(format!("{} has md5 {got}, expected {sum}", what())),
                        Err(e) => bad.push(format!("{}: {e}", what())),
                    }
                }
            }
        }
        (bad, n, bytes)
    }

    /// The number of stored revisions and their bytes; `None` without a
    /// store.
    pub fn blob_store_size(&self) -> Option<(u64, u64)> {
        if let Some(r) = self.remote() {
            let objects = r.list_under(STORE).ok()?;
            return (!objects.is_empty()).then(|| (objects.len() as u64, objects.values().sum()));
        }
        let store = self.path(STORE);
        if !store.is_dir() {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        for e in walkdir::WalkDir::new(&store).min_depth(2).max_depth(2) {
            if let Ok(m) = e.and_then(|e| e.metadata()) {
                n += 1;
                bytes += m.len();
            }
        }
        Some((n, bytes))
    }

    /// The blob lists in the repository, by stamp.
    fn blob_lists(&self) -> Result<Vec<(Stamp, PathBuf)>> {
        let mut out = Vec::new();
        for name in self.entries().ctx("list", self.dir())? {
            let Some(stem) = name.strip_suffix(&format!(".{LIST_EXT}")) else {
                continue;
            };
            if let Ok(s) = Stamp::parse_date(stem) {
                if s.to_string() == stem {
                    out.push((s, self.path(&name)));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove what no backup refers to any more: the stored revisions that
    /// no blob list of a remaining data file names, then the blob lists
    /// whose data file is gone (removed by `--keep`, `-k`, or ZODB's
    /// repozo `-k`). Runs when there is such a list; a run killed midway
    /// leaves that list, so the next one finishes. Best effort: failures
    /// are warnings. Returns the bytes freed.
    pub fn collect_blobs(&self, log: &Log) -> u64 {
        match self.try_collect_blobs(log) {
            Ok(freed) => freed,
            Err(e) => {
                log.warn(format_args!(
                    "removing unused blob revisions failed: {e}; the next backup tries again"
                ));
                0
            }
        }
    }

    fn try_collect_blobs(&self, log: &Log) -> Result<u64> {
        let store = self.path(STORE);
        // without a store (no blob stored yet) the dead lists still go
        let have_store = match std::fs::symlink_metadata(&store) {
            _ if self.is_remote() => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("inspect", &store, e)),
            Ok(_) => true,
        };
        let listing = self.list()?;
        let live: std::collections::HashSet<Stamp> =
            listing.files.iter().map(|f| f.name.stamp).collect();
        let lists = self.blob_lists()?;
        let dead: Vec<&PathBuf> = lists
            .iter()
            .filter(|(s, _)| !live.contains(s))
            .map(|(_, p)| p)
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let mut referenced = std::collections::HashSet::new();
        for (s, _) in lists.iter().filter(|(s, _)| live.contains(s)) {
            for b in self.read_blob_list(*s)?.into_iter().flat_map(|l| l.blobs) {
                referenced.insert((b.oid, b.tid));
            }
        }
        let (mut removed, mut freed) = (0u64, 0u64);
        if let Some(objects) = self.remote_blob_listing()? {
            let r = self.remote().expect("remote");
            for (name, len) in objects.iter() {
                let key = name
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.strip_suffix(".blob"))
                    .and_then(|n| {
                        let (o, t) = n.split_once('.')?;
                        Some((
                            u64::from_str_radix(o, 16).ok()?,
                            u64::from_str_radix(t, 16).ok()?,
                        ))
                    });
                let Some(key) = key else { continue };
                if name != &Repository::stored_blob_name(key.0, key.1) || referenced.contains(&key)
                {
                    continue;
                }
                r.delete(name)?;
                removed += 1;
                freed += len;
            }
            self.changed();
        }
        let walk = (have_store && !self.is_remote())
            .then(|| walkdir::WalkDir::new(&store).min_depth(2).max_depth(2));
        for e in walk.into_iter().flatten() {
            let e = e.map_err(|e| {
                let p = e.path().unwrap_or(&store).to_path_buf();
                Error::io("list", &p, e.into())
            })?;
            let name = e.file_name().to_string_lossy();
            let key = name.strip_suffix(".blob").and_then(|n| {
                let (o, t) = n.split_once('.')?;
                Some((
                    u64::from_str_radix(o, 16).ok()?,
                    u64::from_str_radix(t, 16).ok()?,
                ))
            });
            let Some(key) = key else { continue };
            if referenced.contains(&key) {
                continue;
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(e.path()).ctx("remove", e.path())?;
            removed += 1;
            freed += len;
        }
        if !self.is_remote() {
            durable::sync_fs(self.dir())?;
        }
        for p in dead {
            self.remove_file(p).ctx("remove", p)?;
        }
        self.sync_dir()?;
        log.note(format_args!(
            "blobs: removed {removed} revision(s) no backup refers to, {freed} bytes freed"
        ));
        Ok(freed)
    }
}
