//! `-R`: rebuild `Data.fs` as of a date by concatenating a chain, to a file
//! (through `FILE.part`, renamed over `FILE` only when complete) or to
//! stdout.
//!
//! The chain's `.dat` is the truth about which files it holds: every file
//! it lists up to the date must be present, and a data file it does not
//! list (left by a crash, or another chain's increment in the same second)
//! is not used. A chain without a `.dat` is recovered from the directory
//! listing, as ZODB's repozo does.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::command::recover_blobs;
use crate::error::{Error, IoContext, Result};
use crate::format::stamp::Stamp;
use crate::io::durable::{self, TempFile};
use crate::io::flush::Flusher;
use crate::io::md5::{self, Md5};
use crate::io::{buf, copy, read};
use crate::log::Log;
use crate::repository::chains::{ChainFile, Resolved};
use crate::repository::sums::Sums;
use crate::repository::Repository;

/// What `-R` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverOptions {
    pub repository: PathBuf,
    /// `-D` (already parsed); `None` recovers the newest state.
    pub date: Option<Stamp>,
    /// The text of `-D`, for messages.
    pub date_text: Option<String>,
    /// `-o`; `None` writes to stdout.
    pub output: Option<PathBuf>,
    /// `-w`
    pub with_verify: bool,
    /// `-F`: always a full recovery, even onto an existing FILE.
    pub full: bool,
    /// `-Q`: when extending an existing FILE, check only the md5 of the
    /// last backup range it covers.
    pub quick: bool,
    /// `--blob-dir`: the blob directory to recover beside the output.
    pub blob_dir: Option<PathBuf>,
}

/// What a recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The files concatenated, oldest first.
    pub files: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Whether an `.index` was put beside the output.
    pub index: bool,
}

/// Run a recovery.
pub fn recover(opts: &RecoverOptions, log: &Log) -> Result<Recovered> {
    let repo_dir = &opts.repository;
    match &opts.date_text {
        Some(d) => log.note(format_args!(
            "looking for files between last full backup and {d}..."
        )),
        None => log.note(format_args!("looking for the newest backup...")),
    }
    let repo = &Repository::open(repo_dir)?;
    if let Some(out) = &opts.output {
        check_output_names(out)?;
        refuse_output_in_repository(out, repo)?;
    }
    let _lock = repo.lock(false, log)?;
    let Some(chain) = repo.resolve(opts.date, log)? else {
        return Err(match &opts.date_text {
            Some(d) => Error::NoFiles(format!("No files in repository before {d}")),
            None => Error::NoFiles("No files in repository".into()),
        });
    };
    log.note(format_args!("files needed to recover state:"));
    for f in &chain.files {
        log.note(format_args!("\t{}", f.file.path.display()));
    }
    let sums = repo.sums();
    if opts.with_verify && !chain.has_dat {
        return Err(Error::io(
            "read",
            &chain.dat,
            io::Error::new(io::ErrorKind::NotFound, "needed by --with-verify"),
        ));
    }
    match &opts.output {
        None if opts.blob_dir.is_some() => Err(Error::Blobs(
            "--blob-dir needs -o: blobs are recovered beside a file, not to stdout".into(),
        )),
        None => {
            log.note(format_args!("Recovering file to stdout"));
            let stdout = io::stdout();
            let mut lock = stdout.lock();
            let sums = opts.with_verify.then_some(&sums);
            let r = to_stream(repo, &chain, sums, &mut lock, Path::new("<stdout>"), log)?;
            Ok(Recovered { index: false, ..r })
        }
        // a device or a pipe (`-o /dev/null`): written into as a stream,
        // as ZODB's repozo writes into it, never replaced by a file
        Some(out) if is_special(out) => {
            if opts.blob_dir.is_some() {
                return Err(Error::Blobs(format!(
                    "--blob-dir needs -o naming a file: {} is a device or a pipe",
                    out.display()
                )));
            }
            log.note(format_args!(
                "Recovering file into {} (not a regular file: no {}.index)",
                out.display(),
                out.display()
            ));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(out)
                .ctx("open", out)?;
            let sums = opts.with_verify.then_some(&sums);
            let r = to_stream(repo, &chain, sums, &mut f, out, log)?;
            Ok(Recovered { index: false, ..r })
        }
        Some(out) => {
            // the blobs first: the file is put in place only when every
            // blob it needs is
            let blobs = match &opts.blob_dir {
                Some(dir) => Some(recover_blobs::recover_blobs(repo, &chain, dir, log)?),
                None => {
                    let last = &chain.files.last().expect("a chain is never empty").file;
                    if repo.has_blob_list(last.name.stamp).unwrap_or(false) {
                        log.note(format_args!(
                            "the backups hold blobs, which were not recovered (no --blob-dir)"
                        ));
                    }
                    None
                }
            };
            let r = recover_to_file(opts, repo, &chain, &sums, out, log)?;
            if let Some(b) = blobs {
                recover_blobs::finish(b, log)?;
            }
            Ok(r)
        }
    }
}

