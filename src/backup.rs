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

use crate::checksum::Md5;

use crate::dat::{self, DatFile, DatLine};
use crate::durable::{self, Flusher, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::fstorage::{self, Scan};
use crate::index::Index;
use crate::lock;
use crate::pipeline::{self, CopyError, Sink};
use crate::repo::{self, DataFile};
use crate::stamp::{DataName, Kind, Stamp};
use crate::sums::{self, Sums};
use crate::Log;

/// What `-B` was asked to do.
#[derive(Clone, Debug, Default)]
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
    repo::check_dir(repo)?;
    let _lock = lock::lock(repo, true, log)?;
    let outcome = backup_locked(opts, log)?;
    if let Some(n) = opts.keep {
        retain(repo, n, log)?;
    }
    Ok(outcome)
}

/// `--keep N`: keep the N newest full backups with everything after them;
/// remove the data files, `.dat` and `.index` of every older chain. The
/// chain just written to is the newest, so it is always kept.
pub fn retain(repo: &Path, keep: usize, log: &Log) -> Result<u64> {
    let listing = repo::list(repo)?;
    let fulls: Vec<&DataFile> = listing.files.iter().filter(|f| f.is_full()).collect();
    if keep == 0 || fulls.len() <= keep {
        log.note(format_args!(
            "--keep {keep}: {} full backup(s), nothing to remove",
            fulls.len()
        ));
        return Ok(0);
    }
    let oldest_kept = fulls[fulls.len() - keep].name.clone();
    let mut freed = 0u64;
    let mut removed = 0usize;
    for f in listing.files.iter().filter(|f| f.name < oldest_kept) {
        for p in [
            f.path.clone(),
            repo.join(f.name.index_name()),
            repo.join(f.name.dat_name()),
        ] {
            match std::fs::symlink_metadata(&p) {
                Ok(m) => {
                    std::fs::remove_file(&p).ctx("remove", &p)?;
                    freed += m.len();
                    log.note(format_args!("--keep {keep}: removed {}", p.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("inspect", &p, e)),
            }
        }
        removed += 1;
    }
    freed += prune_orphaned(repo, oldest_kept.stamp, log)?;
    durable::sync_dir(repo)?;
    log.note(format_args!(
        "--keep {keep}: removed {removed} data file(s) of older chains, {freed} bytes freed"
    ));
    Ok(freed)
}

fn backup_locked(opts: &BackupOptions, log: &Log) -> Result<Outcome> {
    let repo = &opts.repository;
    remove_stale_temporaries(repo, log)?;
    let listing = repo::list(repo)?;
    // The source: opened read-only, always.
    let src = File::open(&opts.file).ctx("open", &opts.file)?;
    let size = fstorage::check_magic(&src, &opts.file)?;

    // The newest chain as its .dat describes it, whatever the clock says (a
    // clock that went back must not make us start an out-of-order chain).
    // Backup and recovery agree on one truth: a chain that recovery could
    // not use is never extended.
    let mut chain: Vec<DataFile> = Vec::new();
    let mut dat_file: Option<DatFile> = None;
    let decision = if opts.full {
        Err(Reason::Forced)
    } else {
        match repo::resolve_in(repo, &listing, None, log) {
            // a chain that recovery could not use: start a new one
            Err(e @ (Error::BadDat { .. } | Error::MissingFile { .. })) => {
                log.note(format_args!("the newest chain cannot be extended: {e}"));
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
                set_aside(repo, &r.orphans, log)?;
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

    let stamp = new_stamp(&listing, log)?;
    match decision {
        Err(reason) => {
            log.note(format_args!("{}", reason.text()));
            let scan = scan_source(opts, &src, size, None, log)?;
            write_full(opts, &listing, &src, scan, stamp, log)
        }
        Ok(start) => {
            let last = chain.last().expect("an extended chain is not empty");
            let chain_index = (repo::index_path(&opts.repository, last), start);
            let scan = scan_source(opts, &src, size, Some(chain_index), log)?;
            if scan.end == start {
                log.note(format_args!("No changes, nothing to do"));
                return Ok(Outcome::NothingToDo);
            }
            if scan.end < start {
                // The backed-up bytes match but the source's committed
                // data now ends before them: not a state we can extend.
                log.note(format_args!(
                    "committed data ends at {} before the backed-up {start} (full backup)",
                    scan.end
                ));
                return write_full(opts, &listing, &src, scan, stamp, log);
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
/// no trustworthy index covers. Candidates: the index of the chain being
/// extended (valid exactly up to the chain's end, whose bytes were just
/// checked against the source) and the source's own `Data.fs.index`. Each
/// must lie within the source and pass ZODB's sanity check; an unreadable
/// or insane index is skipped with a note, never an error.
fn scan_source(
    opts: &BackupOptions,
    src: &File,
    size: u64,
    chain_index: Option<(PathBuf, u64)>,
    log: &Log,
) -> Result<Scan> {
    let mut live = opts.file.clone().into_os_string();
    live.push(".index");
    let mut candidates: Vec<(PathBuf, Option<u64>)> = Vec::new();
    if let Some((p, pos)) = chain_index {
        candidates.push((p, Some(pos)));
    }
    candidates.push((PathBuf::from(live), None));
    // Peek at each candidate's position, then load the furthest-reaching
    // first: usually only one index is ever loaded.
    let mut usable: Vec<(u64, PathBuf)> = Vec::new();
    for (path, must_be) in candidates {
        let pos = match File::open(&path) {
            Ok(f) => match Index::read_pos(std::io::BufReader::new(f)) {
                Ok(pos) => pos,
                Err(e) => {
                    log.note(format_args!("ignoring index {}: {e}", path.display()));
                    continue;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log.note(format_args!("ignoring index {}: {e}", path.display()));
                continue;
            }
        };
        if must_be.is_some_and(|m| m != pos) || pos > size || pos < 4 {
            log.note(format_args!(
                "ignoring index {}: its position {pos} does not fit the source",
                path.display()
            ));
            continue;
        }
        usable.push((pos, path));
    }
    usable.sort_by_key(|u| std::cmp::Reverse(u.0));
    let mut best: Option<(u64, Index)> = None;
    for (_, path) in usable {
        match Index::load(&path) {
            Ok((pos, index)) if fstorage::index_is_sane(src, size, &index, pos) => {
                log.note(format_args!(
                    "using index {} ({} objects up to {pos})",
                    path.display(),
                    index.len()
                ));
                best = Some((pos, index));
                break;
            }
            Ok(_) => log.note(format_args!(
                "ignoring index {}: it does not match the source",
                path.display()
            )),
            Err(e) => log.note(format_args!("ignoring index {}: {e}", path.display())),
        }
    }
    let (start, index) = match best {
        Some(b) => b,
        None => {
            log.note(format_args!("no usable index: scanning the whole source"));
            (4, Index::new())
        }
    };
    let scan = fstorage::scan_from(src, &opts.file, size, start, index)?;
    log.note(format_args!(
        "scanned {} bytes from {start}: committed data ends at {}",
        scan.end - start,
        scan.end
    ));
    Ok(scan)
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
    let srcsum = pipeline::md5_range(src, &opts.file, last.start, last.len())?;
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
    let (h, n) = sums::hash_range(src, start, len).ctx("read", &opts.file)?;
    crate::progress::read(n);
    Ok(n == len && h == want)
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
    // ZODB's repozo compares the md5 of the whole chain with the md5 of the
    // same length of the source. For a file our sums know, the source's
    // range is hashed with xxh3 and compared with the recorded one (a match
    // means the md5 matches); other files are compared byte for byte with
    // the source, which decides the same (but for md5 collisions), stops at
    // the first difference, and costs one pass instead of two hashes.
    let mut at = 0u64;
    let mut fast = 0usize;
    for (f, line) in chain.iter().zip(lines) {
        let len = line.as_ref().map_or(0, |l| l.len());
        if let Some(e) = line.as_ref().and_then(|l| sums.for_line(l)) {
            if e.start == at && source_matches(opts, src, at, len, e.content)? {
                at += len;
                fast += 1;
                continue;
            }
        }
        match pipeline::same_as_source(&f.path, f.name.gzip, src, &opts.file, at)? {
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
/// the repository if that is not earlier, so stamps strictly increase.
fn new_stamp(listing: &repo::Listing, log: &Log) -> Result<Stamp> {
    let now = Stamp::now()?;
    match listing.newest_stamp {
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
        let out = pipeline::Out::new(file, &tmp_path, &flusher);
        let (sum, fast) = pipeline::copy_and_hash(src, &opts.file, start, end - start, out, true)?;
        flusher.finish()?;
        tmp.sync()?;
        let written = Written {
            md5: sum.expect("asked for"),
            content: fast,
            stored: fast,
            stored_len: end - start,
        };
        return Ok((tmp, written));
    }
    let file = tmp.take();
    let flusher = Flusher::new(&file, &tmp_path)?;
    let sink = Sink::new(file, true, Some(&flusher));
    let mut md5 = Md5::new();
    let mut content = sums::Hasher::new();
    let copied =
        pipeline::copy_range_parallel(src, start, end - start, &mut md5, &mut content, sink)
            .map_err(|e| match e {
                CopyError::Read(e) => Error::io("read", &opts.file, e),
                CopyError::Write(e) => Error::io("write", &tmp_path, e),
            })?;
    tmp.put_back(copied.file);
    flusher.finish()?;
    tmp.sync()?;
    let written = Written {
        md5: pipeline::hex(&md5.finalize()),
        content: content.digest128(),
        stored: copied.stored,
        stored_len: copied.stored_len,
    };
    Ok((tmp, written))
}

/// Write the `.index` for a backup ending at `end` into a temporary file,
/// synced, not yet published.
fn prepare_index(opts: &BackupOptions, index: &Index, end: u64) -> Result<TempFile> {
    let mut tmp = TempFile::new_in(&opts.repository)?;
    let tmp_path = tmp.path().to_path_buf();
    {
        let out = pipeline::WritebackWriter::new(tmp.file());
        let mut w = BufWriter::with_capacity(pipeline::CHUNK, out);
        index.write_to(end, &mut w).ctx("write", &tmp_path)?;
        w.flush().ctx("write", &tmp_path)?;
    }
    tmp.sync()?;
    Ok(tmp)
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
    let (data_tmp, written) = data?;
    let index_tmp = index?;
    data_tmp.rename_into(dest, false)?;
    index_tmp.rename_into(index_path, true)?;
    durable::sync_dir(&opts.repository)?;
    Ok(written)
}

fn write_full(
    opts: &BackupOptions,
    listing: &repo::Listing,
    src: &File,
    scan: Scan,
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
            sums::record(repo, w.entry(name.file_name(), 0, scan.end), log);
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
        delete_old_backups(repo, listing, &name, log)?;
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
    scan: Scan,
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
    let dat_path = repo::dat_path(repo, head);
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
            sums::record(repo, w.entry(name.file_name(), start, scan.end), log);
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

/// Move data files that the chain's `.dat` does not list out of the way
/// (`NAME.orphaned`, with their `.index`), so that neither tool can take
/// them for part of the chain.
fn set_aside(repo: &Path, orphans: &[DataFile], log: &Log) -> Result<()> {
    if orphans.is_empty() {
        return Ok(());
    }
    for f in orphans {
        let mut to = f.path.clone().into_os_string();
        to.push(".orphaned");
        log.note(format_args!(
            "setting aside {} (not listed in its chain's .dat) as {}",
            f.path.display(),
            PathBuf::from(&to).display()
        ));
        std::fs::rename(&f.path, &to).ctx("set aside", &f.path)?;
        let index = repo::index_path(repo, f);
        let index_exists = match std::fs::symlink_metadata(&index) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("inspect", &index, e)),
        };
        if index_exists {
            let mut ito = index.clone().into_os_string();
            ito.push(".orphaned");
            std::fs::rename(&index, &ito).ctx("set aside", &index)?;
        }
    }
    durable::sync_dir(repo)
}

/// `-k`: remove every data file older than the full backup just written,
/// with its `.dat` and `.index`.
fn delete_old_backups(
    repo: &Path,
    listing: &repo::Listing,
    keep: &DataName,
    log: &Log,
) -> Result<()> {
    for f in &listing.files {
        if f.name >= *keep {
            continue;
        }
        log.note(format_args!(
            "removing old backup file {} (and .dat / .index)",
            f.file_name()
        ));
        for extra in [f.name.dat_name(), f.name.index_name()] {
            let p = repo.join(extra);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p, e)),
            }
        }
        std::fs::remove_file(&f.path).ctx("remove", &f.path)?;
    }
    prune_orphaned(repo, keep.stamp, log)?;
    durable::sync_dir(repo)
}

/// Remove files set aside as `*.orphaned` whose stamp is before `before`:
/// they belong to chains that are gone. Returns the bytes freed.
fn prune_orphaned(repo: &Path, before: Stamp, log: &Log) -> Result<u64> {
    let mut freed = 0;
    for entry in std::fs::read_dir(repo).ctx("list", repo)? {
        let entry = entry.ctx("list", repo)?;
        let name = entry.file_name();
        let name = name.as_bytes();
        if !name.ends_with(b".orphaned") || name.len() < 19 {
            continue;
        }
        // bytes: a name that is not ours may hold anything, even a
        // character across byte 19
        let old = std::str::from_utf8(&name[..19])
            .is_ok_and(|stem| Stamp::parse_date(stem).is_ok_and(|st| st < before));
        if old {
            let p = entry.path();
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&p).ctx("remove", &p)?;
            log.note(format_args!("removed {}", p.display()));
            freed += len;
        }
    }
    Ok(freed)
}
