//! Retention and cleanup: `--keep N` and `--kill-old-on-full` remove
//! whole chains; files no chain lists are set aside or removed; temporary
//! files of killed runs go. All of it best effort after a committed
//! backup, except removing stale temporaries, which a backup does first.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::stamp::{DataName, Stamp};
use crate::io::durable;
use crate::log::Log;
use crate::repository::chains::{self, DataFile};
use crate::repository::Repository;

impl Repository {
    /// `--keep N`: keep the N newest full backups with everything after them;
    /// remove the data files, `.dat` and `.index` of every older chain (see
    /// [`Repository::remove_chains_before`]). The chain just written to is the newest, so
    /// it is always kept. Best effort, after a committed backup: a failure is a
    /// warning and the next run with `--keep` tries again. Returns the bytes
    /// freed.
    pub fn retain(&self, keep: usize, log: &Log) -> u64 {
        let listing = match self.list() {
            Ok(l) => l,
            Err(e) => {
                log.warn(format_args!(
                    "--keep {keep}: nothing removed: {e}; the next run tries again"
                ));
                return 0;
            }
        };
        let mut fulls: Vec<Stamp> = listing
            .files
            .iter()
            .filter(|f| f.is_full())
            .map(|f| f.name.stamp)
            .collect();
        fulls.dedup();
        // With no more full backups than kept, a run whose removals failed
        // midway may still have left files before the oldest kept one
        // (increments whose full backup went, their `.index`): finish.
        let leftovers = fulls.first().is_some_and(|&oldest| {
            listing.files.iter().any(|f| f.name.stamp < oldest) || self.has_stamped_before(oldest)
        });
        if keep == 0 || (fulls.len() <= keep && !leftovers) {
            log.note(format_args!(
                "--keep {keep}: {} full backup(s), nothing to remove",
                fulls.len()
            ));
            return 0;
        }
        let oldest_kept = fulls[fulls.len().saturating_sub(keep)];
        let what = format!("--keep {keep}");
        let (removed, freed) = self.remove_chains_before(oldest_kept, &what, log);
        log.note(format_args!(
            "{what}: removed {removed} data file(s) of older chains, {freed} bytes freed"
        ));
        freed
    }

    /// Whether a `.dat` or `.index` is stamped before `stamp` (best effort:
    /// false when the repository cannot be listed).
    fn has_stamped_before(&self, stamp: Stamp) -> bool {
        let Ok(entries) = self.entries() else {
            return false;
        };
        entries.iter().any(|name| {
            let Some(stem) = name
                .strip_suffix(".dat")
                .or_else(|| name.strip_suffix(".index"))
            else {
                return false;
            };
            Stamp::parse_date(stem).is_ok_and(|s| s.to_string() == stem && s < stamp)
        })
    }

    /// Remove temporary files that killed runs of ours left behind. Only
    /// called under the exclusive lock, when no other run of ours can be
    /// writing one.
    pub fn remove_stale_temporaries(&self, log: &Log) -> Result<()> {
        let repo = self.dir();
        if let Some(r) = self.remote() {
            // no temporaries on object storage: an unfinished upload is
            // no object, but its parts take space until it is aborted
            match r.abort_unfinished_uploads() {
                Ok(names) => {
                    for n in names {
                        log.note(format_args!(
                            "aborted the unfinished upload of {} (left by a run that stopped)",
                            r.url_of(&n)
                        ));
                    }
                }
                Err(e) => log.warn(format_args!(
                    "could not clean up unfinished uploads (their parts take space until \
                     they are aborted; a lifecycle rule AbortIncompleteMultipartUpload does it \
                     too): {e}"
                )),
            }
            return Ok(());
        }
        let entries = std::fs::read_dir(repo).ctx("list", repo)?;
        for entry in entries {
            let entry = entry.ctx("list", repo)?;
            let name = entry.file_name();
            if name.as_bytes().starts_with(durable::TEMP_PREFIX.as_bytes()) {
                let p = entry.path();
                log.note(format_args!(
                    "removing stale temporary file {}",
                    p.display()
                ));
                std::fs::remove_file(&p).ctx("remove", &p)?;
            }
        }
        Ok(())
    }

    /// Move orphans, data files of the newest chain's span that no `.dat`
    /// lists, out of the way (`NAME.orphaned`), so that neither tool can take
    /// them for part of the chain. Their `.index` goes with them unless a data
    /// file that stays has the same stamp and so owns it (ZODB's repozo writes
    /// one `.index` for a full backup and an increment made in one second).
    /// Nothing is overwritten: a name already taken gets a number
    /// (`NAME.2.orphaned`).
    pub fn set_aside(
        &self,
        listing: &chains::Listing,
        orphans: &[DataFile],
        log: &Log,
    ) -> Result<()> {
        if orphans.is_empty() {
            return Ok(());
        }
        for f in orphans {
            let to = self.rename_aside(&f.path)?;
            log.note(format_args!(
                "setting aside {} (no .dat lists it) as {}",
                f.path.display(),
                to.display()
            ));
            let owned = listing
                .files
                .iter()
                .any(|o| o.name.stamp == f.name.stamp && !orphans.contains(o));
            if owned {
                log.note(format_args!(
                    "keeping {}: it belongs to a data file with the same stamp",
                    self.index_path(f).display()
                ));
                continue;
            }
            let index = self.index_path(f);
            let index_exists = match self.file_len(&index) {
                Ok(l) => l.is_some(),
                Err(e) => return Err(Error::io("inspect", &index, e)),
            };
            if index_exists {
                self.rename_aside(&index)?;
            }
        }
        self.sync_dir()
    }

