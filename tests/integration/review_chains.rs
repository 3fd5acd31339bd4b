//! Issue 19, cases 6, 8, 11 and 12: how chains are picked from the
//! repository and what counts as an orphan. A chain is named by its full
//! backup and by its `.dat`; a file a `.dat` lists is part of that chain:
//! never an orphan, never silently skipped, and a chain missing a listed
//! file is an error, not a fallback to an older chain. Cleanup after a
//! committed backup (`-k`, `--keep`) is best effort.

use crate::util::*;

fn data(stamp: &str, full: bool, gz: bool) -> String {
    let kind = if full { "fs" } else { "deltafs" };
    format!("repo/{stamp}.{kind}{}", if gz { "z" } else { "" })
}

fn gzip_flag(gz: bool) -> &'static [&'static str] {
    if gz {
        &["-z"]
    } else {
        &[]
    }
}

/// Every name in the repository that was set aside.
fn set_aside(env: &Env) -> Vec<String> {
    env.repo_names()
        .into_iter()
        .filter(|n| n.ends_with(".orphaned"))
        .collect()
}

/// The `-L` lines that head chains.
fn chain_lines(env: &Env) -> Vec<String> {
    let out = env.run(&["-L", "-r", "repo"], LATE).ok();
    out.stdout_str()
        .lines()
        .filter(|l| l.starts_with("chain "))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Case 6: the newest full backup is missing

/// Chain 1: full T1, increment T2; chain 2: full T3 (-F), increment T4;
/// then T3's full backup disappears while `T3.dat` still lists it. `-R`
/// (also `-w`, `-D T4`) and `-V` must name the missing file instead of
/// recovering chain 1's state with exit 0; `-L` shows the chain damaged;
/// `-B`/`-BQ` leave every listed file where it is and start a new chain
/// (with a warning); dates of chain 1 still recover.
#[test]
fn issue19_case6_missing_newest_full_is_an_error() {
    for (gz, quick) in [(false, true), (true, true), (false, false)] {
        let env = Env::with_db(1906, 20);
        let z = gzip_flag(gz);
        env.backup(z, T1);
        env.append(1907, 3);
        env.backup(&[&["-Q"], z].concat(), T2);
        let state2 = env.read("Data.fs");
        env.append(1908, 3);
        env.backup(&[&["-F"], z].concat(), T3);
        env.append(1909, 3);
        env.backup(&[&["-Q"], z].concat(), T4);
        let full = data(T3, true, gz);
        env.remove(&full);
        let name = full.trim_start_matches("repo/");

        for extra in [&[][..], &["-w"], &["-D", T4], &["-D", T3], &["-F"]] {
            let mut args = vec!["-R", "-r", "repo", "-o", "out.fs"];
            args.extend_from_slice(extra);
            let e = env.run(&args, LATE).error(name);
            assert!(e.contains("is missing"), "{extra:?}: {e}");
            assert!(!env.exists("out.fs"), "{extra:?}: nothing written");
        }
        let e = env.run(&["-R", "-r", "repo"], LATE).error(name);
        assert!(e.contains("is missing"), "{e}");
        // -V names it
        let v = env.run(&["-V", "-r", "repo"], LATE).fails();
        assert!(
            v.stderr_str().contains(&format!("{name} is missing")),
            "{}",
            v.stderr_str()
        );
        // -L: the chain of T3 is damaged, with its missing full backup
        let list = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
        let chain3 = list
            .lines()
            .find(|l| l.starts_with(&format!("chain {T3}")))
            .unwrap_or_else(|| panic!("no chain {T3} in:\n{list}"));
        assert!(chain3.contains("DAMAGED"), "{list}");
        assert!(
            list.lines()
                .any(|l| l.contains(name) && l.trim_end().ends_with("missing")),
            "{list}"
        );
        assert!(
            list.contains(&format!("problem: {name} is missing")),
            "{list}"
        );
        // the older chain still recovers its own dates
        let out = env.recover("old.fs", &["-D", T2]);
        assert_bytes(&out, &state2, "chain 1 at T2");

        // a backup keeps every listed file and starts a new chain
        env.append(1910, 2);
        let flags: &[&str] = if quick { &["-Q"] } else { &[] };
        let o = env.backup(&[flags, z].concat(), T5);
        assert!(
            o.stderr_str().contains("repozo: warning:") && o.stderr_str().contains(name),
            "{}",
            o.stderr_str()
        );
        assert!(set_aside(&env).is_empty(), "{:?}", env.repo_names());
        assert!(env.exists(&data(T4, false, gz)), "{:?}", env.repo_names());
        assert!(env.exists(&format!("repo/{T3}.dat")));
        assert!(env.exists(&data(T5, true, gz)), "{:?}", env.repo_names());
        env.assert_recovers_source();
        let out = env.recover("old.fs", &["-D", T2]);
        assert_bytes(&out, &state2, "chain 1 at T2, after the new chain");
        // the damaged chain still says what is missing
        env.run(&["-R", "-r", "repo", "-o", "mid.fs", "-D", T4], LATE)
            .error(name);
        // ZODB's repozo recovers the new chain too
        let py = env.py_recover("py.fs", &[]);
        assert_bytes(&py, &env.read("Data.fs"), "ZODB's recovery");
    }
}

// ---------------------------------------------------------------------------
// Case 8: -k / --keep after an orphan was set aside

/// An increment whose `.dat` line is lost (an orphan), then a pack: the
/// next `-B -k` (or `--keep 1`) sets the orphan aside, makes a full backup
/// and must remove the old chain, the orphan included, with exit 0.
#[test]
fn issue19_case8_kill_old_after_setting_aside_an_orphan() {
    for prune in [&["-k"][..], &["--keep", "1"], &["-Q", "-k"], &["-z", "-k"]] {
        let env = Env::with_db(1918, 20);
        env.backup(&[], T1);
        env.append(1919, 3);
        env.backup(&[], T2);
        // the T2 line never made it into T1.dat
        let dat = format!("repo/{T1}.dat");
        let text = String::from_utf8(env.read(&dat)).unwrap();
        let first = text.lines().next().unwrap();
        env.write(&dat, format!("{first}\n").as_bytes());
        env.append(1920, 3);
        env.pack();
        let o = env.backup(prune, T3);
        assert!(
            !o.stderr_str().contains("warning"),
            "{prune:?}: {}",
            o.stderr_str()
        );
        let names = env.repo_names();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(T3) || n.starts_with('.')),
            "{prune:?}: {names:?}"
        );
        env.assert_recovers_source();
    }
}

