//! `-B`: decide between a full backup, an increment and nothing, the way
//! ZODB's repozo decides, and write the new files durably.
//!
//! The decision (repozo's `do_backup`): no chain or `-F` → full. With `-Q`,
//! compare the md5 of the source over the last `.dat` range that holds
//! bytes with the recorded one; without it, compare the chain (as its
//! `.dat` lists it) with the same-length prefix of the source, byte for
//! byte, where repozo compares two md5 sums. Equal → increment from the
//! chain's end (nothing when no transaction was committed since), source
//! shorter or different → full (the database was packed). A chain that
//! recovery could not use (missing or broken `.dat`) is never extended.
//!
//! Files are published in an order that keeps every earlier state
//! recoverable: the data file, then its `.index`, then the `.dat` line that
//! makes it part of the chain. A failure before the `.dat` line is durable
//! rolls back what was published; the repository lock keeps other runs of
//! ours out meanwhile.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::blob::{self, BlobList, Layout};
use crate::format::dat::{self, DatFile, DatLine};
use crate::format::filestorage::{self, Scan};
use crate::format::index::Index;
use crate::format::stamp::{DataName, Kind, Stamp};
use crate::io::copy::{self, CopyError, Sink};
use crate::io::durable::{self, TempFile};
use crate::io::flush::{self, Flusher};
use crate::io::md5::{self, Md5};
use crate::io::{buf, read, xxh3};
use crate::log::Log;
use crate::repository::blobs::Known;
use crate::repository::chains::{self, DataFile};
use crate::repository::publish::NewBackup;
use crate::repository::sums::{self, Sums};
use crate::repository::Repository;

/// What `-B` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// Repository directory, as given (written into `.dat` lines).
    pub repository: PathBuf,
    /// The source `Data.fs`.
    pub file: PathBuf,
    /// `-F`
    pub full: bool,
    /// `-Q`
    pub quick: bool,
    /// `-z`
    pub gzip: bool,
    /// `-k`
    pub kill_old: bool,
    /// `--keep N`: after the backup, keep the N newest full backups with
    /// their chains and remove older chains.
    pub keep: Option<usize>,
    /// `--blob-dir`: the source's blob directory, backed up with it.
    pub blob_dir: Option<PathBuf>,
    /// `--prune-index`: keep only the `.index` of the newest chain's full
    /// backup and of its newest increment.
    pub prune_index: bool,
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new chain starts with this file holding `[0, end)`.
    Full { name: String, end: u64, md5: String },
    /// The chain grew by this file holding `[start, end)`.
    Incremental {
        name: String,
        start: u64,
        end: u64,
        md5: String,
    },
    /// No transaction was committed since the last backup.
    NothingToDo,
}

/// Why a full backup is made (for `-v`).
enum Reason {
    Forced,
    NoChain,
    MissingDat,
    BrokenChain,
    Shrunk,
    Changed,
    NoBlobs,
}

impl Reason {
    fn text(&self) -> &'static str {
        match self {
            Reason::Forced => "doing a full backup (-F)",
            Reason::NoChain => "no backup yet: doing a full backup",
            Reason::MissingDat => "missing or empty .dat file (full backup)",
            Reason::BrokenChain => "starting a new chain (full backup)",
            Reason::Shrunk => "file shrunk, possibly because of a pack (full backup)",
            Reason::Changed => "file changed, possibly because of a pack (full backup)",
            Reason::NoBlobs => {
                "the chain has backups without blobs (made without --blob-dir): \
                 a full backup starts a chain whose blobs recover"
            }
        }
    }
}

/// Run a backup.
pub fn backup(opts: &BackupOptions, log: &Log) -> Result<Outcome> {
    let repo = &Repository::open(&opts.repository)?;
    let _lock = repo.lock(true, log)?;
    let outcome = backup_locked(opts, repo, log)?;
    // the backup is committed: what follows is best effort
    if let Some(n) = opts.keep {
        repo.retain(n, log);
    }
    if opts.prune_index {
        let (n, freed) = repo.prune_indexes(log);
        log.note(format_args!(
            "--prune-index: removed {n} older increment .index file(s), {freed} bytes freed"
        ));
    }
    repo.collect_blobs(log);
    Ok(outcome)
}

/// The FileStorage scan reads the source with `pread`, retrying after
/// EINTR ([`read::read_full_at`]).
impl filestorage::ReadAt for File {
    fn read_full_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        read::read_full_at(self, buf, pos)
    }
}

