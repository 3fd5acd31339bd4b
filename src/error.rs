//! The one error type of the crate: every failure a user can meet, each with
//! a message that names the file involved and says what to do about it.
//!
//! `main` prints `Display` as one line on stderr and exits with
//! [`Error::exit_code`]. ZODB's repozo exits with status 1 for every error,
//! and so do we, so that wrappers keep working.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in a run.
#[derive(Debug)]
pub enum Error {
    /// Bad command line; the usage text is printed after the message.
    Usage(String),
    /// The repository has no backup to recover or verify.
    NoFiles(String),
    /// A backup file with the name we are about to write already exists.
    WouldOverwrite(PathBuf),
    /// `-V` or `-R -w` found files that do not match their `.dat` lines;
    /// one entry per bad file.
    VerificationFailed(Vec<String>),
    /// An operating system call failed on a path.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The source is not a FileStorage, or is damaged where ZODB refuses it.
    NotFileStorage { path: PathBuf, reason: String },
    /// A `.dat` file that cannot be used as it is.
    BadDat {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A file the chain needs is not in the repository.
    MissingFile { path: PathBuf, listed_in: PathBuf },
    /// Two full backups with one stamp (`.fs` and `.fsz`) and no `.dat` to
    /// say which one heads the chain.
    SameStamp {
        first: PathBuf,
        second: PathBuf,
        dat: PathBuf,
    },
    /// A `-D` argument that is not `yyyy-mm-dd[-hh[-mm[-ss]]]`.
    BadDate(String),
    /// A gzip data file that cannot be decompressed.
    BadGzip { path: PathBuf, reason: String },
    /// Recovery to stdout stopped because the reader went away.
    BrokenPipe,
    /// The source was replaced (a pack renames a new file over it) while
    /// it was being backed up.
    SourceReplaced(PathBuf),
    /// Another run holds the repository lock.
    Locked(PathBuf),
    /// An object-storage repository is locked by the lock objects named.
    LockedBy { repo: PathBuf, by: String },
    /// Object storage (`-r s3://`): a call failed or a mode is not there
    /// yet; the message says which and why.
    Remote(String),
    /// Not enough free space for the recovered file.
    NoSpace { path: PathBuf, need: u64, have: u64 },
    /// The newest backup is stamped too far after the clock (a clock that
    /// is wrong now or was wrong then); the message says what to do.
    Clock(String),
    /// `--blob-dir` names something that is not a ZODB blob directory.
    NotBlobDir { path: PathBuf, reason: String },
    /// A backup's blob list (`<stamp>.blobs`) that cannot be read.
    BadBlobList { path: PathBuf, reason: String },
    /// A committed blob file whose size differs from the stored revision
    /// of the same oid and tid (ZODB never changes one).
    BlobChanged { path: PathBuf, stored: PathBuf },
    /// Recovery with `--blob-dir` cannot recover the blobs the chain needs.
    Blobs(String),
}

impl Error {
    /// Build an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The process exit status for this error (always 1, as repozo).
    pub fn exit_code(&self) -> i32 {
        1
    }

    /// Whether the usage text should follow the message.
    pub fn wants_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Remote(msg) => write!(f, "{msg}"),
            Error::NoFiles(msg) => write!(f, "{msg}"),
            Error::WouldOverwrite(p) => {
                write!(f, "Cannot overwrite existing file: {}", p.display())
            }
            Error::VerificationFailed(lines) => write!(f, "{}", lines.join("\n")),
            Error::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            Error::NotFileStorage { path, reason } => {
                write!(
                    f,
                    "{} is not a usable FileStorage: {reason}",
                    path.display()
                )
            }
            Error::BadDat { path, line, reason } => {
                write!(f, "{} line {line}: {reason}", path.display())
            }
            Error::MissingFile { path, listed_in } => write!(
                f,
                "{} is missing (listed in {}); refusing to recover an incomplete chain",
                path.display(),
                listed_in.display()
            ),
            Error::SameStamp { first, second, dat } => write!(
                f,
                "{} and {} are both full backups with one stamp and there is no {} to say which one heads the chain; move the wrong one away",
                first.display(),
                second.display(),
                dat.display()
            ),
            Error::BadDate(s) => write!(
                f,
                "invalid date {s:?}: expected UTC yyyy-mm-dd[-hh[-mm[-ss]]]"
            ),
            Error::BadGzip { path, reason } => {
                write!(f, "{} is not a valid gzip file: {reason}", path.display())
            }
            Error::BrokenPipe => write!(f, "output closed before recovery finished"),
            Error::SourceReplaced(p) => write!(
                f,
                "{} was replaced while it was being backed up (packed?); nothing was kept: run the backup again",
                p.display()
            ),
            Error::Locked(p) => write!(
                f,
                "repository locked: another repozo run is using {}; try again when it has finished",
                p.display()
            ),
            Error::LockedBy { repo, by } => write!(
                f,
                "repository locked: another repozo run is using {} ({by}); try again when it has \
                 finished, or remove the lock object if that run is gone",
                repo.display()
            ),
            Error::NoSpace { path, need, have } => write!(
                f,
                "not enough free space for {}: need {need} bytes, {have} available",
                path.display()
            ),
            Error::Clock(msg) => write!(f, "{msg}"),
            Error::NotBlobDir { path, reason } => write!(
                f,
                "{} is not a ZODB blob directory: {reason}",
                path.display()
            ),
            Error::BadBlobList { path, reason } => {
                write!(f, "{} is not a usable blob list: {reason}", path.display())
            }
            Error::BlobChanged { path, stored } => write!(
                f,
                "{} differs in size from the stored revision {}: a committed blob file was changed; \
                 nothing was kept",
                path.display(),
                stored.display()
            ),
            Error::Blobs(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach an operation and a path to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
