//! `-B`: full and incremental backups, byte for byte as ZODB's repozo
//! writes them, and the decisions between full, incremental and nothing.

use crate::util::*;

fn names(stamps: &[(&str, &str)]) -> Vec<String> {
    let mut v: Vec<String> = stamps.iter().map(|(s, e)| format!("{s}.{e}")).collect();
    v.sort();
    v
}

fn dat_lines(env: &Env, stamp: &str) -> Vec<String> {
    String::from_utf8(env.read(&format!("repo/{stamp}.dat")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// (start, end) of each line of a `.dat`.
fn dat_ranges(env: &Env, stamp: &str) -> Vec<(usize, usize)> {
    dat_lines(env, stamp)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// The first backup is full; increments follow an append, with and without
/// -Q; every data file, `.index` and `.dat` is byte-identical to what ZODB's
/// repozo writes for the same source at the same time.
#[test]
fn full_then_incrementals_identical_to_zodb() {
    let t = Twin::with_db(1, 30);
    t.backup(&[], T1);
    assert_eq!(
        t.ours.repo_names(),
        names(&[(T1, "dat"), (T1, "fs"), (T1, "index")])
    );
    let src1 = t.ours.read("Data.fs");
    assert_bytes(&t.ours.read(&format!("repo/{T1}.fs")), &src1, "full backup");
    t.assert_same_repos();

    t.ours.append(2, 6);
    t.backup(&[], T2);
    let src2 = t.ours.read("Data.fs");
    assert_bytes(
        &t.ours.read(&format!("repo/{T2}.deltafs")),
        &src2[src1.len()..],
        "first increment",
    );
    t.assert_same_repos();

    t.ours.append(3, 6);
    t.backup(&["-Q"], T3);
    let src3 = t.ours.read("Data.fs");
    assert_bytes(
        &t.ours.read(&format!("repo/{T3}.deltafs")),
        &src3[src2.len()..],
        "second increment (-Q)",
    );
    t.assert_same_repos();
    assert_eq!(
        dat_ranges(&t.ours, T1),
        [
            (0, src1.len()),
            (src1.len(), src2.len()),
            (src2.len(), src3.len())
        ]
    );
    assert!(dat_lines(&t.ours, T1)[2].starts_with(&format!("repo/{T3}.deltafs ")));
    // each .index is ZODB's index of the source up to its backup's end
    for s in [T1, T2, T3] {
        t.ours
            .zodb(&["check-index", "Data.fs", &format!("repo/{s}.index")])
            .ok();
    }
}

/// Nothing was committed since the last backup: nothing is written, with or
/// without -Q (ZODB's repozo agrees).
#[test]
fn nothing_changed_writes_nothing() {
    let t = Twin::with_db(2, 20);
    t.backup(&[], T1);
    t.ours.append(5, 3);
    t.backup(&["-Q"], T2);
    let before = t.ours.repo_snapshot();
    t.backup(&[], T3);
    t.backup(&["-Q"], T4);
    let o = t
        .ours
        .run(&["-B", "-v", "-r", "repo", "-f", "Data.fs"], T5)
        .ok();
    o.stderr_has("No changes, nothing to do");
    assert_same(&t.ours.repo_snapshot(), &before, "after no-op backups");
    t.assert_same_repos();
}

/// Only an unfinished transaction was appended (status `c`, or a record cut
/// short): no increment at all, never an empty `.deltafs`. (ZODB's repozo
/// writes an empty increment here.)
#[test]
fn unfinished_transaction_never_makes_an_empty_incremental() {
    for mode in ["c", "trunc"] {
        let env = Env::with_db(3, 20);
        env.backup(&[], T1);
        env.append(4, 2);
        env.backup(&["-Q"], T2);
        let before = env.repo_snapshot();
        let (end, added) = env.partial(mode);
        assert!(added > 0);
        assert_eq!(end as usize + added as usize, env.read("Data.fs").len());
        env.backup(&[], T3);
        env.backup(&["-Q"], T4);
        assert_same(&env.repo_snapshot(), &before, mode);
    }
    // (ZODB's repozo, for the record, writes an empty increment)
    let env = Env::with_db(3, 20);
    env.py_backup(&[], T1);
    env.partial("c");
    env.py_backup(&[], T2);
    assert_eq!(env.read(&format!("repo/{T2}.deltafs")), b"");
}

/// A backup copies up to the end of the last committed transaction
/// (`FileStorage.getSize()`), not to the end of the file, for a full backup
/// and for an increment; ZODB's repozo writes the same files.
#[test]
fn backup_stops_at_the_committed_end() {
    for mode in ["c", "trunc"] {
        // full backup of a file with an unfinished transaction at its end
        let t = Twin::with_db(4, 20);
        let (end, _) = t.ours.partial(mode);
        assert_eq!(t.ours.committed_size("Data.fs"), end);
        t.backup(&[], T1);
        let full = t.ours.read(&format!("repo/{T1}.fs"));
        assert_eq!(full.len() as u64, end, "{mode}");
        assert_bytes(
            &full,
            &t.ours.read("Data.fs")[..end as usize],
            "full backup",
        );
        t.assert_same_repos();

        // an increment of a file with an unfinished transaction at its end
        let t = Twin::with_db(5, 20);
        t.backup(&[], T1);
        t.ours.append(6, 3);
        let (end, _) = t.ours.partial(mode);
        t.backup(&[], T2);
        let src = t.ours.read("Data.fs");
        assert_eq!(
            *dat_ranges(&t.ours, T1).last().unwrap(),
            (full_len(&t.ours, T1), end as usize),
            "{mode}"
        );
        assert_bytes(
            &t.ours.read(&format!("repo/{T2}.deltafs")),
            &src[full_len(&t.ours, T1)..end as usize],
            "increment",
        );
        t.assert_same_repos();
    }
}

fn full_len(env: &Env, stamp: &str) -> usize {
    env.read(&format!("repo/{stamp}.fs")).len()
}

/// After a pack the source no longer extends the chain: a new full backup,
/// with and without -Q, as ZODB's repozo decides.
#[test]
fn pack_makes_a_full_backup() {
    for quick in [&[][..], &["-Q"]] {
        let t = Twin::with_db(6, 25);
        t.backup(quick, T1);
        t.ours.append(7, 4);
        t.backup(quick, T2);
        t.ours.pack();
        t.backup(quick, T3);
        let names = t.ours.repo_names();
        assert!(names.contains(&format!("{T3}.fs")), "{quick:?}: {names:?}");
        assert!(!names.contains(&format!("{T3}.deltafs")));
        assert_eq!(dat_lines(&t.ours, T3).len(), 1);
        assert_bytes(
            &t.ours.read(&format!("repo/{T3}.fs")),
            &t.ours.read("Data.fs"),
            "full backup after pack",
        );
        t.assert_same_repos();
        // and the chain goes on from the new full backup
        t.ours.append(8, 2);
        t.backup(quick, T4);
        assert!(t.ours.exists(&format!("repo/{T4}.deltafs")));
        assert_eq!(dat_lines(&t.ours, T3).len(), 2);
        t.assert_same_repos();
    }
}

#[test]
fn full_flag_forces_a_full_backup() {
    let t = Twin::with_db(7, 20);
    t.backup(&[], T1);
    t.ours.append(8, 3);
    t.backup(&["-F"], T2);
    assert!(t.ours.exists(&format!("repo/{T2}.fs")));
    assert_eq!(dat_lines(&t.ours, T2).len(), 1);
    // even when nothing changed
    t.backup(&["-F", "-Q"], T3);
    assert!(t.ours.exists(&format!("repo/{T3}.fs")));
    t.assert_same_repos();
}

/// -z: `.fsz` / `.deltafsz` gzip streams that gunzip and Python's gzip
/// read, holding exactly the bytes ZODB's repozo backs up; `.dat` (md5 of
/// the uncompressed bytes) and `.index` identical to ZODB's.
#[test]
fn gzip_backups() {
    let t = Twin::with_db(8, 25);
    let plain = Env::new(); // ZODB's repozo without -z
    let step = |extra: &[&str], now: &str| {
        t.backup(extra, now);
        t.ours.copy_source_to(&plain);
        let extra: Vec<&str> = extra.iter().copied().filter(|a| *a != "-z").collect();
        plain.py_backup(&extra, now);
    };
    step(&["-z"], T1);
    t.ours.append(9, 4);
    step(&["-z"], T2);
    t.ours.append(10, 4);
    step(&["-z", "-Q"], T3);

    assert_eq!(
        t.ours.repo_names(),
        names(&[
            (T1, "dat"),
            (T1, "fsz"),
            (T1, "index"),
            (T2, "deltafsz"),
            (T2, "index"),
            (T3, "deltafsz"),
            (T3, "index"),
        ])
    );
    assert_eq!(t.ours.repo_names(), t.py.repo_names());
    for (s, ext) in [(T1, "fs"), (T2, "deltafs"), (T3, "deltafs")] {
        let ours = t.ours.path(&format!("repo/{s}.{ext}z"));
        let want = plain.read(&format!("repo/{s}.{ext}"));
        assert_bytes(&gunzip(&ours), &want, "gunzip of ours");
        assert_bytes(&py_gunzip(&ours), &want, "Python's gzip of ours");
        assert_bytes(
            &gunzip(&t.py.path(&format!("repo/{s}.{ext}z"))),
            &want,
            "ZODB's -z",
        );
        assert_eq!(
            t.ours.read(&format!("repo/{s}.index")),
            t.py.read(&format!("repo/{s}.index"))
        );
    }
    assert_eq!(
        t.ours.read(&format!("repo/{T1}.dat")),
        t.py.read(&format!("repo/{T1}.dat")),
        ".dat"
    );
}

/// -k after a full backup removes the older data files with their `.dat`
/// and `.index`; after an increment it removes nothing.
#[test]
fn kill_old_on_full() {
    let t = Twin::with_db(9, 20);
    t.backup(&[], T1);
    t.ours.append(10, 2);
    t.backup(&[], T2);
    t.ours.append(11, 2);
    t.backup(&["-k"], T3); // an increment: nothing removed
    assert_eq!(t.ours.repo_names().len(), 7);
    t.assert_same_repos();
    t.ours.append(12, 2);
    t.backup(&["-F", "-k"], T4);
    assert_eq!(
        t.ours.repo_names(),
        names(&[(T4, "dat"), (T4, "fs"), (T4, "index")])
    );
    t.assert_same_repos();
    // a full backup forced by a pack, gzip, kills the old chain too
    t.ours.pack();
    t.backup(&["-k", "-z"], T5);
    assert_eq!(
        t.ours.repo_names(),
        names(&[(T5, "dat"), (T5, "fsz"), (T5, "index")])
    );
    assert_eq!(t.ours.repo_names(), t.py.repo_names());
}

/// A backup never replaces an existing entry with its target name: a
/// directory or a dangling symlink where the new file would go is an error
/// naming it, and nothing else is written.
#[test]
fn refuses_to_overwrite_an_existing_entry() {
    // the target of a first full backup is a directory
    let env = Env::with_db(10, 20);
    std::fs::create_dir(env.path(&format!("repo/{T1}.fs"))).unwrap();
    let before = env.repo_snapshot();
    let line = env
        .run(&["-B", "-r", "repo", "-f", "Data.fs"], T1)
        .error(&format!("repo/{T1}.fs"));
    assert!(line.contains("overwrite"), "{line}");
    assert_same(&env.repo_snapshot(), &before, "repository");

    // the target of an increment is a dangling symlink
    let env = Env::with_db(10, 20);
    env.backup(&[], T1);
    env.append(11, 2);
    std::os::unix::fs::symlink("nowhere", env.path(&format!("repo/{T2}.deltafs"))).unwrap();
    let before = env.repo_snapshot();
    for q in [&[][..], &["-Q"]] {
        let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        args.extend_from_slice(q);
        let line = env.run(&args, T2).error(&format!("repo/{T2}.deltafs"));
        assert!(line.contains("overwrite"), "{line}");
        assert_same(&env.repo_snapshot(), &before, "repository");
    }
    assert!(!env.exists("repo/nowhere"));
}

/// A regular file already using the stamp: ZODB's repozo refuses
/// ("Cannot overwrite existing file"); ours leaves that file alone and names
/// its backup one second later, so stamps keep increasing.
#[test]
fn existing_file_with_the_same_stamp_is_left_alone() {
    let t = Twin::with_db(11, 20);
    t.backup(&[], T1);
    t.ours.append(12, 2);
    t.sync();
    for env in [&t.ours, &t.py] {
        env.write(&format!("repo/{T2}.fs"), b"not a backup");
    }
    let o =
        t.py.py_repozo(&["-B", "-r", "repo", "-f", "Data.fs"], T2)
            .fails();
    assert!(o.stderr_str().contains("Cannot overwrite existing file"));

    t.ours.backup(&[], T2);
    assert_eq!(t.ours.read(&format!("repo/{T2}.fs")), b"not a backup");
    let next = "2026-11-20-02-00-01";
    assert!(
        t.ours.exists(&format!("repo/{next}.fs")),
        "{:?}",
        t.ours.repo_names()
    );
    assert_bytes(
        &t.ours.read(&format!("repo/{next}.fs")),
        &t.ours.read("Data.fs"),
        "full backup",
    );

    // an `.index` already using the stamp is not replaced either
    let env = Env::with_db(11, 20);
    env.backup(&[], T1);
    env.append(12, 2);
    env.write(&format!("repo/{T2}.index"), b"junk");
    env.backup(&[], T2);
    assert_eq!(env.read(&format!("repo/{T2}.index")), b"junk");
    assert!(env.exists(&format!("repo/{next}.deltafs")));
    assert!(!env.exists(&format!("repo/{T2}.deltafs")));
}

/// The repository is written into `.dat` lines exactly as spelled on the
/// command line (os.path.join), as ZODB's repozo writes it.
#[test]
fn repository_spelling_in_dat_matches_zodb() {
    for spelling in ["repo/", "./repo", "repo//"] {
        let t = Twin::with_db(12, 20);
        for (i, now) in [T1, T2].into_iter().enumerate() {
            if i > 0 {
                t.ours.append(13, 2);
                t.sync();
            }
            let args = ["-B", "-r", spelling, "-f", "Data.fs"];
            t.ours.run(&args, now).ok();
            t.py.py_repozo(&args, now).ok();
        }
        let dat = String::from_utf8(t.ours.read(&format!("repo/{T1}.dat"))).unwrap();
        let sep = if spelling.ends_with('/') { "" } else { "/" };
        let want = format!("{spelling}{sep}{T2}.deltafs");
        assert!(dat.contains(&format!("{want} ")), "{spelling}: {dat}");
        t.assert_same_repos();
    }
}

/// A repository path with spaces (which ZODB's repozo cannot read back
/// from its own lines: we write the name alone, see tests/paths.rs).
#[test]
fn repository_path_with_spaces() {
    let env = Env::with_db(14, 20);
    std::fs::create_dir(env.path("my backups")).unwrap();
    let b = |now: &str, extra: &[&str]| {
        let mut args = vec!["-B", "-r", "my backups", "-f", "Data.fs"];
        args.extend_from_slice(extra);
        env.run(&args, now).ok();
    };
    b(T1, &[]);
    env.append(15, 2);
    b(T2, &[]);
    env.append(16, 2);
    b(T3, &["-Q"]);
    let dat = String::from_utf8(env.read(&format!("my backups/{T1}.dat"))).unwrap();
    assert!(dat.starts_with(&format!("{T1}.fs 0 ")), "{dat}");
    assert_eq!(dat.lines().count(), 3, "{dat}");
    env.run(&["-V", "-r", "my backups"], LATE).ok();
    env.run(&["-R", "-w", "-r", "my backups", "-o", "out.fs"], LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "recovered");
}

/// The clock went back (by less than an hour, see review_misc.rs for
/// more): a new backup is never named before the newest one in the
/// repository (it would not be part of the chain).
#[test]
fn clock_going_back_never_names_a_backup_before_the_newest() {
    let env = Env::with_db(17, 20);
    env.backup(&[], T3);
    env.append(18, 2);
    env.backup(&[], "2026-11-20-01-45-00");
    let next = "2026-11-20-02-30-16";
    assert!(
        env.exists(&format!("repo/{next}.deltafs")),
        "{:?}",
        env.repo_names()
    );
    env.append(19, 2);
    env.backup(&["-F"], T2);
    assert!(
        env.exists("repo/2026-11-20-02-30-17.fs"),
        "{:?}",
        env.repo_names()
    );
    assert_bytes(
        &env.recover("out.fs", &[]),
        &env.read("Data.fs"),
        "recovered",
    );
}

/// The source was replaced by another, larger database (its first bytes
/// differ from the chain's): a full backup, with and without -Q, as ZODB's
/// repozo decides.
#[test]
fn replaced_source_makes_a_full_backup() {
    for quick in [&[][..], &["-Q"]] {
        let t = Twin::with_db(20, 20);
        t.backup(quick, T1);
        t.ours.append(21, 2);
        t.backup(quick, T2);
        t.ours.create(22, 40);
        assert!(t.ours.read("Data.fs").len() > full_len(&t.ours, T1) + 1000);
        t.backup(quick, T3);
        assert!(t.ours.exists(&format!("repo/{T3}.fs")), "{quick:?}");
        assert_eq!(dat_lines(&t.ours, T3).len(), 1);
        t.assert_same_repos();
        assert_bytes(
            &t.ours.recover("out.fs", &[]),
            &t.ours.read("Data.fs"),
            "recovered",
        );
    }
}