/// Whether `out` exists (following symbolic links) and is neither a
/// regular file nor a directory: a character or block device, a pipe, a
/// socket.
fn is_special(out: &Path) -> bool {
    fs::metadata(out).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Recover the chain into a stream, buffered, flushed at the end.
fn to_stream(
    repo: &Repository,
    chain: &Resolved,
    sums: Option<&Sums>,
    out: &mut dyn Write,
    name: &Path,
    log: &Log,
) -> Result<Recovered> {
    let write_err = |e: io::Error| match e.kind() {
        io::ErrorKind::BrokenPipe => Error::BrokenPipe,
        _ => Error::io("write", name, e),
    };
    let mut w = io::BufWriter::with_capacity(buf::CHUNK, &mut *out);
    let r = concat(repo, chain, sums, Dest::Stream(&mut w, name), log)?;
    w.flush().map_err(write_err)?;
    drop(w);
    out.flush().map_err(write_err)?;
    Ok(r)
}

/// Where `FILE.index` comes from.
enum IndexPlan {
    /// The chain's last `.index`, read before anything is written.
    Copy { bytes: Vec<u8>, from: PathBuf },
    /// The chain's last `.index` is missing (removed by `--prune-index`,
    /// or lost): rebuilt once the data is written, see [`rebuild_index`].
    Rebuild { missing: PathBuf },
}

/// Read the chain's last `.index`, or plan to rebuild it.
fn plan_index(repo: &Repository, chain: &Resolved) -> Result<IndexPlan> {
    let last = &chain.files.last().expect("a chain is never empty").file;
    let from = repo.index_path(last);
    match repo.read_small(&last.name.index_name())? {
        Some(bytes) => Ok(IndexPlan::Copy { bytes, from }),
        None => Ok(IndexPlan::Rebuild { missing: from }),
    }
}

/// `FILE.index` for the recovered `data` (the output's bytes, at
/// `data_path`), in a temporary file beside `out`, synced, ready to be
/// published: the chain's last `.index` as it is, or one rebuilt. A
/// rebuild that cannot be done leaves the output without `FILE.index`,
/// with a warning, as ZODB's repozo leaves it when the `.index` is
/// missing (ZODB rebuilds it when it opens the file). Returns the file and
/// what it was made from, for the log.
fn prepare_index(
    repo: &Repository,
    sums: &Sums,
    chain: &Resolved,
    plan: IndexPlan,
    (data, data_path): (&File, &Path),
    out: &Path,
    log: &Log,
) -> Result<Option<(TempFile, String)>> {
    let (bytes, how) = match plan {
        IndexPlan::Copy { bytes, from } => (bytes, format!("{}", from.display())),
        IndexPlan::Rebuild { missing } => {
            match rebuild_index(repo, sums, chain, data, data_path, log)? {
                Ok((bytes, how)) => (bytes, how),
                Err(why) => {
                    log.note(format_args!(
                        "No index file to restore: {}",
                        missing.display()
                    ));
                    log.warn(format_args!(
                        "{} was recovered without {}.index: the backup's {} is missing and \
                         could not be rebuilt ({why}); ZODB rebuilds it when it opens the file",
                        out.display(),
                        out.display(),
                        missing.display()
                    ));
                    return Ok(None);
                }
            }
        }
    };
    let mut t = TempFile::new_in(&parent_dir(out))?;
    let tp = t.path().to_path_buf();
    t.file().write_all(&bytes).ctx("write", &tp)?;
    t.file().sync_all().ctx("fsync", &tp)?;
    Ok(Some((t, how)))
}

/// Rebuild the `.index` the chain's last backup would have had: the
/// nearest older `.index` of the chain that is valid exactly up to the end
/// of its backup file and agrees with the data (ZODB's sanity check), plus
/// a scan of the recovered bytes after it; with none, a scan of all of
/// them. Written as ZODB's `fsIndex.save` writes it, so the bytes are
/// those of the `.index` the backup wrote. `Ok(Err(why))` when the data
/// does not allow it (not FileStorage data, or committed data ending
/// before the chain does); an error reading the output is an error.
fn rebuild_index(
    repo: &Repository,
    sums: &Sums,
    chain: &Resolved,
    data: &File,
    data_path: &Path,
    log: &Log,
) -> Result<std::result::Result<(Vec<u8>, String), String>> {
    use crate::format::filestorage;
    use crate::format::index::Index;
    let end = if chain.has_dat {
        chain_bytes(&chain.files)
    } else {
        data.metadata().ctx("stat", data_path)?.len()
    };
    // the ends of the chain's files, from the .dat (none without one)
    let mut ends = Vec::new();
    let mut at = 0u64;
    for cf in &chain.files {
        match &cf.line {
            Some(l) if chain.has_dat && l.start == at => {
                at = l.end;
                ends.push(Some(at));
            }
            _ => ends.push(None),
        }
    }
    let mut base: Option<(u64, Index, String, usize)> = None;
    for i in (0..chain.files.len().saturating_sub(1)).rev() {
        let Some(file_end) = ends[i] else { continue };
        let p = repo.index_path(&chain.files[i].file);
        let bytes = match repo.read_small(&chain.files[i].file.name.index_name()) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                log.note(format_args!("not using {}: {e}", p.display()));
                continue;
            }
        };
        // only an .index our sums record as built by a scan, as for the
        // next backup: one built on the source's own Data.fs.index is as
        // good as that file was, and may be stale yet sane
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let why = match Index::read_pos(&bytes[..]) {
            Ok(pos) if pos != file_end => {
                format!("it is valid up to {pos}, its backup ends at {file_end}")
            }
            Ok(pos) if !sums.index_trusted(name, pos, xxhash_rust::xxh3::xxh3_128(&bytes)) => {
                "it is not known to come from a scan of the source".to_string()
            }
            Ok(_) => match Index::read_from(&bytes[..]) {
                Ok((pos, index)) if filestorage::index_is_sane(data, end, &index, pos) => {
                    base = Some((
                        pos,
                        index,
                        p.display().to_string(),
                        chain.files.len() - 1 - i,
                    ));
                    break;
                }
                Ok(_) => "it does not match the recovered data".to_string(),
                Err(e) => e,
            },
            Err(e) => e,
        };
        log.note(format_args!("not using {}: {why}", p.display()));
    }
    let (start, index, how) = match base {
        Some((pos, index, name, n)) => {
            (pos, index, format!("{name} and {n} increment(s) after it"))
        }
        None => {
            match filestorage::check_magic(data, end, data_path) {
                Ok(()) => {}
                // reading the recovered data failed: an error, not a reason
                Err(e @ Error::Io { .. }) => return Err(e),
                Err(e) => return Ok(Err(e.to_string())),
            }
            (4, Index::new(), "a scan of the whole file".to_string())
        }
    };
    let scan = match filestorage::scan_from(data, data_path, end, start, index, None) {
        Ok(s) => s,
        // reading the recovered data failed: an error, not a reason
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if scan.end != end {
        return Ok(Err(format!(
            "its committed data ends at {}, the backup at {end}",
            scan.end
        )));
    }
    let mut bytes = Vec::new();
    scan.index
        .write_to(end, &mut bytes)
        .ctx("write", data_path)?;
    Ok(Ok((bytes, format!("rebuilt from {how}"))))
}

