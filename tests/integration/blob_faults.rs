//! Blobs under faults: states that a killed `-B --blob-dir` or
//! `-R --blob-dir` leaves (found by `scripts/faults.py` kill-sweep, blob
//! scenarios), each of which the next run must handle.

use std::process::Command;

use crate::util::*;

/// A recovery killed while it created its blob directory leaves `tmp/`
/// and a temporary `.layout` in it; the next run refused that directory
/// ("not empty and not an earlier recovery ... no .layout file") and could
/// never complete. Now it starts the directory again.
#[test]
fn a_recovery_killed_while_creating_its_blob_directory_is_completed() {
    let env = Env::new();
    write_blobs(&env, 1, 6, &[]);
    env.backup(&["--blob-dir", "blobs"], T1);
    let want = dump_blobs(&env, "Data.fs", "blobs");
    // what the kill before the write of the `.layout` left
    std::fs::create_dir_all(env.path("out.blobs/tmp")).unwrap();
    std::fs::write(env.path("out.blobs/.repozo-tmp-killed"), b"").unwrap();
    env.run(
        &[
            "-R",
            "-r",
            "repo",
            "-o",
            "out.fs",
            "--blob-dir",
            "out.blobs",
        ],
        LATE,
    )
    .ok();
    assert_bytes(
        &env.read("out.fs"),
        &env.read("Data.fs"),
        "recovered Data.fs",
    );
    assert_eq!(dump_blobs(&env, "out.fs", "out.blobs"), want);
    assert!(!env.path("out.blobs/.repozo-tmp-killed").exists());
    // anything else there is still refused
    std::fs::create_dir_all(env.path("other/tmp")).unwrap();
    std::fs::write(env.path("other/tmp/x"), b"someone's").unwrap();
    env.run(
        &["-R", "-r", "repo", "-o", "o2.fs", "--blob-dir", "other"],
        LATE,
    )
    .error("refusing to touch it");
    assert_eq!(
        std::fs::read(env.path("other/tmp/x")).unwrap(),
        b"someone's"
    );
}

/// A full backup killed between publishing its data file and its blob
/// list left a full backup without a `.dat` (which recovery uses, as the
/// newest state) and without a blob list: `-R --blob-dir` then failed
/// ("has no blob list ... recover without --blob-dir"). The list is now
/// published (and synced) before the data file.
#[test]
fn a_full_backup_killed_after_its_data_file_is_published_still_recovers_with_blobs() {
    let env = Env::new();
    write_blobs(&env, 1, 6, &[]);
    env.backup(&["--blob-dir", "blobs"], T1);
    let old = (env.read("Data.fs"), dump_blobs(&env, "Data.fs", "blobs"));
    write_blobs(&env, 2, 4, &[]);
    let new = (env.read("Data.fs"), dump_blobs(&env, "Data.fs", "blobs"));
    let args = ["-BF", "-r", "repo", "-f", "Data.fs", "--blob-dir", "blobs"];
    // a clean traced run: the calls, in order
    copy_dir(&env.repo(), &env.path("repo.orig"));
    let log = env.path("calls.log");
    inject(&env, &args, T2, None, Some(&log)).ok();
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Vec<&str>> = calls.lines().map(|l| l.split('\t').collect()).collect();
    let data = format!("repo/{}.fs)", T2);
    let at = calls
        .iter()
        .position(|c| c[0].starts_with("rename") && c[5].ends_with(&data))
        .expect("the data file's rename");
    let next = calls[at + 1..]
        .iter()
        .find(|c| c[3] == "1")
        .expect("a mutating call after it");
    // the same run killed right after the data file's rename
    copy_dir(&env.path("repo.orig"), &env.repo());
    let fault = format!("kill:{}:{}", next[0], next[1]);
    let out = inject(&env, &args, T2, Some(&fault), None);
    assert_eq!(out.code(), Some(137), "killed: {}", out.describe());
    // the newest state (the orphan full backup) recovers with its blobs
    env.run(
        &[
            "-R",
            "-r",
            "repo",
            "-o",
            "new.fs",
            "--blob-dir",
            "new.blobs",
        ],
        LATE,
    )
    .ok();
    assert_bytes(&env.read("new.fs"), &new.0, "newest recovery");
    assert_eq!(dump_blobs(&env, "new.fs", "new.blobs"), new.1);
    // and so does the state before it
    env.run(
        &[
            "-R",
            "-r",
            "repo",
            "-D",
            T1,
            "-o",
            "old.fs",
            "--blob-dir",
            "old.blobs",
        ],
        LATE,
    )
    .ok();
    assert_bytes(&env.read("old.fs"), &old.0, "recovery at T1");
    assert_eq!(dump_blobs(&env, "old.fs", "old.blobs"), old.1);
    // the next backup repairs the repository
    env.run(
        &["-BQ", "-r", "repo", "-f", "Data.fs", "--blob-dir", "blobs"],
        T3,
    )
    .ok();
    env.run(&["-V", "-r", "repo"], LATE).ok();
}

