//! Backups on top of repositories left odd by a crash (of either tool) or
//! by hand: the repository must stay recoverable, and indexes that cannot
//! be trusted must not spoil new `.index` files.

use crate::util::*;

fn dat(stamp: &str) -> String {
    format!("repo/{stamp}.dat")
}

/// After the next backups, ours recovers the source exactly and -V passes.
#[track_caller]
fn assert_recoverable(env: &Env) {
    let out = env.recover("check.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    env.open_with_index("check.fs");
    env.run(&["-V", "-r", "repo"], LATE).ok();
}

/// A full backup whose `.dat` is missing (ZODB's repozo crashed between
/// the data file and the `.dat`) or empty: with -Q a new full backup is
/// made, as ZODB's repozo does, and the repository recovers.
#[test]
fn missing_or_empty_dat_with_quick() {
    for empty in [false, true] {
        let env = Env::with_db(90, 20);
        env.backup(&[], T1);
        if empty {
            env.write(&dat(T1), b"");
        } else {
            env.remove(&dat(T1));
        }
        env.append(91, 2);
        env.backup(&["-Q"], T2);
        assert!(
            env.exists(&format!("repo/{T2}.fs")),
            "{:?}",
            env.repo_names()
        );
        env.append(92, 2);
        env.backup(&["-Q"], T3);
        assert_recoverable(&env);
    }
}

/// The same without -Q: the backup must not fail after publishing files
/// (missing `.dat`), nor write a `.dat` whose first line starts mid-file
/// (empty `.dat`); either way the repository must stay recoverable.
#[test]
fn missing_or_empty_dat_without_quick() {
    for empty in [false, true] {
        let env = Env::with_db(93, 20);
        env.backup(&[], T1);
        if empty {
            env.write(&dat(T1), b"");
        } else {
            env.remove(&dat(T1));
        }
        env.append(94, 2);
        env.backup(&[], T2);
        assert_recoverable(&env);
        env.append(95, 2);
        env.backup(&[], T3);
        assert_recoverable(&env);
    }
}

/// Simulate a crash of `-B` after an increment's data file and `.index`
/// were published but before its `.dat` line was appended (the window the
/// publishing order leaves), then commit more and back up again.
fn crash_before_dat_line(seed: u64) -> Env {
    let env = Env::with_db(seed, 20);
    env.backup(&[], T1);
    let before = env.read(&dat(T1));
    env.append(seed + 1, 2);
    env.backup(&[], T2);
    env.write(&dat(T1), &before); // the T2 line never made it
    assert_bytes(
        &env.recover("mid.fs", &[]),
        &env.read(&format!("repo/{T1}.fs")),
        "the orphan increment is not used",
    );
    env.append(seed + 2, 2);
    env
}

#[test]
fn crash_before_dat_line_then_quick_backup() {
    let env = crash_before_dat_line(96);
    env.backup(&["-Q"], T3);
    assert_recoverable(&env);
}

#[test]
fn crash_before_dat_line_then_backup() {
    let env = crash_before_dat_line(99);
    env.backup(&[], T3);
    assert_recoverable(&env);
    env.append(102, 2);
    env.backup(&[], T4);
    assert_recoverable(&env);
}

/// A damaged `.index` in the repository (the chain's last one) is not
/// trusted: the next increment's `.index` is still ZODB's.
#[test]
fn damaged_repository_index_is_not_trusted() {
    for junk in [&b"junk"[..], &[]] {
        let t = Twin::with_db(103, 20);
        t.backup(&[], T1);
        t.ours.write(&format!("repo/{T1}.index"), junk);
        t.py.write(&format!("repo/{T1}.index"), junk);
        t.ours.append(104, 3);
        t.backup(&[], T2);
        t.assert_same_repos();
    }
    // the index of another database, valid in itself
    let t = Twin::with_db(103, 20);
    let other = Env::with_db(105, 30);
    other.backup(&[], T1);
    t.backup(&[], T1);
    let foreign = other.read(&format!("repo/{T1}.index"));
    t.ours.write(&format!("repo/{T1}.index"), &foreign);
    t.py.write(&format!("repo/{T1}.index"), &foreign);
    t.ours.append(106, 3);
    t.backup(&["-Q"], T2);
    t.assert_same_repos();
}

/// ZODB's `Data.fs.index` beside the source is used by both tools; stale
/// (written before the last transactions), damaged or belonging to another
/// database, it must not change what is backed up.
#[test]
fn index_beside_the_source() {
    let base = Env::with_db(107, 20);
    base.append(108, 1); // writes Data.fs.index
    let stale = base.read("Data.fs.index");
    base.append(109, 4);
    let other = Env::with_db(110, 10);
    other.append(111, 1);
    let foreign = other.read("Data.fs.index");
    let cases: [(&str, &[u8]); 4] = [
        ("current", &base.read("Data.fs.index")),
        ("stale", &stale),
        ("junk", b"junk"),
        ("foreign", &foreign),
    ];
    for (what, index) in cases {
        let t = Twin {
            ours: Env::new(),
            py: Env::new(),
        };
        for env in [&t.ours, &t.py] {
            env.write("Data.fs", &base.read("Data.fs"));
            env.write("Data.fs.index", index);
        }
        t.ours.backup(&[], T1);
        t.py.py_backup(&[], T1);
        assert_same(
            &t.ours.repo_snapshot(),
            &t.py.repo_snapshot(),
            &format!("{what} Data.fs.index"),
        );
        assert_eq!(t.ours.read("Data.fs.index"), index, "{what}: left alone");
        t.ours
            .zodb(&["check-index", "Data.fs", &format!("repo/{T1}.index")])
            .ok();
    }
}
