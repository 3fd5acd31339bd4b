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
use crate::io::{copy, read};
use crate::log::Log;
use crate::repository::chains::Resolved;
use crate::repository::Repository;

/// Prefix of our temporary files inside DIR (ZODB ignores files that do
/// not end in `.blob`).
const TEMP_PREFIX: &str = crate::io::durable::TEMP_PREFIX;

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
    /// The marker's header and the revisions the new state has in DIR,
    /// written as the marker once the stale files are gone.
    marker: (String, Vec<(u64, u64)>),
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
    let header = MARKER_HEADER.to_string();
    let existing = examine(repo, dir, layout, &header)?;
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
    let mut to_copy = Vec::new();
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
        let there = existing.contains(&dest);
        to_copy.push((repo.stored_blob(oid, tid), dest, size, sum, there));
    }
    // what an earlier recovery left is read again (two cores): a file
    // whose bytes are right stays, any other is copied again
    let kept: u64 = to_copy.iter().filter(|c| c.4).map(|c| c.2).sum();
    let right = copy::each_in_parallel(&to_copy, kept, |(_, dest, size, sum, there)| {
        Ok(*there && matches(dest, *size, sum)?)
    })?;
    let to_copy: Vec<_> = to_copy
        .into_iter()
        .zip(right)
        .filter(|(_, right)| !right)
        .map(|(c, _)| c)
        .collect();
    out.copied = to_copy.len() as u64;
    out.copied_bytes = to_copy.iter().map(|c| c.2).sum();
    // before anything is copied, the marker names every revision DIR may
    // hold until this run is done: what is there and what comes
    let mut after: Vec<(u64, u64)> = needed
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(k, _)| *k)
        .collect();
    after.sort();
    let mut during: Vec<(u64, u64)> = existing
        .iter()
        .filter_map(|p| blob_key(dir, layout, p))
        .chain(after.iter().copied())
        .collect();
    during.sort();
    during.dedup();
    write_marker(dir, &header, &during)?;
    out.marker = (header, after);
    copy::each_in_parallel(
        &to_copy,
        out.copied_bytes,
        |(stored, dest, size, sum, _)| copy_checked(repo, stored, dest, *size, sum),
    )?;
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
    write_marker(&done.dir, &done.marker.0, &done.marker.1)
}

/// The file in DIR naming the revisions recoveries from this repository
/// put there, so that they are recognised (and may be removed) even after
/// the repository stopped keeping them (`--keep`, `-k`).
const MARKER: &str = ".repozo-recovered";

/// The marker's first line. It names no repository: the files it lists
/// were put there by recoveries, not by a person, and came from a
/// repository's store; a repository's path would make the same directory
/// look foreign after the repository moved.
const MARKER_HEADER: &str = "repozo-recovered 1";

/// The revisions the marker in `dir` names, when it was written by
/// recoveries (its first line is `header`); empty otherwise.
fn read_marker(dir: &Path, header: &str) -> HashSet<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) else {
        return HashSet::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return HashSet::new();
    }
    lines
        .filter_map(|l| {
            let (o, t) = l.split_once(' ')?;
            Some((blob::parse_repr(o)?, blob::parse_repr(t)?))
        })
        .collect()
}

/// Write the marker durably, unless it already says exactly that (as after
/// a recovery into a new DIR, where it names the same revisions before and
/// after the `Data.fs` is put in place): a rewrite needs room for a
/// temporary copy, and on a full disk would fail a recovery that is
/// complete.
fn write_marker(dir: &Path, header: &str, revisions: &[(u64, u64)]) -> Result<()> {
    let mut s = format!("{header}\n");
    for (o, t) in revisions {
        s.push_str(&format!("{} {}\n", blob::repr(*o), blob::repr(*t)));
    }
    let path = dir.join(MARKER);
    if std::fs::read(&path).is_ok_and(|old| old == s.as_bytes()) {
        return Ok(());
    }
    durable::write_file(dir, &path, s.as_bytes())
}