/// Put the prepared index in place as `FILE.index` (after FILE itself),
/// then make both renames durable. Returns whether there was an index.
fn publish_index(
    new_index: Option<(TempFile, String)>,
    target_index: &Path,
    out: &Path,
    log: &Log,
) -> Result<bool> {
    let index = new_index.is_some();
    if let Some((t, how)) = new_index {
        log.note(format_args!(
            "Restoring index file {how} to {}",
            target_index.display()
        ));
        t.publish(target_index, true)?;
    }
    durable::sync_parent(out)?;
    Ok(index)
}

/// `FILE.index`.
fn index_beside(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

fn remove_if_present(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p, e)),
    }
}

/// Refuse an output in the repository directory itself (whatever path,
/// symbolic link or bind mount leads there): recovery never writes into
/// the repository. `FILE` could be one of its backups (extended or
/// replaced, the backup would be lost), and `FILE.part` or `FILE.index`
/// could take the name of one of its files.
/// Refuse, before anything is written, an output that cannot be a file:
/// a name ending in `/`, `.` or `..`, or an existing directory; and one
/// whose `FILE.part` or `FILE.index` cannot be named (too long, a parent
/// that is not a directory), instead of failing after writing it all.
fn check_output_names(out: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = out.as_os_str().as_bytes();
    let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or(b"");
    let is_dir = matches!(last, b"" | b"." | b"..") || fs::metadata(out).is_ok_and(|m| m.is_dir());
    if is_dir {
        return Err(Error::io(
            "recover into",
            out,
            io::Error::new(
                io::ErrorKind::IsADirectory,
                "it names a directory: -o takes the file to write",
            ),
        ));
    }
    for ext in [".part", ".index"] {
        let mut p = out.as_os_str().to_os_string();
        p.push(ext);
        let p = PathBuf::from(p);
        match fs::symlink_metadata(&p) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("use", &p, e)),
        }
    }
    Ok(())
}

