//! Every path the system accepts for `-r`, `-f` and `-o` (any bytes but
//! NUL, `/` as the separator) works in every mode (issue 13): repository
//! paths that are not UTF-8 or hold whitespace, newlines or control
//! characters, read back by both tools.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::util::*;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Our binary with arguments that need not be UTF-8.
fn ours(cwd: &Path, args: &[&OsStr], now: &str) -> Output {
    let mut c = repozo_cmd(cwd, &[], now);
    c.args(args);
    exec(c)
}

/// ZODB's repozo with arguments that need not be UTF-8.
fn theirs(cwd: &Path, args: &[&OsStr], now: &str) -> Output {
    let mut c = py_repozo_cmd(cwd, &[], now);
    c.args(args);
    exec(c)
}

/// Arguments from a mix of text and raw paths.
macro_rules! a {
    ($($x:expr),* $(,)?) => { &[$(AsRef::<OsStr>::as_ref(&$x)),*] };
}

/// `-L --json` output must be JSON (Python's parser); returns, per chain,
/// (ok, number of files).
#[track_caller]
fn parse_json(out: &Output) -> Vec<(bool, usize)> {
    let mut c = Command::new(python());
    c.args([
        "-c",
        "import json, sys\n\
         d = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n\
         for c in d['chains']: print(c['ok'], len(c['files']))",
    ]);
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&out.stdout).unwrap();
    }
    let r = child.wait_with_output().unwrap();
    assert!(
        r.status.success(),
        "-L --json is not JSON: {}\n{}",
        String::from_utf8_lossy(&r.stderr),
        out.describe()
    );
    String::from_utf8(r.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (ok, n) = l.split_once(' ').unwrap();
            (ok == "True", n.parse().unwrap())
        })
        .collect()
}

/// The `.dat` of the chain headed at `stamp`.
fn dat(repo: &Path, stamp: &str) -> Vec<u8> {
    fs::read(repo.join(format!("{stamp}.dat"))).unwrap()
}

/// Two states of one database: `Data.fs` after 20 transactions and after
/// 3 more.
fn states() -> &'static (Vec<u8>, Vec<u8>) {
    static S: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let env = Env::with_db(1301, 20);
        let a = env.read("Data.fs");
        env.append(1302, 3);
        (a, env.read("Data.fs"))
    })
}

/// A repository path from the issue: full backup, increment, -V, -L,
/// -L --json, -R (full and incremental), all by us; then ZODB's repozo's
/// -V, -R and -R -w on what we wrote.
#[track_caller]
fn round_trip(repo_name: &[u8]) {
    let (s1, s2) = states();
    let env = Env::new();
    let root = env.root();
    let repo = root.join(os(repo_name));
    fs::create_dir(&repo).unwrap();
    let r = repo.as_os_str();
    fs::write(root.join("Data.fs"), s1).unwrap();
    ours(root, a!["-B", "-r", r, "-f", "Data.fs"], T1).ok();
    fs::write(root.join("Data.fs"), s2).unwrap();
    ours(root, a!["-B", "-Q", "-r", r, "-f", "Data.fs"], T2).ok();
    assert_eq!(
        String::from_utf8_lossy(&dat(&repo, T1)).lines().count(),
        2,
        "{:?}",
        String::from_utf8_lossy(&dat(&repo, T1))
    );
    ours(root, a!["-V", "-r", r], LATE).ok();
    let l = ours(root, a!["-L", "-r", r], LATE).ok();
    assert!(!l.stdout_str().contains("DAMAGED"), "{}", l.describe());
    let j = ours(root, a!["-L", "--json", "-r", r], LATE).ok();
    assert_eq!(parse_json(&j), [(true, 2)]);
    ours(root, a!["-R", "-r", r, "-D", T1, "-o", "out.fs"], LATE).ok();
    assert_bytes(&env.read("out.fs"), s1, "recovered as of T1");
    ours(root, a!["-R", "-r", r, "-o", "out.fs", "-v"], LATE)
        .ok()
        .stderr_lacks("recovering in full");
    assert_bytes(&env.read("out.fs"), s2, "recovered incrementally");
    // ZODB's repozo reads what we wrote
    theirs(root, a!["-V", "-r", r], LATE).ok();
    theirs(root, a!["-R", "-r", r, "-o", "py.fs"], LATE).ok();
    assert_bytes(&env.read("py.fs"), s2, "recovered by ZODB's repozo");
    theirs(root, a!["-R", "-w", "-r", r, "-o", "pyw.fs"], LATE).ok();
    assert_bytes(&env.read("pyw.fs"), s2, "recovered by ZODB's repozo -w");
}

