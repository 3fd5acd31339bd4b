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
//! ```
//!
//! With `-z` the data files are gzip streams named `.fsz` / `.deltafsz`.
//! The `.dat` has one line per data file of the chain,
//! `<repository>/<name> <start> <end> <md5>`, the md5 of the uncompressed
//! bytes. Recovery concatenates the newest chain started at or before a
//! date (a full backup, or a `.dat` whose full backup must then be there)
//! with its increments up to that date.
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
pub mod progress;
pub mod repository;

pub use error::{Error, Result};
pub use log::{one_line, stderr_line, write_stdout, Log};

use command::{backup, list, recover, verify};
use format::stamp;

/// Cases per property test: `REPOZO_FUZZ_CASES` (default 3000; a release
/// soak uses a million).
#[cfg(test)]
pub(crate) fn fuzz_cases() -> u32 {
    std::env::var("REPOZO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Run the operation the options ask for; with `-v`, end with a summary
/// line.
pub fn run(opts: &cli::Options) -> Result<()> {
    let started = std::time::Instant::now();
    let log = Log::new(opts.verbose);
    let what = run_inner(opts, &log);
    progress::done();
    let warnings = log.take_warnings();
    let what = what?;
    for w in warnings {
        stderr_line(format_args!("{}", one_line(&w)));
    }
    log.note(format_args!("{}", progress::summary(&what, started)));
    Ok(())
}

fn run_inner(opts: &cli::Options, log: &Log) -> Result<String> {
    for note in &opts.ignored {
        log.note(format_args!("{note}"));
    }
    match opts.mode {
        cli::Mode::Backup => {
            let o = backup::BackupOptions {
                repository: opts.repository.clone(),
                file: opts.file.clone().expect("checked by the parser"),
                full: opts.full,
                quick: opts.quick,
                gzip: opts.gzip,
                kill_old: opts.kill_old,
                keep: opts.keep,
            };
            backup::backup(&o, log).map(|out| match out {
                backup::Outcome::Full { name, end, .. } => {
                    format!("full backup {name} of {end} bytes")
                }
                backup::Outcome::Incremental {
                    name, start, end, ..
                } => format!("incremental backup {name} of bytes {start}..{end}"),
                backup::Outcome::NothingToDo => "backup: nothing to do".to_string(),
            })
        }
        cli::Mode::Recover => {
            let date = opts
                .date
                .as_deref()
                .map(stamp::Stamp::parse_date)
                .transpose()?;
            let o = recover::RecoverOptions {
                repository: opts.repository.clone(),
                date,
                date_text: opts.date.clone(),
                output: opts.output.clone(),
                with_verify: opts.with_verify,
                full: opts.full,
                quick: opts.quick,
            };
            recover::recover(&o, log)
                .map(|r| format!("recovered {} bytes from {} file(s)", r.bytes, r.files.len()))
        }
        cli::Mode::Verify => {
            let o = verify::VerifyOptions {
                repository: opts.repository.clone(),
                quick: opts.quick,
                max_age: opts.max_age,
            };
            verify::verify(&o, log)
                .map(|v| format!("verified {} file(s), {} bytes", v.files, v.bytes))
        }
        cli::Mode::List => {
            let o = list::ListOptions {
                repository: opts.repository.clone(),
                json: opts.json,
            };
            list::list(&o, log).map(|c| format!("listed {} chain(s)", c.len()))
        }
    }
}
