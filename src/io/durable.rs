//! Durable writes by one rule: write to a uniquely named temporary file
//! created exclusively beside the target, `fsync` it, rename it into place,
//! `fsync` the directory. A temporary file that is not published is removed,
//! and its name never looks like a backup. Also what makes large writes
//! durable faster: space reserved before them ([`preallocate`]); syncs
//! while they go on are [`crate::io::flush`].

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, IoContext, Result};

/// Prefix of every temporary file we create in a repository.
pub const TEMP_PREFIX: &str = ".repozo-tmp-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A file being written that becomes visible under its final name only
/// through [`TempFile::publish`].
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Create a new, empty temporary file in `dir`, exclusively
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW`), so that no other run's file and no
    /// planted symlink is ever written through.
    pub fn new_in(dir: &Path) -> Result<TempFile> {
        let pid = std::process::id();
        let mut last_err = None;
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = dir.join(format!("{TEMP_PREFIX}{pid}-{n}-{nanos:08x}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(Error::io("create a temporary file in", dir, e)),
            }
        }
        Err(Error::io(
            "create a temporary file in",
            dir,
            last_err.unwrap_or_else(|| io::Error::other("no free name")),
        ))
    }

    /// Create a temporary file for `target` at the fixed name `part`
    /// (recovery's `FILE.part`): a stale one left by a crash is removed
    /// first, then the name is created exclusively.
    pub fn at(part: PathBuf) -> Result<TempFile> {
        match fs::symlink_metadata(&part) {
            Ok(_) => fs::remove_file(&part).ctx("remove stale", &part)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", &part, e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&part)
            .ctx("create", &part)?;
        Ok(TempFile {
            path: part,
            file: Some(file),
        })
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until publish")
    }

    /// Close the file, keeping the temporary (for many files written now
    /// and made durable together later, e.g. by one `syncfs`, so that they
    /// do not hold one descriptor each).
    pub fn close(&mut self) {
        drop(self.file.take());
    }

    /// Take the file out for a writer that consumes it (a gzip encoder);
    /// give it back with [`TempFile::put_back`] before publishing.
    pub fn take(&mut self) -> File {
        self.file.take().expect("file present until publish")
    }

    /// Return a file taken with [`TempFile::take`].
    pub fn put_back(&mut self, f: File) {
        self.file = Some(f);
    }

    /// `fsync` and rename to `target`, refusing to replace an existing file
    /// when `replace` is false; then `fsync` the directory.
    pub fn publish(mut self, target: &Path, replace: bool) -> Result<()> {
        let file = self.file.take().expect("file present until publish");
        file.sync_all().ctx("fsync", &self.path)?;
        drop(file);
        if replace {
            fs::rename(&self.path, target).ctx("rename into place", target)?;
        } else {
            rename_noreplace(&self.path, target)?;
        }
        // published: nothing to clean up any more
        self.path = PathBuf::new();
        sync_parent(target)
    }
}

impl TempFile {
    /// `fsync` the file (before [`TempFile::rename_into`]).
    pub fn sync(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.file().sync_all().ctx("fsync", &path)
    }

    /// Rename to `target` (refusing to replace an existing file unless
    /// `replace`) without any `fsync`: the caller has synced the file with
    /// [`TempFile::sync`] and syncs the directory after.
    pub fn rename_into(mut self, target: &Path, replace: bool) -> Result<()> {
        drop(self.file.take());
        if replace {
            fs::rename(&self.path, target).ctx("rename into place", target)?;
        } else {
            rename_noreplace(&self.path, target)?;
        }
        self.path = PathBuf::new();
        Ok(())
    }

    /// Rename over `target` without any `fsync`: for caches, whose loss
    /// or damage in a crash costs time, never data.
    pub fn publish_unsynced(mut self, target: &Path) -> Result<()> {
        drop(self.file.take());
        fs::rename(&self.path, target).ctx("rename into place", target)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Rename `from` to `to` unless `to` exists (atomically where the system
/// can: `renameat2(RENAME_NOREPLACE)`, else `link` + `unlink`).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let cfrom = CString::new(from.as_os_str().as_bytes())
        .map_err(|_| Error::io("rename", from, io::ErrorKind::InvalidInput.into()))?;
    let cto = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| Error::io("rename", to, io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Err(Error::WouldOverwrite(to.to_path_buf())),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {
            match fs::hard_link(from, to) {
                Ok(()) => {
                    fs::remove_file(from).ctx("remove", from)?;
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(Error::WouldOverwrite(to.to_path_buf()))
                }
                Err(e) => Err(Error::io("rename into place", to, e)),
            }
        }
        _ => Err(Error::io("rename into place", to, err)),
    }
}

/// `fsync` the directory holding `path`, so that a rename survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// `fsync` a directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx("open directory", dir)?;
    d.sync_all().ctx("fsync directory", dir)
}

/// Write a small file durably (temp, fsync, rename over `target`).
pub fn write_file(dir: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let mut t = TempFile::new_in(dir)?;
    let p = t.path().to_path_buf();
    t.file().write_all(bytes).ctx("write", &p)?;
    t.publish(target, true)
}

/// `syncfs` on the file system holding `dir`: every file written there,
/// and every rename, is durable when it returns (one call for many small
/// files, where an `fsync` each would wait for the disk each time).
pub fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let d = File::open(dir).ctx("open", dir)?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io("sync", dir, io::Error::last_os_error()));
    }
    Ok(())
}

/// Reserve disk blocks for `len` bytes of `file` from `offset` without
/// changing its size (`fallocate(FALLOC_FL_KEEP_SIZE)`), before they are
/// written: a backup or recovery that cannot fit fails now, not after
/// writing most of it, and the file system allocates once (recovery here
/// about 5% faster). File systems without it are left to allocate as the
/// bytes come.
pub fn preallocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    if len == 0 || may_share_blocks(file) {
        return Ok(());
    }
    loop {
        // SAFETY: a valid descriptor; the kernel checks the range.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(()),
            _ => Err(Error::io("reserve disk space for", path, e)),
        };
    }
}

/// Whether `file` is on a file system where `copy_file_range` may share
/// blocks with the source instead of writing new ones (btrfs, XFS,
/// bcachefs): there a reservation could refuse a copy that fits, and btrfs
/// does not compress into reserved space.
fn may_share_blocks(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    const BTRFS: i64 = 0x9123_683e;
    const XFS: i64 = 0x5846_5342;
    const BCACHEFS: i64 = 0xca45_1a4e;
    // SAFETY: fstatfs fills the struct we pass for a valid descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, BTRFS | XFS | BCACHEFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocate_reserves_blocks_without_changing_the_size() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        (&f).write_all(b"abc").unwrap();
        preallocate(&f, &p, 3, 8 << 20).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 3);
        // where the file system reserves (not btrfs/XFS, or without
        // fallocate: nothing to check there)
        if !may_share_blocks(&f) && m.blocks() > 0 {
            assert!(m.blocks() * 512 >= 8 << 20, "{} blocks", m.blocks());
        }
        preallocate(&f, &p, 0, 0).unwrap();
        // a descriptor the kernel refuses (read-only): an error naming it
        let r = File::open(&p).unwrap();
        match preallocate(&r, &p, 0, 1 << 20) {
            Err(Error::Io { op, path, .. }) => {
                assert_eq!(
                    (op, path.as_path()),
                    ("reserve disk space for", p.as_path())
                )
            }
            other => assert!(may_share_blocks(&r), "{other:?}"),
        }
    }
}