fn backup_locked(opts: &BackupOptions, repo: &Repository, log: &Log) -> Result<Outcome> {
    repo.remove_stale_temporaries(log)?;
    let listing = repo.list()?;
    // Named first: a backup refused for a stamp in the future writes nothing.
    let stamp = new_stamp(&listing, log)?;
    // The source: opened read-only, always.
    let src = File::open(&opts.file).ctx("open", &opts.file)?;
    let size = src.metadata().ctx("stat", &opts.file)?.len();
    filestorage::check_magic(&src, size, &opts.file)?;
    let blobs = match &opts.blob_dir {
        Some(dir) => Some(BlobSource {
            layout: blob_layout(dir)?,
            dir: dir.clone(),
            known: repo.known_blobs(&listing, log)?,
        }),
        None => None,
    };
    let blobs = blobs.as_ref();

    // The newest chain as its .dat describes it, whatever the clock says (a
    // clock that went back must not make us start an out-of-order chain).
    // Backup and recovery agree on one truth: a chain that recovery could
    // not use is never extended.
    let mut chain: Vec<DataFile> = Vec::new();
    let mut dat_file: Option<DatFile> = None;
    let decision = if opts.full {
        Err(Reason::Forced)
    } else {
        match repo.resolve_in(&listing, None, log) {
            // a chain that recovery could not use: start a new one
            // (its files stay: a file a .dat lists is never set aside)
            Err(
                e @ (Error::BadDat { .. } | Error::MissingFile { .. } | Error::SameStamp { .. }),
            ) => {
                log.note(format_args!("the newest chain cannot be extended: {e}"));
                log.warn(format_args!(
                    "the newest chain cannot be extended ({e}): this backup starts a new chain; \
                     the damaged chain's files are left as they are"
                ));
                Err(Reason::BrokenChain)
            }
            // failing to read the repository is not a reason for a new chain
            Err(e) => return Err(e),
            Ok(None) => Err(Reason::NoChain),
            Ok(Some(r)) if !r.has_dat => Err(Reason::MissingDat),
            // with --blob-dir, a chain whose backups do not all list their
            // blobs could never recover them: start one that can
            Ok(Some(r)) if blobs.is_some() && !all_list_blobs(repo, &r)? => Err(Reason::NoBlobs),
            Ok(Some(r)) => {
                // The last range that holds bytes: an empty increment
                // (ZODB's repozo writes them) has an md5 that matches any
                // source, so it proves nothing. The chain is contiguous, so
                // that range ends where the chain ends.
                let last = r
                    .files
                    .iter()
                    .rev()
                    .filter_map(|c| c.line.clone())
                    .find(|l| !l.is_empty());
                repo.set_aside(&listing, &r.orphans, log)?;
                let lines: Vec<Option<DatLine>> = r.files.iter().map(|c| c.line.clone()).collect();
                chain = r.files.into_iter().map(|c| c.file).collect();
                dat_file = r.dat_file;
                let sums = repo.sums();
                match last {
                    None => Err(Reason::MissingDat),
                    Some(last) if opts.quick => decide_quick(opts, &src, size, &last, &sums, log)?,
                    Some(last) => decide_full_check(
                        opts, repo, &src, size, &chain, &lines, last.end, &sums, log,
                    )?,
                }
            }
        }
    };

    match decision {
        Err(reason) => {
            log.note(format_args!("{}", reason.text()));
            let scan = scan_source(opts, repo, &src, size, None, blobs.map(|_| 4), log)?;
            write_full(opts, repo, &src, scan, blobs, stamp, log)
        }
        Ok(start) => {
            let last = chain.last().expect("an extended chain is not empty");
            let chain_index = (repo.index_path(last), start);
            let blobs_from = blobs.map(|_| start);
            let mut scan = scan_source(opts, repo, &src, size, Some(chain_index), blobs_from, log)?;
            let end = scan.0.end;
            if end == start {
                log.note(format_args!("No changes, nothing to do"));
                return Ok(Outcome::NothingToDo);
            }
            if end < start {
                // The backed-up bytes match but the source's committed
                // data now ends before them: not a state we can extend.
                log.note(format_args!(
                    "committed data ends at {end} before the backed-up {start} (full backup)"
                ));
                if blobs.is_some() {
                    // a full backup refers to every blob record
                    let all =
                        filestorage::scan_from(&src, &opts.file, end, 4, Index::new(), Some(4))?;
                    scan.0.blobs = all.blobs;
                }
                return write_full(opts, repo, &src, scan, blobs, stamp, log);
            }
            log.note(format_args!("doing incremental, starting at: {start}"));
            write_incremental(
                opts,
                repo,
                blobs,
                &chain[0],
                dat_file.as_ref(),
                &src,
                scan,
                start,
                stamp,
                log,
            )
        }
    }
}

