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
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::durable::{self, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::lock;
use crate::pipeline;
use crate::repo::{self, Resolved};
use crate::stamp::Stamp;
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
                opts.with_verify,
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
        Some(out) => recover_to_file(opts, &chain, out, log),
    }
}

fn recover_to_file(
    opts: &RecoverOptions,
    chain: &Resolved,
    out: &Path,
    log: &Log,
) -> Result<Recovered> {
    log.note(format_args!("Recovering file to {}", out.display()));
    check_free_space(chain, out)?;
    let mut part_name = out.as_os_str().to_owned();
    part_name.push(".part");
    let mut part = TempFile::at(PathBuf::from(part_name))?;
    let part_path = part.path().to_path_buf();
    let r = {
        let file: &File = part.file();
        concat(chain, opts.with_verify, Dest::File(file, &part_path), log)?
    };
    // The index: the chain's last .index, copied beside the output.
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
    // An old FILE.index must never sit beside the new FILE.
    match fs::remove_file(&target_index) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &target_index, e)),
    }
    part.publish(out, true)?;
    let index = new_index.is_some();
    if let Some(t) = new_index {
        log.note(format_args!(
            "Restoring index file {} to {}",
            src_index.display(),
            target_index.display()
        ));
        t.publish(&target_index, true)?;
    }
    durable::sync_parent(out)?;
    Ok(Recovered { index, ..r })
}

/// Refuse to start a recovery that cannot fit beside the old output (which
/// is kept until the new one is complete).
fn check_free_space(chain: &Resolved, out: &Path) -> Result<()> {
    let need: u64 = if chain.has_dat {
        chain
            .files
            .iter()
            .filter_map(|c| c.line.as_ref())
            .map(|l| l.len())
            .sum()
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
    File(&'a File, &'a Path),
    /// A stream (stdout).
    Stream(&'a mut dyn Write, &'a Path),
}

/// Write the chain's bytes to `dest`. Each file's size is checked against
/// its `.dat` line (free); with `verify` also its md5. Without `verify`
/// nothing is hashed and plain files are copied with `copy_file_range`.
fn concat(chain: &Resolved, verify: bool, mut dest: Dest<'_>, log: &Log) -> Result<Recovered> {
    let mut bytes = 0u64;
    let mut names = Vec::new();
    for cf in &chain.files {
        let f = &cf.file;
        let mut md5 = Md5::new();
        let mut sum: Option<String> = None;
        let n = match &mut dest {
            Dest::File(out, out_path) if !f.name.gzip => {
                let src = File::open(&f.path).ctx("open", &f.path)?;
                let len = src.metadata().ctx("stat", &f.path)?.len();
                if verify {
                    sum = Some(pipeline::copy_and_hash(
                        &src, &f.path, 0, len, out, out_path,
                    )?);
                } else {
                    pipeline::kernel_copy(&src, &f.path, 0, len, out, out_path)?;
                }
                len
            }
            Dest::File(out, out_path) => {
                let mut w: &File = out;
                pipeline::stream_data(
                    &f.path,
                    true,
                    verify.then_some(&mut md5),
                    Some((&mut w, out_path)),
                )?
            }
            Dest::Stream(w, out_path) => pipeline::stream_data(
                &f.path,
                f.name.gzip,
                verify.then_some(&mut md5),
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
        if verify {
            let sum = sum.unwrap_or_else(|| pipeline::hex(&md5.finalize()));
            let line = cf.line.as_ref().expect("verify requires a .dat");
            if sum != line.md5 {
                return Err(Error::VerificationFailed(vec![format!(
                    "{} has checksum {sum} instead of {}",
                    f.path.display(),
                    line.md5
                )]));
            }
            log.note(format_args!(
                "Recovered chunk {} : {n} bytes, md5: {sum}",
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
