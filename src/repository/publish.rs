//! Publishing a backup: new files are written as temporaries in the
//! repository, made durable, renamed into place, and committed by the
//! `.dat` line; a failure takes back what it published, so that every
//! earlier state stays recoverable and nothing half-written is listed.

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::io::durable;
use crate::log::Log;

/// Put a `.dat` back to its `original` bytes after a failed append: cut
/// it to its old length when it starts with them, else rewrite it.
pub fn restore_dat(path: &Path, len: u64, original: &[u8]) -> Result<()> {
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
pub fn roll_back(repo: &Path, paths: &[&Path], log: &Log) {
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