/// Whether every file of the chain has a blob list (an error inspecting
/// one is an error, never a reason for a full backup).
fn all_list_blobs(repo: &Repository, chain: &chains::Resolved) -> Result<bool> {
    for c in &chain.files {
        if !repo.has_blob_list(c.file.name.stamp)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The source's blob directory, for a backup with `--blob-dir`.
struct BlobSource {
    dir: PathBuf,
    layout: Layout,
    /// What the repository's blob lists record of stored revisions.
    known: Known,
}

/// The layout of a blob directory, as ZODB chooses it: named by its
/// `.layout` file, or `lawn` for a directory without one whose entries all
/// look like lawn oid directories (or `tmp`). Anything else is not a blob
/// directory: an error before anything is written.
fn blob_layout(dir: &Path) -> Result<Layout> {
    let not = |reason: String| Error::NotBlobDir {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| not(e.to_string()))?;
    if !meta.is_dir() {
        return Err(not("not a directory".into()));
    }
    let marker = dir.join(blob::LAYOUT_MARKER);
    match std::fs::read(&marker) {
        Ok(bytes) => Layout::parse(&bytes).ok_or_else(|| {
            not(format!(
                "its {} names {:?}, not bushy or lawn",
                blob::LAYOUT_MARKER,
                String::from_utf8_lossy(&bytes).trim()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let entries = std::fs::read_dir(dir).ctx("list", dir)?;
            let mut any = false;
            for e in entries {
                let name = e.ctx("list", dir)?.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                if name != "tmp" && blob::parse_repr(&name).is_none() {
                    return Err(not(format!(
                        "it has no {} file and holds {name:?}",
                        blob::LAYOUT_MARKER
                    )));
                }
                any = true;
            }
            if !any {
                return Err(not(format!(
                    "it is empty, without a {} file",
                    blob::LAYOUT_MARKER
                )));
            }
            Ok(Layout::Lawn)
        }
        Err(e) => Err(Error::io("read", &marker, e)),
    }
}

/// Find the committed end of the source and its index, scanning only what
/// no trustworthy index covers. Returns the scan and whether its index is
/// known to come from a scan (recorded in our sums with the new `.index`).
///
/// In this order:
/// 1. the index of the chain being extended (valid exactly up to the
///    chain's end, whose bytes were just checked against the source), only
///    when our sums record it as built by a scan: then the result is too;
/// 2. the source's own `Data.fs.index`, as ZODB's `FileStorage` takes it
///    (within the source and sane); the result is as good as that file,
///    so it is not recorded as scanned;
/// 3. a scan from the beginning (recorded as scanned).
///
/// An index built on top of a `Data.fs.index` is never the starting point
/// of a later backup: once that file is gone ZODB rescans, and so do we,
/// so a stale `Data.fs.index` that passed the sanity check is not carried
/// into every later `.index` (issue 19, case 7). Each index must pass
/// ZODB's sanity check; an unreadable or insane one is skipped with a
/// note, never an error.
#[allow(clippy::too_many_arguments)]
fn scan_source(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    size: u64,
    chain_index: Option<(PathBuf, u64)>,
    blobs_from: Option<u64>,
    log: &Log,
) -> Result<(Scan, bool)> {
    // one index loaded and checked; `trusted`: the base is a scan's
    let usable = |path: &Path, must_be: Option<u64>, trusted: bool| -> Option<(u64, Index, bool)> {
        match load_index(repo, path, must_be, size, trusted) {
            Ok(None) => None,
            Ok(Some((pos, index))) if filestorage::index_is_sane(src, size, &index, pos) => {
                log.note(format_args!(
                    "using index {} ({} objects up to {pos}{})",
                    path.display(),
                    index.len(),
                    if trusted { ", built by a scan" } else { "" }
                ));
                Some((pos, index, trusted))
            }
            Ok(Some(_)) => {
                log.note(format_args!(
                    "ignoring index {}: it does not match the source",
                    path.display()
                ));
                None
            }
            Err(why) => {
                log.note(format_args!("ignoring index {}: {why}", path.display()));
                None
            }
        }
    };
    let mut live = opts.file.clone().into_os_string();
    live.push(".index");
    let base = chain_index
        .and_then(|(path, must_be)| usable(&path, Some(must_be), true))
        .or_else(|| usable(Path::new(&live), None, false));
    let (start, index, trusted) = match base {
        Some(b) => b,
        None => {
            log.note(format_args!("no usable index: scanning the whole source"));
            (4, Index::new(), true)
        }
    };
    let mut scan = filestorage::scan_from(src, &opts.file, size, start, index, blobs_from)?;
    log.note(format_args!(
        "scanned {} bytes from {start}: committed data ends at {}",
        scan.end - start,
        scan.end
    ));
    if let Some(from) = blobs_from.filter(|&f| f < start) {
        // the index started after the backup's range does: the blob
        // records between are found by walking that part too
        let before =
            filestorage::scan_from(src, &opts.file, start, from, Index::new(), Some(from))?;
        if before.end != start {
            return Err(Error::NotFileStorage {
                path: opts.file.clone(),
                reason: format!("no transaction ends at {start}, where its index says"),
            });
        }
        scan.blobs.splice(0..0, before.blobs);
    }
    Ok((scan, trusted))
}

/// Load an `.index` that lies within the source (at `must_be` when given)
/// and, when `scanned`, that our sums record as built by a scan, with the
/// same position and bytes. `Ok(None)`: there is none; `Err`: why it is
/// not usable.
fn load_index(
    repo: &Repository,
    path: &Path,
    must_be: Option<u64>,
    size: u64,
    scanned: bool,
) -> std::result::Result<Option<(u64, Index)>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // the chain's .index through the repository, the source's beside it
    let read = match scanned {
        true => repo.read_small(name).map_err(|e| e.to_string()),
        false => match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    };
    let bytes = match read? {
        Some(b) => b,
        None => return Ok(None),
    };
    let pos = Index::read_pos(&bytes[..])?;
    if must_be.is_some_and(|m| m != pos) || !(4..=size).contains(&pos) {
        return Err(format!("its position {pos} does not fit the source"));
    }
    if scanned {
        let hash = xxhash_rust::xxh3::xxh3_128(&bytes);
        if !repo.sums().index_trusted(name, pos, hash) {
            return Err("not known to come from a scan of the source (ZODB would rescan)".into());
        }
    }
    Index::read_from(&bytes[..]).map(Some)
}

/// `-Q`: trust the last `.dat` line. `Ok(Ok(end))` to extend from `end`.
/// When our sums know the file, the source's range is checked with xxh3
/// (a match means the md5 matches too); anything else is decided by the
/// md5, as ZODB's repozo decides.
fn decide_quick(
    opts: &BackupOptions,
    src: &File,
    size: u64,
    last: &DatLine,
    sums: &Sums,
    log: &Log,
) -> Result<std::result::Result<u64, Reason>> {
    if size < last.end {
        return Ok(Err(Reason::Shrunk));
    }
    if let Some(e) = sums.for_line(last) {
        if source_matches(opts, src, last.start, last.len(), e.content)? {
            log.note(format_args!("last incremental file: {}", last.name));
            log.note(format_args!(
                "source range [{}..{}] has the fast checksum recorded with md5 {}",
                last.start, last.end, last.md5
            ));
            return Ok(Ok(last.end));
        }
        log.note(format_args!(
            "source range [{}..{}] differs from its fast checksum: checking its md5",
            last.start, last.end
        ));
    }
    let srcsum = read::md5_range(src, &opts.file, last.start, last.len())?;
    log.note(format_args!("last incremental file: {}", last.name));
    log.note(format_args!("last incremental checksum: {}", last.md5));
    log.note(format_args!(
        "source checksum range: [{}..{}], sum: {srcsum}",
        last.start, last.end
    ));
    if srcsum == last.md5 {
        Ok(Ok(last.end))
    } else {
        Ok(Err(Reason::Changed))
    }
}

/// Whether the source's `[start, start + len)` has the xxh3 `want`.
fn source_matches(
    opts: &BackupOptions,
    src: &File,
    start: u64,
    len: u64,
    want: u128,
) -> Result<bool> {
    let (h, n) = xxh3::hash_range(src, start, len).ctx("read", &opts.file)?;
    crate::progress::read(n);
    Ok(n == len && h == want)
}

/// Whether the backup file `f` and the source's `[at, at + len)` both have
/// the xxh3 `want` (the one our sums recorded with the `.dat` md5). Both
/// are read, on two threads; a backup file that cannot be read or hashes
/// differently is left to the byte comparison, which names the problem.
#[allow(clippy::too_many_arguments)]
fn both_match(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    f: &DataFile,
    at: u64,
    len: u64,
    want: u128,
    log: &Log,
) -> Result<bool> {
    let (backup, source) = std::thread::scope(|scope| {
        let backup = scope.spawn(|| repo.hash_data(&f.file_name(), f.name.gzip));
        let source = xxh3::hash_range(src, at, len).ctx("read", &opts.file);
        (backup.join().expect("hashing does not panic"), source)
    });
    let (h, n) = source?;
    if n != len || h != want {
        return Ok(false);
    }
    match backup {
        Ok((h, n)) if n == len && h == want => Ok(true),
        Ok(_) => {
            log.note(format_args!(
                "{} does not hold the bytes its .dat line records (damaged?)",
                f.path.display()
            ));
            Ok(false)
        }
        Err(e) => {
            log.note(format_args!("{e}"));
            Ok(false)
        }
    }
}

/// Without `-Q`: compare the whole chain with the source's prefix.
#[allow(clippy::too_many_arguments)]
fn decide_full_check(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    size: u64,
    chain: &[DataFile],
    lines: &[Option<DatLine>],
    expected: u64,
    sums: &Sums,
    log: &Log,
) -> Result<std::result::Result<u64, Reason>> {
    if size < expected {
        return Ok(Err(Reason::Shrunk));
    }
    crate::progress::phase("checking", expected);
    // ZODB's repozo compares the md5 of the whole chain (it reads every
    // backup file) with the md5 of the same length of the source, and so do
    // we: every backup file is read. For a file our sums know, the backup
    // file's bytes and the source's range are both hashed with xxh3 (at
    // once, on two threads) and must both equal the recorded hash: then
    // the backup file holds the bytes whose md5 the `.dat` records, and the
    // source holds them too. Hashing only the source against the cache
    // would never notice a damaged backup file (issue 19, case 1). Other
    // files, and any mismatch, are compared byte for byte with the source,
    // which decides the same (but for md5 collisions), stops at the first
    // difference, and costs one pass instead of two hashes.
    let mut at = 0u64;
    let mut fast = 0usize;
    for (f, line) in chain.iter().zip(lines) {
        let len = line.as_ref().map_or(0, |l| l.len());
        if let Some(e) = line.as_ref().and_then(|l| sums.for_line(l)) {
            if e.start == at && both_match(opts, repo, src, f, at, len, e.content, log)? {
                at += len;
                fast += 1;
                continue;
            }
        }
        let same = match repo
            .open_data(&f.file_name(), f.name.gzip)
            .and_then(|r| read::same_as_source_from(r, &f.path, f.name.gzip, src, &opts.file, at))
        {
            // a damaged gzip backup differs from any source: a new full
            // backup heals the repository (a read error still fails)
            Err(e @ Error::BadGzip { .. }) => {
                log.note(format_args!("{e}"));
                None
            }
            other => other?,
        };
        match same {
            Some(n) if n == len => at += n,
            Some(n) => {
                log.note(format_args!(
                    "{} holds {n} bytes but its .dat line says {len}",
                    f.path.display()
                ));
                return Ok(Err(Reason::Changed));
            }
            None => {
                log.note(format_args!(
                    "{} differs from the source (at or after byte {at})",
                    f.path.display()
                ));
                return Ok(Err(Reason::Changed));
            }
        }
    }
    if at != expected {
        log.note(format_args!(
            "the chain holds {at} bytes but its .dat says {expected}"
        ));
        return Ok(Err(Reason::Changed));
    }
    log.note(format_args!(
        "repository state: {at} bytes, identical to the source's first {at} bytes \
         ({fast} of {} file(s) by fast checksum)",
        chain.len()
    ));
    Ok(Ok(expected))
}

/// The stamp for a new backup: now, or one second after the newest stamp in
/// the repository if that is not earlier, so stamps strictly increase. A
/// newest stamp more than [`crate::format::stamp::FUTURE_TOLERANCE`] after now is
/// an error: a clock is wrong, and naming after it would shift every later
/// stamp (and what `-D` finds) by that much.
fn new_stamp(listing: &chains::Listing, log: &Log) -> Result<Stamp> {
    let now = Stamp::now()?;
    match listing.newest_stamp {
        Some(newest) if crate::format::stamp::too_far_ahead(newest, now).is_some() => {
            Err(Error::Clock(format!(
                "refusing to back up: the repository has a backup stamped {newest}, {} after \
                 the clock's {now} UTC (more than {} ahead): if the clock is wrong, fix it; \
                 if it was wrong when that backup was made, move the files stamped after \
                 {now} out of the repository; nothing was written",
                crate::format::stamp::human(newest.seconds_since(now)),
                crate::format::stamp::human(crate::format::stamp::FUTURE_TOLERANCE),
            )))
        }
        Some(newest) if newest >= now => {
            let s = newest.next_second();
            if !s.is_valid() || s.to_string().len() != 19 {
                return Err(Error::BadDate(format!(
                    "{s} (the second after the newest backup, {newest})"
                )));
            }
            log.note(format_args!(
                "the repository already has a backup at {newest}; naming this one {s}"
            ));
            Ok(s)
        }
        _ => Ok(now),
    }
}

/// What [`prepare_data`] wrote: the `.dat` md5 and the fast sums.
struct Written {
    md5: String,
    content: u128,
    stored: u128,
    stored_len: u64,
    /// xxh3-128 of the `.index` written beside the data file.
    index_hash: u128,
}

impl Written {
    fn entry(&self, name: String, start: u64, end: u64) -> sums::Entry {
        sums::Entry {
            name,
            start,
            end,
            md5: self.md5.clone(),
            content: self.content,
            stored_len: self.stored_len,
            stored: self.stored,
        }
    }
}

/// Copy `[start, end)` of the source into a new temporary data file,
/// synced, not yet published.
fn prepare_data(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    start: u64,
    end: u64,
) -> Result<(TempFile, Written)> {
    let mut tmp = repo.new_file()?;
    let tmp_path = tmp.path().to_path_buf();
    crate::progress::phase("backup", end - start);
    if !opts.gzip {
        // the kernel copies on one core while we hash on the other
        let file: &File = tmp.file();
        durable::preallocate(file, &tmp_path, 0, end - start)?;
        let flusher = Flusher::new(file, &tmp_path)?;
        let out = copy::Out::new(file, &tmp_path, &flusher);
        let (sum, fast) = copy::copy_and_hash(src, &opts.file, start, end - start, out, true)?;
        flusher.finish()?;
        tmp.sync()?;
        let written = Written {
            md5: sum.expect("asked for"),
            content: fast,
            stored: fast,
            stored_len: end - start,
            index_hash: 0,
        };
        return Ok((tmp, written));
    }
    let file = tmp.take();
    let flusher = Flusher::new(&file, &tmp_path)?;
    let sink = Sink::new(file, true, Some(&flusher));
    let mut md5 = Md5::new();
    let mut content = xxh3::Hasher::new();
    let copied = copy::copy_range_parallel(src, start, end - start, &mut md5, &mut content, sink)
        .map_err(|e| match e {
        CopyError::Read(e) => Error::io("read", &opts.file, e),
        CopyError::Write(e) => Error::io("write", &tmp_path, e),
    })?;
    tmp.put_back(copied.file);
    flusher.finish()?;
    tmp.sync()?;
    let written = Written {
        md5: md5::hex(&md5.finalize()),
        content: content.digest128(),
        stored: copied.stored,
        stored_len: copied.stored_len,
        index_hash: 0,
    };
    Ok((tmp, written))
}

/// Write the `.index` for a backup ending at `end` into a temporary file,
/// synced, not yet published. Returns it with the xxh3-128 of its bytes
/// (recorded when the index comes from a scan, see [`scan_source`]).
fn prepare_index(repo: &Repository, index: &Index, end: u64) -> Result<(TempFile, u128)> {
    let mut tmp = repo.new_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let hash = {
        let out = HashingWriter {
            inner: flush::WritebackWriter::new(tmp.file()),
            hash: xxh3::Hasher::new(),
        };
        let mut w = BufWriter::with_capacity(buf::CHUNK, out);
        index.write_to(end, &mut w).ctx("write", &tmp_path)?;
        w.flush().ctx("write", &tmp_path)?;
        let out = w
            .into_inner()
            .map_err(|e| Error::io("write", &tmp_path, e.into_error()))?;
        out.hash.digest128()
    };
    tmp.sync()?;
    Ok((tmp, hash))
}

/// A writer that hashes what it passes on.
struct HashingWriter<W> {
    inner: W,
    hash: xxh3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write the data file `[start, end)` and its `.index` (the index on
/// another thread while the data is copied, each synced on its own), then
/// publish them. Returns what was written; on error nothing of either
/// stays published.
/// A backup's blob list in a synced temporary file of the repository.
fn blob_list_file(repo: &Repository, list: &BlobList) -> Result<TempFile> {
    let mut tmp = repo.new_file()?;
    let path = tmp.path().to_path_buf();
    tmp.file().write_all(&list.to_bytes()).ctx("write", &path)?;
    tmp.sync()?;
    Ok(tmp)
}

#[allow(clippy::too_many_arguments)]
fn write_files(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    start: u64,
    scan: &Scan,
    new: &NewBackup,
    list: Option<TempFile>,
    log: &Log,
) -> Result<Written> {
    if let Some(r) = repo.remote() {
        return write_objects(opts, repo, r, src, start, scan, new, log)
            .inspect_err(|_| repo.roll_back(&[&new.blobs], log));
    }
    log.note(format_args!(
        "writing index: {} objects (beside the data)",
        scan.index.len()
    ));
    let (data, index) = std::thread::scope(|scope| {
        let index = scope.spawn(|| prepare_index(repo, &scan.index, scan.end));
        let data = prepare_data(opts, repo, src, start, scan.end);
        (data, index.join().expect("index thread does not panic"))
    });
    let (data_tmp, mut written) = data?;
    let (index_tmp, index_hash) = index?;
    written.index_hash = index_hash;
    repo.publish_files(new, data_tmp, index_tmp, list, log)?;
    Ok(written)
}

/// [`write_files`] on object storage: the data file streamed into a
/// multipart upload (md5, xxh3 and gzip computed on the way, parts
/// uploaded in parallel), visible only once complete; then its `.index`
/// the same way. On error nothing of either stays.
#[allow(clippy::too_many_arguments)]
fn write_objects(
    opts: &BackupOptions,
    repo: &Repository,
    r: &crate::repository::remote::Remote,
    src: &File,
    start: u64,
    scan: &Scan,
    new: &NewBackup,
    log: &Log,
) -> Result<Written> {
    let name_of = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    let (data_name, index_name) = (name_of(&new.data), name_of(&new.index));
    crate::progress::phase("backup", scan.end - start);
    log.note(format_args!(
        "writing index: {} objects (uploaded beside the data, completed after it)",
        scan.index.len()
    ));
    // the .index is uploaded on another thread while the data is, but
    // completed (made visible) only after the data file is
    let (data, index) = std::thread::scope(|scope| {
        let index = scope.spawn(
            || -> Result<(crate::repository::remote::ObjectWriter<'_>, u128)> {
                let url = r.url_of(&index_name);
                let werr = |e: std::io::Error| Error::Remote(format!("write {url}: {e}"));
                let out = HashingWriter {
                    inner: r.writer(&index_name)?,
                    hash: xxh3::Hasher::new(),
                };
                let mut w = BufWriter::with_capacity(buf::CHUNK, out);
                scan.index.write_to(scan.end, &mut w).map_err(werr)?;
                w.flush().map_err(werr)?;
                let out = w.into_inner().map_err(|e| werr(e.into_error()))?;
                Ok((out.inner, out.hash.digest128()))
            },
        );
        let data = (|| -> Result<Written> {
            let sink = Sink::new(r.writer(&data_name)?, opts.gzip, None);
            let mut md5 = Md5::new();
            let mut content = xxh3::Hasher::new();
            let copied = copy::copy_range_parallel(
                src,
                start,
                scan.end - start,
                &mut md5,
                &mut content,
                sink,
            )
            .map_err(|e| match e {
                CopyError::Read(e) => Error::io("read", &opts.file, e),
                CopyError::Write(e) => {
                    Error::Remote(format!("write {}: {e}", r.url_of(&data_name)))
                }
            })?;
            if let Err(e) = copied.file.finish() {
                // the completion may have happened with its answer lost
                // (a dropped connection; the retry is then told
                // "NoSuchUpload"): the object can be there, whole, under
                // a name that is ours
                repo.changed();
                repo.roll_back(&[&new.data], log);
                return Err(e);
            }
            repo.changed();
            Ok(Written {
                md5: md5::hex(&md5.finalize()),
                content: content.digest128(),
                stored: copied.stored,
                stored_len: copied.stored_len,
                index_hash: 0,
            })
        })();
        (data, index.join().expect("the index thread does not panic"))
    });
    // an unfinished index upload is aborted when dropped
    let written = data?;
    let index = index.and_then(|(w, hash)| {
        w.finish()?;
        repo.changed();
        Ok(hash)
    });
    match index {
        Ok(h) => Ok(Written {
            index_hash: h,
            ..written
        }),
        Err(e) => {
            repo.roll_back(&[&new.data, &new.index], log);
            Err(e)
        }
    }
}

/// Write the backup's files, check that the source is still the file we
/// copied, and commit with `commit` (given the `.dat` line). On error,
/// nothing of the backup stays.
#[allow(clippy::too_many_arguments)]
fn write_and_commit(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    (start, scan, scan_trusted): (u64, &Scan, bool),
    blobs: Option<&BlobSource>,
    name: &DataName,
    commit: impl FnOnce(&[u8], &NewBackup) -> Result<()>,
    log: &Log,
) -> Result<Written> {
    let new = repo.new_backup(name)?;
    log.note(format_args!(
        "writing {}: {} bytes to {}",
        if start == 0 {
            "full backup"
        } else {
            "incremental"
        },
        scan.end - start,
        new.data.display()
    ));
    // the blob revisions first, durable before anything lists them
    let list = match blobs {
        Some(b) => {
            let list = repo.store_blobs(&b.dir, b.layout, &scan.blobs, &b.known, log)?;
            match repo.remote() {
                // published now, before the data file, as on disk
                Some(_) => {
                    repo.put_small(&new.blobs, &list.to_bytes())
                        .inspect_err(|_| repo.roll_back(&[&new.blobs], log))?;
                    None
                }
                None => Some(blob_list_file(repo, &list)?),
            }
        }
        None => None,
    };
    let written = write_files(opts, repo, src, start, scan, &new, list, log)?;
    check_source_unchanged(src, &opts.file)
        .inspect_err(|_| repo.roll_back(&[&new.data, &new.index, &new.blobs], log))?;
    let line = dat::format_line(repo.dir(), &name.file_name(), start, scan.end, &written.md5);
    commit(&line, &new)?;
    let trust = scan_trusted.then(|| sums::IndexTrust {
        name: name.index_name(),
        pos: scan.end,
        hash: written.index_hash,
    });
    repo.record(written.entry(name.file_name(), start, scan.end), trust, log);
    Ok(written)
}

fn write_full(
    opts: &BackupOptions,
    repo: &Repository,
    src: &File,
    (scan, scan_trusted): (Scan, bool),
    blobs: Option<&BlobSource>,
    stamp: Stamp,
    log: &Log,
) -> Result<Outcome> {
    let name = DataName {
        stamp,
        kind: Kind::Full,
        gzip: opts.gzip,
    };
    let commit = |line: &[u8], new: &NewBackup| repo.start_chain(&name, line, new, log);
    let w = write_and_commit(
        opts,
        repo,
        src,
        (0, &scan, scan_trusted),
        blobs,
        &name,
        commit,
        log,
    )?;
    log.note(format_args!("full backup done: md5 {}", w.md5));
    if opts.kill_old {
        // committed: what follows is best effort
        repo.delete_old_backups(&name, log);
    }
    Ok(Outcome::Full {
        name: name.file_name(),
        end: scan.end,
        md5: w.md5,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_incremental(
    opts: &BackupOptions,
    repo: &Repository,
    blobs: Option<&BlobSource>,
    head: &DataFile,
    dat_file: Option<&DatFile>,
    src: &File,
    (scan, scan_trusted): (Scan, bool),
    start: u64,
    stamp: Stamp,
    log: &Log,
) -> Result<Outcome> {
    let name = DataName {
        stamp,
        kind: Kind::Incremental,
        gzip: opts.gzip,
    };
    let commit = |line: &[u8], new: &NewBackup| repo.extend_chain(head, dat_file, line, new, log);
    let w = write_and_commit(
        opts,
        repo,
        src,
        (start, &scan, scan_trusted),
        blobs,
        &name,
        commit,
        log,
    )?;
    log.note(format_args!("incremental backup done: md5 {}", w.md5));
    Ok(Outcome::Incremental {
        name: name.file_name(),
        start,
        end: scan.end,
        md5: w.md5,
    })
}

/// Fail when the file at `path` is no longer the one we opened: a pack
/// renamed a new file over it while we copied. Our copy of the old file is
/// consistent, but the decision was made on a file that is gone, so the
/// backup is rolled back and the next run decides again.
fn check_source_unchanged(src: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ours = src.metadata().ctx("stat", path)?;
    match std::fs::metadata(path) {
        Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => Ok(()),
        Ok(_) => Err(Error::SourceReplaced(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::SourceReplaced(path.to_path_buf()))
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}
