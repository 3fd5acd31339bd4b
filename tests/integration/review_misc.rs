//! Regressions of issue 19, cases 5 (a backup stamped in the future), 9
//! (NUL padding after a gzip member) and 10 (a closed stderr or stdout).

use std::process::{Command, Stdio};

use crate::util::*;

/// Append `n` NUL bytes to `rel` (what tape and some copy tools add).
fn pad(env: &Env, rel: &str, n: usize) {
    let mut b = env.read(rel);
    b.resize(b.len() + n, 0);
    env.write(rel, &b);
}

/// The names of the repository's data files.
fn data_files(env: &Env) -> Vec<String> {
    env.repo_names()
        .into_iter()
        .filter(|n| n.ends_with("fs") || n.ends_with("fsz"))
        .collect()
}

// ---------------------------------------------------------------------------
// Case 9: NUL padding after the last gzip member

/// A repository written by ZODB's repozo with `-z` (one full backup, one
/// increment), every data file padded with NULs.
fn padded_zodb_repo(seed: u64) -> Env {
    let env = Env::with_db(seed, 15);
    env.py_backup(&["-z"], T1);
    env.append(seed + 1, 3);
    env.py_backup(&["-z"], T2);
    let full = format!("repo/{T1}.fsz");
    let inc = format!("repo/{T2}.deltafsz");
    assert!(
        env.exists(&full) && env.exists(&inc),
        "{:?}",
        env.repo_names()
    );
    pad(&env, &full, 10_240);
    pad(&env, &inc, 7);
    // Python's gzip module (which ZODB's repozo reads with) reads them
    let plain = py_gunzip(&env.path(&full));
    assert_eq!(plain, env.read("Data.fs")[..plain.len()]);
    env
}

/// Regression (issue 19, case 9): a ZODB `-z` repository whose files end
/// with NUL padding recovers, verifies and is extended, with and without
/// `-Q`, as ZODB's repozo recovers, verifies and extends it.
#[test]
fn nul_padded_zodb_gzip_repository_is_read_as_zodb_reads_it() {
    let env = padded_zodb_repo(1901);
    let want = env.read("Data.fs");
    assert_bytes(&env.recover("out.fs", &[]), &want, "-R");
    assert_bytes(&env.recover("w.fs", &["-w"]), &want, "-R -w");
    assert_bytes(&env.py_recover("py.fs", &[]), &want, "ZODB's -R");
    let o = env.run(&["-R", "-r", "repo", "-D", T1], LATE).ok().stdout;
    assert_bytes(&o, &want[..o.len()], "-R -D to stdout");
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.run(&["-V", "-Q", "-r", "repo"], LATE).ok();
    env.py_repozo(&["-V", "-r", "repo"], LATE).ok();

    // -B without -Q compares the padded files with the source: extended
    env.append(1910, 2);
    env.backup(&["-z"], T3);
    assert!(
        env.exists(&format!("repo/{T3}.deltafsz")),
        "{:?}",
        env.repo_names()
    );
    // -BQ: extended again
    env.append(1911, 2);
    env.backup(&["-z", "-Q"], T4);
    assert!(
        env.exists(&format!("repo/{T4}.deltafsz")),
        "{:?}",
        env.repo_names()
    );
    assert_eq!(data_files(&env).len(), 4, "{:?}", env.repo_names());
    let want = env.read("Data.fs");
    assert_bytes(&env.recover("out2.fs", &["-w"]), &want, "-R after -B");
    assert_bytes(&env.py_recover("py2.fs", &[]), &want, "ZODB's -R after -B");
    env.run(&["-V", "-r", "repo"], LATE).ok();
}

/// The same where only the last increment is padded, and the padding is
/// longer than our read-ahead window; and a file of our own (many members).
#[test]
fn nul_padding_longer_than_the_read_ahead_and_in_our_files() {
    let env = Env::with_db(1902, 15);
    env.backup(&["-z"], T1);
    env.append(1903, 3);
    env.py_backup(&["-z"], T2);
    pad(&env, &format!("repo/{T1}.fsz"), 3);
    pad(&env, &format!("repo/{T2}.deltafsz"), 9 << 20);
    let want = env.read("Data.fs");
    assert_bytes(&env.recover("out.fs", &["-w"]), &want, "-R -w");
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.append(1904, 2);
    env.backup(&["-z"], T3);
    assert!(
        env.exists(&format!("repo/{T3}.deltafsz")),
        "{:?}",
        env.repo_names()
    );
    assert_bytes(&env.recover("out2.fs", &[]), &env.read("Data.fs"), "-R");
}