/// The chain a `--keep` run removes, after it failed midway (its full
/// backup and `.dat` gone, an increment, its `.index` and blob list left):
/// the warning said "the next run tries again", but with no more full
/// backups than kept the next run removed nothing, forever.
#[test]
fn keep_finishes_the_removal_of_a_chain_it_left_half_removed() {
    let env = Env::new();
    let b = ["--blob-dir", "blobs"];
    write_blobs(&env, 1, 6, &[]);
    env.backup(&b, T1);
    write_blobs(&env, 2, 4, &[]);
    env.backup(&b, T2);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    write_blobs(&env, 3, 3, &[]);
    env.backup(&["-F", "--blob-dir", "blobs"], T3);
    let want = dump_blobs(&env, "Data.fs", "blobs");
    // what a --keep=1 that failed at the increment leaves
    for ext in ["fs", "dat", "index", "blobs"] {
        std::fs::remove_file(env.repo().join(format!("{T1}.{ext}"))).unwrap();
    }
    env.run(
        &[
            "-B",
            "--keep=1",
            "-r",
            "repo",
            "-f",
            "Data.fs",
            "--blob-dir",
            "blobs",
        ],
        T4,
    )
    .ok();
    for ext in ["deltafs", "index", "blobs"] {
        let p = env.repo().join(format!("{T2}.{ext}"));
        assert!(!p.exists(), "{} is still there", p.display());
    }
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.run(
        &[
            "-R",
            "-r",
            "repo",
            "-o",
            "out.fs",
            "--blob-dir",
            "out.blobs",
        ],
        LATE,
    )
    .ok();
    assert_eq!(dump_blobs(&env, "out.fs", "out.blobs"), want);
}

/// An error inspecting the blob store after a committed backup skipped the
/// removal of unused revisions without a word (`exists()` is false on an
/// error); it is now a warning, and the next backup removes them.
#[test]
fn an_error_on_the_blob_store_in_the_cleanup_is_a_warning() {
    let env = Env::new();
    let b = ["--blob-dir", "blobs"];
    write_blobs(&env, 1, 6, &[]);
    env.backup(&b, T1);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    write_blobs(&env, 2, 3, &[]);
    let args = [
        "-B",
        "--keep=1",
        "-r",
        "repo",
        "-f",
        "Data.fs",
        "--blob-dir",
        "blobs",
    ];
    copy_dir(&env.repo(), &env.path("repo.orig"));
    let log = env.path("calls.log");
    inject(&env, &args, T2, None, Some(&log)).ok();
    let calls = std::fs::read_to_string(&log).unwrap();
    // the first look at the store after the commit (the `.dat`): where the
    // removal of unused revisions starts
    let calls: Vec<Vec<&str>> = calls.lines().map(|l| l.split('\t').collect()).collect();
    let commit = calls
        .iter()
        .rposition(|c| c[3] == "1" && c[5].contains(".dat"))
        .expect("the commit");
    let last = calls[commit..]
        .iter()
        .find(|c| c[5].ends_with("(repo/blobs)"))
        .expect("a look at the store");
    copy_dir(&env.path("repo.orig"), &env.repo());
    let fault = format!("EIO:{}:{}", last[0], last[1]);
    let out = inject(&env, &args, T2, Some(&fault), None).ok();
    assert!(
        out.stderr_str()
            .contains("removing unused blob revisions failed"),
        "no warning: {}",
        out.describe()
    );
    env.run(
        &["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir", "blobs"],
        T3,
    )
    .ok();
    assert!(!env.repo().join(format!("{T1}.blobs")).exists());
}

/// An error inspecting a backup's blob list is an error, not "this backup
/// has no list" (which makes a full backup): the decision never rests on a
/// swallowed error (found by io-errors blob-incr, EIO on statx of the list).
#[test]
fn an_error_reading_whether_a_list_exists_is_not_a_missing_list() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: no strace");
        return;
    }
    let env = Env::new();
    write_blobs(&env, 61, 5, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    write_blobs(&env, 62, 3, &[]);
    let list = format!("repo/{T1}.blobs");
    let mut cmd = Command::new("strace");
    cmd.current_dir(env.root())
        .env("REPOZO_TEST_NOW", T2)
        .args(["-f", "-o", "/dev/null", "-P", &list])
        .args(["-e", "inject=statx,newfstatat,lstat,stat:error=EIO"])
        .arg(BIN)
        .args(["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir=blobs"]);
    let o = exec(cmd);
    assert!(!o.status.success(), "{}", o.describe());
    assert!(
        o.stderr_str().contains("Input/output error"),
        "{}",
        o.describe()
    );
    assert!(
        !env.exists(&format!("repo/{T2}.fs")),
        "{:?}",
        env.repo_names()
    );
    // without the error: an increment
    env.backup(&["--blob-dir=blobs"], T2);
    assert!(
        env.exists(&format!("repo/{T2}.deltafs")),
        "{:?}",
        env.repo_names()
    );
}
