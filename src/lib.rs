//! repozo: incremental and full backups of a ZODB FileStorage (`Data.fs`),
//! compatible both ways with ZODB's own `repozo` script.
//!
//! # The repository
//!
//! A repository is a directory of backups, named by the UTC second they
//! were made:
//!
//! ```text
//! 2026-11-20-01-00-00.fs        full backup: the source's bytes [0, end)
//! 2026-11-20-01-00-00.dat       the chain's table of contents
//! 2026-11-20-01-00-00.index     ZODB's oid index as of that backup
//! 2026-11-21-01-00-00.deltafs   increment: the bytes appended since
//! 2026-11-21-01-00-00.index
//! 2026-11-21-01-00-00.blobs     with --blob-dir: the blob revisions its range refers to
//! blobs/                        with --blob-dir: each blob revision, stored once
//! ```
//!
//! With `-z` the data files are gzip streams named `.fsz` / `.deltafsz`.
//! The `.dat` has one line per data file of the chain,
//! `<repository>/<name> <start> <end> <md5>`, the md5 of the uncompressed
//! bytes. Recovery concatenates the newest chain started at or before a
//! date (a full backup, or a `.dat` whose full backup must then be there)
//! with its increments up to that date; with `--blob-dir` it also writes
//! the blob directory that goes with it ([`command::recover_blobs`]).
//!
//! # Layers
//!
//! The crate is four layers; imports point down only (a test,
//! `tests/integration/layers.rs`, fails when one points up or a circle
//! appears):
//!
//! - [`command`] decides: [`command::backup`], [`command::recover`],
//!   [`command::verify`] and [`command::list`]. How a backup decides
//!   between full, incremental and nothing is in `command/backup.rs`.
//! - [`repository`] owns where backup files live: listing them and
//!   grouping them into chains, the lock, the cache of fast checksums,
//!   retention.
//! - [`format`] knows the file formats on bytes: stamps and names, `.dat`
//!   lines, the `.index` pickle, FileStorage records.
//! - [`io`] moves bytes: buffers, readers, copies, md5 and xxh3, gzip,
//!   durable files.
//!
//! At the top, [`cli`] parses the command line into a command's options;
//! [`error`] is the one error type; [`progress`] counts bytes and draws
//! the progress line.

pub mod cli;
pub mod command;
pub mod error;
pub mod format;
pub mod io;
pub mod log;
pub mod metrics;
pub mod progress;
pub mod repository;

pub use error::{Error, Result};
pub use log::{one_line, stderr_line, write_stdout, Log};

use command::{backup, list, recover, verify};

/// Cases per property test: `REPOZO_FUZZ_CASES` (default 3000; a release
/// soak uses a million).
#[cfg(test)]
pub(crate) fn fuzz_cases() -> u32 {
    std::env::var("REPOZO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Run what the command line asks for; with `-v`, end with a summary
/// line; with `--metrics`, write the metrics file, whatever the outcome.
pub fn run(run: &cli::Run) -> Result<()> {
    let started = std::time::Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let log = Log::new(run.verbose);
    for note in &run.ignored {
        log.note(format_args!("{note}"));
    }
    let blob_dir = match &run.action {
        cli::Action::Backup(o) => o.blob_dir.as_deref(),
        cli::Action::Recover(o) => o.blob_dir.as_deref(),
        _ => None,
    };
    if let Some(file) = &run.metrics {
        // a FILE that must not be replaced (the source, a file in the
        // repository, a device) is refused before anything is done
        metrics::target(file, &run.repository, blob_dir)?;
    }
    let what = perform(&run.action, &log);
    progress::done();
    if let Some(file) = &run.metrics {
        let report = metrics::RunReport {
            mode: match &run.action {
                cli::Action::Backup(_) => "backup",
                cli::Action::Recover(_) | cli::Action::BadDate(_) => "recover",
                cli::Action::Verify(_) => "verify",
                cli::Action::List(_) => "list",
            },
            repository: &run.repository,
            ok: what.is_ok(),
            started: started_unix,
            duration: started.elapsed().as_secs_f64(),
            read: progress::bytes_read(),
            written: progress::bytes_written(),
            kind: what.as_ref().ok().and_then(|(_, kind)| *kind),
        };
        if let Err(e) = metrics::write(file, &report, blob_dir) {
            log.warn(format_args!("--metrics: {e}"));
            if what.is_err() {
                // the run's own error is what the exit status reports
                for w in log.take_warnings() {
                    stderr_line(format_args!("{}", one_line(&w)));
                }
            }
        }
    }
    let warnings = log.take_warnings();
    let (what, _) = what?;
    for w in warnings {
        stderr_line(format_args!("{}", one_line(&w)));
    }
    log.note(format_args!("{}", progress::summary(&what, started)));
    Ok(())
}

/// Run the command; its outcome as the words of the `-v` summary line, and
/// for a backup the kind it made (for the metrics).
fn perform(action: &cli::Action, log: &Log) -> Result<(String, Option<&'static str>)> {
    match action {
        cli::Action::Backup(o) => backup::backup(o, log).map(|out| match out {
            backup::Outcome::Full { name, end, .. } => {
                (format!("full backup {name} of {end} bytes"), Some("full"))
            }
            backup::Outcome::Incremental {
                name, start, end, ..
            } => (
                format!("incremental backup {name} of bytes {start}..{end}"),
                Some("incremental"),
            ),
            backup::Outcome::NothingToDo => ("backup: nothing to do".to_string(), Some("none")),
        }),
        cli::Action::Recover(o) => recover::recover(o, log).map(|r| {
            let what = format!("recovered {} bytes from {} file(s)", r.bytes, r.files.len());
            (what, None)
        }),
        cli::Action::Verify(o) => verify::verify(o, log).map(|v| {
            let what = format!("verified {} file(s), {} bytes", v.files, v.bytes);
            (what, None)
        }),
        cli::Action::List(o) => {
            list::list(o, log).map(|c| (format!("listed {} chain(s)", c.len()), None))
        }
        cli::Action::BadDate(text) => Err(Error::BadDate(text.clone())),
    }
}