    /// `--prune-index`: in the newest chain, remove the `.index` of every
    /// increment but the newest that has one, keeping the full backup's.
    /// Recovery to an increment whose `.index` is gone rebuilds it from the
    /// nearest older one and a scan of the increments between. An `.index`
    /// whose stamp another data file also has (another chain's, in the
    /// same second) stays. Best effort after a committed backup: a failure
    /// is a warning and the next run tries again. Returns the `.index`
    /// files removed and the bytes freed.
    pub fn prune_indexes(&self, log: &Log) -> (usize, u64) {
        let warn = |e: &dyn std::fmt::Display| {
            log.warn(format_args!("--prune-index: {e}; the next run tries again"));
        };
        let listing = match self.list() {
            Ok(l) => l,
            Err(e) => {
                warn(&e);
                return (0, 0);
            }
        };
        let chain = match self.resolve_in(&listing, None, log) {
            Ok(Some(c)) if c.has_dat => c,
            // nothing a .dat vouches for: nothing to prune
            Ok(_) => return (0, 0),
            // reading the chain failed: nothing removed, and it is said
            Err(e @ Error::Io { .. }) => {
                warn(&e);
                return (0, 0);
            }
            Err(e) => {
                log.note(format_args!("--prune-index: nothing removed: {e}"));
                return (0, 0);
            }
        };
        let increments: Vec<&DataFile> = chain.files.iter().skip(1).map(|c| &c.file).collect();
        // the newest increment that has an .index keeps it (an error
        // looking is not "it has none": nothing is removed then)
        let mut newest = None;
        for (i, f) in increments.iter().enumerate().rev() {
            let p = self.index_path(f);
            match self.file_len(&p) {
                Ok(Some(_)) => {
                    newest = Some(i);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    warn(&Error::io("inspect", &p, e));
                    return (0, 0);
                }
            }
        }
        let Some(newest) = newest else {
            return (0, 0);
        };
        let (mut removed, mut freed) = (0usize, 0u64);
        for f in &increments[..newest] {
            let shared = listing
                .files
                .iter()
                .any(|o| o.name.stamp == f.name.stamp && o.path != f.path);
            if shared {
                continue;
            }
            let p = self.index_path(f);
            let len = match std::fs::symlink_metadata(&p) {
                _ if self.is_remote() => match self.file_len(&p) {
                    Ok(Some(l)) => l,
                    _ => continue,
                },
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    warn(&Error::io("inspect", &p, e));
                    continue;
                }
            };
            match self.remove_file(&p) {
                Ok(()) => {
                    removed += 1;
                    freed += len;
                    log.note(format_args!("--prune-index: removed {}", p.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn(&Error::io("remove", &p, e)),
            }
        }
        if removed > 0 {
            if let Err(e) = self.sync_dir() {
                warn(&e);
            }
        }
        (removed, freed)
    }

    /// `-k`: after a full backup stamped `keep`, remove every older chain and
    /// stray increment with its `.dat` and `.index` files, and the files set
    /// aside before it. Best effort (the backup is committed): see
    /// [`Repository::remove_chains_before`].
    pub fn delete_old_backups(&self, keep: &DataName, log: &Log) {
        log.note(format_args!(
            "removing the backups older than {} (-k)",
            keep.file_name()
        ));
        self.remove_chains_before(keep.stamp, "-k", log);
    }

    /// Remove every chain whose head is stamped before `before` (its `.dat`,
    /// its data files, wherever their stamps fall, and their `.index` files),
    /// the increments stamped before every chain, and what is left of chains
    /// removed before (see [`Repository::prune_leftovers`]). The repository is listed now, after any
    /// orphan was set aside. A chain's `.dat` goes first; when it cannot be
    /// removed, the chain's files stay with it, whole. An `.index` whose stamp
    /// a data file that stays also has is that file's and stays. Best effort,
    /// for the cleanup after a committed backup: each failure is a warning
    /// (printed when the run ends) and the next run tries again. Returns the
    /// data files removed and the bytes freed.
    pub fn remove_chains_before(&self, before: Stamp, what: &str, log: &Log) -> (usize, u64) {
        let warn = |e: &dyn std::fmt::Display| {
            log.warn(format_args!("{what}: {e}; the next run tries again"));
        };
        let listing = match self.list() {
            Ok(l) => l,
            Err(e) => {
                warn(&e);
                return (0, 0);
            }
        };
        let (strays, groups) = self.groups(&listing);
        let mut doomed: Vec<(Option<Stamp>, Vec<DataFile>)> = Vec::new();
        if !strays.is_empty() {
            doomed.push((None, strays));
        }
        for g in groups.into_iter().filter(|g| g.head < before) {
            doomed.push((Some(g.head), g.files));
        }
        let going: std::collections::HashSet<&Path> = doomed
            .iter()
            .flat_map(|(_, files)| files.iter().map(|f| f.path.as_path()))
            .collect();
        let staying: std::collections::HashSet<Stamp> = listing
            .files
            .iter()
            .filter(|f| !going.contains(f.path.as_path()))
            .map(|f| f.name.stamp)
            .collect();
        let mut freed = 0u64;
        let mut removed = 0usize;
        let mut tried: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        let mut remove = |p: &Path| -> bool {
            tried.insert(p.to_path_buf());
            let len = match self.file_len(p) {
                Ok(Some(l)) => l,
                Ok(None) => return true,
                Err(e) => {
                    warn(&Error::io("inspect", p, e));
                    return false;
                }
            };
            match self.remove_file(p) {
                Ok(()) => {
                    freed += len;
                    log.note(format_args!("{what}: removed {}", p.display()));
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => {
                    warn(&Error::io("remove", p, e));
                    false
                }
            }
        };
        for (head, files) in &doomed {
            if let Some(h) = head {
                if !remove(&self.dat_path_at(*h)) {
                    continue;
                }
            }
            for f in files {
                if !staying.contains(&f.name.stamp) {
                    remove(&self.index_path(f));
                }
                if remove(&f.path) {
                    removed += 1;
                }
            }
        }
        freed += self.prune_leftovers(before, &staying, &tried, what, log);
        if let Err(e) = self.sync_dir() {
            warn(&e);
        }
        (removed, freed)
    }

    /// Remove what is left of chains that are gone: files set aside as
    /// `*.orphaned` stamped before `before`, and `.index` files stamped before
    /// `before` that no data file that stays has the stamp of (left by a run
    /// that could not finish removing). Best effort, like
    /// [`Repository::remove_chains_before`]. Returns the bytes freed.
    pub fn prune_leftovers(
        &self,
        before: Stamp,
        staying: &std::collections::HashSet<Stamp>,
        tried: &std::collections::HashSet<PathBuf>,
        what: &str,
        log: &Log,
    ) -> u64 {
        let repo = self.dir();
        let warn = |e: Error| log.warn(format_args!("{what}: {e}; the next run tries again"));
        let entries = match std::iter::repeat_with(|| self.entries())
            .find(|r| !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::Interrupted))
            .expect("repeat_with never ends")
        {
            Ok(it) => it,
            Err(e) => {
                warn(Error::io("list", repo, e));
                return 0;
            }
        };
        let mut freed = 0;
        for name in entries {
            let name = name.as_str();
            let Some(stamp) = name
                .get(..19)
                .and_then(|stem| Stamp::parse_date(stem).ok())
                .filter(|st| *st < before)
            else {
                continue;
            };
            let leftover = name.ends_with(".orphaned")
                || (&name[19..] == ".index" && !staying.contains(&stamp));
            if !leftover {
                continue;
            }
            let p = self.path(name);
            if tried.contains(&p) {
                continue;
            }
            let len = self.file_len(&p).ok().flatten().unwrap_or(0);
            match self.remove_file(&p) {
                Ok(()) => {
                    log.note(format_args!("{what}: removed {}", p.display()));
                    freed += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn(Error::io("remove", &p, e)),
            }
        }
        freed
    }
}

impl Repository {
    /// [`rename_aside`] of the repository's file at `path`; on object
    /// storage a copy under the new name, then the old one removed.
    pub fn rename_aside(&self, path: &Path) -> Result<PathBuf> {
        let Some(r) = self.remote() else {
            return rename_aside(path);
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for n in 1u32..1000 {
            let to = match n {
                1 => format!("{name}.orphaned"),
                _ => format!("{name}.{n}.orphaned"),
            };
            // asked of the store now, not of a listing that may be old
            if r.stat(&to)?.is_some() {
                continue;
            }
            r.copy(&name, &to)?;
            self.changed();
            r.delete(&name)?;
            self.changed();
            return Ok(self.path(&to));
        }
        Err(Error::WouldOverwrite(path.to_path_buf()))
    }
}

/// Rename `path` to `path.orphaned` (or `path.N.orphaned` when that is
/// taken), never over an existing file. Returns the new name.
pub fn rename_aside(path: &Path) -> Result<PathBuf> {
    for n in 1u32.. {
        let mut to = path.as_os_str().to_owned();
        if n > 1 {
            to.push(format!(".{n}"));
        }
        to.push(".orphaned");
        let to = PathBuf::from(to);
        match durable::rename_noreplace(path, &to) {
            Ok(()) => return Ok(to),
            Err(Error::WouldOverwrite(_)) if n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}
