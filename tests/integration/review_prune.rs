//! Regressions from the review of `--prune-index` and the rebuild of a
//! missing `FILE.index` (issue 16).

use crate::util::*;

const OPEN_CLOSE: &str = "from ZODB.FileStorage import FileStorage; FileStorage('Data.fs').close()";

/// Case 1: the full backup's `.index` inherits a stale `Data.fs.index`
/// that passes ZODB's sanity check (ZODB's repozo does the same); the
/// increments after it are built by a scan and are right. When a pruned
/// increment's `.index` is rebuilt, the stale full backup's `.index` must
/// not be the base (a backup never extends it either): the rebuilt
/// `FILE.index` was wrong, passed ZODB's sanity check, and ZODB loaded
/// wrong data through it.
#[test]
fn rebuild_does_not_start_from_an_index_built_on_a_stale_live_index() {
    let env = Env::with_db(2101, 25);
    python_in(&env, OPEN_CLOSE);
    std::fs::copy(env.path("Data.fs.index"), env.path("old.index")).unwrap();
    env.append(2102, 12);
    python_in(&env, OPEN_CLOSE);
    python_in(&env, STALE_INDEX);
    env.backup(&["--prune-index"], T1);
    assert!(
        !index_is_right(&env, "Data.fs", &format!("repo/{T1}.index")),
        "the test needs a full backup that inherits the stale index"
    );
    for (now, seed) in [(T2, 2103), (T3, 2104)] {
        let _ = std::fs::remove_file(env.path("Data.fs.index"));
        env.append(seed, 3);
        let _ = std::fs::remove_file(env.path("Data.fs.index"));
        env.backup(&["--prune-index"], now);
    }
    assert!(!env.exists(&format!("repo/{T2}.index")), "T2's was pruned");
    env.recover("out.fs", &["-D", &T2[..19]]);
    assert!(
        index_is_right(&env, "out.fs", "out.fs.index"),
        "the rebuilt out.fs.index carries the stale entries: {}",
        env.zodb(&["check-index", "out.fs", "out.fs.index"])
            .stdout_str()
    );
    env.open_with_index("out.fs");
}

/// Recover every date of `dates` and check that `FILE.index` is there and
/// equals ZODB's scan of FILE, into a new file and extended in place.
#[track_caller]
fn every_date_has_a_right_index(env: &Env, dates: &[&str]) {
    for (i, d) in dates.iter().enumerate() {
        let date = &d[..19];
        let _ = std::fs::remove_file(env.path("n.fs"));
        let o = env
            .run(&["-R", "-v", "-r", "repo", "-D", date, "-o", "n.fs"], LATE)
            .ok();
        assert!(
            env.exists("n.fs.index"),
            "no n.fs.index at {date}: {}",
            o.describe()
        );
        assert!(
            index_is_right(env, "n.fs", "n.fs.index"),
            "n.fs.index at {date}: {}\n{}",
            env.zodb(&["check-index", "n.fs", "n.fs.index"])
                .stdout_str(),
            o.describe()
        );
        env.open_with_index("n.fs");
        if i > 0 {
            env.run(&["-R", "-r", "repo", "-D", date, "-o", "e.fs"], LATE)
                .ok();
            assert_bytes(&env.read("n.fs"), &env.read("e.fs"), "extended");
            assert_bytes(
                &env.read("n.fs.index"),
                &env.read("e.fs.index"),
                "extended .index",
            );
        } else {
            env.recover("e.fs", &["-D", date]);
        }
    }
}

/// A chain begun by ZODB's repozo (a full backup and an increment in the
/// same second, sharing one `.index`), extended by us with pruning, then
/// by ZODB's repozo with an empty increment (`-Q` over an unfinished
/// transaction): every date recovers with a right `FILE.index`.
#[test]
fn zodb_chain_same_second_and_empty_increment() {
    let env = Env::with_db(2111, 15);
    env.py_backup(&[], T1);
    env.append(2112, 3);
    env.py_backup(&[], T1);
    assert!(env.exists(&format!("repo/{T1}.deltafs")));
    env.append(2113, 3);
    env.backup(&["--prune-index"], T2);
    env.append(2114, 3);
    env.backup(&["--prune-index"], T3);
    env.partial("c");
    env.py_backup(&["-Q"], T4);
    env.backup(&["--prune-index"], T5);
    // the full's, its same-second increment's, and the newest
    assert!(env.exists(&format!("repo/{T1}.index")));
    assert!(env.exists(&format!("repo/{T4}.index")));
    assert!(!env.exists(&format!("repo/{T3}.index")));
    every_date_has_a_right_index(&env, &[T1, T2, T3, T4]);
}

/// Several chains (a pack starts one, `-F` another), with `-z` and
/// `--keep` on some nights: every date of every chain recovers from the
/// pruned repository to the bytes and `FILE.index` of the plain one, into
/// a new file and extended in place.
#[test]
fn older_chains_recover_the_same_as_plain() {
    const N: [&str; 9] = [
        "2026-11-20-01-00-00",
        "2026-11-20-02-00-00",
        "2026-11-20-03-00-00",
        "2026-11-20-04-00-00",
        "2026-11-20-05-00-00",
        "2026-11-20-06-00-00",
        "2026-11-20-07-00-00",
        "2026-11-20-08-00-00",
        "2026-11-20-09-00-00",
    ];
    let plain = Env::with_db(2121, 20);
    let pruned = Env::new();
    for (i, now) in N.iter().enumerate() {
        match i {
            0 => {}
            3 => plain.pack(),
            _ => plain.append(2121 + i as u64, 2),
        }
        plain.copy_source_to(&pruned);
        let mut args: Vec<&str> = vec!["-z"];
        if i == 6 {
            args.push("-F");
        }
        if i % 3 == 2 {
            args.push("-Q");
        }
        if i == 8 {
            args.extend(["--keep", "3"]);
        }
        plain.backup(&args, now);
        args.push("--prune-index");
        pruned.backup(&args, now);
    }
    for now in N {
        let date = &now[..19];
        plain.recover("a.fs", &["-D", date]);
        for b in ["b.fs", "c.fs"] {
            if b == "b.fs" && pruned.exists(b) {
                pruned.remove(b);
            }
            let _ = std::fs::remove_file(pruned.path("c.fs.index"));
            pruned.recover(b, &["-D", date]);
            assert_bytes(&plain.read("a.fs"), &pruned.read(b), date);
            assert_bytes(
                &plain.read("a.fs.index"),
                &pruned.read(&format!("{b}.index")),
                &format!("{b}.index at {date}"),
            );
        }
    }
}

/// `-L` says of each file whether it has an `.index`: one that is a
/// symbolic link (to a regular file) is one, which recovery restores; it
/// was listed as `no .index`, and its bytes left out of the chain's.
#[test]
fn list_counts_a_symlinked_index() {
    let env = Env::with_db(2131, 10);
    env.backup(&[], T1);
    let index = format!("repo/{T1}.index");
    std::fs::rename(env.path(&index), env.path("elsewhere.index")).unwrap();
    std::os::unix::fs::symlink(env.path("elsewhere.index"), env.path(&index)).unwrap();
    let size = env.read("elsewhere.index").len();
    let text = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
    assert!(!text.contains("no .index"), "{text}");
    assert!(
        text.contains(&format!("{size} bytes of .index")),
        "{size}: {text}"
    );
    env.recover("out.fs", &[]);
    assert_bytes(
        &env.read("elsewhere.index"),
        &env.read("out.fs.index"),
        "restored",
    );
}
