//! `-R --blob-dir=DIR`: the blob directory that goes with a recovered
//! `Data.fs`, holding exactly the blob revisions its blob records refer to
//! (the union of the blob lists of the chain's files up to the date), in
//! the source's layout, with its `.layout` and `tmp/`.
//!
//! DIR may be absent or empty (it is created), or an earlier recovery from
//! the same repository (a warm standby): then every blob file in it must be
//! a revision this repository knows, and it is brought to the new state,
//! adding what is missing before the `Data.fs` is put in place and
//! removing what the new state does not need after. Anything else in DIR
//! is refused: nothing a person put there is ever deleted.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::blob::{self, Layout};
use crate::io::durable::{self, TempFile};
use crate::io::md5::{self, Md5};
use crate::io::{copy, flush::Flusher, read};
use crate::log::Log;
use crate::repository::chains::Resolved;
use crate::repository::Repository;

/// Prefix of our temporary files inside DIR (ZODB ignores files that do
/// not end in `.blob`).
const TEMP_PREFIX: &str = crate::io::durable::TEMP_PREFIX;

/// Blob files up to this size are copied without the streaming copy's
/// threads (most blobs are small).
const SMALL_BLOB: u64 = 1 << 20;

/// What recovering the blobs found and did, and what is left for after the
/// `Data.fs` is in place.
#[derive(Debug, Default)]
pub struct BlobsRecovered {
    /// Revisions the recovered state needs (files; missing ones excluded).
    pub needed: u64,
    /// Revisions copied from the repository.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Blob files of an earlier recovery that the new state does not need:
    /// removed by [`finish`] once the `Data.fs` is in place.
    stale: Vec<PathBuf>,
    dir: PathBuf,
}

/// Put into `dir` every blob revision the chain's files refer to, checked
/// against its md5, and make them durable. Fails, touching nothing, when
/// `dir` holds anything this repository does not know.
pub fn recover_blobs(
    repo: &Repository,
    chain: &Resolved,
    dir: &Path,
    log: &Log,
) -> Result<BlobsRecovered> {
    // what the recovered state needs
    let mut needed: HashMap<(u64, u64), Option<(u64, String)>> = HashMap::new();
    let mut layout = None;
    for f in &chain.files {
        let list = repo.read_blob_list(f.file.name.stamp)?.ok_or_else(|| {
            Error::Blobs(format!(
                "{} has no blob list: it was made without --blob-dir (or by ZODB's repozo), \
                 so the blobs of its range are not in the repository; recover without --blob-dir",
                f.file.path.display()
            ))
        })?;
        layout = Some(list.layout);
        for b in list.blobs {
            needed.insert((b.oid, b.tid), b.file);
        }
    }
    let layout = layout.expect("a chain is never empty");
    // what DIR holds
    let existing = examine(repo, dir, layout)?;
    let mut out = BlobsRecovered {
        dir: dir.to_path_buf(),
        ..BlobsRecovered::default()
    };
    if existing.is_none() {
        std::fs::create_dir_all(dir.join("tmp")).ctx("create", dir)?;
        durable::write_file(
            dir,
            &dir.join(blob::LAYOUT_MARKER),
            layout.name().as_bytes(),
        )?;
    }
    let existing = existing.unwrap_or_default();
    let mut keys: Vec<_> = needed.keys().copied().collect();
    keys.sort();
    for (oid, tid) in keys {
        let dest = dir.join(layout.revision_path(oid, tid));
        let Some((size, sum)) = needed[&(oid, tid)].clone() else {
            // missing in the source when it was backed up: absent here too
            if existing.contains(&dest) {
                out.stale.push(dest);
            }
            continue;
        };
        out.needed += 1;
        if existing.contains(&dest) && matches(&dest, size, &sum)? {
            continue;
        }
        let stored = repo.stored_blob(oid, tid);
        copy_checked(&stored, &dest, size, &sum)?;
        out.copied += 1;
        out.copied_bytes += size;
    }
    for p in &existing {
        let wanted = blob_key(dir, layout, p).is_some_and(|k| needed.contains_key(&k));
        if !wanted && !out.stale.contains(p) {
            out.stale.push(p.clone());
        }
    }
    durable::sync_fs(dir)?;
    log.note(format_args!(
        "blobs: {} revision(s) in {}, {} copied ({} bytes)",
        out.needed,
        dir.display(),
        out.copied,
        out.copied_bytes
    ));
    Ok(out)
}