/// A removal that fails after a committed full backup is a warning, not a
/// failed backup: exit 0, the new chain recovers, the rest of the old
/// chain is removed, and the next run with `-k` tries again.
#[test]
fn issue19_case8_cleanup_failure_is_a_warning() {
    for prune in [&["-F", "-k"][..], &["-F", "--keep", "1"]] {
        let env = Env::with_db(1921, 20);
        env.backup(&[], T1);
        env.append(1922, 3);
        env.backup(&["-Q"], T2);
        // something that cannot be removed where T1's .index was
        env.remove(&format!("repo/{T1}.index"));
        std::fs::create_dir_all(env.path(&format!("repo/{T1}.index/x"))).unwrap();
        env.append(1923, 2);
        let o = env.backup(prune, T3);
        let err = o.stderr_str();
        assert!(
            err.contains("repozo: warning:")
                && err.contains(&format!("{T1}.index"))
                && err.contains("next run"),
            "{prune:?}: {err}"
        );
        let names = env.repo_names();
        assert!(
            !names.iter().any(|n| n.starts_with(T2)
                || n == &format!("{T1}.fs")
                || n.ends_with(".dat") && !n.starts_with(T3)),
            "{prune:?}: {names:?}"
        );
        env.assert_recovers_source();
        // the next run tries again (and warns again while it cannot)
        env.append(1924, 2);
        let o = env.backup(prune, T4);
        assert!(
            o.stderr_str().contains(&format!("{T1}.index")),
            "{}",
            o.stderr_str()
        );
        std::fs::remove_dir_all(env.path(&format!("repo/{T1}.index"))).unwrap();
        // a leftover .index of a removed chain goes with the next run
        env.write(&format!("repo/{T2}.index"), b"junk");
        env.append(1929, 2);
        let o = env.backup(prune, T5);
        assert!(!o.stderr_str().contains("warning"), "{}", o.stderr_str());
        let names = env.repo_names();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(T5) || n.starts_with('.')),
            "{prune:?}: {names:?}"
        );
        env.assert_recovers_source();
    }
}

