//! The repository lock: an `flock` on `.repozo.lock` inside the repository,
//! exclusive for backups (they add and remove files), shared for recovery
//! and verification (they only read). A run that cannot get the lock fails
//! at once with "repository locked" instead of waiting: a nightly job that
//! finds the previous one still running should say so, not pile up.
//!
//! The kernel releases an `flock` when its holder dies, so a killed run
//! never leaves a stale lock behind. ZODB's repozo does not lock; running it
//! next to ours is as safe as running two of it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

use crate::error::{Error, Result};
use crate::log::Log;
use crate::repository::Repository;

/// Name of the lock file in the repository.
pub const LOCK_NAME: &str = ".repozo.lock";

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RepoLock {
    _file: Option<File>,
}

impl Repository {
    /// Take the repository lock, exclusive or shared.
    ///
    /// A shared lock on a repository we cannot write to (read-only media, a
    /// read-only mount) takes the lock file that is there, opened for
    /// reading; with none, it is skipped with a note (nobody can be
    /// writing where no backup of ours ever made a lock file).
    pub fn lock(&self, exclusive: bool, log: &Log) -> Result<RepoLock> {
        let repo = self.dir();
        if self.remote().is_some() {
            // only -L reaches object storage in this version: it reads
            // without a lock there (the lock objects come with -B)
            debug_assert!(!exclusive, "no exclusive lock on object storage yet");
            log.note(format_args!(
                "{}: object storage, read without a lock",
                repo.display()
            ));
            return Ok(RepoLock { _file: None });
        }
        let path = repo.join(LOCK_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e)
                if !exclusive
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
                    ) =>
            {
                // a lock file that exists locks as well when opened for
                // reading (a read-only mount, as a hardened check unit
                // sees the repository); O_NONBLOCK: a FIFO there must
                // not hang the run (opening one for reading waits for a
                // writer)
                match OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(_) => {
                        log.note(format_args!(
                            "cannot create {} ({e}): reading without a lock",
                            path.display()
                        ));
                        return Ok(RepoLock { _file: None });
                    }
                }
            }
            Err(e) => return Err(Error::io("open the lock file", &path, e)),
        };
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        } | libc::LOCK_NB;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(RepoLock { _file: Some(file) });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Err(Error::Locked(repo.to_path_buf())),
                _ => return Err(Error::io("lock", &path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let log = Log::default();
        let a = repo.lock(false, &log).unwrap();
        let b = repo.lock(false, &log).unwrap();
        assert!(matches!(repo.lock(true, &log), Err(Error::Locked(_))));
        drop((a, b));
        let x = repo.lock(true, &log).unwrap();
        assert!(matches!(repo.lock(false, &log), Err(Error::Locked(_))));
        assert!(matches!(repo.lock(true, &log), Err(Error::Locked(_))));
        drop(x);
        repo.lock(true, &log).unwrap();
    }
}
