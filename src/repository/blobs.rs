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
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::blob::{BlobList, Layout, ListedBlob};
use crate::format::filestorage::BlobRecord;
use crate::format::stamp::Stamp;
use crate::io::durable::TempFile;
use crate::io::md5::{self, Md5};
use crate::io::read;
use crate::log::Log;
use crate::repository::chains::Listing;
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

    /// The blob list of the backup stamped `stamp`.
    pub fn blob_list_path(&self, stamp: Stamp) -> PathBuf {
        self.path(&format!("{stamp}.{LIST_EXT}"))
    }

    /// Read the blob list of the backup stamped `stamp`; `None` when it
    /// has none (made without `--blob-dir`, or by ZODB's repozo).
    pub fn read_blob_list(&self, stamp: Stamp) -> Result<Option<BlobList>> {
        let path = self.blob_list_path(stamp);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        BlobList::parse(&bytes)
            .map(Some)
            .map_err(|reason| Error::BadBlobList { path, reason })
    }

    /// Size and md5 of every revision the blob lists of `listing`'s data
    /// files record.
    pub fn known_blobs(&self, listing: &Listing) -> Result<Known> {
        let mut known = Known::new();
        let mut stamps: Vec<Stamp> = listing.files.iter().map(|f| f.name.stamp).collect();
        stamps.dedup();
        for s in stamps {
            for b in self.read_blob_list(s)?.into_iter().flat_map(|l| l.blobs) {
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
        let mut blobs = Vec::with_capacity(records.len());
        let mut pending: Vec<(TempFile, PathBuf)> = Vec::new();
        let mut pending_bytes = 0u64;
        let (mut copied, mut copied_bytes) = (0u64, 0u64);
        for r in records {
            let src = blob_dir.join(layout.revision_path(r.oid, r.tid));
            let stored = self.stored_blob(r.oid, r.tid);
            let src_len = match std::fs::metadata(&src) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("stat", &src, e)),
            };
            let in_store = match std::fs::symlink_metadata(&stored) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("stat", &stored, e)),
            };
            let file = match (in_store, src_len) {
                (Some(have), src_len) => {
                    if src_len.is_some_and(|n| n != have) {
                        return Err(Error::BlobChanged {
                            path: src,
                            stored,
                        });
                    }
                    match known.get(&(r.oid, r.tid)) {
                        Some((size, sum)) if *size == have => Some((have, sum.clone())),
                        // stored by a run that did not commit: its md5
                        _ => Some((have, md5_of(&stored)?)),
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
                (None, Some(_)) => {
                    if pending.iter().any(|(_, d)| *d == stored) {
                        // listed twice in the range: already on its way
                        blobs.push(blobs_entry(&blobs, r));
                        continue;
                    }
                    let mut tmp = self.new_file()?;
                    let (len, sum) = copy_blob(&src, &mut tmp)?;
                    pending.push((tmp, stored));
                    pending_bytes += len;
                    copied += 1;
                    copied_bytes += len;
                    if pending_bytes >= BATCH_BYTES {
                        self.settle(std::mem::take(&mut pending))?;
                        pending_bytes = 0;
                    }
                    Some((len, sum))
                }
            };
            blobs.push(ListedBlob {
                oid: r.oid,
                tid: r.tid,
                file,
            });
        }
        self.settle(pending)?;
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
        sync_fs(self.dir())?;
        for (tmp, dest) in pending {
            let dir = dest.parent().expect("a store path has a directory");
            std::fs::create_dir_all(dir).ctx("create", dir)?;
            tmp.rename_into(&dest, true)?;
        }
        sync_fs(self.dir())
    }
}

/// The entry of a revision listed earlier in `blobs`.
fn blobs_entry(blobs: &[ListedBlob], r: &BlobRecord) -> ListedBlob {
    blobs
        .iter()
        .find(|b| b.oid == r.oid && b.tid == r.tid)
        .cloned()
        .expect("listed before")
}

/// Copy the blob file `src` into `tmp` (not synced); returns its size and
/// md5.
fn copy_blob(src: &Path, tmp: &mut TempFile) -> Result<(u64, String)> {
    let f = File::open(src).ctx("open", src)?;
    let len = f.metadata().ctx("stat", src)?.len();
    let tmp_path = tmp.path().to_path_buf();
    let mut md5 = Md5::new();
    let n = read::read_in_order(&f, 0, len, false, |b| {
        md5.update(b);
        crate::progress::read(b.len() as u64);
    })
    .ctx("read", src)?;
    // the bytes once more, now into the copy: blob files are small, and
    // still in the page cache
    let mut out = std::io::BufWriter::with_capacity(crate::io::buf::CHUNK, tmp.file());
    read::read_in_order(&f, 0, n, false, |b| {
        let _ = out.write_all(b);
    })
    .ctx("read", src)?;
    out.flush().ctx("write", &tmp_path)?;
    drop(out);
    let written = tmp.file().metadata().ctx("stat", &tmp_path)?.len();
    if n != len || written != n {
        return Err(Error::io(
            "copy",
            src,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{n} of {len} bytes read, {written} written"),
            ),
        ));
    }
    Ok((n, md5::hex(&md5.finalize())))
}

/// The md5 of a file.
fn md5_of(path: &Path) -> Result<String> {
    let mut m = Md5::new();
    read::stream_data(path, false, Some(&mut m), None)?;
    Ok(md5::hex(&m.finalize()))
}

/// `syncfs` on the file system holding `dir`: every file written there,
/// and every rename, is durable when it returns.
fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let d = File::open(dir).ctx("open", dir)?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io("sync", dir, std::io::Error::last_os_error()));
    }
    Ok(())
}