/// What is not NUL padding is still damage: `-R` and `-V` fail naming the
/// file, as ZODB's repozo fails, whether the garbage follows the member
/// directly or after some NULs; NULs before the first member too.
#[test]
fn garbage_after_a_gzip_member_is_still_an_error() {
    for (i, tail) in [&b"junk"[..], b"\0\0\0\0\x01", b"\0\0\x1f\x8b"]
        .iter()
        .enumerate()
    {
        let env = padded_zodb_repo(1920 + 10 * i as u64);
        let inc = format!("repo/{T2}.deltafsz");
        let mut b = env.read(&inc);
        b.extend_from_slice(tail);
        env.write(&inc, &b);
        env.run(&["-R", "-r", "repo", "-o", "out.fs"], LATE)
            .error(&format!("{T2}.deltafsz"));
        assert!(!env.exists("out.fs"));
        env.run(&["-V", "-r", "repo"], LATE)
            .fails()
            .stderr_has(&format!("{T2}.deltafsz"));
        env.py_repozo(&["-R", "-r", "repo", "-o", "py.fs"], LATE)
            .fails();
    }
    let env = padded_zodb_repo(1950);
    let full = format!("repo/{T1}.fsz");
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&env.read(&full));
    env.write(&full, &b);
    env.run(&["-R", "-r", "repo", "-o", "out.fs"], LATE)
        .error(&format!("{T1}.fsz"));
    env.py_repozo(&["-R", "-r", "repo", "-o", "py.fs"], LATE)
        .fails();
}

// ---------------------------------------------------------------------------
// Case 10: a closed stderr (or stdout) never stops a run

/// Which of the child's output streams are a pipe whose reader is gone
/// (every write fails with EPIPE).
#[derive(Clone, Copy, PartialEq)]
enum Closed {
    Stderr,
    Stdout,
    Both,
}

/// Run our binary with `closed` a pipe nobody reads; the other stream is
/// captured. Returns (exit code, captured output).
fn run_closed(env: &Env, args: &[&str], now: &str, closed: Closed) -> (Option<i32>, Vec<u8>) {
    let mut c: Command = repozo_cmd(env.root(), args, now);
    c.stdin(Stdio::null());
    let dead = || -> Stdio {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors, each owned once below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(r);
        Stdio::from(w)
    };
    match closed {
        Closed::Stderr => {
            c.stderr(dead()).stdout(Stdio::piped());
        }
        Closed::Stdout => {
            c.stdout(dead()).stderr(Stdio::piped());
        }
        Closed::Both => {
            c.stdout(dead()).stderr(dead());
        }
    }
    let out = c.output().unwrap();
    let other = if closed == Closed::Stdout {
        &out.stderr
    } else {
        &out.stdout
    };
    let text = String::from_utf8_lossy(other);
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    (out.status.code(), other.clone())
}

/// Regression (issue 19, case 10): `-v` with stderr closed (`2>&1 | head
/// -1`) panicked at the first note (exit 101). Every mode runs to the end:
/// backups are complete and recorded, recovery complete.
#[test]
fn verbose_runs_with_a_closed_stderr_complete() {
    for z in [&[][..], &["-z"]] {
        let env = Env::with_db(1960, 15);
        let b = |extra: &[&str], now: &str| {
            let mut a = vec!["-B", "-v", "-r", "repo", "-f", "Data.fs"];
            a.extend_from_slice(z);
            a.extend_from_slice(extra);
            let (code, _) = run_closed(&env, &a, now, Closed::Stderr);
            assert_eq!(code, Some(0), "{a:?}");
            env.check_newest_sum();
        };
        b(&[], T1);
        env.append(1961, 2);
        b(&[], T2);
        env.append(1962, 2);
        b(&["-Q"], T3);
        let want = env.read("Data.fs");
        let (code, _) = run_closed(
            &env,
            &["-R", "-v", "-r", "repo", "-o", "out.fs"],
            LATE,
            Closed::Stderr,
        );
        assert_eq!(code, Some(0));
        assert_bytes(&env.read("out.fs"), &want, "-R -v");
        assert!(env.exists("out.fs.index"));
        // onto the existing standby, after another increment
        env.append(1963, 2);
        b(&[], T4);
        let want = env.read("Data.fs");
        let (code, _) = run_closed(
            &env,
            &["-R", "-v", "-w", "-r", "repo", "-o", "out.fs"],
            LATE,
            Closed::Stderr,
        );
        assert_eq!(code, Some(0));
        assert_bytes(&env.read("out.fs"), &want, "-R -v -w onto a standby");
        // to stdout, stderr closed
        let (code, out) = run_closed(&env, &["-R", "-v", "-r", "repo"], LATE, Closed::Stderr);
        assert_eq!(code, Some(0));
        assert_bytes(&out, &want, "-R -v to stdout");
        for v in [
            &["-V", "-v", "-r", "repo"][..],
            &["-V", "-v", "-Q", "-r", "repo"],
        ] {
            let (code, _) = run_closed(&env, v, LATE, Closed::Stderr);
            assert_eq!(code, Some(0), "{v:?}");
        }
        let (code, out) = run_closed(&env, &["-L", "-v", "-r", "repo"], LATE, Closed::Stderr);
        assert_eq!(code, Some(0));
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(T4), "{out}");
        // a full backup with -k deletes the old chain to the end
        env.append(1964, 2);
        b(&["-F", "-k"], T5);
        assert_eq!(data_files(&env).len(), 1, "{:?}", env.repo_names());
        assert_bytes(&env.recover("out2.fs", &["-w"]), &env.read("Data.fs"), "-R");
        env.run(&["-V", "-r", "repo"], LATE).ok();
    }
}

