//! `-R`: rebuilding `Data.fs` (and its index) from a chain, as of a date,
//! to a file or to stdout, with and without verification.

use std::process::{Command, Stdio};

use crate::util::*;

/// A repository with two chains and the source's bytes at each backup:
///
/// ```text
/// T1 full  T2 incr  T3 incr (-Q)  |  T4 full (-F)  T5 incr
/// ```
struct History {
    env: Env,
    states: Vec<(&'static str, Vec<u8>)>,
}

fn two_chains(gzip: bool) -> History {
    let env = Env::with_db(30, 20);
    let z: &[&str] = if gzip { &["-z"] } else { &[] };
    let mut states = Vec::new();
    let steps: [(&str, &[&str]); 5] = [
        (T1, &[]),
        (T2, &[]),
        (T3, &["-Q"]),
        (T4, &["-F"]),
        (T5, &[]),
    ];
    for (i, (now, extra)) in steps.into_iter().enumerate() {
        if i > 0 {
            env.append(31 + i as u64, 3);
        }
        let mut args = extra.to_vec();
        args.extend_from_slice(z);
        env.backup(&args, now);
        states.push((now, env.read("Data.fs")));
    }
    let (f, d) = if gzip {
        ("fsz", "deltafsz")
    } else {
        ("fs", "deltafs")
    };
    let want: Vec<String> = [
        format!("{T1}.{f}"),
        format!("{T2}.{d}"),
        format!("{T3}.{d}"),
        format!("{T4}.{f}"),
        format!("{T5}.{d}"),
    ]
    .to_vec();
    let names = env.repo_names();
    for w in &want {
        assert!(names.contains(w), "{w} missing from {names:?}");
    }
    History { env, states }
}

impl History {
    fn state(&self, stamp: &str) -> &[u8] {
        &self.states.iter().find(|(s, _)| *s == stamp).unwrap().1
    }
}

/// The newest state: the source's bytes, its index beside it (the last
/// backup's `.index`, which ZODB then uses), nothing else left behind.
#[test]
fn recovers_the_newest_state_with_its_index() {
    for gzip in [false, true] {
        let h = two_chains(gzip);
        let env = &h.env;
        std::fs::create_dir(env.path("restore")).unwrap();
        let out = env.recover("restore/Data.fs", &[]);
        assert_bytes(&out, h.state(T5), "recovered");
        assert_eq!(
            env.read("restore/Data.fs.index"),
            env.read(&format!("repo/{T5}.index"))
        );
        assert_eq!(
            env.snapshot("restore").into_keys().collect::<Vec<_>>(),
            ["Data.fs", "Data.fs.index"]
        );
        env.open_with_index("restore/Data.fs");
        // and with -w
        let out = env.recover("restore/Data.fs", &["-w"]);
        assert_bytes(&out, h.state(T5), "recovered with -w");
        assert_eq!(env.snapshot("restore").len(), 2);
    }
}

/// The committed prefix of a source with an unfinished transaction.
#[test]
fn recovers_the_committed_prefix() {
    let env = Env::with_db(31, 20);
    env.append(32, 2);
    let (end, _) = env.partial("trunc");
    env.backup(&[], T1);
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs")[..end as usize], "recovered");
    env.open_with_index("out.fs");
}

/// -D picks the newest full backup at or before the date and its
/// increments up to the date; partial dates mean the missing fields are
/// zero. ZODB's repozo recovers the same bytes for full-length dates.
#[test]
fn date_selects_chain_and_increments() {
    let h = two_chains(false);
    let env = &h.env;
    let cases: &[(&str, &str)] = &[
        (T1, T1),
        ("2026-11-20-01", T1),
        ("2026-11-20-01-59-59", T1),
        ("2026-11-20-02", T2),
        (T2, T2),
        ("2026-11-20-02-30-14", T2),
        (T3, T3),
        ("2026-11-20-23", T3),
        ("2026-11-20-23-59-59", T3),
        ("2026-11-21", T4),
        ("2026-11-21-06-07-07", T4),
        (T5, T5),
        ("2026-11-22", T5),
        ("2099-12-31-23-59-59", T5),
    ];
    for (date, stamp) in cases {
        let out = env.recover("out.fs", &["-D", date]);
        assert_bytes(&out, h.state(stamp), &format!("-D {date}"));
        assert_eq!(
            env.read("out.fs.index"),
            env.read(&format!("repo/{stamp}.index")),
            "-D {date}"
        );
        // to stdout as well
        let o = env.run(&["-R", "-r", "repo", "-D", date], LATE).ok();
        assert_bytes(&o.stdout, h.state(stamp), &format!("stdout, -D {date}"));
        if date.len() == 19 {
            let py = env.py_recover("py.fs", &["-D", date]);
            assert_bytes(&py, h.state(stamp), &format!("ZODB's repozo, -D {date}"));
        }
    }
    env.open_with_index("out.fs");
    // (ZODB's repozo compares a partial date as a string, so for it
    // "2026-11-20-01" comes before the backup stamped 2026-11-20-01-00-00)
    env.py_repozo(
        &["-R", "-r", "repo", "-D", "2026-11-20-01", "-o", "py.fs"],
        LATE,
    )
    .fails()
    .stderr_has("No files in repository before 2026-11-20-01");

    // before the first backup
    for date in ["2026-11-20", "2026-11-20-00-59-59", "1999-01-01"] {
        let line = env
            .run(&["-R", "-r", "repo", "-D", date, "-o", "none.fs"], LATE)
            .error(&format!("No files in repository before {date}"));
        assert!(line.contains(date));
        assert!(!env.exists("none.fs") && !env.exists("none.fs.part"));
    }
}

#[test]
fn malformed_date_is_an_error() {
    let env = Env::with_db(33, 20);
    env.backup(&[], T1);
    for date in [
        "yesterday",
        "2026-13-01",
        "2026-11-31",
        "2026-11-20-24",
        "2026-11-20-1",
        "2026-11",
        "",
        "2026-11-20-01-02-03-04",
    ] {
        let line = env
            .run(&["-R", "-r", "repo", "-D", date, "-o", "out.fs"], LATE)
            .error("date");
        assert!(line.contains(&format!("{date:?}")), "{line}");
        assert!(!env.exists("out.fs") && !env.exists("out.fs.part"));
    }
}

#[test]
fn empty_repository() {
    let env = Env::new();
    env.write("repo/unrelated.txt", b"x");
    for (extra, msg) in [
        (&[][..], "No files in repository".to_string()),
        (&["-D", T1], format!("No files in repository before {T1}")),
    ] {
        for out in [&["-o", "out.fs"][..], &[]] {
            let mut args = vec!["-R", "-r", "repo"];
            args.extend_from_slice(extra);
            args.extend_from_slice(out);
            let o = env.run(&args, LATE);
            assert!(o.stdout.is_empty(), "{}", o.describe());
            let line = o.error(&msg);
            assert_eq!(line, format!("repozo: {msg}"));
            let py = env.py_repozo(&args, LATE).fails();
            assert_eq!(
                py.stderr_lines(),
                std::slice::from_ref(&msg),
                "{}",
                py.describe()
            );
            assert!(!env.exists("out.fs"));
        }
    }
    env.run(&["-V", "-r", "repo"], LATE)
        .error("No files in repository");
}

/// Without -o the file goes to stdout, no index is written anywhere, and
/// -v notes go to stderr only.
#[test]
fn recover_to_stdout() {
    let env = Env::with_db(34, 20);
    env.backup(&[], T1);
    env.append(35, 3);
    env.backup(&["-z"], T2);
    let before = env.snapshot("");
    for extra in [&[][..], &["-v"], &["-w"], &["-v", "-w"]] {
        let mut args = vec!["-R", "-r", "repo"];
        args.extend_from_slice(extra);
        let o = env.run(&args, LATE).ok();
        assert_bytes(&o.stdout, &env.read("Data.fs"), "stdout");
        if extra.contains(&"-v") {
            o.stderr_has("stdout");
        } else {
            assert!(o.stderr.is_empty(), "{}", o.describe());
        }
        assert_same(&env.snapshot(""), &before, "directory");
    }
    // a stdout that cannot be written to: an error, not a panic
    let full = std::path::Path::new("/dev/full");
    if full.exists() {
        let mut c = repozo_cmd(env.root(), &["-R", "-r", "repo"], LATE);
        c.stdout(std::fs::OpenOptions::new().write(true).open(full).unwrap());
        let o = exec(c);
        o.error("<stdout>");
    }
}

/// The reader of stdout goes away after 10 bytes (`| head -c 10`): a clean
/// error, not a panic or a signal.
#[test]
fn stdout_closed_early_is_not_a_panic() {
    let env = Env::with_db(36, 30);
    env.backup(&[], T1);
    assert!(env.read("Data.fs").len() > 1 << 18, "bigger than a pipe");
    for extra in [&[][..], &["-w"]] {
        let mut args = vec!["-R", "-r", "repo"];
        args.extend_from_slice(extra);
        let mut child = repozo_cmd(env.root(), &args, LATE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let head = Command::new("head")
            .args(["-c", "10"])
            .stdin(child.stdout.take().unwrap())
            .output()
            .unwrap();
        assert_eq!(head.stdout, &env.read("Data.fs")[..10]);
        let out = child.wait_with_output().unwrap();
        let o = Output {
            cmd: format!("repozo {} | head -c 10", args.join(" ")),
            cwd: env.root().to_path_buf(),
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        };
        o.error("output closed");
    }
}

/// -w on a damaged increment: an error naming it; an existing output and
/// its index are left as they were, and no `.part` file remains.
#[test]
fn with_verify_refuses_a_damaged_file() {
    for gzip in [false, true] {
        let env = Env::with_db(37, 20);
        let z: &[&str] = if gzip { &["-z"] } else { &[] };
        env.backup(z, T1);
        env.append(38, 4);
        env.backup(z, T2);
        env.append(39, 4);
        env.backup(z, T3);
        let good = env.recover("good.fs", &["-w"]);
        assert_bytes(&good, &env.read("Data.fs"), "good chain");

        let damaged = format!("repo/{T2}.{}", if gzip { "deltafsz" } else { "deltafs" });
        let n = env.read(&damaged).len();
        env.flip_byte(&damaged, n / 2);
        env.write("out.fs", b"previous database");
        env.write("out.fs.index", b"previous index");
        let line = env
            .run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
            .error(&damaged);
        assert!(line.contains("checksum") || line.contains("gzip"), "{line}");
        assert_eq!(env.read("out.fs"), b"previous database");
        assert_eq!(env.read("out.fs.index"), b"previous index");
        assert!(!env.exists("out.fs.part"));
        let names: Vec<String> = env.snapshot("").into_keys().collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".repozo-tmp")),
            "{names:?}"
        );
        // -V agrees
        env.run(&["-V", "-r", "repo"], LATE)
            .fails()
            .stderr_has(&damaged);
    }
}

