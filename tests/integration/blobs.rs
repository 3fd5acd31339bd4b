//! `--blob-dir`: blob directories written by ZODB 6.4 (`tests/py/blobtool.py`)
//! backed up with their `Data.fs`, verified, and recovered at every saved
//! date, then opened by ZODB, which reads every blob.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::*;

/// The committed blob files of a blob directory: `oid tid size`.
fn files(env: &Env, dir: &str) -> BTreeSet<String> {
    blobtool(env, &["files", dir])
        .ok()
        .stdout_str()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every file below `dir`, relative.
fn tree(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn store_files(env: &Env) -> BTreeSet<String> {
    tree(&env.repo().join("blobs"))
}

struct Saved {
    when: &'static str,
    data: Vec<u8>,
    blobs: String,
    files: BTreeSet<String>,
}

fn save(env: &Env, when: &'static str) -> Saved {
    Saved {
        when,
        data: env.read("Data.fs"),
        blobs: dump_blobs(env, "Data.fs", "blobs"),
        files: files(env, "blobs"),
    }
}

/// Recover each saved state into a fresh file and blob directory, with
/// ZODB reading every blob; ZODB's repozo recovers the same `Data.fs`.
#[track_caller]
fn check_recoveries(env: &Env, saved: &[Saved]) {
    for (i, s) in saved.iter().enumerate() {
        let out = format!("out{i}.fs");
        let dir = format!("out{i}-blobs");
        env.run(
            &[
                "-R",
                "-r",
                "repo",
                "-D",
                s.when,
                "-o",
                &out,
                &format!("--blob-dir={dir}"),
            ],
            LATE,
        )
        .ok();
        assert_bytes(&env.read(&out), &s.data, &format!("Data.fs at {}", s.when));
        assert_eq!(dump_blobs(env, &out, &dir), s.blobs, "blobs at {}", s.when);
        assert_eq!(files(env, &dir), s.files, "blob files at {}", s.when);
        assert!(env.path(&format!("{dir}/tmp")).is_dir());
        let py = format!("py{i}.fs");
        let bytes = env.py_recover(&py, &["-D", s.when]);
        assert_bytes(&bytes, &s.data, &format!("ZODB's repozo at {}", s.when));
    }
}

#[test]
fn blobs_are_backed_up_with_the_data_and_recovered_at_every_date() {
    let env = Env::new();
    write_blobs(&env, 1, 12, &["--big"]);
    let mut saved = Vec::new();
    env.backup(&["--blob-dir=blobs"], T1);
    saved.push(save(&env, T1));
    let stored = store_files(&env);
    assert_eq!(stored.len(), saved[0].files.len(), "{stored:?}");
    // changes, an undo of a blob change (a new revision pointing back), -Q
    write_blobs(&env, 2, 8, &[]);
    blobtool(&env, &["undo", "Data.fs", "blobs"]).ok();
    env.backup(&["-Q", "--blob-dir=blobs"], T2);
    saved.push(save(&env, T2));
    // without -Q, gzip
    write_blobs(&env, 3, 6, &[]);
    env.backup(&["-z", "--blob-dir=blobs"], T3);
    saved.push(save(&env, T3));
    // each revision once in the store
    let all: BTreeSet<String> = saved.iter().flat_map(|s| s.files.clone()).collect();
    assert_eq!(store_files(&env).len(), all.len());
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.py_repozo(&["-V", "-r", "repo"], LATE).ok();
    // after a pack, a full backup that copies no blob bytes
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    let before = store_files(&env);
    let o = env.backup(&["-v", "--blob-dir=blobs"], T4);
    assert!(
        o.stderr_str().contains("0 new (0 bytes copied)"),
        "{}",
        o.describe()
    );
    saved.push(save(&env, T4));
    assert!(saved[3].files.len() < saved[2].files.len());
    assert_eq!(store_files(&env), before);
    check_recoveries(&env, &saved);
}

#[test]
fn a_lawn_directory_and_a_first_full_backup_with_z() {
    let env = Env::new();
    write_blobs(&env, 5, 10, &["--layout", "lawn"]);
    env.backup(&["-F", "-z", "--blob-dir=blobs"], T1);
    let saved = vec![save(&env, T1)];
    check_recoveries(&env, &saved);
    assert_eq!(
        std::fs::read_to_string(env.path("out0-blobs/.layout")).unwrap(),
        "lawn"
    );
}

#[test]
fn a_missing_blob_file_is_a_warning_and_stays_missing() {
    let env = Env::new();
    write_blobs(&env, 7, 6, &[]);
    let gone = files(&env, "blobs").into_iter().next().unwrap();
    let (oid, tid) = {
        let f: Vec<&str> = gone.split(' ').collect();
        (f[0].to_string(), f[1].to_string())
    };
    let rel = walkdir::WalkDir::new(env.path("blobs"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.to_string_lossy().ends_with(&format!("{tid}.blob")))
        .unwrap();
    let kept = std::fs::read(&rel).unwrap();
    std::fs::remove_file(&rel).unwrap();
    let o = env.backup(&["--blob-dir=blobs"], T1);
    let warn = o.stderr_str();
    assert!(
        warn.contains(&format!("blob oid {oid} tid {tid} is missing")),
        "{warn}"
    );
    env.run(&["-R", "-r", "repo", "-o", "out.fs", "--blob-dir=ob"], LATE)
        .ok();
    let mut expected = files(&env, "blobs");
    expected.remove(&gone);
    assert_eq!(files(&env, "ob"), expected);
    assert_eq!(files(&env, "ob"), files(&env, "blobs"));
    // the file put back by hand into the recovered directory exists
    // nowhere else: the next recovery refuses rather than remove it
    let back = env
        .path("ob")
        .join(rel.strip_prefix(env.path("blobs")).unwrap());
    std::fs::write(&back, &kept).unwrap();
    let o = env
        .run(&["-R", "-r", "repo", "-o", "out.fs", "--blob-dir=ob"], LATE)
        .fails();
    assert!(
        o.stderr_str().contains("refusing to touch it"),
        "{}",
        o.describe()
    );
    assert_eq!(std::fs::read(&back).unwrap(), kept);
}

#[test]
fn what_is_not_a_blob_directory_is_refused_before_anything_is_written() {
    let env = Env::with_db(1, 3);
    std::fs::create_dir(env.path("empty")).unwrap();
    std::fs::create_dir(env.path("docs")).unwrap();
    env.write("docs/readme.txt", b"hello");
    std::fs::create_dir(env.path("odd")).unwrap();
    env.write("odd/.layout", b"flat");
    for (dir, why) in [
        ("nowhere", "No such file"),
        ("Data.fs", "not a directory"),
        ("empty", "it is empty"),
        ("docs", "holds \"readme.txt\""),
        ("odd", "names \"flat\""),
    ] {
        let o = env
            .run(
                &[
                    "-B",
                    "-r",
                    "repo",
                    "-f",
                    "Data.fs",
                    &format!("--blob-dir={dir}"),
                ],
                T1,
            )
            .fails();
        let msg = o.stderr_str();
        assert!(
            msg.contains("is not a ZODB blob directory") && msg.contains(why),
            "{msg}"
        );
        assert!(env.repo_names().is_empty(), "{:?}", env.repo_names());
    }
}

#[test]
fn a_standby_blob_directory_is_brought_forward_and_a_foreign_one_refused() {
    let env = Env::new();
    write_blobs(&env, 11, 10, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    let first = save(&env, T1);
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .ok();
    write_blobs(&env, 12, 10, &[]);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    env.backup(&["--blob-dir=blobs"], T2);
    let second = save(&env, T2);
    assert_ne!(first.files, second.files);
    // the standby follows, losing the revisions the pack dropped
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .ok();
    assert_eq!(files(&env, "sb"), second.files);
    assert_eq!(dump_blobs(&env, "sb.fs", "sb"), second.blobs);
    // back to the first date: the same directory goes back too
    env.run(
        &["-R", "-r", "repo", "-D", T1, "-o", "sb.fs", "--blob-dir=sb"],
        LATE,
    )
    .ok();
    assert_eq!(files(&env, "sb"), first.files);
    // a file the repository does not know: refused, nothing touched
    env.write("sb/notes.txt", b"mine");
    let before = tree(&env.path("sb"));
    let o = env
        .run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .fails();
    assert!(
        o.stderr_str().contains("refusing to touch it"),
        "{}",
        o.describe()
    );
    assert_eq!(tree(&env.path("sb")), before);
    // and the source's own blob directory is never taken for a standby
    // of another state when it holds revisions the repository lacks
    write_blobs(&env, 13, 3, &[]);
    let o = env
        .run(
            &["-R", "-r", "repo", "-o", "x.fs", "--blob-dir=blobs"],
            LATE,
        )
        .fails();
    assert!(
        o.stderr_str().contains("refusing to touch it"),
        "{}",
        o.describe()
    );
}

#[test]
fn verify_checks_every_stored_revision() {
    let env = Env::new();
    write_blobs(&env, 21, 10, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    env.run(&["-V", "-r", "repo"], LATE).ok();
    let stored: Vec<String> = store_files(&env).into_iter().collect();
    let victim = env.repo().join("blobs").join(&stored[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    if bytes.is_empty() {
        bytes.push(1);
    } else {
        bytes[0] ^= 1;
    }
    std::fs::write(&victim, &bytes).unwrap();
    let gone = env.repo().join("blobs").join(&stored[1]);
    std::fs::remove_file(&gone).unwrap();
    let o = env.run(&["-V", "-r", "repo"], LATE).fails();
    let lines = o.stderr_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&stored[1]) && l.ends_with("is missing")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(&stored[0])), "{lines:?}");
    // recovery refuses a damaged store rather than write a wrong blob
    let o = env
        .run(&["-R", "-r", "repo", "-o", "o.fs", "--blob-dir=ob"], LATE)
        .fails();
    assert!(
        o.stderr_str().contains("the repository is damaged"),
        "{}",
        o.describe()
    );
    assert!(!env.exists("o.fs"));
}

#[test]
fn retention_removes_the_revisions_no_chain_refers_to() {
    let env = Env::new();
    write_blobs(&env, 31, 8, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    write_blobs(&env, 32, 8, &[]);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    env.backup(&["--blob-dir=blobs"], T2);
    write_blobs(&env, 33, 4, &[]);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    // --keep 1: only the newest chain's revisions stay
    env.backup(&["-F", "--keep=1", "--blob-dir=blobs"], T3);
    let now = files(&env, "blobs");
    assert_eq!(store_files(&env).len(), now.len());
    env.run(&["-V", "-r", "repo"], LATE).ok();
    // ZODB's repozo -k removes chains behind our back: our next run
    // removes what only they referred to
    write_blobs(&env, 34, 4, &[]);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    env.backup(&["-F", "--blob-dir=blobs"], T4);
    env.py_repozo(&["-B", "-F", "-k", "-r", "repo", "-f", "Data.fs"], T5)
        .ok();
    write_blobs(&env, 35, 3, &[]);
    env.backup(&["--blob-dir=blobs"], T6);
    let listed = String::from_utf8(env.read(&format!("repo/{T6}.blobs"))).unwrap();
    let listed = listed
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with("missing"))
        .count();
    assert_eq!(store_files(&env).len(), listed);
    let lists: Vec<String> = env
        .repo_names()
        .into_iter()
        .filter(|n| n.ends_with(".blobs"))
        .collect();
    assert_eq!(lists, [format!("{T6}.blobs")], "{:?}", env.repo_names());
}

/// A warm standby refreshed every night keeps working when `--keep` (or
/// `-k`) drops the chain it was recovered from and the revisions only that
/// chain had: the recovery's marker (`.repozo-recovered`) names what it put
/// there, so those files are recognised and removed, not refused.
#[test]
fn a_standby_follows_after_the_chain_it_came_from_is_removed() {
    let env = Env::new();
    write_blobs(&env, 41, 10, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .ok();
    write_blobs(&env, 42, 10, &[]);
    blobtool(&env, &["pack", "Data.fs", "blobs"]).ok();
    env.backup(&["--keep=1", "--blob-dir=blobs"], T2);
    assert!(
        !env.exists(&format!("repo/{T1}.fs")),
        "{:?}",
        env.repo_names()
    );
    let now = save(&env, T2);
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .ok();
    assert_eq!(files(&env, "sb"), now.files);
    assert_eq!(dump_blobs(&env, "sb.fs", "sb"), now.blobs);
    // a file the recoveries did not put there is still refused
    let extra = walkdir::WalkDir::new(env.path("blobs"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.extension().is_some_and(|x| x == "blob"))
        .unwrap();
    let rel = extra.strip_prefix(env.path("blobs")).unwrap();
    let fake = env
        .path("sb")
        .join(rel)
        .with_file_name("0x0000000000000001.blob");
    std::fs::write(&fake, b"put there by hand").unwrap();
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .fails();
    assert!(fake.exists());
}

/// A chain with a backup made without `--blob-dir` (or by ZODB's repozo)
/// cannot recover its blobs: `-V` says so, and the next `-B --blob-dir`
/// starts a new chain that can, instead of extending it.
#[test]
fn a_chain_with_a_backup_without_blobs_is_not_extended_with_blobs() {
    let env = Env::new();
    write_blobs(&env, 51, 6, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    write_blobs(&env, 52, 4, &[]);
    env.backup(&[], T2);
    let o = env.run(&["-V", "-r", "repo"], LATE).fails();
    assert!(
        o.stderr_str()
            .contains(&format!("the backup {T2} was made without --blob-dir")),
        "{}",
        o.describe()
    );
    write_blobs(&env, 53, 4, &[]);
    let o = env.backup(&["-v", "--blob-dir=blobs"], T3);
    assert!(
        o.stderr_str().contains("a full backup starts a chain"),
        "{}",
        o.describe()
    );
    assert!(env.exists(&format!("repo/{T3}.fs")));
    env.run(&["-V", "-r", "repo"], LATE).ok();
    let saved = vec![save(&env, T3)];
    check_recoveries(&env, &saved);
}

/// Blob lists of removed chains go even when no blob was ever stored (a
/// database whose blob directory is still empty): found by the randomized
/// suite (seed 15), where `-F -k --blob-dir` left the old lists behind.
#[test]
fn lists_of_removed_chains_go_without_a_store() {
    let env = Env::with_db(71, 3);
    std::fs::create_dir(env.path("blobs")).unwrap();
    env.write("blobs/.layout", b"bushy");
    env.backup(&["--blob-dir=blobs"], T1);
    assert!(env.exists(&format!("repo/{T1}.blobs")));
    assert!(!env.exists("repo/blobs"));
    env.backup(&["-F", "-k", "--blob-dir=blobs"], T2);
    let lists: Vec<String> = env
        .repo_names()
        .into_iter()
        .filter(|n| n.ends_with(".blobs"))
        .collect();
    assert_eq!(lists, [format!("{T2}.blobs")], "{:?}", env.repo_names());
}
