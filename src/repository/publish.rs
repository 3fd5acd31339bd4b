//! Publishing a backup: its data file and `.index` are written as
//! temporaries in the repository ([`Repository::new_file`]), made durable,
//! renamed into place ([`Repository::publish_files`]), and committed by the
//! `.dat` line ([`Repository::start_chain`], [`Repository::extend_chain`]).
//! A failure takes back what it published, so that every earlier state
//! stays recoverable and recovery never picks up a half-written backup.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::dat::DatFile;
use crate::format::stamp::DataName;
use crate::io::durable::{self, TempFile};
use crate::log::Log;
use crate::repository::chains::DataFile;
use crate::repository::Repository;

/// Where the files of a new backup go.
#[derive(Debug)]
pub struct NewBackup {
    /// The data file (`.fs`, `.deltafs`, or `z`).
    pub data: PathBuf,
    /// Its `.index`.
    pub index: PathBuf,
    /// Its blob list (with `--blob-dir`).
    pub blobs: PathBuf,
}

impl Repository {
    /// A new temporary file in the repository, for a backup file on its
    /// way in; removed unless published.
    pub fn new_file(&self) -> Result<TempFile> {
        TempFile::new_in(self.dir())
    }

    /// The paths a new backup named `name` will have; an error when its
    /// data file exists (a backup never replaces one).
    pub fn new_backup(&self, name: &DataName) -> Result<NewBackup> {
        let data = self.path(&name.file_name());
        if matches!(self.file_len(&data), Ok(Some(_))) {
            return Err(Error::WouldOverwrite(data));
        }
        Ok(NewBackup {
            data,
            index: self.path(&name.index_name()),
            blobs: self.blob_list_path(name.stamp),
        })
    }

    /// Publish a backup's synced blob list, data file and `.index` under
    /// their names, then sync the directory. Not yet part of a chain: see
    /// [`Repository::start_chain`] and [`Repository::extend_chain`]. On
    /// failure, nothing of either stays published; a data file that
    /// appeared under the name meanwhile is someone else's and stays
    /// ([`Error::WouldOverwrite`]).
    pub fn publish_files(
        &self,
        to: &NewBackup,
        data: TempFile,
        index: TempFile,
        blobs: Option<TempFile>,
        log: &Log,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        // The blob list before the data file: a data file (an orphan, or
        // a full backup without a `.dat`, which recovery uses) is never
        // published without its list. A list left alone by a crash names
        // no data file: the next backup removes it. (Synced first, so that
        // not even a power cut reorders the two.)
        if let Some(b) = blobs {
            b.rename_into(&to.blobs, true)
                .and_then(|()| durable::sync_dir(self.dir()))
                .inspect_err(|_| self.roll_back(&[&to.blobs], log))?;
        }
        let mut data = data;
        let ours = data.file().metadata().ok().map(|m| (m.dev(), m.ino()));
        if let Err(e) = data.rename_into(&to.data, false) {
            // Where renameat2 cannot refuse to replace, the rename is a
            // link and an unlink: a failed unlink leaves our file
            // published. Take it back, but only our file: one that was
            // there first (WouldOverwrite) or is another file stays.
            let published =
                std::fs::symlink_metadata(&to.data).is_ok_and(|m| ours == Some((m.dev(), m.ino())));
            if !matches!(e, Error::WouldOverwrite(_)) && published {
                self.roll_back(&[&to.data, &to.blobs], log);
            } else {
                self.roll_back(&[&to.blobs], log);
            }
            return Err(e);
        }
        index
            .rename_into(&to.index, true)
            .and_then(|()| durable::sync_dir(self.dir()))
            .inspect_err(|_| self.roll_back(&[&to.data, &to.index, &to.blobs], log))
    }

    /// Commit a full backup: write its chain's `.dat` holding `line`. On
    /// failure, the `.dat` and the backup's files are taken back.
    pub fn start_chain(
        &self,
        name: &DataName,
        line: &[u8],
        new: &NewBackup,
        log: &Log,
    ) -> Result<()> {
        let dat = self.path(&name.dat_name());
        if self.is_remote() {
            return self
                .check_lock()
                .and_then(|()| self.put_checked(&name.dat_name(), line))
                .inspect_err(|_| self.roll_back(&[&dat, &new.data, &new.index, &new.blobs], log));
        }
        durable::write_file(self.dir(), &dat, line).inspect_err(|_| {
            self.roll_back(&[&dat, &new.data, &new.index, &new.blobs], log);
        })
    }

