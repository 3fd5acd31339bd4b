//! The harness: a temporary directory holding a `Data.fs` written by real
//! ZODB and a repository `repo/`, and ways to run our `repozo`, ZODB's own
//! repozo (`tests/py/pyrepozo.py`) and the ZODB helper
//! (`tests/py/zodbtool.py`) in it.
//!
//! Every command runs with the directory as its working directory and with
//! relative paths (`-r repo -f Data.fs`), so the repository path written
//! into `.dat` lines is `repo/...` for both tools and their files can be
//! compared byte for byte. Failed assertions print the command, its working
//! directory, exit status, stdout and stderr.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use md5::Digest as _;
use tempfile::TempDir;

/// The repository lock file our binary keeps (see `src/lock.rs`).
pub const LOCK_NAME: &str = ".repozo.lock";

/// Our cache of fast checksums (see `src/sums.rs`).
pub const SUMS_NAME: &str = ".repozo-sums";

/// Our binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_repozo");

/// Backup stamps used across the suite (UTC seconds, REPOZO_TEST_NOW).
pub const T1: &str = "2026-11-20-01-00-00";
pub const T2: &str = "2026-11-20-02-00-00";
pub const T3: &str = "2026-11-20-02-30-15";
pub const T4: &str = "2026-11-21-00-00-00";
pub const T5: &str = "2026-11-21-06-07-08";
pub const T6: &str = "2026-11-22-12-00-00";
/// A "now" after every stamp above, for ZODB's repozo, whose recovery
/// without `-D` ignores files stamped after now.
pub const LATE: &str = "2030-01-01-00-00-00";