/// Issue 13, first case: a repository path that is not UTF-8 gave a backup
/// that `-V` and `-R` refused (".dat line 1: not valid UTF-8") and that
/// `-L` listed as DAMAGED.
#[test]
fn repository_path_not_utf8() {
    round_trip(b"bad\xffname");
}

/// Issue 13, second case: a newline in the repository path split the
/// `.dat` line ("expected 4 fields").
#[test]
fn repository_path_with_a_newline() {
    round_trip(b"nl\nname");
}

/// Issue 13, the rest of the whitespace: ZODB's repozo cannot read its own
/// lines back for these (`line.split()`, and text mode ends a line at a
/// carriage return); we write the name alone, which both tools read.
#[test]
fn repository_path_with_other_whitespace_and_controls() {
    for name in [
        &b"my backups"[..],
        b"tab\there",
        b"cr\rhere",
        b"trailing ",
        b" leading",
        b"esc\x1b[31m",
        b"nbsp\xc2\xa0here",
        b"all \t\n\r\x0b\x0c\xff\xfe\x80 of\\them\"",
    ] {
        round_trip(name);
    }
}

/// A `.dat` line we write for such a path is the base name alone; a plain
/// path (also UTF-8 that is not ASCII) is written as given, as ZODB's
/// repozo writes it.
#[test]
fn dat_lines_for_unsafe_paths_hold_the_name_alone() {
    let env = Env::with_db(1303, 5);
    for (name, as_given) in [
        (&b"plain"[..], true),
        ("sauvegardes-été".as_bytes(), true),
        (b"bad\xffname", false),
        (b"nl\nname", false),
        (b"a b", false),
    ] {
        let repo = env.root().join(os(name));
        fs::create_dir(&repo).unwrap();
        ours(env.root(), a!["-B", "-r", os(name), "-f", "Data.fs"], T1).ok();
        let d = dat(&repo, T1);
        let field = d.split(|&b| b == b' ').next().unwrap().to_vec();
        let want = if as_given {
            [name, b"/", T1.as_bytes(), b".fs"].concat()
        } else {
            [T1.as_bytes(), b".fs"].concat()
        };
        assert_eq!(field, want, "{:?}", String::from_utf8_lossy(name));
    }
    // the same spelling as ZODB's repozo for a plain path
    let py = Env::new();
    env.copy_source_to(&py);
    fs::create_dir(py.path("plain")).unwrap();
    py.py_repozo(&["-B", "-r", "plain", "-f", "Data.fs"], T1)
        .ok();
    assert_eq!(
        dat(&env.path("plain"), T1),
        dat(&py.path("plain"), T1),
        "ours vs ZODB's repozo"
    );
}

/// What ZODB's repozo wrote for such paths we read: a newline in its
/// repository path splits its line (we read it back whole), spaces stay in
/// the line; we extend its chain, verify and recover it.
#[test]
fn chains_zodb_wrote_for_such_paths_are_read() {
    let (s1, s2) = states();
    for name in [
        &b"nl\nname"[..],
        b"two\n\nnewlines x",
        b"my backups",
        b"cr\rname",
    ] {
        let env = Env::new();
        let root = env.root();
        let repo = root.join(os(name));
        fs::create_dir(&repo).unwrap();
        let r = repo.as_os_str();
        fs::write(root.join("Data.fs"), s1).unwrap();
        theirs(root, a!["-B", "-r", r, "-f", "Data.fs"], T1).ok();
        let theirs_dat = dat(&repo, T1);
        ours(root, a!["-V", "-r", r], LATE).ok();
        fs::write(root.join("Data.fs"), s2).unwrap();
        ours(root, a!["-B", "-r", r, "-f", "Data.fs", "-v"], T2)
            .ok()
            .stderr_has("incremental");
        // their line is kept as it was
        assert!(dat(&repo, T1).starts_with(&theirs_dat));
        ours(root, a!["-V", "-r", r], LATE).ok();
        let j = ours(root, a!["-L", "--json", "-r", r], LATE).ok();
        assert_eq!(parse_json(&j), [(true, 2)]);
        ours(root, a!["-R", "-r", r, "-o", "out.fs", "-D", T1], LATE).ok();
        assert_bytes(&env.read("out.fs"), s1, "as of T1");
        ours(root, a!["-R", "-w", "-r", r, "-o", "out.fs"], LATE).ok();
        assert_bytes(&env.read("out.fs"), s2, "newest");
    }
}

