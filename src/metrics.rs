//! `--metrics=FILE`: after every run, a Prometheus textfile-collector file
//! (node_exporter's `--collector.textfile.directory`) describing it, written
//! atomically (a temporary file renamed over FILE), so a collector never
//! reads half of one.
//!
//! Every series is labelled by `repository` (as given with `-r`) and `mode`
//! (`backup`, `recover`, `verify`, `list`). The times of the last success
//! and of the last failure are carried over from the FILE the previous run
//! with the same labels wrote, so one file per repository and mode (per
//! timer) keeps both.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::stamp::Stamp;
use crate::io::durable;
use crate::repository::Repository;

/// What a run did, for its metrics.
#[derive(Clone, Debug)]
pub struct RunReport<'a> {
    pub mode: &'static str,
    pub repository: &'a Path,
    pub ok: bool,
    /// When the run started, in seconds since the epoch.
    pub started: f64,
    pub duration: f64,
    pub read: u64,
    pub written: u64,
    /// For a backup that succeeded: `full`, `incremental` or `none`.
    pub kind: Option<&'static str>,
}

/// The kinds a backup reports in `repozo_last_backup_kind`.
const KINDS: [&str; 3] = ["full", "incremental", "none"];

/// A label value as Prometheus' text format wants it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The value of `name{labels}` in a previous file's text, if there.
fn previous(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// What the repository holds now: (chains, bytes of every file in it and
/// its blob store, newest backup's stamp). `None` when it cannot be read.
fn repository_state(dir: &Path) -> Option<(usize, u64, Option<Stamp>)> {
    // an s3:// repository (-L) is connected and listed again
    let repo = Repository::open(dir).ok()?;
    let listing = repo.list().ok()?;
    let (_, groups) = repo.groups(&listing);
    let mut bytes = repo.object_bytes().unwrap_or(0);
    if repo.remote().is_none() {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    bytes += m.len();
                }
            }
        }
    }
    bytes += repo.blob_store_size().map(|(_, b)| b).unwrap_or(0);
    let newest = listing.files.iter().map(|f| f.name.stamp).max();
    Some((groups.len(), bytes, newest))
}

/// The file's text for `r`, carrying the last success and failure times
/// over from `old` (the previous file's text).
pub fn render(r: &RunReport, old: &str, state: Option<(usize, u64, Option<Stamp>)>) -> String {
    let labels = format!(
        "repository=\"{}\",mode=\"{}\"",
        escape(&r.repository.to_string_lossy()),
        r.mode
    );
    let finished = r.started + r.duration;
    let carried = |name: &str| previous(old, name, &labels).unwrap_or(0.0);
    let (success, failure) = if r.ok {
        (finished, carried("repozo_last_failure_timestamp_seconds"))
    } else {
        (carried("repozo_last_success_timestamp_seconds"), finished)
    };
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} gauge");
        for (extra, v) in rows {
            let _ = writeln!(s, "{name}{{{labels}{extra}}} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    gauge(
        "repozo_last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
        &one(finished),
    );
    gauge(
        "repozo_last_run_success",
        "1 when the last run succeeded, 0 when it failed.",
        &one(if r.ok { 1.0 } else { 0.0 }),
    );
    gauge(
        "repozo_last_success_timestamp_seconds",
        "When the last successful run ended (Unix time; 0: none yet).",
        &one(success),
    );
    gauge(
        "repozo_last_failure_timestamp_seconds",
        "When the last failed run ended (Unix time; 0: none yet).",
        &one(failure),
    );
    gauge(
        "repozo_last_run_duration_seconds",
        "How long the last run took.",
        &one(r.duration),
    );
    gauge(
        "repozo_last_run_read_bytes",
        "Bytes the last run read (source, backup files, output).",
        &one(r.read as f64),
    );
    gauge(
        "repozo_last_run_written_bytes",
        "Bytes the last run wrote (backup files, recovered output).",
        &one(r.written as f64),
    );
    if let Some(kind) = r.kind {
        let rows: Vec<(String, f64)> = KINDS
            .iter()
            .map(|k| (format!(",kind=\"{k}\""), if *k == kind { 1.0 } else { 0.0 }))
            .collect();
        gauge(
            "repozo_last_backup_kind",
            "What the last successful backup made: 1 for its kind.",
            &rows,
        );
    }
    if let Some((chains, bytes, newest)) = state {
        gauge(
            "repozo_repository_chains",
            "Chains (a full backup and its increments) in the repository.",
            &one(chains as f64),
        );
        gauge(
            "repozo_repository_bytes",
            "Bytes of every file in the repository, blob store included.",
            &one(bytes as f64),
        );
        if let Some(n) = newest {
            gauge(
                "repozo_newest_backup_timestamp_seconds",
                "The stamp of the newest backup in the repository (Unix time).",
                &one(n.unix_seconds() as f64),
            );
        }
    }
    s
}

/// What every file we write starts with.
const MAGIC: &str = "# HELP repozo_";