/// The Python interpreter with ZODB: `$REPOZO_PYTHON`, or the project's
/// venv.
pub fn python() -> PathBuf {
    match std::env::var_os("REPOZO_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

// ---------------------------------------------------------------------------
// Output

/// What a finished command did, with the context to explain a failure.
pub struct Output {
    pub cmd: String,
    pub cwd: PathBuf,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 4000;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{s}\n... ({} bytes in all)", bytes.len())
    } else {
        s
    }
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The command, its directory, status and output, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\ncwd: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.cmd,
            self.cwd.display(),
            self.status,
            shown(&self.stdout),
            shown(&self.stderr)
        )
    }

    #[track_caller]
    fn check(&self, cond: bool, why: &str) {
        if !cond {
            panic!("{why}\n{}", self.describe());
        }
    }

    #[track_caller]
    fn no_panic(&self) {
        self.check(
            !self.stderr_str().contains("panicked"),
            "the program panicked",
        );
    }

    /// Assert exit status 0 (and no panic).
    #[track_caller]
    pub fn ok(self) -> Self {
        self.no_panic();
        self.check(self.status.success(), "expected success");
        self
    }

    /// Assert exit status 1, something on stderr, and no panic.
    #[track_caller]
    pub fn fails(self) -> Self {
        self.no_panic();
        self.check(self.code() == Some(1), "expected exit status 1");
        self.check(!self.stderr_lines().is_empty(), "expected a message");
        self
    }

    /// Assert our binary failed with exactly one `repozo: ...` line on
    /// stderr mentioning `needle` (e.g. the file involved); return the line.
    #[track_caller]
    pub fn error(self, needle: &str) -> String {
        let o = self.fails();
        let lines = o.stderr_lines();
        o.check(lines.len() == 1, "expected exactly one line on stderr");
        o.check(
            lines[0].starts_with("repozo: "),
            "expected the line to start with `repozo: `",
        );
        o.check(
            lines[0].contains(needle),
            &format!("expected stderr to mention {needle:?}"),
        );
        lines[0].clone()
    }

    /// Assert a usage error: exit 1, nothing on stdout, the usage text then
    /// `repozo: MSG` on stderr.
    #[track_caller]
    pub fn usage_error(self, msg: &str) -> Self {
        let o = self.fails();
        o.check(o.stdout.is_empty(), "expected nothing on stdout");
        let err = o.stderr_str();
        o.check(
            err.contains("Usage: repozo [options]"),
            "expected the usage text on stderr",
        );
        let last = o.stderr_lines().pop().unwrap_or_default();
        o.check(
            last == format!("repozo: {msg}"),
            &format!("expected the last line to be `repozo: {msg}`"),
        );
        o
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        self.check(
            self.stderr_str().contains(needle),
            &format!("expected stderr to contain {needle:?}"),
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(self, needle: &str) -> Self {
        self.check(
            !self.stderr_str().contains(needle),
            &format!("expected stderr not to contain {needle:?}"),
        );
        self
    }
}

/// Run a prepared command to completion.
pub fn exec(mut cmd: Command) -> Output {
    let mut desc = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(desc, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    let _ = write!(desc, "{}", cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let _ = write!(desc, " {}", a.to_string_lossy());
    }
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::current_dir().unwrap());
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    Output {
        cmd: desc,
        cwd,
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Our binary with `args`, in `cwd`, at `now`.
pub fn repozo_cmd(cwd: &Path, args: &[&str], now: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).env("REPOZO_TEST_NOW", now);
    c
}

/// ZODB's repozo with `args`, in `cwd`, at `now`.
pub fn py_repozo_cmd(cwd: &Path, args: &[&str], now: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(py_script("pyrepozo.py"))
        .args(args)
        .current_dir(cwd)
        .env("REPOZO_TEST_NOW", now)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

fn zodbtool_cmd(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(py_script("zodbtool.py"))
        .args(args)
        .current_dir(cwd)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

// ---------------------------------------------------------------------------
// Fixtures: databases made by `zodbtool.py create`, cached per (seed, txns)
// under the target's test directory (the tool is deterministic, so the key
// is the seed, the number of transactions and the tool's own text).

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn fixture(seed: u64, txns: u32) -> PathBuf {
    type Cells = Mutex<HashMap<(u64, u32), Arc<OnceLock<PathBuf>>>>;
    static CELLS: OnceLock<Cells> = OnceLock::new();
    let cell = {
        let mut map = CELLS.get_or_init(Default::default).lock().unwrap();
        map.entry((seed, txns)).or_default().clone()
    };
    cell.get_or_init(|| {
        let tool = fs::read(py_script("zodbtool.py")).expect("read zodbtool.py");
        let key = fnv(
            python().as_os_str().as_encoded_bytes(),
            fnv(&tool, 0xcbf29ce484222325),
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixtures-{key:016x}"));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join(format!("seed{seed}-txns{txns}.fs"));
        if target.is_file() {
            return target;
        }
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let (s, t) = (seed.to_string(), txns.to_string());
        exec(zodbtool_cmd(
            tmp.path(),
            &["create", "Data.fs", "--seed", &s, "--txns", &t],
        ))
        .ok();
        fs::rename(tmp.path().join("Data.fs"), &target).unwrap();
        target
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Env

/// A snapshot of a directory: file name → bytes (directories and symlinks
/// are recorded by kind only).
pub type Snapshot = BTreeMap<String, Vec<u8>>;

/// Compare two snapshots, naming the entries that differ.
#[track_caller]
pub fn assert_same(a: &Snapshot, b: &Snapshot, what: &str) {
    if a == b {
        return;
    }
    let mut msg = format!("{what}: the directories differ\n");
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for n in names {
        match (a.get(n), b.get(n)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let _ = writeln!(
                    msg,
                    "  {n}: {} vs {} bytes, contents differ",
                    x.len(),
                    y.len()
                );
                if n.ends_with(".dat") {
                    let _ = writeln!(
                        msg,
                        "    left:\n{}    right:\n{}",
                        String::from_utf8_lossy(x),
                        String::from_utf8_lossy(y)
                    );
                }
            }
            (Some(_), None) => {
                let _ = writeln!(msg, "  {n}: only on the left");
            }
            (None, Some(_)) => {
                let _ = writeln!(msg, "  {n}: only on the right");
            }
            (None, None) => unreachable!(),
        }
    }
    panic!("{msg}");
}

/// Assert two byte strings are equal without printing them.
#[track_caller]
pub fn assert_bytes(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let first = a.iter().zip(b).position(|(x, y)| x != y);
        panic!(
            "{what}: {} vs {} bytes, first difference at {:?}",
            a.len(),
            b.len(),
            first.unwrap_or(a.len().min(b.len()))
        );
    }
}

/// A temporary directory with a source `Data.fs` and a repository `repo/`.
pub struct Env {
    dir: TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// An empty directory with an empty `repo/`.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("repozo-it-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("repo")).unwrap();
        Env { dir }
    }

    /// With `Data.fs` holding `txns` transactions made by ZODB.
    pub fn with_db(seed: u64, txns: u32) -> Env {
        let env = Env::new();
        env.create(seed, txns);
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn source(&self) -> PathBuf {
        self.path("Data.fs")
    }

    // -- running ------------------------------------------------------------

    /// Our binary.
    pub fn run(&self, args: &[&str], now: &str) -> Output {
        exec(repozo_cmd(self.root(), args, now))
    }

    /// ZODB's repozo.
    pub fn py_repozo(&self, args: &[&str], now: &str) -> Output {
        exec(py_repozo_cmd(self.root(), args, now))
    }

    /// `zodbtool.py ARGS`.
    pub fn zodb(&self, args: &[&str]) -> Output {
        exec(zodbtool_cmd(self.root(), args))
    }

    /// `repozo -B -r repo -f Data.fs EXTRA` at `now`; must succeed.
    #[track_caller]
    pub fn backup(&self, extra: &[&str], now: &str) -> Output {
        let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        args.extend_from_slice(extra);
        let out = self.run(&args, now).ok();
        self.check_newest_sum();
        out
    }

    /// The `.repozo-sums` entries of the repository: name -> fields.
    pub fn sums(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let text = fs::read_to_string(self.repo().join(SUMS_NAME)).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("index "))
            .map(|l| {
                let f: Vec<String> = l.split(' ').map(str::to_string).collect();
                assert_eq!(f.len(), 7, "sums line {l:?}");
                (f[0].clone(), f)
            })
            .collect()
    }

    /// The `index NAME POS XXH3` lines of `.repozo-sums`: the `.index`
    /// files recorded as built by a scan, name -> (position, hash).
    pub fn trusted_indexes(&self) -> BTreeMap<String, (u64, String)> {
        let text = fs::read_to_string(self.repo().join(SUMS_NAME)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("index "))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 3, "sums line {l:?}");
                (f[0].to_string(), (f[1].parse().unwrap(), f[2].to_string()))
            })
            .collect()
    }

    /// The sums entry of the newest data file, when there is one, must be
    /// right: its xxh3 of the uncompressed and of the stored bytes, and
    /// the range and md5 of its `.dat` line.
    #[track_caller]
    pub fn check_newest_sum(&self) {
        let mut names: Vec<String> = self
            .repo_names()
            .into_iter()
            .filter(|n| n.ends_with("fs") || n.ends_with("fsz"))
            .collect();
        names.sort();
        let Some(newest) = names.last() else { return };
        let sums = self.sums();
        let Some(f) = sums.get(newest) else { return };
        let stored = self.read(&format!("repo/{newest}"));
        let content = if newest.ends_with('z') {
            gunzip(&self.repo().join(newest))
        } else {
            stored.clone()
        };
        let x = |b: &[u8]| format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b));
        assert_eq!(f[4], x(&content), "content xxh3 of {newest}");
        assert_eq!(f[5], stored.len().to_string(), "stored size of {newest}");
        assert_eq!(f[6], x(&stored), "stored xxh3 of {newest}");
        let md5 = format!("{:x}", md5::Md5::digest(&content));
        assert_eq!(f[3], md5, "md5 of {newest}");
        let dat_has = self
            .repo_names()
            .iter()
            .filter(|n| n.ends_with(".dat"))
            .any(|d| {
                fs::read_to_string(self.repo().join(d))
                    .unwrap()
                    .lines()
                    .any(|l| l.ends_with(&format!("{newest} {} {} {md5}", f[1], f[2])))
            });
        assert!(dat_has, "no .dat line for {newest} {} {} {md5}", f[1], f[2]);
    }

    /// The same with ZODB's repozo.
    #[track_caller]
    pub fn py_backup(&self, extra: &[&str], now: &str) -> Output {
        let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        args.extend_from_slice(extra);
        self.py_repozo(&args, now).ok()
    }

    /// `repozo -R -r repo -o OUT EXTRA`; must succeed; returns OUT's bytes.
    #[track_caller]
    pub fn recover(&self, out: &str, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["-R", "-r", "repo", "-o", out];
        args.extend_from_slice(extra);
        self.run(&args, LATE).ok();
        self.read(out)
    }

    /// The same with ZODB's repozo (at a late "now").
    #[track_caller]
    pub fn py_recover(&self, out: &str, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["-R", "-r", "repo", "-o", out];
        args.extend_from_slice(extra);
        self.py_repozo(&args, LATE).ok();
        self.read(out)
    }

    // -- the database ---------------------------------------------------------

    /// Replace `Data.fs` with a (cached) database of `txns` transactions.
    pub fn create(&self, seed: u64, txns: u32) {
        for ext in ["", ".index", ".lock", ".tmp"] {
            let _ = fs::remove_file(self.path(&format!("Data.fs{ext}")));
        }
        fs::copy(fixture(seed, txns), self.source()).unwrap();
    }

    /// Commit `txns` more transactions to `Data.fs`.
    #[track_caller]
    pub fn append(&self, seed: u64, txns: u32) {
        let (s, t) = (seed.to_string(), txns.to_string());
        self.zodb(&["append", "Data.fs", "--seed", &s, "--txns", &t])
            .ok();
    }

    /// Drop some objects and pack `Data.fs`.
    #[track_caller]
    pub fn pack(&self) {
        self.zodb(&["pack", "Data.fs"]).ok();
    }

    /// Append an unfinished transaction (`c`: status byte left at `c`;
    /// `trunc`: a record cut short). Returns (committed end, bytes appended).
    #[track_caller]
    pub fn partial(&self, mode: &str) -> (u64, u64) {
        let o = self.zodb(&["partial", "Data.fs", "--mode", mode]).ok();
        let nums: Vec<u64> = o
            .stdout_str()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        (nums[0], nums[1])
    }

    /// ZODB's idea of where the committed data of `rel` ends.
    #[track_caller]
    pub fn committed_size(&self, rel: &str) -> u64 {
        let o = self.zodb(&["size", rel]).ok();
        o.stdout_str().trim().parse().unwrap()
    }

    /// Recovery with our tool equals the source's committed bytes, the
    /// output opens in ZODB with its index, and `-V` passes.
    #[track_caller]
    pub fn assert_recovers_source(&self) {
        let out = self.recover("check.fs", &[]);
        let committed = self.committed_size("Data.fs") as usize;
        assert_bytes(&out, &self.read("Data.fs")[..committed], "recovered");
        self.open_with_index("check.fs");
        self.run(&["-V", "-r", "repo"], LATE).ok();
    }

    /// `zodbtool.py open REL --require-index` must pass.
    #[track_caller]
    pub fn open_with_index(&self, rel: &str) {
        self.zodb(&["open", rel, "--require-index"]).ok();
    }

    // -- files ---------------------------------------------------------------

    pub fn read(&self, rel: &str) -> Vec<u8> {
        let p = self.path(rel);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        fs::write(self.path(rel), bytes).unwrap();
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).unwrap();
    }

    /// Copy `Data.fs` (only) to another environment.
    pub fn copy_source_to(&self, other: &Env) {
        let _ = fs::remove_file(other.path("Data.fs.index"));
        fs::copy(self.source(), other.source()).unwrap();
    }

    /// Names in `repo/`, sorted.
    pub fn repo_names(&self) -> Vec<String> {
        self.snapshot("repo").into_keys().collect()
    }

    /// Contents of `repo/`.
    pub fn repo_snapshot(&self) -> Snapshot {
        self.snapshot("repo")
    }

    /// Contents of a directory (relative to the root; "" for the root).
    pub fn snapshot(&self, rel: &str) -> Snapshot {
        snapshot(&self.path(rel))
    }

    /// Flip every bit of the byte at `offset` of `rel`.
    pub fn flip_byte(&self, rel: &str, offset: usize) {
        let mut b = self.read(rel);
        b[offset] ^= 0xff;
        self.write(rel, &b);
    }
}