/// ZODB's repozo fails its full backup into a repository path that is not
/// UTF-8 after writing the data file, leaving an empty `.dat`: we start a
/// new chain, and ZODB's repozo can still recover ours.
#[test]
fn after_zodbs_failed_backup_into_a_path_not_utf8() {
    let (s1, s2) = states();
    let env = Env::new();
    let root = env.root();
    let name = b"bad\xffname";
    fs::create_dir(root.join(os(name))).unwrap();
    fs::write(root.join("Data.fs"), s1).unwrap();
    theirs(root, a!["-B", "-r", os(name), "-f", "Data.fs"], T1)
        .fails()
        .stderr_has("UnicodeEncodeError");
    fs::write(root.join("Data.fs"), s2).unwrap();
    ours(root, a!["-B", "-r", os(name), "-f", "Data.fs"], T2).ok();
    ours(root, a!["-V", "-r", os(name)], LATE).ok();
    ours(root, a!["-R", "-r", os(name), "-o", "out.fs"], LATE).ok();
    assert_bytes(&env.read("out.fs"), s2, "ours");
    theirs(root, a!["-R", "-w", "-r", os(name), "-o", "py.fs"], LATE).ok();
    assert_bytes(&env.read("py.fs"), s2, "theirs");
}

/// Errors and `-v` notes naming such paths stay one line each: a newline
/// is shown as `\n`, bytes that are not UTF-8 as U+FFFD.
#[test]
fn messages_about_such_paths_are_one_line() {
    let (s1, s2) = states();
    let env = Env::new();
    let root = env.root();
    let name = b"nl\nna\xffme";
    let repo = root.join(os(name));
    fs::create_dir(&repo).unwrap();
    fs::write(root.join("Data.fs"), s1).unwrap();
    ours(root, a!["-B", "-r", os(name), "-f", "Data.fs"], T1).ok();
    fs::write(root.join("Data.fs"), s2).unwrap();
    let v = ours(root, a!["-B", "-v", "-r", os(name), "-f", "Data.fs"], T2).ok();
    let shown = "nl\\nna\u{fffd}me/";
    assert!(v.stderr_str().contains(shown), "{}", v.describe());
    for l in v.stderr_lines() {
        assert!(
            !l.starts_with("na"),
            "a note split in two\n{}",
            v.describe()
        );
    }
    fs::remove_file(repo.join(format!("{T2}.deltafs"))).unwrap();
    ours(root, a!["-R", "-r", os(name), "-o", "out.fs"], LATE).error(shown);
    ours(root, a!["-V", "-r", os(name)], LATE).error(shown);
    let l = ours(root, a!["-L", "-r", os(name)], LATE).ok();
    assert!(l.stdout_str().contains("DAMAGED"), "{}", l.describe());
    let j = ours(root, a!["-L", "--json", "-r", os(name)], LATE).ok();
    assert_eq!(parse_json(&j), [(false, 2)]);
}

/// A file named like a set-aside backup with a character across byte 19
/// made `-k` panic (a string sliced inside a character).
#[test]
fn kill_old_with_a_non_ascii_name_in_the_repository() {
    let env = Env::with_db(1304, 5);
    env.backup(&[], T1);
    env.write("repo/2026-11-20-01-00-0\u{e9}.orphaned", b"x");
    env.write(
        "repo/\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}.orphaned",
        b"x",
    );
    fs::write(env.repo().join(os(b".repozo-tmp-\xff")), b"x").unwrap();
    env.backup(&["-F", "-k"], T2);
    env.run(
        &["-B", "-F", "--keep", "1", "-r", "repo", "-f", "Data.fs"],
        T3,
    )
    .ok();
    assert!(env.exists("repo/2026-11-20-01-00-0\u{e9}.orphaned"));
}

// ---------------------------------------------------------------------------
// The property test

