//! Command-line options, parsed the way ZODB's repozo parses them with
//! Python's `getopt`: clustered short flags (`-BQr DIR`), values attached or
//! separate (`-rDIR`, `-r DIR`), long options with `=` or a separate value,
//! unique prefixes of long options (`--rep`), and the first non-option
//! argument ends the options and is an error.
//!
//! Parsing is plain data in, plain data out: [`parse`] never touches the
//! file system, so it is tested without starting a process.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::command::backup::BackupOptions;
use crate::command::list::ListOptions;
use crate::command::recover::RecoverOptions;
use crate::command::verify::VerifyOptions;
use crate::error::{Error, Result};
use crate::format::stamp::Stamp;

/// The usage text, as repozo's docstring with our program name.
pub const USAGE: &str = "\
repozo -- incremental and full backups of a Data.fs file and index.

Usage: repozo [options]
Where:

    Exactly one of -B, -R, or -V must be specified:

    -B / --backup
        Backup current ZODB file.

    -R / --recover
        Restore a ZODB file from a backup.

    -V / --verify
        Verify backup integrity.

    -v / --verbose
        Verbose mode.

    -h / --help
        Print this text and exit.

    -r dir
    --repository=dir
        Repository directory containing the backup files.  This argument
        is required.  The directory must already exist.  You should not
        edit the files in this directory, or add your own files to it.

Options for -B/--backup:
    -f file
    --file=file
        Source Data.fs file.  This argument is required.

    -F / --full
        Force a full backup.  By default, an incremental backup is made
        if possible (e.g., if a pack has occurred since the last
        incremental backup, a full backup is necessary).

    -Q / --quick
        Verify via md5 checksum only the last incremental written.  This
        significantly reduces the disk i/o at the (theoretical) cost of
        inconsistency.  This is a probabilistic way of determining whether
        a full backup is necessary.

    -z / --gzip
        Compress with gzip the backup files.  By default, gzip compression
        is not used.

    -k / --kill-old-on-full
        If a full backup is created, remove any prior full or incremental
        backup files (and associated metadata files) from the repository
        directory.

Options for -R/--recover:
    -D str
    --date=str
        Recover state as of this date.  Specify UTC (not local) time.
            yyyy-mm-dd[-hh[-mm[-ss]]]
        By default, current time is used.

    -o filename
    --output=filename
        Write recovered ZODB to given file.  By default, the file is
        written to stdout.

        Note:  for the stdout case, the index file will **not** be restored
        automatically.

    -w
    --with-verify
        Verify on the fly the backup files on recovering. This option runs
        the same checks as when repozo is run in -V/--verify mode, and
        allows to verify and recover a backup in one single step. If a sanity
        check fails, the output file is left as it was: onto an existing
        output file, every backup file is checked before anything is
        written to it.

    -F / --full
        Always recover the whole chain into a new file (by default, an
        output file that holds an earlier state of the same chain is
        extended in place with only the missing bytes).

    -Q / --quick
        When extending an output file in place, check only the last
        backup range it holds against the backup (by default, all of
        them).

Options for -V/--verify:
    -Q / --quick
        Verify file sizes only (skip md5 checksums).