/// Contents of a directory: regular files by bytes, other entries by kind.
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == LOCK_NAME || name == SUMS_NAME {
            // our repository lock file (empty; ZODB's repozo has none) and
            // our cache of fast checksums (checked on their own)
            continue;
        }
        let ft = e.file_type().unwrap();
        let bytes = if ft.is_file() {
            fs::read(e.path()).unwrap()
        } else if ft.is_dir() {
            b"<dir>".to_vec()
        } else {
            format!("<link {}>", fs::read_link(e.path()).unwrap().display()).into_bytes()
        };
        out.insert(name, bytes);
    }
    out
}

/// Two environments fed the same source: ours and ZODB's repozo each back
/// up into their own `repo/`, so the results can be compared byte for byte.
pub struct Twin {
    pub ours: Env,
    pub py: Env,
}

impl Twin {
    pub fn with_db(seed: u64, txns: u32) -> Twin {
        let ours = Env::with_db(seed, txns);
        let py = Env::new();
        ours.copy_source_to(&py);
        Twin { ours, py }
    }

    /// Make the Python side's `Data.fs` the same as ours.
    pub fn sync(&self) {
        self.ours.copy_source_to(&self.py);
    }

    /// Back up with both tools at `now` (same options).
    #[track_caller]
    pub fn backup(&self, extra: &[&str], now: &str) {
        self.sync();
        self.ours.backup(extra, now);
        self.py.py_backup(extra, now);
    }