fn refuse_output_in_repository(out: &Path, repo: &Repository) -> Result<()> {
    // a missing directory is reported when the output is created
    if repo.is_at(&parent_dir(out)) {
        return Err(Error::io(
            "recover into",
            out,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is in the repository directory, and recovery never writes into the \
                 repository: choose an output outside it",
            ),
        ));
    }
    Ok(())
}

/// An existing FILE that may be extended in place, opened for reading and
/// writing; `Ok(None)` when there is no FILE; `Err(why)` when it must not
/// or cannot be extended (then it is replaced by a full recovery, whose
/// rename replaces FILE's directory entry and never writes into the file
/// it named). Never extended in place: a symbolic link, anything but a
/// regular file, a file with another name (a hard link: the other name,
/// perhaps a backup in the repository, would change too), the same file
/// as one of the repository, a file we may not open for writing.
fn open_standby(out: &Path, repo: &Repository) -> std::result::Result<Option<File>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect it: {e}")),
    };
    if meta.file_type().is_symlink() {
        // replaced by the new file, as ZODB's repozo does
        return Err("it is a symbolic link".into());
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if let Some(name) = repo.name_of(&meta) {
        return Err(format!(
            "it is the repository's {name} (a hard link), which recovery never writes into"
        ));
    }
    if meta.nlink() > 1 {
        return Err(format!(
            "it has {} hard links, whose other names would change too",
            meta.nlink()
        ));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(out)
        .map_err(|e| format!("cannot open it for writing: {e}"))?;
    let now = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if now.dev() != meta.dev() || now.ino() != meta.ino() || now.nlink() > 1 || !now.is_file() {
        return Err("it changed while it was being examined".into());
    }
    Ok(Some(file))
}

/// How an existing FILE relates to the state being recovered.
enum Existing {
    /// FILE holds the first `k` files of the chain exactly (its length may
    /// have been cut back to `len` from a longer, interrupted append).
    Prefix { k: usize, len: u64, truncate: bool },
    /// Not usable: recover in full, for this reason.
    Unusable(String),
}

/// Check FILE against the chain: it must end at a backup boundary (or
/// inside the first range after one, left by an interrupted append) and
/// every range it covers must hold the backup file's bytes (with `-Q`,
/// only the last range that holds bytes: an empty range matches anything).
/// With `-w`, every file of the chain is then checked as a full recovery
/// checks it (the files FILE covers included): a damaged one is an error,
/// before FILE is touched.
fn examine_existing(
    repo: &Repository,
    opts: &RecoverOptions,
    chain: &Resolved,
    sums: &Sums,
    file: &File,
    out: &Path,
    log: &Log,
) -> Result<Existing> {
    let lines: Vec<&crate::format::dat::DatLine> =
        chain.files.iter().filter_map(|c| c.line.as_ref()).collect();
    let len = file.metadata().ctx("stat", out)?.len();
    let target = lines.last().map(|l| l.end).unwrap_or(0);
    if len > target {
        return Ok(Existing::Unusable(format!(
            "it holds {len} bytes, more than the {target} being recovered"
        )));
    }
    // the number of whole ranges FILE covers
    let k = lines.iter().take_while(|l| l.end <= len).count();
    if k == 0 {
        return Ok(Existing::Unusable(format!(
            "it is shorter ({len} bytes) than the full backup"
        )));
    }
    let boundary = lines[k - 1].end;
    let compared: Vec<usize> = if opts.quick {
        (0..k)
            .rev()
            .find(|&i| !lines[i].is_empty())
            .into_iter()
            .collect()
    } else {
        (0..k).filter(|&i| !lines[i].is_empty()).collect()
    };
    // md5 sums of backup files computed on the way, for the -w checks
    let mut md5s: Vec<Option<String>> = vec![None; chain.files.len()];
    for i in compared {
        let (l, cf) = (lines[i], &chain.files[i]);
        // FILE's bytes must equal the backup file's (what a full recovery
        // would write). Where our sums know the file, FILE's bytes having
        // the recorded xxh3 says so at memory speed (-w then checks the
        // backup file itself below); else they are compared with the
        // backup file's, hashing it with md5 on the way for -w.
        let fast = match sums.for_line(l) {
            Some(e) => {
                let (h, n) =
                    crate::io::xxh3::hash_range(file, l.start, l.len()).ctx("read", out)?;
                crate::progress::read(n);
                n == l.len() && h == e.content
            }
            None => false,
        };
        let same = fast || {
            match same_as_backup(repo, cf, file, out, l.start, opts.with_verify)? {
                Some((n, md5)) if n == l.len() => {
                    md5s[i] = md5;
                    true
                }
                _ => false,
            }
        };
        if !same {
            return Ok(Existing::Unusable(format!(
                "its bytes {}..{} differ from {} (packed since, another database, or damaged)",
                l.start, l.end, l.name
            )));
        }
    }
    if opts.with_verify {
        // where ZODB's repozo reads a backup file, we read that backup file
        for (cf, md5) in chain.files.iter().zip(md5s) {
            verify_backup_file(repo, cf, sums, md5, log)?;
        }
    }
    if boundary != len {
        log.note(format_args!(
            "{} ends inside {} (an interrupted recovery): cutting it back to {boundary}",
            out.display(),
            lines[k].name
        ));
    }
    Ok(Existing::Prefix {
        k,
        len: boundary,
        truncate: boundary != len,
    })
}

/// Whether a backup file's uncompressed bytes equal `file`'s from `at`:
/// `Some((length, md5 hex when asked))` when they do, `None` at the first
/// difference (or when `file` ends first).
fn same_as_backup(
    repo: &Repository,
    cf: &ChainFile,
    file: &File,
    out: &Path,
    at: u64,
    want_md5: bool,
) -> Result<Option<(u64, Option<String>)>> {
    let f = &cf.file;
    let mut r = repo.open_data(&f.file_name(), f.name.gzip)?;
    let mut md5 = Md5::new();
    let mut theirs = crate::io::buf::AlignedBuf::new(buf::CHUNK);
    let mut mine = crate::io::buf::AlignedBuf::new(buf::CHUNK);
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut theirs) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read::read_error(&f.path, f.name.gzip, e)),
        };
        let got = read::read_full_at(file, &mut mine[..n], at + n_total).ctx("read", out)?;
        crate::progress::read(n as u64);
        if got < n || mine[..n] != theirs[..n] {
            return Ok(None);
        }
        if want_md5 {
            md5.update(&theirs[..n]);
        }
        n_total += n as u64;
    }
    Ok(Some((n_total, want_md5.then(|| md5::hex(&md5.finalize())))))
}