/// A failing run with stderr closed exits 1 (its message is lost), never
/// 101.
#[test]
fn failing_runs_with_a_closed_stderr_exit_1() {
    let env = Env::with_db(1970, 10);
    env.backup(&[], T1);
    env.flip_byte(&format!("repo/{T1}.fs"), 2000);
    for args in [
        &["-V", "-v", "-r", "repo"][..],
        &["-R", "-v", "-w", "-r", "repo", "-o", "out.fs"],
        &["-B", "-v", "-r", "nowhere", "-f", "Data.fs"],
        &["-X"],
    ] {
        let (code, _) = run_closed(&env, args, LATE, Closed::Stderr);
        assert_eq!(code, Some(1), "{args:?}");
    }
}

/// A closed stdout: `-L`, `--help` and `--version` fail with exit 1 and
/// one line on stderr, never a panic; `-R` to stdout fails as before.
#[test]
fn a_closed_stdout_is_an_error_not_a_panic() {
    let env = Env::with_db(1980, 10);
    env.backup(&[], T1);
    for args in [
        &["-L", "-r", "repo"][..],
        &["-L", "--json", "-r", "repo"],
        &["--help"],
        &["--version"],
        &["-R", "-r", "repo"],
    ] {
        let (code, err) = run_closed(&env, args, LATE, Closed::Stdout);
        let err = String::from_utf8_lossy(&err);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("repozo: "), "{args:?}: {err}");
        let (code, _) = run_closed(&env, args, LATE, Closed::Both);
        assert_eq!(code, Some(1), "{args:?}, both closed");
    }
    let (code, _) = run_closed(&env, &["-L", "-v", "-r", "repo"], LATE, Closed::Both);
    assert_eq!(code, Some(1));
}

// ---------------------------------------------------------------------------
// Case 5: a backup stamped in the future

const YEAR_AHEAD: &str = "2027-11-20-01-30-00";

/// Regression (issue 19, case 5): one backup made with the clock a year
/// ahead. With the clock right again, `-B` refuses (with and without `-Q`,
/// `-F`, `-k`, `-z`) and writes nothing, instead of naming every later
/// backup after the future one; `-V --max-age` fails, saying the stamp is
/// in the future; `-D` with a real date finds the real states; recovery
/// without `-D` still recovers the newest state.
#[test]
fn a_backup_stamped_a_year_ahead_stops_backups_and_fires_monitoring() {
    let env = Env::with_db(1990, 12);
    env.backup(&[], T1);
    let at_t1 = env.read("Data.fs");
    env.append(1991, 2);
    env.backup(&[], YEAR_AHEAD);
    assert!(env.exists(&format!("repo/{YEAR_AHEAD}.deltafs")));
    let at_future = env.read("Data.fs");
    env.append(1992, 2);
    let before = env.repo_snapshot();
    let sums = env.read("repo/.repozo-sums");
    for extra in [
        &[][..],
        &["-Q"],
        &["-F"],
        &["-F", "-k"],
        &["-z", "-Q"],
        &["--keep=1"],
    ] {
        let mut a = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        a.extend_from_slice(extra);
        let e = env.run(&a, T2).error(YEAR_AHEAD);
        assert!(e.contains("refusing to back up"), "{e}");
        assert!(
            e.contains("in the future") || e.contains("after the clock"),
            "{e}"
        );
        assert_same(&env.repo_snapshot(), &before, "nothing written");
        assert_eq!(env.read("repo/.repozo-sums"), sums);
    }
    // monitoring fires, for as long as the stamp lies ahead
    for now in [T2, "2027-06-01-00-00-00", "2027-11-20-00-29-59"] {
        let e = env
            .run(&["-V", "-r", "repo", "--max-age=26h"], now)
            .error(YEAR_AHEAD);
        assert!(e.contains("after the clock"), "{e}");
    }
    // plain -V checks the files, which are fine
    env.run(&["-V", "-r", "repo"], T2).ok();
    // -D with a real date: the real states
    let r = env.run(&["-R", "-r", "repo", "-D", T2], LATE).ok().stdout;
    assert_bytes(&r, &at_t1, "-D T2");
    assert_bytes(&env.recover("out.fs", &[]), &at_future, "newest");
    // within the hour after the future stamp, -B names the next second
    let late = "2027-11-20-00-30-00";
    env.backup(&[], late);
    assert!(
        env.exists("repo/2027-11-20-01-30-01.deltafs"),
        "{:?}",
        env.repo_names()
    );
    assert_bytes(&env.recover("out2.fs", &[]), &env.read("Data.fs"), "-R");
}