Beyond ZODB's repozo (long options only, but -L):

    -L / --list
        List every chain of the repository, oldest first: each file's
        stamp, kind, byte range, size on disk and state; per chain the
        dates it recovers, its size, and its problems. The repository may
        be s3://BUCKET/PREFIX on S3-compatible object storage (endpoint and
        credentials from the AWS environment: AWS_ENDPOINT_URL, ...).

    --json
        With -L: print the listing as JSON.

    --keep=N
        With -B: after a successful backup, keep the N newest full backups
        with their increments, .dat and .index files, and remove older
        chains.

    --prune-index
        With -B: keep only the .index files that save a rescan: the one
        of each chain's full backup and the newest. Older increments'
        .index files are removed as new increments land; recovery to
        their dates rebuilds FILE.index byte for byte. (ZODB's repozo
        recovers such a date without FILE.index; ZODB rebuilds it when it
        opens the file.)

    --max-age=DURATION
        With -V: also fail when the newest backup is older than DURATION
        (a number with s, m, h, d or w: 26h, 2d), or stamped more than an
        hour after the clock (a wrong clock; -B refuses to run then).

    --blob-dir=DIR
        With -B: also back up the ZODB blob directory DIR of the
        FileStorage: exactly the blob revisions the backed-up bytes refer
        to, each stored once in the repository. With -R (and -o): write
        DIR holding exactly the blob revisions the recovered file refers
        to, before the file is put in place.

    --metrics=FILE
        After the run, whether it succeeded or not, write FILE (atomically)
        for Prometheus' node_exporter textfile collector: last success and
        failure times, duration, bytes read and written, the kind of
        backup, the repository's chains and bytes, labelled by repository
        and mode. Use one FILE per repository and mode.

    --version
        Print the version and exit.
";

/// Which operation the mode flags chose, while the options are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Backup,
    Recover,
    Verify,
    /// `-L`: describe the repository.
    List,
}

/// The operation to run, with the options of its command: flags as data,
/// built by [`parse`] after repozo's sanity checks, handed to the command
/// as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Backup(BackupOptions),
    Recover(RecoverOptions),
    Verify(VerifyOptions),
    List(ListOptions),
    /// `-R` with a `-D` that is not a date (the text as given). It is an
    /// error, reported when the run starts, after the `-v` notes on
    /// ignored options, as ZODB's repozo logs those notes before it acts.
    BadDate(String),
}

/// A run: what to do, and how to talk about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub verbose: bool,
    /// Options that do not apply to the mode and were ignored; printed
    /// under `-v`, as repozo logs them.
    pub ignored: Vec<&'static str>,
    pub action: Action,
    /// `--metrics=FILE`: the Prometheus textfile to write after the run.
    pub metrics: Option<PathBuf>,
    /// `-r`, for the metrics' labels.
    pub repository: PathBuf,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Run(Box<Run>),
}

/// Long options, as repozo declares them to getopt (`=` takes a value).
const LONG: &[&str] = &[
    "backup",
    "recover",
    "verify",
    "verbose",
    "help",
    "repository=",
    "file=",
    "full",
    "quick",
    "gzip",
    "kill-old-on-full",
    "date=",
    "output=",
    "with-verify",
];

/// Long options of ours, beyond repozo's.
const EXTRA_LONG: &[&str] = &[
    "list",
    "json",
    "keep=",
    "max-age=",
    "version",
    "blob-dir=",
    "prune-index",
    "metrics=",
];

/// Short option letters; those followed by `:` take a value (`L` is ours).
const SHORT: &str = "BRVvhr:f:FQzkD:o:wL";

/// Resolve a (possibly abbreviated) long option name the way getopt does.
fn resolve_long(name: &str) -> Result<(&'static str, bool)> {
    // repozo's own options first, so that every abbreviation that works
    // with ZODB's repozo keeps its meaning; ours only when none matches.
    let mut candidates: Vec<&'static str> = LONG
        .iter()
        .copied()
        .filter(|o| o.starts_with(name))
        .collect();
    if candidates.is_empty() {
        candidates = EXTRA_LONG
            .iter()
            .copied()
            .filter(|o| o.starts_with(name))
            .collect();
    }
    if candidates.is_empty() {
        return Err(Error::Usage(format!("option --{name} not recognized")));
    }
    for c in &candidates {
        let bare = c.trim_end_matches('=');
        if bare == name {
            return Ok((bare, c.ends_with('=')));
        }
    }
    if candidates.len() > 1 {
        return Err(Error::Usage(format!("option --{name} not a unique prefix")));
    }
    let c = candidates[0];
    Ok((c.trim_end_matches('='), c.ends_with('=')))
}