/// `-w`: check a backup file as a full recovery does: its size, and its
/// md5 (`md5`, when already computed; else by the xxh3 our sums recorded
/// with that md5 where there is one, a mismatch being settled by the md5).
/// The errors are the ones a full recovery gives.
fn verify_backup_file(
    repo: &Repository,
    cf: &ChainFile,
    sums: &Sums,
    md5: Option<String>,
    log: &Log,
) -> Result<()> {
    let f = &cf.file;
    let line = cf.line.as_ref().expect("verify requires a .dat");
    let mut how = "";
    let (n, sum) = match md5 {
        Some(m) => (line.len(), m),
        None => {
            let fast = match sums.for_line(line) {
                Some(e) => {
                    let (h, n) = repo.hash_data(&f.file_name(), f.name.gzip)?;
                    check_size(cf, n)?;
                    h == e.content
                }
                None => false,
            };
            if fast {
                how = " (by its fast checksum)";
                (line.len(), line.md5.clone())
            } else {
                let mut m = Md5::new();
                let r = repo.open_data(&f.file_name(), f.name.gzip)?;
                let n = read::stream_data_from(r, &f.path, f.name.gzip, Some(&mut m), None)?;
                (n, md5::hex(&m.finalize()))
            }
        }
    };
    check_size(cf, n)?;
    check_md5(cf, &sum)?;
    log.note(format_args!(
        "Checked {} : {n} bytes, md5: {sum}{how}",
        f.path.display()
    ));
    Ok(())
}