/// `--keep` counts full backups that are there: a chain whose full backup
/// is missing is not one of the N kept, so the last good older chain
/// stays.
#[test]
fn issue19_keep_counts_present_full_backups() {
    let env = Env::with_db(1925, 20);
    env.backup(&[], T1);
    env.append(1926, 2);
    env.backup(&["-F"], T2);
    env.remove(&format!("repo/{T2}.fs"));
    env.append(1928, 2);
    env.backup(&["--keep", "2"], T3);
    for n in [format!("{T1}.fs"), format!("{T2}.dat"), format!("{T3}.fs")] {
        assert!(
            env.exists(&format!("repo/{n}")),
            "{n}: {:?}",
            env.repo_names()
        );
    }
    env.assert_recovers_source();
}

// ---------------------------------------------------------------------------
// Case 11: ZODB's repozo, an increment then -F in one second

/// ZODB's repozo run twice in second T3 (an increment, then -F) leaves
/// `T3.deltafs` listed in T1's `.dat`, `T3.fs` heading a new chain and one
/// `T3.index` (the full backup's). Our next backups must set neither
/// aside; both chains stay whole (`-L`), `-V` passes, the older chain
/// recovers its dates and the newer one its own.
#[test]
fn issue19_case11_zodb_increment_and_full_in_one_second() {
    for (gz, quick) in [(false, true), (false, false), (true, true)] {
        let env = Env::with_db(1911, 20);
        let z = gzip_flag(gz);
        env.py_backup(z, T1);
        env.append(1912, 3);
        env.py_backup(&[&["-Q"], z].concat(), T2);
        let state2 = env.read("Data.fs");
        env.append(1913, 3);
        env.py_backup(&[&["-Q"], z].concat(), T3);
        env.py_backup(&[&["-F"], z].concat(), T3);
        let state3 = env.read("Data.fs");
        let inc = data(T3, false, gz);
        assert!(env.exists(&inc) && env.exists(&data(T3, true, gz)));
        let t1dat = String::from_utf8(env.read(&format!("repo/{T1}.dat"))).unwrap();
        assert!(t1dat.contains(inc.trim_start_matches("repo/")), "{t1dat}");
        // -V and -L before our backup: nothing is an orphan
        env.run(&["-V", "-r", "repo"], LATE).ok();
        let chains = chain_lines(&env);
        assert_eq!(chains.len(), 2, "{chains:?}");
        assert!(chains.iter().all(|l| l.ends_with("[ok]")), "{chains:?}");

        env.append(1914, 2);
        let flags: &[&str] = if quick { &["-Q"] } else { &[] };
        let o = env.backup(&[flags, z].concat(), T4);
        assert!(!o.stderr_str().contains("warning"), "{}", o.stderr_str());
        assert!(set_aside(&env).is_empty(), "{:?}", env.repo_names());
        assert!(env.exists(&inc) && env.exists(&format!("repo/{T3}.index")));
        // our increment extends the newest chain, T3's
        assert!(env.exists(&data(T4, false, gz)), "{:?}", env.repo_names());
        let chains = chain_lines(&env);
        assert_eq!(chains.len(), 2, "{chains:?}");
        assert!(chains.iter().all(|l| l.ends_with("[ok]")), "{chains:?}");
        env.assert_recovers_source();
        // the older chain recovers its dates, the newer one T3
        let out = env.recover("t2.fs", &["-D", T2, "-w"]);
        assert_bytes(&out, &state2, "T1's chain at T2");
        env.open_with_index("t2.fs");
        let out = env.recover("t3.fs", &["-D", T3, "-w"]);
        assert_bytes(&out, &state3, "T3's chain at T3");
        env.open_with_index("t3.fs");

        // --keep 1 removes T1's chain with its T3 increment, but T3.index
        // belongs to T3's full backup and stays
        env.append(1915, 2);
        env.backup(&[&["--keep", "1"], z].concat(), T5);
        assert!(!env.exists(&inc), "{:?}", env.repo_names());
        assert!(!env.exists(&format!("repo/{T1}.dat")));
        assert!(env.exists(&format!("repo/{T3}.index")));
        let out = env.recover("t3b.fs", &["-D", T3]);
        assert_bytes(&out, &state3, "T3's chain after --keep 1");
        env.open_with_index("t3b.fs");
        env.assert_recovers_source();
    }
}

