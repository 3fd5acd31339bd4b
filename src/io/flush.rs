//! Getting written bytes to disk while the rest is produced: the
//! [`Flusher`] thread and writeback hints.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::error::{Error, IoContext, Result};

/// A writer into `file` that asks the kernel to start writing what it has
/// written to disk every [`WRITEBACK_STEP_SMALL`] bytes, so that the disk
/// works while the rest is produced and the final `fsync` waits less (an
/// 8 MB `.index` on a shared disk).
pub struct WritebackWriter<'a> {
    file: &'a File,
    unflushed: u64,
}

/// Bytes written between two writeback requests of a [`WritebackWriter`].
const WRITEBACK_STEP_SMALL: u64 = 2 << 20;

impl<'a> WritebackWriter<'a> {
    pub fn new(file: &'a File) -> Self {
        WritebackWriter { file, unflushed: 0 }
    }
}

impl Write for WritebackWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.unflushed += n as u64;
        if self.unflushed >= WRITEBACK_STEP_SMALL {
            start_writeback(self.file);
            self.unflushed = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        start_writeback(self.file);
        self.unflushed = 0;
        Ok(())
    }
}

/// Ask the kernel to start writing `file`'s dirty pages to disk now
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so that
/// the disk works while we copy or hash and the final `fsync` finds little
/// left to do. Only a hint: errors are left for that `fsync` to report.
pub fn start_writeback(file: &File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid descriptor; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Unsynced bytes worth a [`Flusher::request_pending`].
const PENDING_MIN: u64 = 256 << 10;

/// Bytes written between two requests to a [`Flusher`].
const FLUSH_STEP: u64 = 32 << 20;

/// Makes a file's bytes durable on a thread of its own while more are
/// still being written: every [`FLUSH_STEP`] bytes reported with
/// [`Flusher::wrote`], and every [`Flusher::request`], ask that thread for
/// an `fdatasync` of all written so far. Each request is one `fdatasync`,
/// however the threads run (a writer that gets two requests ahead of the
/// disk waits), so that a run makes the same calls every time
/// (the fault injector counts them).
///
/// On a disk with a write cache (this project's virtual machines) the
/// final `fsync` costs time in proportion to the bytes it makes durable,
/// even when `sync_file_range` has already written them out; flushing as
/// we go puts that time beside the copy and the md5 instead of after them.
/// The caller still `fsync`s the file after [`Flusher::finish`], which
/// reports the first error of the thread's syncs (an error a later `fsync`
/// may no longer see).
pub struct Flusher {
    pending: std::sync::atomic::AtomicU64,
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    path: PathBuf,
}

impl Flusher {
    /// Start the flushing thread for `file` (named `path` in errors).
    pub fn new(file: &File, path: &Path) -> Result<Flusher> {
        let own = file.try_clone().ctx("duplicate the descriptor of", path)?;
        // one request waits while one sync runs; a third blocks the writer
        // until the disk catches up (it would wait at the final fsync
        // anyway), so that requests never pile up into syncs of nothing
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || -> io::Result<()> {
                // a closed channel: the writing is over
                while rx.recv().is_ok() {
                    own.sync_data()?;
                }
                Ok(())
            })
            .ctx("start a thread for", path)?;
        Ok(Flusher {
            pending: std::sync::atomic::AtomicU64::new(0),
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// `n` more bytes have been written to the file. One thread at a time
    /// reports (the copy, then perhaps another copy after it), so that the
    /// requests, and the calls they make, depend on the bytes alone.
    pub fn wrote(&self, n: u64) {
        let before = self.pending.fetch_add(n, Ordering::Relaxed);
        if before + n >= FLUSH_STEP {
            self.request();
        }
    }

    /// Ask for a sync of all written so far when at least [`PENDING_MIN`]
    /// of it has not been asked for yet (the end of a copy, whose last part
    /// can go to disk while a hash runs on; not after every small file).
    pub fn request_pending(&self) {
        if self.pending.load(Ordering::Relaxed) >= PENDING_MIN {
            self.request();
        }
    }

    /// Ask for a sync of all written so far, whatever the count.
    pub fn request(&self) {
        self.pending.store(0, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            // gone: a sync failed, and finish says why
            let _ = tx.send(());
        }
    }

    /// Wait for the thread's last sync; its first error, if any.
    pub fn finish(mut self) -> Result<()> {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Err(Error::io("fsync", &self.path, e)),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => Ok(()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};

    #[test]
    fn a_flusher_syncs_as_bytes_come_and_reports_a_failed_sync() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        let flusher = Flusher::new(&f, &p).unwrap();
        for _ in 0..3 {
            (&f).write_all(&vec![7u8; (FLUSH_STEP / 2) as usize])
                .unwrap();
            flusher.wrote(FLUSH_STEP / 2);
        }
        flusher.request();
        flusher.finish().unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 3 * FLUSH_STEP / 2);
        // a file that cannot be synced (EINVAL): finish says so, naming it
        let dev = Path::new("/dev/null");
        let f = OpenOptions::new().write(true).open(dev).unwrap();
        let flusher = Flusher::new(&f, dev).unwrap();
        flusher.request();
        match flusher.finish() {
            Err(Error::Io { op, path, .. }) => assert_eq!((op, path.as_path()), ("fsync", dev)),
            other => panic!("{other:?}"),
        }
        // dropped without finish: the thread still ends
        let flusher = Flusher::new(&f, dev).unwrap();
        flusher.wrote(FLUSH_STEP);
        drop(flusher);
    }
}