    /// Both repositories must hold the same files with the same bytes.
    #[track_caller]
    pub fn assert_same_repos(&self) {
        assert_same(
            &self.ours.repo_snapshot(),
            &self.py.repo_snapshot(),
            "ours (left) vs ZODB's repozo (right)",
        );
    }
}

// ---------------------------------------------------------------------------
// gzip readers

/// Decompress with the system's `gunzip`.
#[track_caller]
pub fn gunzip(path: &Path) -> Vec<u8> {
    let mut c = Command::new("gunzip");
    c.arg("-c").arg(path);
    exec(c).ok().stdout
}

/// Decompress with Python's gzip module.
#[track_caller]
pub fn py_gunzip(path: &Path) -> Vec<u8> {
    let mut c = Command::new(python());
    c.args([
        "-c",
        "import gzip, sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())",
    ])
    .arg(path);
    exec(c).ok().stdout
}

// ---------------------------------------------------------------------------
// FileStorage layout, for damaging files precisely

/// A committed transaction record of a FileStorage.
#[derive(Clone, Copy, Debug)]
pub struct Txn {
    pub pos: usize,
    pub len: usize,
    pub header_len: usize,
}

fn be64(b: &[u8]) -> usize {
    u64::from_be_bytes(b[..8].try_into().unwrap()) as usize
}