fn short_takes_value(c: char) -> Option<bool> {
    let mut chars = SHORT.chars().peekable();
    while let Some(x) = chars.next() {
        let takes = chars.peek() == Some(&':');
        if takes {
            chars.next();
        }
        if x == c {
            return Some(takes);
        }
    }
    None
}

/// Map a short letter to its long name.
fn short_to_long(c: char) -> &'static str {
    match c {
        'B' => "backup",
        'R' => "recover",
        'V' => "verify",
        'v' => "verbose",
        'h' => "help",
        'r' => "repository",
        'f' => "file",
        'F' => "full",
        'Q' => "quick",
        'z' => "gzip",
        'k' => "kill-old-on-full",
        'D' => "date",
        'o' => "output",
        'w' => "with-verify",
        'L' => "list",
        _ => unreachable!("letter checked against SHORT"),
    }
}

/// Parse the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::Arg;

    // First pass: getopt's own work, turning the words into (option, value)
    // pairs; any getopt error comes before the options are acted on.
    let mut parser = lexopt::Parser::from_args(args);
    let mut opts: Vec<(&'static str, Option<OsString>)> = Vec::new();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(Error::Usage(e.to_string())),
        };
        match arg {
            Arg::Short(c) => {
                let takes = short_takes_value(c)
                    .ok_or_else(|| Error::Usage(format!("option -{c} not recognized")))?;
                let value = if takes {
                    Some(
                        parser
                            .value()
                            .map_err(|_| Error::Usage(format!("option -{c} requires argument")))?,
                    )
                } else {
                    None
                };
                opts.push((short_to_long(c), value));
            }
            Arg::Long(name) => {
                let name = name.to_string();
                let (long, takes) = resolve_long(&name)?;
                let value =
                    if takes {
                        Some(parser.value().map_err(|_| {
                            Error::Usage(format!("option --{long} requires argument"))
                        })?)
                    } else {
                        if parser.optional_value().is_some() {
                            return Err(Error::Usage(format!(
                                "option --{long} must not have an argument"
                            )));
                        }
                        None
                    };
                opts.push((long, value));
            }
            Arg::Value(v) => {
                // getopt stops at the first non-option; everything from
                // here on is an argument, and repozo takes none.
                rest.push(v);
                if let Ok(raw) = parser.raw_args() {
                    rest.extend(raw);
                }
                break;
            }
        }
    }

    // Second pass: repozo's loop over the options, in order.
    let mut mode: Option<Mode> = None;
    let mut verbose = false;
    let mut repository = None;
    let mut file = None;
    let (mut full, mut quick, mut gzip, mut kill_old, mut with_verify) =
        (false, false, false, false, false);
    let mut date: Option<String> = None;
    let mut output = None;
    let mut keep: Option<usize> = None;
    let mut max_age: Option<u64> = None;
    let mut json = false;
    let mut blob_dir: Option<PathBuf> = None;
    let mut prune_index = false;
    let mut metrics: Option<PathBuf> = None;
    for (opt, value) in opts {
        let mut set_mode = |m: Mode| -> Result<()> {
            if mode.is_some() {
                return Err(Error::Usage("-B, -R, and -V are mutually exclusive".into()));
            }
            mode = Some(m);
            Ok(())
        };
        match opt {
            "help" => return Ok(Command::Help),
            "verbose" => verbose = true,
            "recover" => set_mode(Mode::Recover)?,
            "backup" => set_mode(Mode::Backup)?,
            "verify" => set_mode(Mode::Verify)?,
            "quick" => quick = true,
            "file" => file = value.map(PathBuf::from),
            "repository" => repository = value.map(PathBuf::from),
            "full" => full = true,
            "date" => {
                let v = value.expect("date takes a value");
                date = Some(
                    v.into_string()
                        .map_err(|v| Error::BadDate(v.to_string_lossy().into_owned()))?,
                );
            }
            "output" => output = value.map(PathBuf::from),
            "gzip" => gzip = true,
            "kill-old-on-full" => kill_old = true,
            "with-verify" => with_verify = true,
            "version" => return Ok(Command::Version),
            "list" => set_mode(Mode::List)?,
            "json" => json = true,
            "prune-index" => prune_index = true,
            "metrics" => {
                metrics = value
                    .map(PathBuf::from)
                    .filter(|p| !p.as_os_str().is_empty())
            }
            "blob-dir" => {
                blob_dir = value
                    .map(PathBuf::from)
                    .filter(|p| !p.as_os_str().is_empty())
            }
            "keep" => {
                let v = value.expect("keep takes a value");
                let n = v
                    .to_str()
                    .and_then(|t| t.parse::<usize>().ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--keep needs a number of full backups, at least 1, not {:?}",
                            v.to_string_lossy()
                        ))
                    })?;
                keep = Some(n);
            }
            "max-age" => {
                let v = value.expect("max-age takes a value");
                max_age = Some(parse_duration(&v.to_string_lossy())?);
            }
            other => unreachable!("option {other} resolved from LONG"),
        }
    }

    if !rest.is_empty() {
        let words: Vec<String> = rest
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(Error::Usage(format!(
            "Invalid arguments: {}",
            words.join(", ")
        )));
    }
    let mode = mode
        .ok_or_else(|| Error::Usage("Either --backup, --recover or --verify is required".into()))?;
    let repository = repository.ok_or_else(|| Error::Usage("--repository is required".into()))?;

    let mut ignored = Vec::new();
    if mode != Mode::Backup && keep.is_some() {
        ignored.push("--keep option is ignored outside backup mode");
    }
    if mode != Mode::Backup && prune_index {
        ignored.push("--prune-index option is ignored outside backup mode");
    }
    if mode != Mode::Verify && max_age.is_some() {
        ignored.push("--max-age option is ignored outside verify mode");
    }
    if mode != Mode::List && json {
        ignored.push("--json option is ignored outside list mode");
    }
    if matches!(mode, Mode::Verify | Mode::List) && blob_dir.is_some() {
        ignored.push("--blob-dir option is ignored outside backup and recover modes");
    }
    let repo_label = repository.clone();
    let action = match mode {
        Mode::List => {
            let any = date.is_some() as u8
                + output.is_some() as u8
                + file.is_some() as u8
                + full as u8
                + quick as u8
                + gzip as u8
                + kill_old as u8
                + with_verify as u8;
            if any > 0 {
                ignored.push("options other than -r, -v and --json are ignored in list mode");
            }
            Action::List(ListOptions { repository, json })
        }
        Mode::Backup => {
            if date.is_some() {
                ignored.push("--date option is ignored in backup mode");
            }
            if output.is_some() {
                ignored.push("--output option is ignored in backup mode");
            }
            if with_verify {
                ignored.push("--with-verify option is ignored in backup mode");
            }
            let file = file
                .filter(|f| !f.as_os_str().is_empty())
                .ok_or_else(|| Error::Usage("--file is required in backup mode".into()))?;
            Action::Backup(BackupOptions {
                repository,
                file,
                full,
                quick,
                gzip,
                kill_old,
                keep,
                blob_dir,
                prune_index,
            })
        }
        Mode::Recover => {
            if file.is_some() {
                ignored.push("--file option is ignored in recover mode");
            }
            if kill_old {
                ignored.push("--kill-old-on-full option is ignored in recover mode");
            }
            match date.as_deref().map(Stamp::parse_date).transpose() {
                Ok(stamp) => Action::Recover(RecoverOptions {
                    repository,
                    date: stamp,
                    date_text: date,
                    output,
                    with_verify,
                    full,
                    quick,
                    blob_dir,
                }),
                Err(Error::BadDate(text)) => Action::BadDate(text),
                Err(e) => return Err(e),
            }
        }
        Mode::Verify => {
            if date.is_some() {
                ignored.push("--date option is ignored in verify mode");
            }
            if output.is_some() {
                ignored.push("--output option is ignored in verify mode");
            }
            if full {
                ignored.push("--full option is ignored in verify mode");
            }
            if gzip {
                ignored.push("--gzip option is ignored in verify mode");
            }
            if file.is_some() {
                ignored.push("--file option is ignored in verify mode");
            }
            if kill_old {
                ignored.push("--kill-old-on-full option is ignored in verify mode");
            }
            if with_verify {
                ignored.push("--with-verify option is ignored in verify mode");
            }
            Action::Verify(VerifyOptions {
                repository,
                quick,
                max_age,
            })
        }
    };

    Ok(Command::Run(Box::new(Run {
        verbose,
        ignored,
        action,
        metrics,
        repository: repo_label,
    })))
}