/// A data file listed in the `.dat` but gone: an error naming it, never a
/// shorter database (ZODB's repozo recovers what is left).
#[test]
fn missing_listed_increment_is_an_error() {
    for (missing, with_w) in [(T2, false), (T3, false), (T3, true)] {
        let env = Env::with_db(40, 20);
        env.backup(&[], T1);
        env.append(41, 3);
        env.backup(&[], T2);
        env.append(42, 3);
        env.backup(&[], T3);
        env.remove(&format!("repo/{missing}.deltafs"));
        env.write("out.fs", b"previous");
        let mut args = vec!["-R", "-r", "repo", "-o", "out.fs"];
        if with_w {
            args.push("-w");
        }
        let line = env
            .run(&args, LATE)
            .error(&format!("repo/{missing}.deltafs"));
        assert!(line.contains("missing"), "{line}");
        assert_eq!(env.read("out.fs"), b"previous");
        assert!(!env.exists("out.fs.part") && !env.exists("out.fs.index"));
        // to stdout: nothing usable either
        let o = env.run(&["-R", "-r", "repo"], LATE);
        assert!(o.stdout.is_empty(), "{}", o.describe());
        o.error(&format!("repo/{missing}.deltafs"));
    }
}

/// An existing output (and its index) is replaced only by a complete
/// recovery; an old index never stays beside a new file.
#[test]
fn existing_output_is_replaced_after_success() {
    let env = Env::with_db(43, 20);
    env.backup(&[], T1);
    env.append(44, 3);
    env.backup(&[], T2);
    env.write("out.fs", b"previous database");
    env.write("out.fs.index", b"previous index");
    env.write("out.fs.part", b"left by a crash");
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    assert_eq!(
        env.read("out.fs.index"),
        env.read(&format!("repo/{T2}.index"))
    );
    assert!(!env.exists("out.fs.part"));
    env.open_with_index("out.fs");

    // the last backup has no .index: the old one beside out.fs goes away,
    // and the one rebuilt (from T1's and a scan of T2) takes its place
    let t2_index = env.read(&format!("repo/{T2}.index"));
    env.remove(&format!("repo/{T2}.index"));
    env.write("out.fs.index", b"previous index");
    env.write("out.fs", b"previous database");
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    assert_bytes(&env.read("out.fs.index"), &t2_index, "rebuilt index");

    // an output in a directory that does not exist: an error naming it
    env.run(&["-R", "-r", "repo", "-o", "nodir/out.fs"], LATE)
        .error("nodir/out.fs");
}

/// A chain whose `.dat` is gone is recovered from the directory listing, as
/// ZODB's repozo does; -w needs the `.dat` and says so.
#[test]
fn chain_without_dat() {
    let env = Env::with_db(45, 20);
    env.backup(&[], T1);
    env.append(46, 3);
    env.backup(&[], T2);
    env.remove(&format!("repo/{T1}.dat"));
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    assert_bytes(&env.py_recover("py.fs", &[]), &out, "ZODB's repozo");
    env.run(&["-R", "-w", "-r", "repo", "-o", "w.fs"], LATE)
        .error(&format!("repo/{T1}.dat"));
    assert!(!env.exists("w.fs") && !env.exists("w.fs.part"));
}
