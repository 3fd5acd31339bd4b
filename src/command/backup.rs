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
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
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
use crate::repository::chains::{self, DataFile};
use crate::repository::lock;
use crate::repository::sums::{self, Sums};

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
        }
    }
}

/// Run a backup.
pub fn backup(opts: &BackupOptions, log: &Log) -> Result<Outcome> {
    let repo = &opts.repository;
    chains::check_dir(repo)?;
    let _lock = lock::lock(repo, true, log)?;
    let outcome = backup_locked(opts, log)?;
    // the backup is committed: what follows is best effort
    if let Some(n) = opts.keep {
        retain(repo, n, log);
    }
    Ok(outcome)
}

/// `--keep N`: keep the N newest full backups with everything after them;
/// remove the data files, `.dat` and `.index` of every older chain (see
/// [`remove_chains_before`]). The chain just written to is the newest, so
/// it is always kept. Best effort, after a committed backup: a failure is a
/// warning and the next run with `--keep` tries again. Returns the bytes
/// freed.
pub fn retain(repo: &Path, keep: usize, log: &Log) -> u64 {
    let listing = match chains::list(repo) {
        Ok(l) => l,
        Err(e) => {
            log.warn(format_args!(
                "--keep {keep}: nothing removed: {e}; the next run tries again"
            ));
            return 0;
        }
    };
    let mut fulls: Vec<Stamp> = listing
        .files
        .iter()
        .filter(|f| f.is_full())
        .map(|f| f.name.stamp)
        .collect();
    fulls.dedup();
    if keep == 0 || fulls.len() <= keep {
        log.note(format_args!(
            "--keep {keep}: {} full backup(s), nothing to remove",
            fulls.len()
        ));
        return 0;
    }
    let oldest_kept = fulls[fulls.len() - keep];
    let what = format!("--keep {keep}");
    let (removed, freed) = remove_chains_before(repo, oldest_kept, &what, log);
    log.note(format_args!(
        "{what}: removed {removed} data file(s) of older chains, {freed} bytes freed"
    ));
    freed
}

/// The FileStorage scan reads the source with `pread`, retrying after
/// EINTR ([`read::read_full_at`]).
impl filestorage::ReadAt for File {
    fn read_full_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        read::read_full_at(self, buf, pos)
    }
}