/// A file's uncompressed size must be its `.dat` range's.
fn check_size(cf: &ChainFile, n: u64) -> Result<()> {
    match &cf.line {
        Some(line) if n != line.len() => Err(Error::VerificationFailed(vec![format!(
            "{} is {n} bytes, should be {} bytes",
            cf.file.path.display(),
            line.len()
        )])),
        _ => Ok(()),
    }
}

/// A file's md5 must be its `.dat` line's.
fn check_md5(cf: &ChainFile, sum: &str) -> Result<()> {
    let line = cf.line.as_ref().expect("verify requires a .dat");
    if sum != line.md5 {
        return Err(Error::VerificationFailed(vec![format!(
            "{} has checksum {sum} instead of {}",
            cf.file.path.display(),
            line.md5
        )]));
    }
    Ok(())
}

/// Append the missing increments to an existing FILE that holds the first
/// `k` files of the chain. With `-w` every file was checked before (by
/// [`examine_existing`]), so nothing unchecked is ever written. An I/O
/// error leaves FILE at the last whole file that is on disk; a crash
/// leaves FILE a prefix of the new state (whole files up to a point,
/// perhaps part of one more) that the next run cuts back to a boundary
/// and completes.
#[allow(clippy::too_many_arguments)]
fn recover_incrementally(
    repo: &Repository,
    sums: &Sums,
    chain: &Resolved,
    file: File,
    out: &Path,
    k: usize,
    len: u64,
    truncate: bool,
    log: &Log,
) -> Result<Recovered> {
    let plan = plan_index(repo, chain)?;
    let target_index = index_beside(out);
    let missing = &chain.files[k..];
    if missing.is_empty() && !truncate {
        log.note(format_args!("{} is already up to date", out.display()));
    } else {
        log.note(format_args!(
            "{} holds the first {k} backup file(s): appending {} more",
            out.display(),
            missing.len()
        ));
    }
    // the old index describes the old FILE; it goes before FILE changes
    remove_if_present(&target_index)?;
    if truncate {
        file.set_len(len).ctx("truncate", out)?;
    }
    let mut pos = len;
    let mut bytes = 0u64;
    let mut names = Vec::new();
    let flusher = Flusher::new(&file, out)?;
    for cf in missing {
        use std::io::Seek;
        (&file).seek(io::SeekFrom::Start(pos)).ctx("seek", out)?;
        let one = Resolved {
            files: vec![cf.clone()],
            dat: chain.dat.clone(),
            has_dat: chain.has_dat,
            dat_file: None,
            orphans: Vec::new(),
        };
        // (with -w, checked already: copied like any recovery)
        match concat(
            repo,
            &one,
            None,
            Dest::File(copy::Out::new(&file, out, &flusher)),
            log,
        ) {
            Ok(r) => {
                pos += r.bytes;
                bytes += r.bytes;
                names.extend(r.files);
            }
            Err(e) => {
                // leave FILE at the last whole file that is on disk: every
                // one appended if they synced, else none of them (a failed
                // sync's error is seen once, here, and the page cache
                // would show the next run bytes the disk may not hold)
                let synced = flusher.finish().is_ok() && file.sync_all().is_ok();
                let _ = file.set_len(if synced { pos } else { len });
                let _ = file.sync_all();
                return Err(e);
            }
        }
    }
    if let Err(e) = flusher
        .finish()
        .and_then(|()| file.sync_all().ctx("fsync", out))
    {
        // what was appended may not be on disk: the next run appends it
        // again
        let _ = file.set_len(len);
        let _ = file.sync_all();
        return Err(e);
    }
    let new_index = prepare_index(repo, sums, chain, plan, (&file, out), out, log)?;
    let index = publish_index(new_index, &target_index, out, log)?;
    log.note(format_args!(
        "appended {bytes} bytes; {} is complete",
        out.display()
    ));
    Ok(Recovered {
        files: names,
        bytes,
        index,
    })
}