/// The file `--metrics=FILE` writes (FILE, or the file a symbolic link
/// FILE leads to) and the text a previous run left there ("" for none).
///
/// Refused, as nothing a run may replace: an existing file that is not one
/// of ours (the source, a recovered file, anything but an empty file or one
/// starting with [`MAGIC`]), anything but a regular file (a FIFO would hang
/// the run, a device node would be replaced), and a FILE inside the
/// repository or the blob directory (a name like a backup's would become
/// one). Other problems (a missing directory) are left to the write.
pub fn target(
    file: &Path,
    repository: &Path,
    blob_dir: Option<&Path>,
) -> Result<(PathBuf, String)> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |p: &Path, why: &str| {
        Error::io(
            "write metrics to",
            p,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{why}: choose another --metrics FILE"),
            ),
        )
    };
    let mut path = file.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&path).map_err(|e| Error::io("read", &path, e))?;
                path = parent_of(&path).join(to);
            }
            _ => break,
        }
    }
    let dir = parent_of(&path);
    for (inside, what) in [
        (Some(repository), "the repository"),
        (blob_dir, "the blob directory"),
    ] {
        if let Some(inside) = inside {
            if within(&dir, inside) {
                return Err(refuse(&path, &format!("it is in {what}")));
            }
        }
    }
    let mut old = String::new();
    match std::fs::symlink_metadata(&path) {
        Err(_) => return Ok((path, old)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refuse(&path, "too many symbolic links"));
        }
        Ok(m) if !m.is_file() => {
            return Err(refuse(&path, "it is not a regular file"));
        }
        Ok(_) => {}
    }
    // O_NONBLOCK: what was a file a moment ago may be a FIFO now
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path);
    if let Ok(f) = f {
        if f.metadata().is_ok_and(|m| !m.is_file()) {
            return Err(refuse(&path, "it is not a regular file"));
        }
        let mut bytes = Vec::new();
        let _ = f.take(1 << 20).read_to_end(&mut bytes);
        if !bytes.is_empty() && !bytes.starts_with(MAGIC.as_bytes()) {
            return Err(refuse(
                &path,
                "it exists and is not a metrics file of repozo's, and is never replaced",
            ));
        }
        old = String::from_utf8_lossy(&bytes).into_owned();
    }
    Ok((path, old))
}

/// `p`'s directory (`.` for a bare name).
fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the directory `dir` is `top` or below it (by any path).
fn within(dir: &Path, top: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(t), Ok(d)) = (std::fs::metadata(top), std::fs::canonicalize(dir)) else {
        return false;
    };
    d.ancestors()
        .any(|a| std::fs::metadata(a).is_ok_and(|m| m.dev() == t.dev() && m.ino() == t.ino()))
}

/// Write FILE for the run `r`, atomically (refused as [`target`] says).
pub fn write(file: &Path, r: &RunReport, blob_dir: Option<&Path>) -> Result<()> {
    let (file, old) = target(file, r.repository, blob_dir)?;
    // a failed run on object storage may have met an endpoint that does
    // not answer: not waited for twice
    let remote = r
        .repository
        .to_str()
        .is_some_and(|d| d.starts_with(crate::repository::remote::SCHEME));
    let state = if remote && !r.ok {
        None
    } else {
        repository_state(r.repository)
    };
    let text = render(r, &old, state);
    // readable by node_exporter's user whatever the umask (the units'
    // UMask=0077 made it 0600, owned by root: never collected)
    let mut t = durable::TempFile::new_in(&parent_of(&file))?;
    let p = t.path().to_path_buf();
    t.file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| Error::io("set the mode of", &p, e))?;
    t.file()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("write", &p, e))?;
    t.publish(&file, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: bool, started: f64) -> RunReport<'static> {
        RunReport {
            mode: "backup",
            repository: Path::new("/var/backups/a \"b\""),
            ok,
            started,
            duration: 2.5,
            read: 10,
            written: 20,
            kind: ok.then_some("incremental"),
        }
    }

    #[test]
    fn success_and_failure_times_are_carried_over() {
        let first = render(&report(true, 100.0), "", None);
        assert!(first.contains(
            "repozo_last_success_timestamp_seconds{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 102.5\n"
        ), "{first}");
        assert!(first.contains("repozo_last_failure_timestamp_seconds{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 0\n"));
        assert!(
            first.contains(",kind=\"incremental\"} 1\n") && first.contains(",kind=\"full\"} 0\n")
        );
        let second = render(&report(false, 200.0), &first, None);
        assert!(second.contains("repozo_last_success_timestamp_seconds{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 102.5\n"), "{second}");
        assert!(second.contains("repozo_last_failure_timestamp_seconds{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 202.5\n"));
        assert!(second.contains(
            "repozo_last_run_success{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 0\n"
        ));
        assert!(!second.contains("repozo_last_backup_kind"));
        let third = render(&report(true, 300.0), &second, None);
        assert!(third.contains("repozo_last_failure_timestamp_seconds{repository=\"/var/backups/a \\\"b\\\"\",mode=\"backup\"} 202.5\n"));
    }

    #[test]
    fn another_repository_carries_nothing_over() {
        let first = render(&report(true, 100.0), "", None);
        let mut other = report(false, 200.0);
        other.repository = Path::new("/elsewhere");
        let text = render(&other, &first, None);
        assert!(text.contains("repozo_last_success_timestamp_seconds{repository=\"/elsewhere\",mode=\"backup\"} 0\n"), "{text}");
    }
}