// ---------------------------------------------------------------------------
// Case 12: a .fs and a .fsz with one stamp

fn gzip_file(env: &Env, from: &str, to: &str) {
    let out = std::process::Command::new("gzip")
        .arg("-c")
        .arg(env.path(from))
        .output()
        .unwrap();
    assert!(out.status.success());
    env.write(to, &out.stdout);
}

fn gunzip_file(env: &Env, from: &str, to: &str) {
    let bytes = gunzip(&env.path(from));
    env.write(to, &bytes);
}

/// `T1.fs` listed in `T1.dat` and a `T1.fsz` beside it (or the other way
/// round): recovery uses what the `.dat` lists, `-V` and `-L` report the
/// other as an orphan of the one chain, and the next backup extends the
/// chain and sets the unlisted twin aside (not the `.index`).
#[test]
fn issue19_case12_fs_and_fsz_with_one_stamp() {
    for listed_gz in [false, true] {
        let env = Env::with_db(1930, 20);
        env.backup(gzip_flag(listed_gz), T1);
        env.append(1931, 3);
        env.backup(&["-Q"], T2);
        let listed = data(T1, true, listed_gz);
        let twin = data(T1, true, !listed_gz);
        if listed_gz {
            gunzip_file(&env, &listed, &twin);
        } else {
            gzip_file(&env, &listed, &twin);
        }
        let twin_name = twin.trim_start_matches("repo/");

        let out = env.recover("out.fs", &["-w"]);
        assert_bytes(&out, &env.read("Data.fs"), "what the .dat lists");
        let v = env.run(&["-V", "-r", "repo"], LATE).fails();
        assert!(
            v.stderr_str().contains(twin_name) && v.stderr_str().contains("orphan"),
            "{}",
            v.stderr_str()
        );
        let chains = chain_lines(&env);
        assert_eq!(chains.len(), 1, "{chains:?}");
        let list = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
        assert!(
            list.lines()
                .any(|l| l.contains(twin_name) && l.trim_end().ends_with("orphan")),
            "{list}"
        );

        env.append(1932, 2);
        env.backup(&["-Q"], T3);
        assert!(
            env.exists(&format!("repo/{T3}.deltafs")),
            "{:?}",
            env.repo_names()
        );
        assert_eq!(set_aside(&env), [format!("{twin_name}.orphaned")]);
        assert!(env.exists(&format!("repo/{T1}.index")));
        let chains = chain_lines(&env);
        assert_eq!(chains.len(), 1, "{chains:?}");
        assert!(chains[0].ends_with("[ok]"), "{chains:?}");
        env.assert_recovers_source();
        let py = env.py_recover("py.fs", &[]);
        assert_bytes(&py, &env.read("Data.fs"), "ZODB's recovery");
    }
}

/// The same without a `.dat`: nothing says which of the two heads the
/// chain, so recovery fails naming both, `-L` says so, and a backup starts
/// a new chain without touching either.
#[test]
fn issue19_case12_without_dat_names_both_files() {
    let env = Env::with_db(1935, 20);
    env.backup(&[], T1);
    gzip_file(&env, &data(T1, true, false), &data(T1, true, true));
    env.remove(&format!("repo/{T1}.dat"));
    let e = env
        .run(&["-R", "-r", "repo", "-o", "out.fs"], LATE)
        .error(&format!("{T1}.fs"));
    assert!(e.contains(&format!("{T1}.fsz")), "{e}");
    let list = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
    assert!(
        list.contains("DAMAGED") && list.contains("both full backups"),
        "{list}"
    );
    env.append(1936, 2);
    env.backup(&["-Q"], T2);
    assert!(env.exists(&data(T1, true, false)) && env.exists(&data(T1, true, true)));
    assert!(set_aside(&env).is_empty());
    env.assert_recovers_source();
}
