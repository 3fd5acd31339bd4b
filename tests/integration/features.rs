//! Issue 7: what goes beyond ZODB's repozo — incremental recovery onto an
//! existing FILE, `--keep`, `-L`/`--json`, `--max-age`, `--version`.

use crate::util::*;

/// A repository with a full backup and one increment, and `out.fs`
/// recovered from it.
fn standby() -> Env {
    let env = Env::with_db(701, 20);
    env.backup(&[], T1);
    env.append(702, 3);
    env.backup(&["-Q"], T2);
    env.recover("out.fs", &[]);
    env
}

#[track_caller]
fn recover_v(env: &Env, extra: &[&str]) -> String {
    let mut args = vec!["-R", "-v", "-r", "repo", "-o", "out.fs"];
    args.extend_from_slice(extra);
    env.run(&args, LATE).ok().stderr_str()
}

#[track_caller]
fn assert_out_is_source(env: &Env) {
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "out.fs");
    assert_eq!(
        env.read("out.fs.index"),
        env.read(&format!("repo/{}.index", newest_stamp(env))),
        "out.fs.index is the chain's last index"
    );
    env.open_with_index("out.fs");
}

fn newest_stamp(env: &Env) -> String {
    env.repo_names()
        .into_iter()
        .filter(|n| n.ends_with(".index"))
        .max()
        .unwrap()
        .trim_end_matches(".index")
        .to_string()
}

#[test]
fn incremental_recovery_appends_only_the_new_increments() {
    for flags in [&[][..], &["-w"][..], &["-Q"][..]] {
        let env = standby();
        env.append(703, 3);
        env.backup(&["-Q"], T3);
        env.append(704, 2);
        env.backup(&["-Q", "-z"], T4);
        let err = recover_v(&env, flags);
        assert!(err.contains("appending 2 more"), "{flags:?}: {err}");
        assert_out_is_source(&env);
        // nothing new: nothing to do, but the index is still in place
        let err = recover_v(&env, flags);
        assert!(err.contains("already up to date"), "{err}");
        assert_out_is_source(&env);
    }
}

#[test]
fn incremental_recovery_falls_back_to_a_full_one() {
    // after a pack (a new chain)
    let env = standby();
    env.pack();
    env.backup(&["-Q"], T3);
    let err = recover_v(&env, &[]);
    assert!(err.contains("recovering in full"), "{err}");
    assert_out_is_source(&env);

    // onto a damaged FILE
    let env = standby();
    env.append(705, 2);
    env.backup(&["-Q"], T3);
    env.flip_byte("out.fs", 100);
    let err = recover_v(&env, &[]);
    assert!(
        err.contains("recovering in full") && err.contains("differ"),
        "{err}"
    );
    assert_out_is_source(&env);

    // onto a FILE from another repository
    let env = standby();
    let other = Env::with_db(706, 25);
    other.backup(&[], T1);
    other.recover("foreign.fs", &[]);
    env.write("out.fs", &other.read("foreign.fs"));
    let err = recover_v(&env, &[]);
    assert!(err.contains("recovering in full"), "{err}");
    assert_out_is_source(&env);

    // a FILE longer than the state asked for (-D before its end)
    let env = standby();
    let err = recover_v(&env, &["-D", T1]);
    assert!(err.contains("more than"), "{err}");
    let full_t1 = env.read(&format!("repo/{T1}.fs"));
    assert_bytes(&env.read("out.fs"), &full_t1, "recovered as of T1");

    // -F forces a full recovery
    let env = standby();
    env.append(707, 2);
    env.backup(&["-Q"], T3);
    let err = recover_v(&env, &["-F"]);
    assert!(!err.contains("appending"), "{err}");
    assert_out_is_source(&env);
}

/// An incremental recovery that was interrupted left part of an increment
/// at the end of FILE: the next run cuts it back and completes it.
#[test]
fn interrupted_incremental_recovery_is_completed() {
    let env = standby();
    let before = env.read("out.fs");
    env.append(708, 4);
    env.backup(&["-Q"], T3);
    let inc = env.read(&format!("repo/{T3}.deltafs"));
    let mut torn = before.clone();
    torn.extend_from_slice(&inc[..inc.len() / 2]);
    env.write("out.fs", &torn);
    let err = recover_v(&env, &[]);
    assert!(err.contains("cutting it back"), "{err}");
    assert_out_is_source(&env);
}

/// The same with a real kill in the middle of the append (needs strace).
#[test]
fn killed_incremental_recovery_is_completed() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("strace not installed: skipped");
        return;
    }
    let env = standby();
    env.append(709, 4);
    env.backup(&["-Q"], T3);
    env.append(710, 4);
    env.backup(&["-Q"], T4);
    // kill at the second copy_file_range: after the first new increment
    let mut cmd = std::process::Command::new("strace");
    cmd.current_dir(env.root())
        .env("REPOZO_TEST_NOW", LATE)
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "inject=copy_file_range:signal=KILL:when=2",
            BIN,
            "-R",
            "-r",
            "repo",
            "-o",
            "out.fs",
        ]);
    let o = exec(cmd);
    assert!(!o.status.success(), "the kill happened");
    // FILE is a prefix of the new state that ZODB can open
    let now = env.read("out.fs");
    assert!(env.read("Data.fs").starts_with(&now));
    assert_eq!(env.committed_size("out.fs"), now.len() as u64);
    recover_v(&env, &[]);
    assert_out_is_source(&env);
}