/// After the `Data.fs` is in place: remove the blob files of an earlier
/// recovery that the new state does not need.
pub fn finish(done: BlobsRecovered, log: &Log) -> Result<()> {
    for p in &done.stale {
        match std::fs::remove_file(p) {
            Ok(()) => log.note(format_args!("removed {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", p, e)),
        }
        // an oid directory left empty goes too (ZODB's pack does the same)
        if let Some(parent) = p.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    if !done.stale.is_empty() {
        durable::sync_fs(&done.dir)?;
    }
    Ok(())
}

/// The blob files in `dir`: `None` when `dir` is absent or empty (to be
/// created); an error when it holds anything but `.layout` (naming
/// `layout`), `tmp/`, our temporaries, and blob files of revisions this
/// repository knows. Our stale temporaries are removed.
fn examine(repo: &Repository, dir: &Path, layout: Layout) -> Result<Option<HashSet<PathBuf>>> {
    let refuse = |what: String| {
        Error::Blobs(format!(
            "{} is not empty and not an earlier recovery of this repository ({what}): \
             refusing to touch it; recover the blobs into a new directory",
            dir.display()
        ))
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", dir, e)),
        Ok(m) if !m.is_dir() => return Err(refuse("not a directory".into())),
        Ok(_) => {}
    }
    if std::fs::read_dir(dir).ctx("list", dir)?.next().is_none() {
        return Ok(None);
    }
    match std::fs::read(dir.join(blob::LAYOUT_MARKER)) {
        Ok(b) if Layout::parse(&b) == Some(layout) => {}
        Ok(b) => {
            return Err(refuse(format!(
                "its layout is {:?}, not {}",
                String::from_utf8_lossy(&b).trim(),
                layout.name()
            )))
        }
        Err(_) => return Err(refuse(format!("it has no {} file", blob::LAYOUT_MARKER))),
    }
    let listing = repo.list()?;
    let known = repo.known_blobs(&listing)?;
    let mut missing_known: HashSet<(u64, u64)> = HashSet::new();
    for s in listing.files.iter().map(|f| f.name.stamp) {
        for b in repo.read_blob_list(s)?.into_iter().flat_map(|l| l.blobs) {
            if b.file.is_none() {
                missing_known.insert((b.oid, b.tid));
            }
        }
    }
    let mut files = HashSet::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.map_err(|e| {
            let p = e.path().unwrap_or(dir).to_path_buf();
            Error::io("list", &p, e.into())
        })?;
        let p = entry.path();
        let rel = p.strip_prefix(dir).expect("below dir");
        if rel == Path::new(blob::LAYOUT_MARKER) || rel.starts_with("tmp") {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_dir() {
            continue;
        }
        if name.starts_with(TEMP_PREFIX) && entry.file_type().is_file() {
            std::fs::remove_file(p).ctx("remove", p)?;
            continue;
        }
        match blob_key(dir, layout, p) {
            Some(k)
                if entry.file_type().is_file()
                    && (known.contains_key(&k) || missing_known.contains(&k)) =>
            {
                files.insert(p.to_path_buf());
            }
            _ => return Err(refuse(format!("it holds {}", rel.display()))),
        }
    }
    Ok(Some(files))
}

/// The oid and tid of a blob file at `p` in `dir` laid out as `layout`,
/// when its path is exactly that revision's.
fn blob_key(dir: &Path, layout: Layout, p: &Path) -> Option<(u64, u64)> {
    let rel = p.strip_prefix(dir).ok()?.to_str()?;
    let (oid_dir, file) = rel.rsplit_once('/')?;
    let tid = blob::parse_repr(file.strip_suffix(".blob")?)?;
    let oid = match layout {
        Layout::Lawn => blob::parse_repr(oid_dir)?,
        Layout::Bushy => {
            let bytes: Option<Vec<u8>> = oid_dir
                .split('/')
                .map(|c| {
                    c.strip_prefix("0x")
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            let bytes = bytes?;
            if bytes.len() != 8 {
                return None;
            }
            u64::from_be_bytes(bytes.try_into().ok()?)
        }
    };
    (layout.revision_path(oid, tid) == rel).then_some((oid, tid))
}

/// Whether the file at `p` has `size` bytes with md5 `sum`.
fn matches(p: &Path, size: u64, sum: &str) -> Result<bool> {
    if std::fs::metadata(p).ctx("inspect", p)?.len() != size {
        return Ok(false);
    }
    let mut m = Md5::new();
    read::stream_data(p, false, Some(&mut m), None)?;
    Ok(md5::hex(&m.finalize()) == sum)
}

/// Copy the stored revision into place at `dest` (through a temporary
/// beside it), checking its size and md5 as it is copied.
fn copy_checked(stored: &Path, dest: &Path, size: u64, sum: &str) -> Result<()> {
    let src = File::open(stored).map_err(|e| {
        Error::Blobs(format!(
            "the stored blob revision {} cannot be read ({e}): the repository is damaged",
            stored.display()
        ))
    })?;
    let have = src.metadata().ctx("inspect", stored)?.len();
    let parent = dest.parent().expect("a blob file has a directory");
    std::fs::create_dir_all(parent).ctx("create", parent)?;
    let mut tmp = TempFile::new_in(parent)?;
    let tmp_path = tmp.path().to_path_buf();
    if have <= SMALL_BLOB {
        // one read and one write on this thread: the streaming copy's
        // threads cost more than they save on a small file; the final
        // syncfs makes it durable
        let mut buf = vec![0u8; have as usize];
        let n = read::read_full_at(&src, &mut buf, 0).ctx("read", stored)?;
        let mut m = Md5::new();
        m.update(&buf[..n]);
        if n as u64 != size || md5::hex(&m.finalize()) != sum {
            return Err(Error::Blobs(format!(
                "the stored blob revision {} does not match its blob list (size {n}, \
                 expected {size}): the repository is damaged",
                stored.display()
            )));
        }
        std::io::Write::write_all(tmp.file(), &buf).ctx("write", &tmp_path)?;
        return tmp.rename_into(dest, true);
    }
    let flusher = Flusher::new(tmp.file(), &tmp_path)?;
    let out = copy::Out::new(tmp.file(), &tmp_path, &flusher);
    let (got, _) = copy::copy_and_hash(&src, stored, 0, have, out, true)?;
    flusher.finish()?;
    if have != size || got.as_deref() != Some(sum) {
        return Err(Error::Blobs(format!(
            "the stored blob revision {} does not match its blob list (size {have}, expected \
             {size}): the repository is damaged",
            stored.display()
        )));
    }
    tmp.rename_into(dest, true)
}
