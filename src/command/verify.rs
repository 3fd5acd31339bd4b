//! `-V`: check every file that the newest chain's `.dat` lists: present,
//! its uncompressed size equal to `end - start`, its md5 equal to the
//! recorded one (sizes only with `-Q`). Every bad file is reported, then the
//! run fails once.
//!
//! A file our sums know is checked by the xxh3 of its uncompressed bytes
//! (inflated for gzip files, as ZODB's repozo inflates them for the md5),
//! recorded with the md5 from the same bytes when it was written: a match
//! means its md5 is the recorded one, at a fraction of the cost. Any other
//! outcome is settled by the md5, as ZODB's repozo settles it.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::stamp::{self, DataName, Stamp};
use crate::io::md5::{self, Md5};
use crate::io::read;
use crate::log::Log;
use crate::repository::Repository;

/// What `-V` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    pub repository: PathBuf,
    /// `-Q`: sizes only.
    pub quick: bool,
    /// `--max-age`: also fail when the newest backup is older (seconds).
    pub max_age: Option<u64>,
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Bytes (uncompressed) checked.
    pub bytes: u64,
}

/// Run a verification.
pub fn verify(opts: &VerifyOptions, log: &Log) -> Result<Verified> {
    let repo_dir = &opts.repository;
    let repo = &Repository::open(repo_dir)?;
    let _lock = repo.lock(false, log)?;
    let listing = repo.list()?;
    // The newest chain, named by its full backup or by its .dat (a .dat
    // whose full backup is missing is that chain, reported missing below).
    let Some(span) = repo.span_at(&listing, None)? else {
        return Err(Error::NoFiles("No files in repository".into()));
    };
    let dat_path = span.dat.clone();
    let Some(dat) = span.dat_file.clone() else {
        return Err(Error::io(
            "read",
            &dat_path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        ));
    };
    let mut bad = Vec::new();
    if let Some(max) = opts.max_age {
        // the newest backup made: the newest data file in the repository
        // (a `.dat` alone, empty or listing a missing file, is not one)
        let newest = listing
            .files
            .iter()
            .map(|f| f.name.stamp)
            .max()
            .unwrap_or(span.head);
        let now = Stamp::now()?;
        let age = now.seconds_since(newest);
        log.note(format_args!(
            "the newest backup is {newest}, {} old",
            stamp::human(age)
        ));
        // A stamp far in the future (any file's, as `-B` sees them) means
        // a wrong clock: backups refuse to run, and an age below zero
        // would keep this check quiet for as long as the stamp is ahead.
        let newest_any = listing.newest_stamp.map_or(newest, |s| s.max(newest));
        if let Some(ahead) = crate::format::stamp::too_far_ahead(newest_any, now) {
            bad.push(format!(
                "the newest backup, {newest_any}, is stamped {} after the clock's {now} UTC \
                 (more than {} ahead): a clock is wrong, and backups refuse to run until it \
                 is fixed or the files stamped after {now} are moved out of the repository",
                stamp::human(ahead),
                stamp::human(crate::format::stamp::FUTURE_TOLERANCE)
            ));
        } else if age > max as i64 {
            bad.push(format!(
                "the newest backup, {newest}, is {} old (more than {})",
                stamp::human(age),
                stamp::human(max as i64)
            ));
        }
    }
    if dat.lines.is_empty() {
        bad.push(format!(
            "{} lists no file of its chain (recovery refuses it)",
            dat_path.display()
        ));
    }
    if let Some(t) = &dat.torn {
        bad.push(format!(
            "{} ends with a torn line (an interrupted append): {t:?}",
            dat_path.display()
        ));
    }
    // files another chain's .dat lists are that chain's, not orphans
    for f in repo.orphans(&listing, &span, log) {
        bad.push(format!(
            "{} is not listed in {} (an orphan: recovery does not use it)",
            f.path.display(),
            dat_path.display()
        ));
    }
    let sums = repo.sums();
    let mut out = Verified::default();
    let mut expected_start = 0u64;
    if !opts.quick {
        crate::progress::phase("verify", dat.lines.iter().map(|l| l.len()).sum());
    }
    for line in &dat.lines {
        let path = repo.path(&line.name);
        log.note(format_args!("Verifying {}", path.display()));
        if line.start != expected_start {
            bad.push(format!(
                "{} starts at {} but the chain before it ends at {expected_start}",
                path.display(),
                line.start
            ));
        }
        expected_start = line.end;
        let gzip =
            DataName::parse(&line.name).is_some_and(|n| n.gzip) || line.name.ends_with("fsz");
        let Some(stored_len) = repo.size_of(&line.name) else {
            bad.push(format!("{} is missing", path.display()));
            continue;
        };
        if !opts.quick {
            if let Some(e) = sums.for_line(line) {
                match repo.hash_data(&line.name, gzip) {
                    Ok((h, n)) if h == e.content && n == line.len() => {
                        log.note(format_args!(
                            "{}: its bytes have the fast checksum recorded with its md5",
                            path.display()
                        ));
                        out.files += 1;
                        out.bytes += line.len();
                        continue;
                    }
                    Ok(_) => log.note(format_args!(
                        "{}: fast checksum differs: checking its md5",
                        path.display()
                    )),
                    Err(e) => {
                        bad.push(e.to_string());
                        continue;
                    }
                }
            }
        }
        let mut md5 = Md5::new();
        let size = if opts.quick && !gzip {
            Ok(stored_len)
        } else {
            repo.open_data(&line.name, gzip)
                .and_then(|r| read::stream_data_from(r, &path, gzip, Some(&mut md5), None))
        };
        let size = match size {
            Ok(n) => n,
            Err(e) => {
                bad.push(e.to_string());
                continue;
            }
        };
        let when = if gzip { " (when uncompressed)" } else { "" };
        if size != line.len() {
            bad.push(format!(
                "{} is {size} bytes{when}, should be {} bytes",
                path.display(),
                line.len()
            ));
            continue;
        }
        if !opts.quick {
            let sum = md5::hex(&md5.finalize());
            if sum != line.md5 {
                bad.push(format!(
                    "{} has checksum {sum}{when} instead of {}",
                    path.display(),
                    line.md5
                ));
                continue;
            }
        }
        out.files += 1;
        out.bytes += size;
    }
    // the blob revisions the chain's backups refer to
    let stamps: Vec<Stamp> = dat
        .lines
        .iter()
        .filter_map(|l| DataName::parse(&l.name).map(|n| n.stamp))
        .collect();
    let (blob_bad, blobs, blob_bytes) = repo.check_blobs(&stamps, opts.quick);
    // a chain whose backups list their blobs must list them all: one
    // without could not recover the blobs of its range
    let listed: Vec<Result<bool>> = stamps.iter().map(|s| repo.has_blob_list(*s)).collect();
    if listed.iter().any(|l| matches!(l, Ok(true))) {
        for (s, l) in stamps.iter().zip(&listed) {
            if let Err(e) = l {
                bad.push(e.to_string());
            } else if matches!(l, Ok(false)) {
                bad.push(format!(
                    "{} is missing: the backup {s} was made without --blob-dir, so its \
                     blobs cannot be recovered",
                    repo.blob_list_path(*s).display()
                ));
            }
        }
    }
    if blobs > 0 {
        log.note(format_args!(
            "Verified {blobs} blob revision(s), {blob_bytes} bytes"
        ));
    }
    bad.extend(blob_bad);
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(Error::VerificationFailed(bad))
    }
}