fn be16(b: &[u8]) -> usize {
    u16::from_be_bytes([b[0], b[1]]) as usize
}

/// The committed transactions of a FileStorage's bytes.
pub fn transactions(data: &[u8]) -> Vec<Txn> {
    let mut out = Vec::new();
    let mut pos = 4;
    while pos + 23 <= data.len() {
        let h = &data[pos..pos + 23];
        let len = be64(&h[8..16]);
        if h[16] == b'c' || pos + len + 8 > data.len() {
            break;
        }
        let header_len = 23 + be16(&h[17..19]) + be16(&h[19..21]) + be16(&h[21..23]);
        out.push(Txn {
            pos,
            len,
            header_len,
        });
        pos += len + 8;
    }
    out
}

/// Positions of the data records of a transaction.
pub fn data_records(data: &[u8], t: Txn) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = t.pos + t.header_len;
    while pos < t.pos + t.len {
        out.push(pos);
        let plen = be64(&data[pos + 34..pos + 42]);
        pos += 42 + if plen == 0 { 8 } else { plen };
    }
    out
}

// ---------------------------------------------------------------------------
// Blob directories: `tests/py/blobtool.py` (ZODB 6.4 with a blob directory)

/// `blobtool.py ARGS` in `env`.
pub fn blobtool(env: &Env, args: &[&str]) -> Output {
    let mut c = Command::new(python());
    c.arg(py_script("blobtool.py"))
        .args(args)
        .current_dir(env.root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    exec(c)
}

/// Commit `txns` blob transactions to `Data.fs` with blobs in `blobs/`.
#[track_caller]
pub fn write_blobs(env: &Env, seed: u64, txns: u32, extra: &[&str]) {
    let (s, t) = (seed.to_string(), txns.to_string());
    let mut args = vec!["write", "Data.fs", "blobs", "--seed", &s, "--txns", &t];
    args.extend_from_slice(extra);
    blobtool(env, &args).ok();
}

/// What ZODB reads: every blob reachable from the root, with its
/// content's hash; fails when one cannot be read.
#[track_caller]
pub fn dump_blobs(env: &Env, fs: &str, dir: &str) -> String {
    blobtool(env, &["dump", fs, dir]).ok().stdout_str()
}

// ---------------------------------------------------------------------------
// fault injection

/// `scripts/faults.py _inject` (the ptrace injector) running our binary
/// in `env` at `now`, with the fault `fault` injected (`kill:SYSCALL:K`,
/// `EIO:SYSCALL:K`, ...); with `log`, every file call on `env` is logged.
pub fn inject(
    env: &Env,
    args: &[&str],
    now: &str,
    fault: Option<&str>,
    log: Option<&Path>,
) -> Output {
    let mut c = Command::new(python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/faults.py"))
        .arg("_inject")
        .arg("--scope")
        .arg(env.root());
    if let Some(f) = fault {
        c.args(["--fault", f]);
    }
    if let Some(l) = log {
        c.arg("--log").arg(l);
    }
    c.arg("--").arg(BIN).args(args);
    c.current_dir(env.root()).env("REPOZO_TEST_NOW", now);
    exec(c)
}

/// `cp -a FROM TO`, replacing TO.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

// ---------------------------------------------------------------------------
// indexes

/// Run a Python snippet (with ZODB) in the environment's directory; it
/// must succeed.
#[track_caller]
pub fn python_in(env: &Env, code: &str) -> Output {
    let mut cmd = Command::new(python());
    cmd.current_dir(env.root()).arg("-c").arg(code);
    exec(cmd).ok()
}

/// `zodbtool.py check-index DATAFS INDEX`: the index equals ZODB's scan.
pub fn index_is_right(env: &Env, datafs: &str, index: &str) -> bool {
    env.zodb(&["check-index", datafs, index]).status.success()
}

/// Write `Data.fs.index` as a stale index that passes ZODB's sanity check:
/// the positions of `old.index` for every object the last transaction did
/// not write, the right ones for the rest, valid up to the file's end.
pub const STALE_INDEX: &str = "\
from ZODB.FileStorage import FileStorage, FileIterator
from ZODB.fsIndex import fsIndex
old = fsIndex.load('old.index')['index']
fs = FileStorage('Data.fs', read_only=True)
index, pos = fs._index, fs._pos
fs.close()
last = None
for t in FileIterator('Data.fs'):
    last = set(r.oid for r in t)
stale = fsIndex()
changed = 0
for oid, p in index.items():
    if oid not in last and oid in old and old[oid] != p:
        stale[oid] = old[oid]
        changed += 1
    else:
        stale[oid] = p
assert changed > 0, 'no object changed outside the last transaction'
stale.save(pos, 'Data.fs.index')
fs = FileStorage('Data.fs', read_only=True)
assert fs._index.get(list(stale.keys())[0]) is not None
fs.close()
print(changed)
";