    /// Commit an increment: append `line` to the `.dat` of the chain headed
    /// by `head` (`dat_file`, as read), rewriting it whole with its complete
    /// lines when a crash cut its last line short. On failure, the `.dat`
    /// is put back as it was and then the backup's files are taken back; if
    /// the `.dat` cannot be put back, the files it may name stay.
    pub fn extend_chain(
        &self,
        head: &DataFile,
        dat_file: Option<&DatFile>,
        line: &[u8],
        new: &NewBackup,
        log: &Log,
    ) -> Result<()> {
        let dat = self.dat_path(head);
        if self.is_remote() {
            return self.extend_remote_chain(head, dat_file, line, new, log);
        }
        let original = match std::fs::read(&dat).ctx("read", &dat) {
            Ok(o) => o,
            Err(e) => {
                self.roll_back(&[&new.data, &new.index, &new.blobs], log);
                return Err(e);
            }
        };
        let mut touched = false;
        let result = match dat_file {
            Some(d) if d.needs_repair => {
                note_repair(&dat, d, log);
                let mut bytes = d.repaired_bytes();
                bytes.extend_from_slice(line);
                touched = true;
                durable::write_file(self.dir(), &dat, &bytes)
            }
            _ => std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&dat)
                .ctx("open for appending", &dat)
                .and_then(|mut f| {
                    touched = true;
                    f.write_all(line).ctx("append to", &dat)?;
                    f.sync_all().ctx("fsync", &dat)
                }),
        };
        if result.is_err() {
            // An append whose fsync failed may or may not be on disk; one
            // that could not open the .dat did not touch it.
            let intact = || std::fs::read(&dat).is_ok_and(|now| now == original);
            let restored = !touched || intact() || {
                let _ = restore_dat(&dat, original.len() as u64, &original);
                intact()
            };
            if restored {
                self.roll_back(&[&new.data, &new.index, &new.blobs], log);
            }
        }
        result
    }

    /// Remove what a failed backup published (best effort, in the order
    /// given: the file that commits the backup first).
    pub fn roll_back(&self, paths: &[&Path], log: &Log) {
        for p in paths {
            match self.remove_file(p) {
                Ok(()) => log.note(format_args!("rolled back {}", p.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // stop: what follows may be needed by what could not go
                Err(_) => break,
            }
        }
        let _ = self.sync_dir();
    }

    /// Store `bytes` as the object at `path` of an object-storage
    /// repository in one request (a blob list), then read it back.
    pub fn put_small(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        self.put_checked(name, bytes)
    }

    /// Store `bytes` as the object `name` in one request, then read it
    /// back: an error unless the store gives exactly those bytes.
    fn put_checked(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let r = self.remote().expect("an object-storage repository");
        r.write_small(name, bytes)?;
        self.changed();
        match r.read(name)? {
            Some(b) if b == bytes => Ok(()),
            _ => Err(Error::Remote(format!(
                "write {}: the store does not give back the bytes written",
                r.url_of(name)
            ))),
        }
    }

    /// [`Repository::extend_chain`] on object storage, which cannot
    /// append: the `.dat` is rewritten whole (its complete lines and
    /// `line`) and read back. On failure the old `.dat` is put back, then
    /// the backup's files are taken back.
    fn extend_remote_chain(
        &self,
        head: &DataFile,
        dat_file: Option<&DatFile>,
        line: &[u8],
        new: &NewBackup,
        log: &Log,
    ) -> Result<()> {
        let dat = self.dat_path(head);
        let name = head.name.dat_name();
        if let Err(e) = self.check_lock() {
            self.roll_back(&[&new.data, &new.index, &new.blobs], log);
            return Err(e);
        }
        let original = match self.read_small(&name) {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.roll_back(&[&new.data, &new.index, &new.blobs], log);
                return Err(Error::io(
                    "read",
                    &dat,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "No such object"),
                ));
            }
            Err(e) => {
                self.roll_back(&[&new.data, &new.index, &new.blobs], log);
                return Err(e);
            }
        };
        let mut bytes = match dat_file {
            Some(d) if d.needs_repair => {
                note_repair(&dat, d, log);
                d.repaired_bytes()
            }
            _ => original.clone(),
        };
        bytes.extend_from_slice(line);
        let Err(e) = self.put_checked(&name, &bytes) else {
            return Ok(());
        };
        let intact = || matches!(self.read_small(&name), Ok(Some(b)) if b == original);
        if intact() || (self.put_checked(&name, &original).is_ok() && intact()) {
            self.roll_back(&[&new.data, &new.index, &new.blobs], log);
            return Err(e);
        }
        // the old .dat could not be put back: the backup's files stay, as
        // the new .dat may be the one there
        Err(Error::Remote(format!(
            "{e}; the backup may or may not be committed (the .dat could not be read \
             back): run -V when the store answers again"
        )))
    }
}

/// Say what repairing the `.dat` at `dat` (`d`, as read) does.
fn note_repair(dat: &Path, d: &DatFile, log: &Log) {
    log.note(format_args!(
        "repairing {}: {}",
        dat.display(),
        match &d.torn {
            Some(t) => format!("dropping the torn last line {t:?}"),
            None => "adding the missing final newline".to_string(),
        }
    ));
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
