//! The repository lock: an `flock` on `.repozo.lock` inside the repository,
//! exclusive for backups (they add and remove files), shared for recovery
//! and verification (they only read). A run that cannot get the lock fails
//! at once with "repository locked" instead of waiting: a nightly job that
//! finds the previous one still running should say so, not pile up.
//!
//! The kernel releases an `flock` when its holder dies, so a killed run
//! never leaves a stale lock behind. ZODB's repozo does not lock; running it
//! next to ours is as safe as running two of it.
//!
//! On object storage (which has no `flock`, and Garage no conditional
//! write), restic's protocol: a run writes a lock object
//! `.repozo-locks/HOST-PID-RANDOM` (exclusive or not, host, pid, time,
//! boot and PID namespace), then lists the locks and gives up (removing
//! its own) if one conflicts: of two runs starting together both may give
//! up, never both go on. The lock is rewritten every [`REFRESH`] while
//! held; one not rewritten for [`STALE`] by the store's clock (its run
//! died, or lost the store), or whose process is gone in this host's boot
//! and PID namespace, is stale: it is removed and ignored. A backup checks
//! its lock is still there before it commits
//! ([`Repository::check_lock`]). The window left: a run stopped
//! (suspended, cut off) for longer than [`STALE`] that then goes on
//! uploading objects of its own names, and the moment between that check
//! and the commit.

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
    _remote: Option<RemoteLock>,
}

/// Where the lock objects of an object-storage repository are.
pub const LOCKS: &str = ".repozo-locks";

/// How often a held lock object is rewritten.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// A lock object not rewritten for this long is stale.
pub const STALE: u64 = 30 * 60;

/// A lock object we hold: refreshed by a thread, removed when dropped.
#[derive(Debug)]
struct RemoteLock {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lock object's content.
#[derive(Debug, PartialEq)]
struct LockInfo {
    exclusive: bool,
    host: String,
    pid: u32,
    time: u64,
    /// Where `pid` means something: the boot and the PID namespace of
    /// the process ([`pid_space`]); `-` when unknown.
    space: String,
}

impl LockInfo {
    fn to_bytes(&self) -> Vec<u8> {
        format!(
            "repozo-lock 1\nexclusive {}\nhost {}\npid {}\ntime {}\nspace {}\n",
            self.exclusive, self.host, self.pid, self.time, self.space
        )
        .into_bytes()
    }

    fn parse(bytes: &[u8]) -> Option<LockInfo> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "repozo-lock 1" {
            return None;
        }
        let mut field = |key: &str| -> Option<String> {
            let l = lines.next()?;
            Some(l.strip_prefix(key)?.strip_prefix(' ')?.to_string())
        };
        Some(LockInfo {
            exclusive: field("exclusive")? == "true",
            host: field("host")?,
            pid: field("pid")?.parse().ok()?,
            time: field("time")?.parse().ok()?,
            space: field("space")?,
        })
    }

