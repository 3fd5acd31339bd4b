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
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::checksum::Md5;

use crate::durable::{self, Flusher, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::lock;
use crate::pipeline;
use crate::repo::{self, ChainFile, Resolved};
use crate::stamp::Stamp;
use crate::sums::Sums;
use crate::Log;

/// What `-R` was asked to do.
#[derive(Clone, Debug, Default)]
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
    repo::check_dir(repo_dir)?;
    let _lock = lock::lock(repo_dir, false, log)?;
    let Some(chain) = repo::resolve(repo_dir, opts.date, log)? else {
        return Err(match &opts.date_text {
            Some(d) => Error::NoFiles(format!("No files in repository before {d}")),
            None => Error::NoFiles("No files in repository".into()),
        });
    };
    log.note(format_args!("files needed to recover state:"));
    for f in &chain.files {
        log.note(format_args!("\t{}", f.file.path.display()));
    }
    let sums = Sums::load(repo_dir);
    if opts.with_verify && !chain.has_dat {
        return Err(Error::io(
            "read",
            &chain.dat,
            io::Error::new(io::ErrorKind::NotFound, "needed by --with-verify"),
        ));
    }
    match &opts.output {
        None => {
            log.note(format_args!("Recovering file to stdout"));
            let stdout = io::stdout();
            let mut lock = stdout.lock();
            let mut w = io::BufWriter::with_capacity(pipeline::CHUNK, &mut lock);
            let r = concat(
                &chain,
                opts.with_verify.then_some(&sums),
                Dest::Stream(&mut w, Path::new("<stdout>")),
                log,
            )?;
            w.flush().map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => Error::BrokenPipe,
                _ => Error::io("write", Path::new("<stdout>"), e),
            })?;
            drop(w);
            lock.flush().map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => Error::BrokenPipe,
                _ => Error::io("write", Path::new("<stdout>"), e),
            })?;
            Ok(Recovered { index: false, ..r })
        }
        Some(out) => recover_to_file(opts, &chain, &sums, out, log),
    }
}

/// The chain's last `.index`, copied into a temporary file beside `out`,
/// ready to be published as `FILE.index`.
fn prepare_index(
    opts: &RecoverOptions,
    chain: &Resolved,
    out: &Path,
    log: &Log,
) -> Result<(Option<TempFile>, PathBuf, PathBuf)> {
    let last = &chain.files.last().expect("a chain is never empty").file;
    let src_index = repo::index_path(&opts.repository, last);
    let mut index_name = out.as_os_str().to_owned();
    index_name.push(".index");
    let target_index = PathBuf::from(index_name);
    let new_index = match fs::read(&src_index) {
        Ok(bytes) => {
            let dir = parent_dir(out);
            let mut t = TempFile::new_in(&dir)?;
            let tp = t.path().to_path_buf();
            t.file().write_all(&bytes).ctx("write", &tp)?;
            t.file().sync_all().ctx("fsync", &tp)?;
            Some(t)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log.note(format_args!(
                "No index file to restore: {}",
                src_index.display()
            ));
            None
        }
        Err(e) => return Err(Error::io("read", &src_index, e)),
    };
    Ok((new_index, src_index, target_index))
}

/// Put the prepared index in place as `FILE.index` (after FILE itself),
/// then make both renames durable. Returns whether there was an index.
fn publish_index(
    new_index: Option<TempFile>,
    src_index: &Path,
    target_index: &Path,
    out: &Path,
    log: &Log,
) -> Result<bool> {
    let index = new_index.is_some();
    if let Some(t) = new_index {
        log.note(format_args!(
            "Restoring index file {} to {}",
            src_index.display(),
            target_index.display()
        ));
        t.publish(target_index, true)?;
    }
    durable::sync_parent(out)?;
    Ok(index)
}