/// A path component from arbitrary bytes (not NUL or `/`, not `.` or
/// `..`), the interesting ones often.
fn component() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(vec![
        b'\n', b'\t', b' ', b'\r', 0x0b, 0x0c, 0x1b, 0x1c, 0x7f, 0x80, 0x85, 0xa0, 0xc2, 0xc3,
        0xe2, 0xff, 0xfe, b'\\', b'"', b'\'', b'-', b'.', b'$', b'*', b'~', b'%',
    ]);
    let byte = prop_oneof![
        3 => special,
        2 => (1u8..=255).prop_filter("no /", |b| *b != b'/'),
        2 => prop::sample::select(b"abcXYZ019_".to_vec()),
    ];
    prop::collection::vec(byte, 1..16).prop_filter("not . or ..", |v| v != b"." && v != b"..")
}

/// One case: repository, source and output named by `r`, `s`, `o`
/// (relative, or absolute when `absolute`), `gzip` or not. Every run must
/// succeed (nothing is refused) and every recovery give the source's bytes.
fn case(r: &[u8], s: &[u8], o: &[u8], absolute: bool, gzip: bool) -> Result<(), TestCaseError> {
    let (s1, s2) = states();
    let env = Env::new();
    let root = env.root();
    for d in ["r", "s", "o"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    let path = |dir: &str, name: &[u8]| -> OsString {
        let rel = Path::new(dir).join(os(name));
        let p: PathBuf = if absolute { root.join(rel) } else { rel };
        p.into_os_string()
    };
    let (repo, src, out) = (path("r", r), path("s", s), path("o", o));
    fs::create_dir(root.join(&repo)).unwrap();
    let z: &str = if gzip { "-z" } else { "-Q" };
    let at = |p: &OsStr| root.join(p);

    fs::write(at(&src), s1).unwrap();
    ours(root, a!["-B", z, "-r", repo, "-f", src], T1).ok();
    fs::write(at(&src), s2).unwrap();
    ours(root, a!["-B", "-v", z, "-r", repo, "-f", src], T2)
        .ok()
        .stderr_has("incremental");
    ours(root, a!["-V", "-r", repo], LATE).ok();
    let j = ours(root, a!["-L", "--json", "-r", repo], LATE).ok();
    prop_assert_eq!(parse_json(&j), [(true, 2)]);
    ours(root, a!["-L", "-v", "-r", repo], LATE).ok();
    // full recovery of the first state, then incremental to the second
    ours(root, a!["-R", "-r", repo, "-D", T1, "-o", out], LATE).ok();
    prop_assert!(fs::read(at(&out)).unwrap() == *s1, "as of T1");
    let mut idx = out.clone();
    idx.push(".index");
    prop_assert!(at(&idx).is_file());
    ours(root, a!["-R", "-v", "-Q", "-r", repo, "-o", out], LATE)
        .ok()
        .stderr_lacks("recovering in full");
    prop_assert!(fs::read(at(&out)).unwrap() == *s2, "incremental recovery");
    ours(root, a!["-R", "-w", "-F", "-r", repo, "-o", out], LATE).ok();
    prop_assert!(fs::read(at(&out)).unwrap() == *s2, "full recovery -w");
    // ZODB's repozo reads our .dat for any of these paths
    theirs(root, a!["-V", "-r", repo], LATE).ok();
    // a new chain, dropping the old one (-k), then --keep 1
    ours(root, a!["-B", "-F", "-k", "-r", repo, "-f", src], T3).ok();
    ours(
        root,
        a!["-B", "-F", "--keep", "1", "-r", repo, "-f", src],
        T4,
    )
    .ok();
    let j = ours(root, a!["-L", "--json", "-r", repo], LATE).ok();
    prop_assert_eq!(parse_json(&j), [(true, 1)]);
    let o = ours(root, a!["-R", "-r", repo], LATE).ok();
    prop_assert!(o.stdout == *s2, "recovery to stdout");
    // the source was only read
    prop_assert!(fs::read(at(&src)).unwrap() == *s2);
    Ok(())
}

/// Issue 13: repository, source and output paths from arbitrary bytes
/// (`REPOZO_PATHS_CASES` cases, default 24).
#[test]
fn any_path_works_in_every_mode() {
    states();
    let cases = std::env::var("REPOZO_PATHS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let strategy = (
        component(),
        component(),
        component(),
        any::<bool>(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(r, s, o, absolute, gzip)| {
            case(&r, &s, &o, absolute, gzip)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
