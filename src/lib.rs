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
pub mod progress;
pub mod repository;

pub use error::{Error, Result};

use std::fmt;

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

/// Progress notes for `-v`, written to stderr (so they never mix with a
/// recovery written to stdout).
#[derive(Clone, Copy, Debug, Default)]
pub struct Log {
    pub verbose: bool,
}

impl Log {
    /// Print a note when verbose, on one line (see [`one_line`]; a write
    /// error is ignored, see [`stderr_line`]).
    pub fn note(&self, args: fmt::Arguments<'_>) {
        if self.verbose {
            stderr_line(format_args!("{}", one_line(&args.to_string())));
        }
    }

    /// A warning, printed whatever the verbosity once the run has
    /// succeeded: something went wrong that does not make the run fail. A
    /// run that fails prints its one error line only.
    pub fn warn(&self, args: fmt::Arguments<'_>) {
        let mut w = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
        w.push(format!("repozo: warning: {}", one_line(&args.to_string())));
    }

    /// A log that prints no notes (tests).
    pub fn quiet() -> Log {
        Log { verbose: false }
    }
}

/// Write one line to stderr, ignoring any error: a closed or broken
/// stderr (`repozo -v ... 2>&1 | head -1`) must never stop a run, least of
/// all between publishing a file and recording it (`eprintln!` panics when
/// the write fails). Every line the tool writes to stderr goes through here.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Write `text` to stdout and flush it; a failure (a closed pipe) is an
/// error naming `<stdout>`, never a panic.
pub fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write", std::path::Path::new("<stdout>"), e))
}

/// A message line as printed: control characters other than tab (a
/// newline or carriage return in a path, an escape sequence) are shown
/// escaped (`\n`, `\r`, `\x1b`, `\u{85}`), so that every message stays one
/// line and cannot drive the terminal. Paths reach messages through
/// `Path::display`, which shows bytes that are not UTF-8 as U+FFFD.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}');
    if !s.chars().any(bad) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if bad(c) && (c as u32) < 0x80 => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\x{:02x}", c as u32));
            }
            c if bad(c) => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// Warnings of this run, printed when it succeeds (see [`Log::warn`]).
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Run the operation the options ask for; with `-v`, end with a summary
/// line.
pub fn run(opts: &cli::Options) -> Result<()> {
    let started = std::time::Instant::now();
    let log = Log {
        verbose: opts.verbose,
    };
    let what = run_inner(opts);
    progress::done();
    let warnings = std::mem::take(&mut *WARNINGS.lock().unwrap_or_else(|e| e.into_inner()));
    let what = what?;
    for w in warnings {
        stderr_line(format_args!("{}", one_line(&w)));
    }
    log.note(format_args!("{}", progress::summary(&what, started)));
    Ok(())
}

fn run_inner(opts: &cli::Options) -> Result<String> {
    let log = Log {
        verbose: opts.verbose,
    };
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
            backup::backup(&o, &log).map(|out| match out {
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
            recover::recover(&o, &log)
                .map(|r| format!("recovered {} bytes from {} file(s)", r.bytes, r.files.len()))
        }
        cli::Mode::Verify => {
            let o = verify::VerifyOptions {
                repository: opts.repository.clone(),
                quick: opts.quick,
                max_age: opts.max_age,
            };
            verify::verify(&o, &log)
                .map(|v| format!("verified {} file(s), {} bytes", v.files, v.bytes))
        }
        cli::Mode::List => {
            let o = list::ListOptions {
                repository: opts.repository.clone(),
                json: opts.json,
            };
            list::list(&o, &log).map(|c| format!("listed {} chain(s)", c.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn messages_stay_one_line() {
        assert_eq!(one_line("plain\ttab é \u{fffd}"), "plain\ttab é \u{fffd}");
        assert_eq!(
            one_line("a\nb\rc\u{1b}[31m\u{7f}\u{85}\u{2028}"),
            "a\\nb\\rc\\x1b[31m\\x7f\\u{85}\\u{2028}"
        );
    }
}