#[test]
fn keep_removes_older_chains_only() {
    let env = Env::with_db(711, 15);
    let stamps = [T1, T2, T3, T4, T5];
    for (i, now) in stamps.iter().enumerate() {
        env.append(712 + i as u64, 2);
        // a full backup every other time, increments in between
        let flags: &[&str] = if i % 2 == 0 { &["-F"] } else { &["-Q"] };
        env.backup(flags, now);
    }
    // chains: T1(+T2), T3(+T4), T5
    env.append(730, 2);
    let o = env.backup(&["-Q", "--keep", "2", "-v"], T6);
    let err = o.stderr_str();
    assert!(err.contains("bytes freed"), "{err}");
    let names = env.repo_names();
    for gone in [T1, T2] {
        assert!(
            !names.iter().any(|n| n.starts_with(gone)),
            "{gone} in {names:?}"
        );
    }
    for kept in [T3, T4, T5, T6] {
        assert!(
            names.iter().any(|n| n.starts_with(kept)),
            "{kept} not in {names:?}"
        );
    }
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    let out = env.recover("t4.fs", &["-D", T4]);
    assert_eq!(env.committed_size("t4.fs"), out.len() as u64);
    // more to keep than there are: nothing removed
    let before = env.repo_snapshot();
    env.backup(&["--keep", "9"], "2026-11-23-00-00-00");
    assert!(before.keys().all(|k| env.exists(&format!("repo/{k}"))));
}

#[test]
fn list_and_json() {
    let env = Env::with_db(721, 15);
    env.backup(&[], T1);
    env.append(722, 2);
    env.backup(&["-Q", "-z"], T2);
    env.append(723, 2);
    env.backup(&["-F"], T3);
    let o = env.run(&["-L", "-r", "repo"], LATE).ok();
    let text = o.stdout_str();
    assert!(
        text.contains(&format!("chain {T1}")) && text.contains(&format!("chain {T3}")),
        "{text}"
    );
    assert!(text.contains("incremental gzip"), "{text}");
    assert!(!text.contains("DAMAGED"), "{text}");
    // damage: delete the increment, flip the first chain's size
    env.remove(&format!("repo/{T2}.deltafsz"));
    let o = env.run(&["-L", "--json", "-r", "repo"], LATE).ok();
    env.write("list.json", &o.stdout);
    let mut check = std::process::Command::new(python());
    check.current_dir(env.root()).args([
        "-c",
        "import json, sys\n\
         d = json.load(open('list.json'))\n\
         c = d['chains']\n\
         assert len(c) == 2, c\n\
         assert not c[0]['ok'] and c[1]['ok'], c\n\
         assert c[0]['recoverable'] == [sys.argv[1]], c[0]\n\
         missing = [f for f in c[0]['files'] if not f['present']]\n\
         assert len(missing) == 1 and missing[0]['kind'] == 'incremental', missing\n\
         print('ok')\n",
        T1,
    ]);
    let out = exec(check).ok();
    assert_eq!(out.stdout_str().trim(), "ok");
}

#[test]
fn max_age_fails_on_an_old_backup() {
    let env = Env::with_db(731, 10);
    env.backup(&[], T1);
    env.run(
        &["-V", "-r", "repo", "--max-age", "26h"],
        "2026-11-21-02-00-00",
    )
    .ok();
    let e = env
        .run(
            &["-V", "-r", "repo", "--max-age", "26h"],
            "2026-11-21-04-00-00",
        )
        .fails()
        .stderr_str();
    assert!(e.contains("1d 3h old"), "{e}");
    let e = env
        .run(&["-V", "-r", "repo", "--max-age=bogus"], LATE)
        .fails()
        .stderr_str();
    assert!(e.contains("--max-age"), "{e}");
}

#[test]
fn version_and_help() {
    let env = Env::new();
    let o = env.run(&["--version"], LATE).ok();
    assert!(o.stdout_str().starts_with("repozo "), "{}", o.stdout_str());
    let o = env.run(&["-h"], LATE).ok();
    for opt in [
        "--list",
        "--json",
        "--keep",
        "--max-age",
        "--version",
        "--kill-old-on-full",
    ] {
        assert!(o.stdout_str().contains(opt), "{opt}");
    }
}

/// Regression (review): `-o` naming a symlink is replaced by the recovered
/// file, as ZODB's repozo does, and never fails half-way.
#[test]
fn recovery_onto_a_symlinked_output() {
    let env = standby();
    std::fs::rename(env.path("out.fs"), env.path("real.fs")).unwrap();
    std::os::unix::fs::symlink("real.fs", env.path("out.fs")).unwrap();
    env.append(740, 2);
    env.backup(&["-Q"], T3);
    let err = recover_v(&env, &[]);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!std::fs::symlink_metadata(env.path("out.fs"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_out_is_source(&env);
}

/// Regression (review): a file named like a backup but with a date that
/// cannot exist is not a backup, and new backups are still named properly.
#[test]
fn impossible_dates_are_not_backups() {
    let env = Env::with_db(741, 10);
    env.write("repo/2030-11-22-05-06-99.fs", b"not a backup");
    env.write("repo/2030-02-30-00-00-00.deltafs", b"not a backup");
    env.backup(&[], T1);
    assert!(
        env.exists(&format!("repo/{T1}.fs")),
        "{:?}",
        env.repo_names()
    );
    env.append(742, 2);
    env.backup(&["-Q"], T2);
    assert!(
        env.exists(&format!("repo/{T2}.deltafs")),
        "{:?}",
        env.repo_names()
    );
    let out = env.recover("o.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
}