/// The blob files in `dir`: `None` when `dir` is absent or empty (to be
/// created); an error when it holds anything but `.layout` (naming
/// `layout`), `tmp/`, our temporaries, and blob files of revisions this
/// repository knows. Our stale temporaries are removed.
fn examine(
    repo: &Repository,
    dir: &Path,
    layout: Layout,
    header: &str,
) -> Result<Option<HashSet<PathBuf>>> {
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
    if only_a_start(dir)? {
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
    // only revisions the store holds count as known: a file of a revision
    // that was missing from the source when it was backed up exists
    // nowhere else, so it is never removed
    let listing = repo.list()?;
    let known = repo.known_blobs(&listing, &Log::quiet())?;
    // and revisions an earlier recovery from this repository put there
    let ours = read_marker(dir, header);
    let mut files = HashSet::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.map_err(|e| {
            let p = e.path().unwrap_or(dir).to_path_buf();
            Error::io("list", &p, e.into())
        })?;
        let p = entry.path();
        let rel = p.strip_prefix(dir).expect("below dir");
        if rel == Path::new(blob::LAYOUT_MARKER)
            || rel == Path::new(MARKER)
            || rel.starts_with("tmp")
        {
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
                if entry.file_type().is_file() && (known.contains_key(&k) || ours.contains(&k)) =>
            {
                files.insert(p.to_path_buf());
            }
            _ => return Err(refuse(format!("it holds {}", rel.display()))),
        }
    }
    Ok(Some(files))
}

/// Whether `dir` is empty but for what a first recovery into it that
/// stopped before its `.layout` was in place leaves: an empty `tmp/` and
/// our temporaries (removed here). Such a directory is started afresh.
fn only_a_start(dir: &Path) -> Result<bool> {
    let mut ours = Vec::new();
    for e in std::fs::read_dir(dir).ctx("list", dir)? {
        let e = e.ctx("list", dir)?;
        let p = e.path();
        let kind = e.file_type().ctx("inspect", &p)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if kind.is_file() && name.starts_with(TEMP_PREFIX) {
            ours.push(p);
        } else if !(kind.is_dir()
            && name == "tmp"
            && std::fs::read_dir(&p).ctx("list", &p)?.next().is_none())
        {
            return Ok(false);
        }
    }
    for p in ours {
        std::fs::remove_file(&p).ctx("remove", &p)?;
    }
    Ok(true)
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
    Ok(read::md5_file(p)? == sum)
}

/// Copy the stored revision into place at `dest` (through a temporary
/// beside it, not synced: the caller syncs them all at once), checking its
/// size and md5 as it is copied.
fn copy_checked(repo: &Repository, stored: &Path, dest: &Path, size: u64, sum: &str) -> Result<()> {
    let damaged = |why: String| {
        Error::Blobs(format!(
            "the stored blob revision {} {why}: the repository is damaged",
            stored.display()
        ))
    };
    if repo.is_remote() {
        // streamed from the store, hashed on the way
        let name = stored
            .strip_prefix(repo.dir())
            .ok()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let have = repo
            .size_of(name)
            .ok_or_else(|| damaged("is missing".into()))?;
        if have != size {
            return Err(damaged(format!(
                "has {have} bytes, its blob list says {size}"
            )));
        }
        let parent = dest.parent().expect("a blob file has a directory");
        std::fs::create_dir_all(parent).ctx("create", parent)?;
        let mut tmp = TempFile::new_in(parent)?;
        let tmp_path = tmp.path().to_path_buf();
        let mut md5 = crate::io::md5::Md5::new();
        let r = repo.open_stored(name)?;
        let mut w: &File = tmp.file();
        crate::io::read::stream_data_from(
            r,
            stored,
            false,
            Some(&mut md5),
            Some((&mut w, &tmp_path)),
        )?;
        let got = crate::io::md5::hex(&md5.finalize());
        if got != sum {
            return Err(damaged(format!("has md5 {got}, its blob list says {sum}")));
        }
        return tmp.rename_into(dest, true);
    }
    let src = File::open(stored).map_err(|e| damaged(format!("cannot be read ({e})")))?;
    let have = src.metadata().ctx("inspect", stored)?.len();
    if have != size {
        return Err(damaged(format!(
            "has {have} bytes, its blob list says {size}"
        )));
    }
    let parent = dest.parent().expect("a blob file has a directory");
    std::fs::create_dir_all(parent).ctx("create", parent)?;
    let tmp = TempFile::new_in(parent)?;
    let got = copy::copy_file_md5(&src, stored, have, tmp.as_file(), tmp.path())?;
    if got != sum {
        return Err(damaged(format!("has md5 {got}, its blob list says {sum}")));
    }
    tmp.rename_into(dest, true)
}