fn remove_if_present(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p, e)),
    }
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
/// every range it covers must have the recorded md5 (only the last with
/// `-Q`).
fn examine_existing(
    opts: &RecoverOptions,
    chain: &Resolved,
    sums: &Sums,
    out: &Path,
    log: &Log,
) -> Result<Existing> {
    let lines: Vec<&crate::dat::DatLine> =
        chain.files.iter().filter_map(|c| c.line.as_ref()).collect();
    match fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => {
            // replaced by the new file, as ZODB's repozo does
            return Ok(Existing::Unusable("it is a symbolic link".into()));
        }
        _ => {}
    }
    let file = match File::open(out) {
        Ok(f) => f,
        Err(e) => return Ok(Existing::Unusable(format!("cannot open it: {e}"))),
    };
    let meta = file.metadata().ctx("stat", out)?;
    if !meta.is_file() {
        return Ok(Existing::Unusable("not a regular file".into()));
    }
    let len = meta.len();
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
    let check_from = if opts.quick { k - 1 } else { 0 };
    for (l, cf) in lines[check_from..k].iter().zip(&chain.files[check_from..k]) {
        // With -w, FILE's bytes must have the recorded md5; otherwise they
        // must equal the backup file's bytes (what a full recovery would
        // write), which is many times cheaper to check than an md5. Either
        // holds when they have the xxh3 our sums recorded with that md5.
        let fast = match sums.for_line(l) {
            Some(e) => {
                let (h, n) = crate::sums::hash_range(&file, l.start, l.len()).ctx("read", out)?;
                n == l.len() && h == e.content
            }
            None => false,
        };
        let same = if fast {
            true
        } else if opts.with_verify {
            pipeline::md5_range(&file, out, l.start, l.len())? == l.md5
        } else {
            let f = &cf.file;
            pipeline::same_as_source(&f.path, f.name.gzip, &file, out, l.start)? == Some(l.len())
        };
        if !same {
            return Ok(Existing::Unusable(format!(
                "its bytes {}..{} differ from {} (packed since, another database, or damaged)",
                l.start, l.end, l.name
            )));
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

/// Append the missing increments to an existing FILE that holds the first
/// `k` files of the chain. A crash leaves FILE a prefix of the new state
/// (whole files up to a point, perhaps part of one more) that the next run
/// cuts back to a boundary and completes.
#[allow(clippy::too_many_arguments)]
fn recover_incrementally(
    opts: &RecoverOptions,
    chain: &Resolved,
    sums: &Sums,
    out: &Path,
    k: usize,
    len: u64,
    truncate: bool,
    log: &Log,
) -> Result<Recovered> {
    let (new_index, src_index, target_index) = prepare_index(opts, chain, out, log)?;
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
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(out)
        .ctx("open for appending", out)?;
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
        match concat(
            &one,
            opts.with_verify.then_some(sums),
            Dest::File(pipeline::Out::new(&file, out, &flusher)),
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
    let index = publish_index(new_index, &src_index, &target_index, out, log)?;
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
    chain: &Resolved,
    sums: &Sums,
    out: &Path,
    log: &Log,
) -> Result<Recovered> {
    log.note(format_args!("Recovering file to {}", out.display()));
    if !opts.full && chain.has_dat && fs::symlink_metadata(out).is_ok() {
        match examine_existing(opts, chain, sums, out, log)? {
            Existing::Prefix { k, len, truncate } => {
                return recover_incrementally(opts, chain, sums, out, k, len, truncate, log);
            }
            Existing::Unusable(why) => log.note(format_args!(
                "{} cannot be extended ({why}): recovering in full",
                out.display()
            )),
        }
    }
    check_free_space(chain, out)?;
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
            chain,
            opts.with_verify.then_some(sums),
            Dest::File(pipeline::Out::new(file, &part_path, &flusher)),
            log,
        )?;
        flusher.finish()?;
        r
    };
    let (new_index, src_index, target_index) = prepare_index(opts, chain, out, log)?;
    // An old FILE.index must never sit beside the new FILE.
    remove_if_present(&target_index)?;
    part.publish(out, true)?;
    let index = publish_index(new_index, &src_index, &target_index, out, log)?;
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
fn check_free_space(chain: &Resolved, out: &Path) -> Result<()> {
    let need: u64 = if chain.has_dat {
        chain_bytes(&chain.files)
    } else {
        // without a .dat only plain files have a known size
        chain
            .files
            .iter()
            .filter(|c| !c.file.name.gzip)
            .filter_map(|c| fs::metadata(&c.file.path).ok())
            .map(|m| m.len())
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
    File(pipeline::Out<'a>),
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
            Dest::File(out) if !f.name.gzip => {
                let src = File::open(&f.path).ctx("open", &f.path)?;
                let len = src.metadata().ctx("stat", &f.path)?.len();
                if verify.is_some() {
                    let (s, fast) = pipeline::copy_and_hash(&src, &f.path, 0, len, *out, want_md5)?;
                    sum = s;
                    fast_ok = entry.is_some_and(|e| e.content == fast);
                } else {
                    pipeline::kernel_copy(&src, &f.path, 0, len, *out, true)?;
                }
                len
            }
            Dest::File(out) => {
                // the inflated bytes, as written, are hashed
                let mut fast = entry.map(|_| crate::sums::Hasher::new());
                let n = pipeline::inflate_to_file(
                    &f.path,
                    want_md5.then_some(&mut md5),
                    fast.as_mut(),
                    *out,
                )?;
                if let (Some(e), Some(h)) = (entry, fast) {
                    fast_ok = e.content == h.digest128();
                }
                n
            }
            Dest::Stream(w, out_path) => pipeline::stream_data(
                &f.path,
                f.name.gzip,
                verify.is_some().then_some(&mut md5),
                Some((&mut **w, out_path)),
            )?,
        };
        if let Some(line) = &cf.line {
            if n != line.len() {
                return Err(Error::VerificationFailed(vec![format!(
                    "{} is {n} bytes, should be {} bytes",
                    f.path.display(),
                    line.len()
                )]));
            }
        }
        if verify.is_some() {
            let line = cf.line.as_ref().expect("verify requires a .dat");
            let (sum, how) = if fast_ok {
                (line.md5.clone(), " (by its fast checksum)")
            } else if let Some(s) = sum {
                (s, "")
            } else if want_md5 || matches!(dest, Dest::Stream(..)) {
                (pipeline::hex(&md5.finalize()), "")
            } else {
                // the fast checksum did not match: the md5 decides
                let mut m = Md5::new();
                pipeline::stream_data(&f.path, f.name.gzip, Some(&mut m), None)?;
                (pipeline::hex(&m.finalize()), "")
            };
            if sum != line.md5 {
                return Err(Error::VerificationFailed(vec![format!(
                    "{} has checksum {sum} instead of {}",
                    f.path.display(),
                    line.md5
                )]));
            }
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