fn recover_to_file(
    opts: &RecoverOptions,
    repo: &Repository,
    chain: &Resolved,
    sums: &Sums,
    out: &Path,
    log: &Log,
) -> Result<Recovered> {
    log.note(format_args!("Recovering file to {}", out.display()));
    if !opts.full && chain.has_dat {
        let why = match open_standby(out, repo) {
            Ok(None) => None,
            Ok(Some(file)) => match examine_existing(repo, opts, chain, sums, &file, out, log)? {
                Existing::Prefix { k, len, truncate } => {
                    return recover_incrementally(
                        repo, sums, chain, file, out, k, len, truncate, log,
                    );
                }
                Existing::Unusable(why) => Some(why),
            },
            Err(why) => Some(why),
        };
        if let Some(why) = why {
            log.note(format_args!(
                "{} cannot be extended ({why}): recovering in full",
                out.display()
            ));
        }
    }
    check_free_space(repo, chain, out)?;
    let plan = plan_index(repo, chain)?;
    let mut part_name = out.as_os_str().to_owned();
    part_name.push(".part");
    let mut part = TempFile::at(PathBuf::from(part_name))?;
    let part_path = part.path().to_path_buf();
    let r = {
        let file: &File = part.file();
        if chain.has_dat {
            durable::preallocate(file, &part_path, 0, chain_bytes(&chain.files))?;
        }
        let flusher = Flusher::new(file, &part_path)?;
        let r = concat(
            repo,
            chain,
            opts.with_verify.then_some(sums),
            Dest::File(copy::Out::new(file, &part_path, &flusher)),
            log,
        )?;
        flusher.finish()?;
        r
    };
    // (the temporary file is open for writing only)
    let written = File::open(&part_path).ctx("open", &part_path)?;
    let new_index = prepare_index(repo, sums, chain, plan, (&written, &part_path), out, log)?;
    let target_index = index_beside(out);
    // An old FILE.index must never sit beside the new FILE.
    remove_if_present(&target_index)?;
    part.publish(out, true)?;
    let index = publish_index(new_index, &target_index, out, log)?;
    Ok(Recovered { index, ..r })
}

/// The bytes the `.dat` lines of `files` cover.
fn chain_bytes(files: &[ChainFile]) -> u64 {
    files
        .iter()
        .filter_map(|c| c.line.as_ref())
        .map(|l| l.len())
        .sum()
}

/// Refuse to start a recovery that cannot fit beside the old output (which
/// is kept until the new one is complete).
fn check_free_space(repo: &Repository, chain: &Resolved, out: &Path) -> Result<()> {
    let need: u64 = if chain.has_dat {
        chain_bytes(&chain.files)
    } else {
        // without a .dat only plain files have a known size
        chain
            .files
            .iter()
            .filter(|c| !c.file.name.gzip)
            .filter_map(|c| repo.size_of(&c.file.file_name()))
            .sum()
    };
    let dir = parent_dir(out);
    let Ok(cdir) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
    else {
        return Ok(());
    };
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(cdir.as_ptr(), &mut st) } != 0 {
        // the directory's problems are reported when we create the file
        return Ok(());
    }
    if st.f_blocks == 0 {
        // no size reported (a tmpfs mounted with size=0 has no limit; some
        // FUSE file systems): nothing to judge by
        return Ok(());
    }
    let have = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if need > have {
        return Err(Error::NoSpace {
            path: out.to_path_buf(),
            need,
            have,
        });
    }
    Ok(())
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where recovered bytes go.
enum Dest<'a> {
    /// A file: plain data files are copied by the kernel.
    File(copy::Out<'a>),
    /// A stream (stdout).
    Stream(&'a mut dyn Write, &'a Path),
}