/// Parse a `--max-age` duration: a number with a unit `s`, `m`, `h`, `d`
/// or `w` (`26h`, `2d`, `90m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = || {
        Error::Usage(format!(
            "--max-age needs a duration like 26h, 2d or 90m, not {s:?}"
        ))
    };
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option the parser knows is in `--help` (the man page and the
    /// completions are generated from it: tests/integration/man.rs).
    #[test]
    fn every_option_is_in_the_help() {
        for o in LONG.iter().chain(EXTRA_LONG) {
            let name = o.trim_end_matches('=');
            assert!(
                USAGE.contains(&format!("--{name}")),
                "--{name} is not in USAGE"
            );
        }
        for c in SHORT.chars().filter(|c| *c != ':') {
            assert!(USAGE.contains(&format!("-{c}")), "-{c} is not in USAGE");
        }
    }

    fn run(args: &[&str]) -> Result<Run> {
        match parse(args.iter().copied())? {
            Command::Run(r) => Ok(*r),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn backup(args: &[&str]) -> Result<BackupOptions> {
        match run(args)?.action {
            Action::Backup(o) => Ok(o),
            other => panic!("expected a backup for {args:?}, got {other:?}"),
        }
    }

    fn recover(args: &[&str]) -> Result<RecoverOptions> {
        match run(args)?.action {
            Action::Recover(o) => Ok(o),
            other => panic!("expected a recovery for {args:?}, got {other:?}"),
        }
    }

    fn verify(args: &[&str]) -> Result<VerifyOptions> {
        match run(args)?.action {
            Action::Verify(o) => Ok(o),
            other => panic!("expected a verification for {args:?}, got {other:?}"),
        }
    }

    fn list(args: &[&str]) -> Result<ListOptions> {
        match run(args)?.action {
            Action::List(o) => Ok(o),
            other => panic!("expected a listing for {args:?}, got {other:?}"),
        }
    }

    fn usage_err(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error for {args:?}, got {other:?}"),
        }
    }

    fn day(year: u32, month: u32, day: u32) -> Stamp {
        Stamp {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    #[test]
    fn clustered_short_flags_with_value() -> Result<()> {
        let o = backup(&["-BQr", "repo", "-f", "Data.fs"])?;
        assert!(o.quick);
        assert_eq!(o.repository, PathBuf::from("repo"));
        let r = run(&["-BFzvrrepo", "-fData.fs"])?;
        assert!(r.verbose);
        let Action::Backup(o) = r.action else {
            panic!("not a backup: {r:?}")
        };
        assert!(o.full && o.gzip);
        assert_eq!(o.repository, PathBuf::from("repo"));
        assert_eq!(o.file, PathBuf::from("Data.fs"));
        Ok(())
    }

    #[test]
    fn long_options_equals_separate_and_prefixes() -> Result<()> {
        let o = backup(&["--back", "--rep", "r", "--file=x", "--qu", "--gz"])?;
        assert!(o.quick && o.gzip);
        assert_eq!(o.repository, PathBuf::from("r"));
        assert_eq!(o.file, PathBuf::from("x"));
        let o = recover(&[
            "--recover",
            "--repository=r",
            "--date",
            "2020-01-01",
            "-o",
            "out",
            "-w",
        ])?;
        assert_eq!(o.date_text.as_deref(), Some("2020-01-01"));
        assert_eq!(o.date, Some(day(2020, 1, 1)));
        assert_eq!(o.output, Some(PathBuf::from("out")));
        assert!(o.with_verify);
        // an exact match wins over longer candidates
        verify(&["--verify", "-r", "r"])?;
        let r = run(&["--verbose", "-V", "-r", "r"])?;
        assert!(r.verbose);
        Ok(())
    }

    #[test]
    fn values_may_look_like_options() -> Result<()> {
        let o = backup(&["-B", "-r", "-f", "-f", "-B"]);
        // "-B" appears twice: once as the mode, once as the value of -f
        let o = o?;
        assert_eq!(o.repository, PathBuf::from("-f"));
        assert_eq!(o.file, PathBuf::from("-B"));
        Ok(())
    }

    #[test]
    fn getopt_errors() {
        assert_eq!(
            usage_err(&["--ver", "-r", "r"]),
            "option --ver not a unique prefix"
        );
        assert_eq!(usage_err(&["--nope"]), "option --nope not recognized");
        assert_eq!(usage_err(&["-x"]), "option -x not recognized");
        assert_eq!(usage_err(&["-B", "-r"]), "option -r requires argument");
        assert_eq!(
            usage_err(&["-B", "--rep"]),
            "option --repository requires argument"
        );
        assert_eq!(
            usage_err(&["--backup=yes", "-r", "r"]),
            "option --backup must not have an argument"
        );
        assert_eq!(
            usage_err(&["-B", "-r", "r", "-f", "x", "extra", "-v", "more"]),
            "Invalid arguments: extra, -v, more"
        );
        assert_eq!(
            usage_err(&["-B", "-r", "r", "-f", "x", "--", "a"]),
            "Invalid arguments: a"
        );
    }

    #[test]
    fn our_long_options_never_change_repozo_abbreviations() -> Result<()> {
        // --k still means --kill-old-on-full, although --keep exists
        let o = backup(&["-B", "-r", "r", "-f", "x", "--k"])?;
        assert!(o.kill_old && o.keep.is_none());
        let o = backup(&["-B", "-r", "r", "-f", "x", "--keep", "3"])?;
        assert_eq!(o.keep, Some(3));
        assert_eq!(usage_err(&["--ver"]), "option --ver not a unique prefix");
        assert_eq!(parse(["--version"]).ok(), Some(Command::Version));
        let o = list(&["-Lr", "r", "--js"])?;
        assert!(o.json);
        let o = verify(&["-V", "-r", "r", "--max-age=26h"])?;
        assert_eq!(o.max_age, Some(26 * 3600));
        assert!(usage_err(&["-B", "-r", "r", "-f", "x", "--keep", "0"]).contains("--keep"));
        Ok(())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h").unwrap(), 93600);
        assert_eq!(parse_duration("2d").unwrap(), 172800);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("45").unwrap(), 45);
        for bad in ["", "h", "2x", "-1h", "0", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repozo_sanity_checks() {
        assert_eq!(
            usage_err(&["-B", "-R"]),
            "-B, -R, and -V are mutually exclusive"
        );
        assert_eq!(
            usage_err(&["-B", "-B"]),
            "-B, -R, and -V are mutually exclusive"
        );
        assert_eq!(
            usage_err(&["-r", "r"]),
            "Either --backup, --recover or --verify is required"
        );
        assert_eq!(usage_err(&["-R"]), "--repository is required");
        assert_eq!(
            usage_err(&["-B", "-r", "r"]),
            "--file is required in backup mode"
        );
    }

    #[test]
    fn help_wins_unless_an_error_comes_first() {
        assert_eq!(parse(["-h"]).ok(), Some(Command::Help));
        assert_eq!(parse(["-B", "--help", "--bogus"]).ok(), None);
        assert_eq!(parse(["-B", "--he"]).ok(), Some(Command::Help));
        assert_eq!(
            usage_err(&["-B", "-R", "-h"]),
            "-B, -R, and -V are mutually exclusive"
        );
    }

    #[test]
    fn options_not_for_the_mode_are_ignored_with_a_note() -> Result<()> {
        // the command's options have no room for them: what is left is
        // exactly what applies
        let r = run(&[
            "-V",
            "-r",
            "r",
            "-D",
            "2020-01-01",
            "-o",
            "x",
            "-F",
            "-z",
            "-f",
            "y",
            "-k",
            "-w",
        ])?;
        assert_eq!(
            r.action,
            Action::Verify(VerifyOptions {
                repository: PathBuf::from("r"),
                quick: false,
                max_age: None,
            })
        );
        assert_eq!(r.ignored.len(), 7);
        let r = run(&["-R", "-r", "r", "-f", "y", "-k"])?;
        assert_eq!(
            r.action,
            Action::Recover(RecoverOptions {
                repository: PathBuf::from("r"),
                ..RecoverOptions::default()
            })
        );
        assert_eq!(
            r.ignored,
            [
                "--file option is ignored in recover mode",
                "--kill-old-on-full option is ignored in recover mode"
            ]
        );
        let r = run(&[
            "-B",
            "-r",
            "r",
            "-f",
            "y",
            "-D",
            "2020-01-01",
            "-o",
            "z",
            "-w",
        ])?;
        assert_eq!(
            r.action,
            Action::Backup(BackupOptions {
                repository: PathBuf::from("r"),
                file: PathBuf::from("y"),
                ..BackupOptions::default()
            })
        );
        assert_eq!(r.ignored.len(), 3);
        Ok(())
    }

    /// A `-D` that is not a date fails after every usage error and after
    /// the `-v` notes on ignored options (it was checked when the run
    /// started, before the options were data); outside `-R` it is only
    /// ignored.
    #[test]
    fn a_bad_date_is_reported_when_the_run_starts() -> Result<()> {
        let r = run(&["-R", "-v", "-r", "r", "-D", "2020-13-01", "-f", "y"])?;
        assert_eq!(r.action, Action::BadDate("2020-13-01".into()));
        assert_eq!(r.ignored, ["--file option is ignored in recover mode"]);
        assert!(r.verbose);
        assert_eq!(usage_err(&["-R", "-D", "x"]), "--repository is required");
        assert_eq!(
            usage_err(&["-R", "-D", "x", "-r", "r", "extra"]),
            "Invalid arguments: extra"
        );
        assert_eq!(
            usage_err(&["-R", "-D", "x", "-r", "r", "--max-age=2x"]),
            "--max-age needs a duration like 26h, 2d or 90m, not \"2x\""
        );
        assert_eq!(
            verify(&["-V", "-r", "r", "-D", "x"])?,
            VerifyOptions {
                repository: "r".into(),
                ..VerifyOptions::default()
            }
        );
        backup(&["-B", "-r", "r", "-f", "y", "-D", "x"])?;
        list(&["-L", "-r", "r", "-D", "x"])?;
        let o = recover(&["-R", "-r", "r", "-D", "2026-11-20-01-02-03"])?;
        assert_eq!(
            o.date,
            Some(Stamp {
                hour: 1,
                minute: 2,
                second: 3,
                ..day(2026, 11, 20)
            })
        );
        assert_eq!(o.date_text.as_deref(), Some("2026-11-20-01-02-03"));
        Ok(())
    }

    /// Every combination of a few interesting words parses without a panic,
    /// and the outcome does not depend on clustering.
    #[test]
    fn exhaustive_small_combinations() {
        let words = [
            "-B", "-R", "-V", "-Q", "-rR", "-f", "F", "--rep", "--ver", "-h", "x", "--",
        ];
        for a in words {
            for b in words {
                for c in words {
                    let _ = parse([a, b, c]);
                }
            }
        }
    }
}