/// The admin's way out when the clock was wrong then: move the
/// future-stamped files out of the repository. Backups go on from the
/// chain before them; the files moved aside stay a repository of their own.
#[test]
fn moving_future_stamped_backups_aside_lets_backups_go_on() {
    let env = Env::with_db(2000, 12);
    env.backup(&["-z"], T1);
    env.append(2001, 2);
    env.backup(&["-F", "-z"], YEAR_AHEAD);
    let at_future = env.read("Data.fs");
    env.append(2002, 2);
    env.run(&["-B", "-z", "-r", "repo", "-f", "Data.fs"], T2)
        .error("refusing");
    std::fs::create_dir(env.path("aside")).unwrap();
    for ext in ["fsz", "dat", "index"] {
        let n = format!("{YEAR_AHEAD}.{ext}");
        std::fs::rename(env.repo().join(&n), env.path("aside").join(&n)).unwrap();
    }
    env.backup(&["-z"], T2);
    assert!(
        env.exists(&format!("repo/{T2}.deltafsz")),
        "{:?}",
        env.repo_names()
    );
    env.run(&["-V", "-r", "repo", "--max-age=26h"], T3).ok();
    assert_bytes(&env.recover("out.fs", &["-w"]), &env.read("Data.fs"), "-R");
    let o = env.run(&["-R", "-w", "-r", "aside"], LATE).ok().stdout;
    assert_bytes(&o, &at_future, "the files moved aside");
}

/// The clock is wrong now (set back a year after a correct backup): `-B`
/// refuses until it is fixed, `-V --max-age` fails; a clock behind by less
/// than the tolerance (an hour) only bumps the stamp.
#[test]
fn a_clock_set_back_stops_backups_beyond_an_hour() {
    let env = Env::with_db(2010, 12);
    env.backup(&[], T4); // 2026-11-21-00-00-00
    env.append(2011, 2);
    let e = env
        .run(
            &["-B", "-r", "repo", "-f", "Data.fs"],
            "2025-11-21-00-00-00",
        )
        .error(T4);
    assert!(e.contains("refusing to back up"), "{e}");
    env.run(
        &["-V", "-r", "repo", "--max-age=26h"],
        "2025-11-21-00-00-00",
    )
    .error(T4);
    // just over the hour: refused; exactly an hour: named after it
    env.run(
        &["-B", "-r", "repo", "-f", "Data.fs"],
        "2026-11-20-22-59-59",
    )
    .error("refusing");
    env.run(
        &["-V", "-r", "repo", "--max-age=26h"],
        "2026-11-20-22-59-59",
    )
    .error(T4);
    env.run(
        &["-V", "-r", "repo", "--max-age=26h"],
        "2026-11-20-23-00-00",
    )
    .ok();
    env.backup(&[], "2026-11-20-23-00-00");
    assert!(
        env.exists("repo/2026-11-21-00-00-01.deltafs"),
        "{:?}",
        env.repo_names()
    );
    // the clock fixed: named by the clock again
    env.append(2012, 2);
    env.backup(&["-Q"], T5);
    assert!(env.exists(&format!("repo/{T5}.deltafs")));
    assert_bytes(&env.recover("out.fs", &["-w"]), &env.read("Data.fs"), "-R");
}