    /// Whether the run holding it is surely gone: not rewritten for
    /// [`STALE`] (`age`, in seconds), or its process is gone on this
    /// host, in this boot and PID namespace (`space`; a container sharing
    /// the host's name has pids of its own).
    fn is_stale(&self, age: u64, host: &str, space: &str) -> bool {
        if age > stale() {
            return true;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        self.host == host
            && self.space == space
            && space != "-"
            && self.pid != std::process::id()
            && unsafe { libc::kill(self.pid as libc::pid_t, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The boot and the PID namespace of this process
/// (`BOOT_ID:pid:[INODE]`), where its pid means something; `-` when
/// either cannot be read.
fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let ns = std::fs::read_link("/proc/self/ns/pid");
    match (boot, ns) {
        (Ok(b), Ok(n)) => format!("{}:{}", b.trim(), n.display()).replace(char::is_whitespace, "_"),
        _ => "-".to_string(),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).replace(char::is_whitespace, "_")
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
            return self.lock_remote(exclusive, log);
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
                        return Ok(RepoLock {
                            _file: None,
                            _remote: None,
                        });
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
                return Ok(RepoLock {
                    _file: Some(file),
                    _remote: None,
                });
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

impl Repository {
    /// The lock objects that conflict with a lock `exclusive` or not,
    /// other than `ours`, by name; stale ones are removed on the way.
    /// `now` is the store's time (that of our own lock, just written;
    /// `None` when the store does not say: this host's clock).
    fn conflicting_locks(
        &self,
        exclusive: bool,
        ours: &str,
        now: Option<u64>,
        log: &Log,
    ) -> Result<Vec<String>> {
        let r = self.remote().expect("an object-storage repository");
        let host = hostname();
        let space = pid_space();
        let mut out = Vec::new();
        for name in r.list_under(LOCKS)?.into_keys() {
            if name == ours {
                continue;
            }
            let Some(bytes) = r.read(&name)? else {
                continue; // removed meanwhile
            };
            let Some(info) = LockInfo::parse(&bytes) else {
                // not one of ours: counts as exclusive (a person
                // removes it)
                out.push(format!("{}, not a lock of ours", r.url_of(&name)));
                continue;
            };
            // its age by the store's clock when both times are the
            // store's, else by the writer's and ours
            let age = match (now, r.modified(&name)?) {
                (Some(now), Some(then)) => now.saturating_sub(then),
                _ => unix_now().saturating_sub(info.time),
            };
            if info.is_stale(age, &host, &space) {
                log.note(format_args!(
                    "removing the stale lock {} (host {}, pid {}, written {age} s ago)",
                    r.url_of(&name),
                    info.host,
                    info.pid,
                ));
                let _ = r.delete(&name);
                continue;
            }
            if exclusive || info.exclusive {
                out.push(format!(
                    "{} {} by pid {} on {}, written {} s ago, stale after {} s",
                    if info.exclusive {
                        "exclusive lock"
                    } else {
                        "shared lock"
                    },
                    r.url_of(&name),
                    info.pid,
                    info.host,
                    age,
                    stale()
                ));
            }
        }
        Ok(out)
    }

    /// Take a lock on an object-storage repository (restic's protocol,
    /// see the module's documentation).
    fn lock_remote(&self, exclusive: bool, log: &Log) -> Result<RepoLock> {
        let r = self.remote().expect("an object-storage repository");
        let locked = |why: Vec<String>| Error::LockedBy {
            repo: self.dir().to_path_buf(),
            by: why.join("; "),
        };
        let mut random = [0u8; 8];
        // SAFETY: getrandom fills at most the buffer's length.
        let _ = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        let host = hostname();
        let name = format!(
            "{LOCKS}/{host}-{}-{}",
            std::process::id(),
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let space = pid_space();
        let info = move |time| LockInfo {
            exclusive,
            host: host.clone(),
            pid: std::process::id(),
            time,
            space: space.clone(),
        };
        match r.write_small(&name, &info(unix_now()).to_bytes()) {
            Ok(()) => {}
            // a key that may only read (kept for recoveries): read without
            // a lock, as on a read-only directory
            Err(Error::Remote(m)) if !exclusive && m.contains("access denied") => {
                log.note(format_args!(
                    "cannot write a lock object ({m}): reading without a lock"
                ));
                return Ok(RepoLock {
                    _file: None,
                    _remote: None,
                });
            }
            Err(e) => return Err(e),
        }
        // the locks are judged after ours is written, by the store's clock
        // (its time of our lock is its now; clocks of hosts may differ):
        // a run that wrote its lock at the same time sees ours, as we see
        // its: both give up, never both go on
        let conflicts = match r
            .modified(&name)
            .and_then(|now| self.conflicting_locks(exclusive, &name, now, log))
        {
            Ok(c) => c,
            Err(e) => {
                let _ = r.delete(&name);
                return Err(e);
            }
        };
        if !conflicts.is_empty() {
            let _ = r.delete(&name);
            return Err(locked(conflicts));
        }
        log.note(format_args!("locked with {}", r.url_of(&name)));
        if exclusive {
            let c = self.remote.as_ref().expect("remote");
            *c.held.lock().expect("no panic while held") = Some(name.clone());
        }
        // what was listed before the lock may have changed since: listed
        // again when next needed
        self.changed();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let connected = std::sync::Arc::clone(self.remote.as_ref().expect("remote"));
        let refresh = test_refresh().unwrap_or(REFRESH);
        let thread = std::thread::spawn(move || {
            let r = &connected.remote;
            // until dropped: a failed refresh is tried again at the next
            // one; the lock goes stale only after STALE
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(refresh)
            {
                // a lock another run removed (as stale) is not put back:
                // the commit sees it is gone (Repository::check_lock)
                if matches!(r.stat(&name), Ok(None)) {
                    break;
                }
                let _ = r.write_small(&name, &info(unix_now()).to_bytes());
            }
            let _ = r.delete(&name);
        });
        Ok(RepoLock {
            _file: None,
            _remote: Some(RemoteLock {
                stop: Some(stop),
                thread: Some(thread),
            }),
        })
    }
}

impl Repository {
    /// Before a commit on object storage: an error when the exclusive lock
    /// this run took is gone (another run removed it as stale: this run
    /// was cut off, or stopped, for longer than the stale time), so that
    /// two runs never both commit.
    pub fn check_lock(&self) -> Result<()> {
        let Some(c) = self.remote.as_deref() else {
            return Ok(());
        };
        let held = c.held.lock().expect("no panic while held").clone();
        let Some(name) = held else {
            return Ok(());
        };
        match c.remote.stat(&name)? {
            Some(_) => Ok(()),
            None => Err(Error::Remote(format!(
                "the repository lock {} was removed (taken for stale by another run?): \
                 not committing this backup; the next backup cleans up",
                c.remote.url_of(&name)
            ))),
        }
    }
}

/// [`STALE`], or `REPOZO_TEST_LOCK_STALE` (seconds; testing hook: a
/// lock object's age comes from the store, which cannot be backdated).
fn stale() -> u64 {
    std::env::var("REPOZO_TEST_LOCK_STALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STALE)
}

/// Testing hook: `REPOZO_TEST_LOCK_REFRESH` (seconds) replaces [`REFRESH`].
fn test_refresh() -> Option<std::time::Duration> {
    std::env::var("REPOZO_TEST_LOCK_REFRESH")
        .ok()?
        .parse()
        .ok()
        .map(std::time::Duration::from_secs)
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

    #[test]
    fn lock_objects_round_trip_and_go_stale() {
        let l = LockInfo {
            exclusive: true,
            host: "h".into(),
            pid: 7,
            time: 1000,
            space: "b:pid:[1]".into(),
        };
        assert_eq!(LockInfo::parse(&l.to_bytes()), Some(l));
        let l = LockInfo::parse(
            &LockInfo {
                exclusive: false,
                host: "other".into(),
                pid: 1,
                time: 1000,
                space: "b:pid:[1]".into(),
            }
            .to_bytes(),
        )
        .unwrap();
        assert!(!l.exclusive);
        assert!(!l.is_stale(STALE, "me", "b:pid:[1]"));
        assert!(l.is_stale(1 + STALE, "me", "b:pid:[1]"));
        // a process of this host that is gone
        let gone = LockInfo {
            exclusive: true,
            host: "me".into(),
            pid: 0x3fff_fff0,
            time: 1000,
            space: pid_space(),
        };
        assert!(gone.is_stale(0, "me", &pid_space()));
        assert!(!gone.is_stale(0, "another host", &pid_space()));
        assert!(!gone.is_stale(0, "me", "another boot:pid:[2]"));
        assert!(!gone.is_stale(0, "me", "-"));
        assert!(LockInfo::parse(b"repozo-lock 1\nexclusive true\n").is_none());
    }
}