/// Write the chain's bytes to `dest`. Each file's size is checked against
/// its `.dat` line (free); with `verify` (the repository's sums) also its
/// md5: by the xxh3 our sums recorded with that md5 where there is one (a
/// match means the md5 matches; a mismatch is settled by the md5 itself),
/// else by the md5. Without `verify` nothing is hashed and plain files are
/// copied with `copy_file_range`.
fn concat(
    repo: &Repository,
    chain: &Resolved,
    verify: Option<&Sums>,
    mut dest: Dest<'_>,
    log: &Log,
) -> Result<Recovered> {
    crate::progress::phase("recover", chain_bytes(&chain.files));
    let mut bytes = 0u64;
    let mut names = Vec::new();
    for cf in &chain.files {
        let f = &cf.file;
        let entry = verify.and_then(|s| cf.line.as_ref().and_then(|l| s.for_line(l)));
        let want_md5 = verify.is_some() && entry.is_none();
        let mut md5 = Md5::new();
        let mut sum: Option<String> = None;
        // whether the file's bytes have the xxh3 recorded with its md5
        let mut fast_ok = false;
        let n = match &mut dest {
            Dest::File(out) if !f.name.gzip && !repo.is_remote() => {
                let src = File::open(&f.path).ctx("open", &f.path)?;
                let len = src.metadata().ctx("stat", &f.path)?.len();
                if verify.is_some() {
                    let (s, fast) = copy::copy_and_hash(&src, &f.path, 0, len, *out, want_md5)?;
                    sum = s;
                    fast_ok = entry.is_some_and(|e| e.content == fast);
                } else {
                    copy::kernel_copy(&src, &f.path, 0, len, *out, true)?;
                }
                len
            }
            Dest::File(out) => {
                // the inflated bytes, as written, are hashed
                let mut fast = entry.map(|_| crate::io::xxh3::Hasher::new());
                let n = copy::stream_to_file(
                    repo.open_data(&f.file_name(), f.name.gzip)?,
                    &f.path,
                    f.name.gzip,
                    want_md5.then_some(&mut md5),
                    fast.as_mut(),
                    *out,
                )?;
                if let (Some(e), Some(h)) = (entry, fast) {
                    fast_ok = e.content == h.digest128();
                }
                n
            }
            Dest::Stream(w, out_path) => read::stream_data_from(
                repo.open_data(&f.file_name(), f.name.gzip)?,
                &f.path,
                f.name.gzip,
                verify.is_some().then_some(&mut md5),
                Some((&mut **w, out_path)),
            )?,
        };
        check_size(cf, n)?;
        if verify.is_some() {
            let line = cf.line.as_ref().expect("verify requires a .dat");
            let (sum, how) = if fast_ok {
                (line.md5.clone(), " (by its fast checksum)")
            } else if let Some(s) = sum {
                (s, "")
            } else if want_md5 || matches!(dest, Dest::Stream(..)) {
                (md5::hex(&md5.finalize()), "")
            } else {
                // the fast checksum did not match: the md5 decides
                let mut m = Md5::new();
                let r = repo.open_data(&f.file_name(), f.name.gzip)?;
                read::stream_data_from(r, &f.path, f.name.gzip, Some(&mut m), None)?;
                (md5::hex(&m.finalize()), "")
            };
            check_md5(cf, &sum)?;
            log.note(format_args!(
                "Recovered chunk {} : {n} bytes, md5: {sum}{how}",
                f.path.display()
            ));
        } else {
            log.note(format_args!(
                "Recovered chunk {} : {n} bytes",
                f.path.display()
            ));
        }
        bytes += n;
        names.push(f.file_name());
    }
    log.note(format_args!("Recovered a total of {bytes} bytes"));
    Ok(Recovered {
        files: names,
        bytes,
        index: false,
    })
}