fn backup_locked(opts: &BackupOptions, log: &Log) -> Result<Outcome> {
    let repo = &opts.repository;
    remove_stale_temporaries(repo, log)?;
    let listing = chains::list(repo)?;
    // Named first: a backup refused for a stamp in the future writes nothing.
    let stamp = new_stamp(&listing, log)?;
    // The source: opened read-only, always.
    let src = File::open(&opts.file).ctx("open", &opts.file)?;
    let size = src.metadata().ctx("stat", &opts.file)?.len();
    filestorage::check_magic(&src, size, &opts.file)?;

    // The newest chain as its .dat describes it, whatever the clock says (a
    // clock that went back must not make us start an out-of-order chain).
    // Backup and recovery agree on one truth: a chain that recovery could
    // not use is never extended.
    let mut chain: Vec<DataFile> = Vec::new();
    let mut dat_file: Option<DatFile> = None;
    let decision = if opts.full {
        Err(Reason::Forced)
    } else {
        match chains::resolve_in(repo, &listing, None, log) {
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
                set_aside(repo, &listing, &r.orphans, log)?;
                let lines: Vec<Option<DatLine>> = r.files.iter().map(|c| c.line.clone()).collect();
                chain = r.files.into_iter().map(|c| c.file).collect();
                dat_file = r.dat_file;
                let sums = Sums::load(repo);
                match last {
                    None => Err(Reason::MissingDat),
                    Some(last) if opts.quick => decide_quick(opts, &src, size, &last, &sums, log)?,
                    Some(last) => {
                        decide_full_check(opts, &src, size, &chain, &lines, last.end, &sums, log)?
                    }
                }
            }
        }
    };

    match decision {
        Err(reason) => {
            log.note(format_args!("{}", reason.text()));
            let scan = scan_source(opts, &src, size, None, log)?;
            write_full(opts, &src, scan, stamp, log)
        }
        Ok(start) => {
            let last = chain.last().expect("an extended chain is not empty");
            let chain_index = (chains::index_path(&opts.repository, last), start);
            let scan = scan_source(opts, &src, size, Some(chain_index), log)?;
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
                return write_full(opts, &src, scan, stamp, log);
            }
            log.note(format_args!("doing incremental, starting at: {start}"));
            write_incremental(
                opts,
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
fn scan_source(
    opts: &BackupOptions,
    src: &File,
    size: u64,
    chain_index: Option<(PathBuf, u64)>,
    log: &Log,
) -> Result<(Scan, bool)> {
    // one index loaded and checked; `trusted`: the base is a scan's
    let usable = |path: &Path, must_be: Option<u64>, trusted: bool| -> Option<(u64, Index, bool)> {
        match load_index(&opts.repository, path, must_be, size, trusted) {
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
    let scan = filestorage::scan_from(src, &opts.file, size, start, index)?;
    log.note(format_args!(
        "scanned {} bytes from {start}: committed data ends at {}",
        scan.end - start,
        scan.end
    ));
    Ok((scan, trusted))
}

/// Load an `.index` that lies within the source (at `must_be` when given)
/// and, when `scanned`, that our sums record as built by a scan, with the
/// same position and bytes. `Ok(None)`: there is none; `Err`: why it is
/// not usable.
fn load_index(
    repo: &Path,
    path: &Path,
    must_be: Option<u64>,
    size: u64,
    scanned: bool,
) -> std::result::Result<Option<(u64, Index)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let pos = Index::read_pos(&bytes[..])?;
    if must_be.is_some_and(|m| m != pos) || !(4..=size).contains(&pos) {
        return Err(format!("its position {pos} does not fit the source"));
    }
    if scanned {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let hash = xxhash_rust::xxh3::xxh3_128(&bytes);
        if !Sums::load(repo).index_trusted(name, pos, hash) {
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
fn both_match(
    opts: &BackupOptions,
    src: &File,
    f: &DataFile,
    at: u64,
    len: u64,
    want: u128,
    log: &Log,
) -> Result<bool> {
    let (backup, source) = std::thread::scope(|scope| {
        let backup = scope.spawn(|| xxh3::hash_data(&f.path, f.name.gzip));
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
            if e.start == at && both_match(opts, src, f, at, len, e.content, log)? {
                at += len;
                fast += 1;
                continue;
            }
        }
        let same = match read::same_as_source(&f.path, f.name.gzip, src, &opts.file, at) {
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
    src: &File,
    start: u64,
    end: u64,
) -> Result<(TempFile, Written)> {
    let mut tmp = TempFile::new_in(&opts.repository)?;
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
fn prepare_index(opts: &BackupOptions, index: &Index, end: u64) -> Result<(TempFile, u128)> {
    let mut tmp = TempFile::new_in(&opts.repository)?;
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
/// publish them in that order and sync the directory once. Returns what
/// was written; on error nothing of either stays published.
fn write_files(
    opts: &BackupOptions,
    src: &File,
    start: u64,
    scan: &Scan,
    dest: &Path,
    index_path: &Path,
    log: &Log,
) -> Result<Written> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(Error::WouldOverwrite(dest.to_path_buf()));
    }
    log.note(format_args!(
        "writing index: {} objects (beside the data)",
        scan.index.len()
    ));
    let (data, index) = std::thread::scope(|scope| {
        let index = scope.spawn(|| prepare_index(opts, &scan.index, scan.end));
        let data = prepare_data(opts, src, start, scan.end);
        (data, index.join().expect("index thread does not panic"))
    });
    let (data_tmp, mut written) = data?;
    let (index_tmp, index_hash) = index?;
    written.index_hash = index_hash;
    data_tmp.rename_into(dest, false)?;
    index_tmp.rename_into(index_path, true)?;
    durable::sync_dir(&opts.repository)?;
    Ok(written)
}

fn write_full(
    opts: &BackupOptions,
    src: &File,
    (scan, scan_trusted): (Scan, bool),
    stamp: Stamp,
    log: &Log,
) -> Result<Outcome> {
    let name = DataName {
        stamp,
        kind: Kind::Full,
        gzip: opts.gzip,
    };
    let repo = &opts.repository;
    let dest = repo.join(name.file_name());
    log.note(format_args!(
        "writing full backup: {} bytes to {}",
        scan.end,
        dest.display()
    ));
    let index_path = repo.join(name.index_name());
    let dat_path = repo.join(name.dat_name());
    let result = (|| -> Result<Written> {
        let written = write_files(opts, src, 0, &scan, &dest, &index_path, log)?;
        check_source_unchanged(src, &opts.file)?;
        let line = dat::format_line(repo, &name.file_name(), 0, scan.end, &written.md5);
        durable::write_file(repo, &dat_path, &line)?;
        Ok(written)
    })();
    let md5 = match result {
        Ok(w) => {
            let trust = scan_trusted.then(|| sums::IndexTrust {
                name: name.index_name(),
                pos: scan.end,
                hash: w.index_hash,
            });
            sums::record(repo, w.entry(name.file_name(), 0, scan.end), trust, log);
            w.md5
        }
        Err(e @ Error::WouldOverwrite(_)) => return Err(e),
        Err(e) => {
            // nothing of this backup may stay without a durable .dat
            roll_back(repo, &[&dat_path, &dest, &index_path], log);
            return Err(e);
        }
    };
    log.note(format_args!("full backup done: md5 {md5}"));
    if opts.kill_old {
        // committed: what follows is best effort
        delete_old_backups(repo, &name, log);
    }
    Ok(Outcome::Full {
        name: name.file_name(),
        end: scan.end,
        md5,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_incremental(
    opts: &BackupOptions,
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
    let repo = &opts.repository;
    let dest = repo.join(name.file_name());
    log.note(format_args!(
        "writing incremental: {} bytes to {}",
        scan.end - start,
        dest.display()
    ));
    let index_path = repo.join(name.index_name());
    let dat_path = chains::dat_path(repo, head);
    let original = std::fs::read(&dat_path).ctx("read", &dat_path)?;
    let touched = std::cell::Cell::new(false);
    let result = (|| -> Result<Written> {
        let written = write_files(opts, src, start, &scan, &dest, &index_path, log)?;
        check_source_unchanged(src, &opts.file)?;
        let line = dat::format_line(repo, &name.file_name(), start, scan.end, &written.md5);
        match dat_file {
            Some(d) if d.needs_repair => {
                // A crash cut the last append short: rewrite the .dat with
                // its complete lines and the new one, atomically.
                log.note(format_args!(
                    "repairing {}: {}",
                    dat_path.display(),
                    match &d.torn {
                        Some(t) => format!("dropping the torn last line {t:?}"),
                        None => "adding the missing final newline".to_string(),
                    }
                ));
                let mut bytes = d.repaired_bytes();
                bytes.extend_from_slice(&line);
                touched.set(true);
                durable::write_file(repo, &dat_path, &bytes)?;
            }
            _ => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&dat_path)
                    .ctx("open for appending", &dat_path)?;
                touched.set(true);
                f.write_all(&line).ctx("append to", &dat_path)?;
                f.sync_all().ctx("fsync", &dat_path)?;
            }
        }
        Ok(written)
    })();
    let md5 = match result {
        Ok(w) => {
            let trust = scan_trusted.then(|| sums::IndexTrust {
                name: name.index_name(),
                pos: scan.end,
                hash: w.index_hash,
            });
            sums::record(repo, w.entry(name.file_name(), start, scan.end), trust, log);
            w.md5
        }
        Err(e @ Error::WouldOverwrite(_)) => return Err(e),
        Err(e) => {
            // An append whose fsync failed may or may not be on disk: put
            // the .dat back as it was, then remove the new files. If the
            // .dat cannot be restored, the files it may name stay.
            let intact = || std::fs::read(&dat_path).is_ok_and(|now| now == original);
            let restored = !touched.get() || intact() || {
                let _ = restore_dat(&dat_path, original.len() as u64, &original);
                intact()
            };
            if restored {
                roll_back(repo, &[&dest, &index_path], log);
            }
            return Err(e);
        }
    };
    log.note(format_args!("incremental backup done: md5 {md5}"));
    Ok(Outcome::Incremental {
        name: name.file_name(),
        start,
        end: scan.end,
        md5,
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

/// Put a `.dat` back to its `original` bytes after a failed append: cut
/// it to its old length when it starts with them, else rewrite it.
fn restore_dat(path: &Path, len: u64, original: &[u8]) -> Result<()> {
    let now = std::fs::read(path).ctx("read", path)?;
    if now.len() as u64 >= len && &now[..len as usize] == original {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .ctx("open", path)?;
        f.set_len(len).ctx("truncate", path)?;
        f.sync_all().ctx("fsync", path)
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        durable::write_file(dir, path, original)
    }
}

/// Remove what a failed backup published (best effort, in the order
/// given: the file that commits the backup first).
fn roll_back(repo: &Path, paths: &[&Path], log: &Log) {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => log.note(format_args!("rolled back {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // stop: what follows may be needed by what could not go
            Err(_) => break,
        }
    }
    let _ = durable::sync_dir(repo);
}

/// Remove temporary files that killed runs of ours left behind. Only
/// called under the exclusive lock, when no other run of ours can be
/// writing one.
fn remove_stale_temporaries(repo: &Path, log: &Log) -> Result<()> {
    let entries = std::fs::read_dir(repo).ctx("list", repo)?;
    for entry in entries {
        let entry = entry.ctx("list", repo)?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(durable::TEMP_PREFIX.as_bytes()) {
            let p = entry.path();
            log.note(format_args!(
                "removing stale temporary file {}",
                p.display()
            ));
            std::fs::remove_file(&p).ctx("remove", &p)?;
        }
    }
    Ok(())
}

/// Move orphans, data files of the newest chain's span that no `.dat`
/// lists, out of the way (`NAME.orphaned`), so that neither tool can take
/// them for part of the chain. Their `.index` goes with them unless a data
/// file that stays has the same stamp and so owns it (ZODB's repozo writes
/// one `.index` for a full backup and an increment made in one second).
/// Nothing is overwritten: a name already taken gets a number
/// (`NAME.2.orphaned`).
fn set_aside(
    repo: &Path,
    listing: &chains::Listing,
    orphans: &[DataFile],
    log: &Log,
) -> Result<()> {
    if orphans.is_empty() {
        return Ok(());
    }
    for f in orphans {
        let to = rename_aside(&f.path)?;
        log.note(format_args!(
            "setting aside {} (no .dat lists it) as {}",
            f.path.display(),
            to.display()
        ));
        let owned = listing
            .files
            .iter()
            .any(|o| o.name.stamp == f.name.stamp && !orphans.contains(o));
        if owned {
            log.note(format_args!(
                "keeping {}: it belongs to a data file with the same stamp",
                chains::index_path(repo, f).display()
            ));
            continue;
        }
        let index = chains::index_path(repo, f);
        let index_exists = match std::fs::symlink_metadata(&index) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("inspect", &index, e)),
        };
        if index_exists {
            rename_aside(&index)?;
        }
    }
    durable::sync_dir(repo)
}

/// Rename `path` to `path.orphaned` (or `path.N.orphaned` when that is
/// taken), never over an existing file. Returns the new name.
fn rename_aside(path: &Path) -> Result<PathBuf> {
    for n in 1u32.. {
        let mut to = path.as_os_str().to_owned();
        if n > 1 {
            to.push(format!(".{n}"));
        }
        to.push(".orphaned");
        let to = PathBuf::from(to);
        match durable::rename_noreplace(path, &to) {
            Ok(()) => return Ok(to),
            Err(Error::WouldOverwrite(_)) if n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// `-k`: after a full backup stamped `keep`, remove every older chain and
/// stray increment with its `.dat` and `.index` files, and the files set
/// aside before it. Best effort (the backup is committed): see
/// [`remove_chains_before`].
fn delete_old_backups(repo: &Path, keep: &DataName, log: &Log) {
    log.note(format_args!(
        "removing the backups older than {} (-k)",
        keep.file_name()
    ));
    remove_chains_before(repo, keep.stamp, "-k", log);
}

/// Remove every chain whose head is stamped before `before` (its `.dat`,
/// its data files, wherever their stamps fall, and their `.index` files),
/// the increments stamped before every chain, and what is left of chains
/// removed before (see [`prune_leftovers`]). The repository is listed now, after any
/// orphan was set aside. A chain's `.dat` goes first; when it cannot be
/// removed, the chain's files stay with it, whole. An `.index` whose stamp
/// a data file that stays also has is that file's and stays. Best effort,
/// for the cleanup after a committed backup: each failure is a warning
/// (printed when the run ends) and the next run tries again. Returns the
/// data files removed and the bytes freed.
fn remove_chains_before(repo: &Path, before: Stamp, what: &str, log: &Log) -> (usize, u64) {
    let warn = |e: &dyn std::fmt::Display| {
        log.warn(format_args!("{what}: {e}; the next run tries again"));
    };
    let listing = match chains::list(repo) {
        Ok(l) => l,
        Err(e) => {
            warn(&e);
            return (0, 0);
        }
    };
    let (strays, groups) = chains::groups(repo, &listing);
    let mut doomed: Vec<(Option<Stamp>, Vec<DataFile>)> = Vec::new();
    if !strays.is_empty() {
        doomed.push((None, strays));
    }
    for g in groups.into_iter().filter(|g| g.head < before) {
        doomed.push((Some(g.head), g.files));
    }
    let going: std::collections::HashSet<&Path> = doomed
        .iter()
        .flat_map(|(_, files)| files.iter().map(|f| f.path.as_path()))
        .collect();
    let staying: std::collections::HashSet<Stamp> = listing
        .files
        .iter()
        .filter(|f| !going.contains(f.path.as_path()))
        .map(|f| f.name.stamp)
        .collect();
    let mut freed = 0u64;
    let mut removed = 0usize;
    let mut tried: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut remove = |p: &Path| -> bool {
        tried.insert(p.to_path_buf());
        let len = match std::fs::symlink_metadata(p) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(e) => {
                warn(&Error::io("inspect", p, e));
                return false;
            }
        };
        match std::fs::remove_file(p) {
            Ok(()) => {
                freed += len;
                log.note(format_args!("{what}: removed {}", p.display()));
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                warn(&Error::io("remove", p, e));
                false
            }
        }
    };
    for (head, files) in &doomed {
        if let Some(h) = head {
            if !remove(&chains::dat_path_at(repo, *h)) {
                continue;
            }
        }
        for f in files {
            if !staying.contains(&f.name.stamp) {
                remove(&chains::index_path(repo, f));
            }
            if remove(&f.path) {
                removed += 1;
            }
        }
    }
    freed += prune_leftovers(repo, before, &staying, &tried, what, log);
    if let Err(e) = durable::sync_dir(repo) {
        warn(&e);
    }
    (removed, freed)
}

/// Remove what is left of chains that are gone: files set aside as
/// `*.orphaned` stamped before `before`, and `.index` files stamped before
/// `before` that no data file that stays has the stamp of (left by a run
/// that could not finish removing). Best effort, like
/// [`remove_chains_before`]. Returns the bytes freed.
fn prune_leftovers(
    repo: &Path,
    before: Stamp,
    staying: &std::collections::HashSet<Stamp>,
    tried: &std::collections::HashSet<PathBuf>,
    what: &str,
    log: &Log,
) -> u64 {
    let warn = |e: Error| log.warn(format_args!("{what}: {e}; the next run tries again"));
    let entries = match std::iter::repeat_with(|| std::fs::read_dir(repo))
        .find(|r| !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::Interrupted))
        .expect("repeat_with never ends")
    {
        Ok(it) => it,
        Err(e) => {
            warn(Error::io("list", repo, e));
            return 0;
        }
    };
    let mut freed = 0;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warn(Error::io("list", repo, e));
                return freed;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stamp) = name
            .get(..19)
            .and_then(|stem| Stamp::parse_date(stem).ok())
            .filter(|st| *st < before)
        else {
            continue;
        };
        let leftover =
            name.ends_with(".orphaned") || (&name[19..] == ".index" && !staying.contains(&stamp));
        if !leftover {
            continue;
        }
        let p = entry.path();
        if tried.contains(&p) {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                log.note(format_args!("{what}: removed {}", p.display()));
                freed += len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn(Error::io("remove", &p, e)),
        }
    }
    freed
}
