//! `-R` and `-V` of an `s3://` repository (issue 18) against a real
//! Garage: a prefix holding the files of a repository (ours with blobs,
//! `-z` and a pruned `.index`; ZODB's with `-z`) recovers every date to the
//! same bytes, `FILE.index` and blob files as the directory does, to a
//! file, to stdout, in place onto an earlier state, with `-w`; `-V` agrees
//! with `-V` of the directory, and a damaged object is found.

use crate::s3::{run_s3, upload};
use crate::util::*;

/// Our chain with blobs (a pruned `.index` in it), then ZODB's `-z` chain.
fn a_repository() -> Env {
    let env = Env::with_db(2101, 10);
    write_blobs(&env, 2102, 3, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    write_blobs(&env, 2103, 2, &[]);
    env.backup(&["--blob-dir=blobs", "--prune-index"], T2);
    write_blobs(&env, 2104, 2, &[]);
    env.backup(&["--blob-dir=blobs", "--prune-index", "-z"], T3);
    env.append(2105, 2);
    env.py_backup(&["-F", "-z"], T4);
    env.append(2106, 2);
    env.py_backup(&["-z"], T5);
    env
}

/// The files under `dir` (recursively) by relative path, with their
/// bytes; empty when there is no `dir`.
pub(crate) fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn files_of(env: &Env, rel: &str) -> Vec<(String, Vec<u8>)> {
    tree(&env.path(rel))
}

#[test]
fn every_date_recovers_from_the_prefix_as_from_the_directory() {
    let env = a_repository();
    let url = "s3://repozo/read-every-date";
    upload(&env.repo(), "read-every-date");
    for date in [T1, T2, T3, T4, T5] {
        let blobs = date <= T3;
        let mut local = vec!["-R", "-r", "repo", "-D", date, "-o", "local.fs"];
        let mut remote = vec!["-R", "-r", url, "-D", date, "-o", "remote.fs"];
        if blobs {
            local.push("--blob-dir=local-blobs");
            remote.push("--blob-dir=remote-blobs");
        }
        env.run(&local, LATE).ok();
        run_s3(&env, &remote, &[]).ok();
        assert_bytes(&env.read("remote.fs"), &env.read("local.fs"), date);
        assert_bytes(
            &env.read("remote.fs.index"),
            &env.read("local.fs.index"),
            &format!("{date} index"),
        );
        assert_eq!(
            files_of(&env, "remote-blobs"),
            files_of(&env, "local-blobs"),
            "{date} blobs"
        );
        // with -w, and to stdout
        remote.push("-w");
        run_s3(&env, &remote, &[]).ok();
        assert_bytes(&env.read("remote.fs"), &env.read("local.fs"), date);
        let o = run_s3(&env, &["-R", "-r", url, "-D", date], &[]).ok();
        assert_bytes(&o.stdout, &env.read("local.fs"), &format!("{date} stdout"));
        for f in ["local.fs", "remote.fs", "local.fs.index", "remote.fs.index"] {
            env.remove(f);
        }
    }
    // the newest state; and ZODB's repozo recovers the same bytes from
    // the directory
    run_s3(&env, &["-R", "-r", url, "-o", "new.fs"], &[]).ok();
    let py = env.py_recover("py.fs", &[]);
    assert_bytes(&env.read("new.fs"), &py, "newest");
    env.open_with_index("new.fs");
}

#[test]
fn recovery_in_place_extends_an_earlier_state_from_the_prefix() {
    let env = Env::with_db(2111, 8);
    env.backup(&[], T1);
    env.append(2112, 2);
    env.backup(&[], T2);
    env.append(2113, 2);
    env.backup(&["-z"], T3);
    let url = "s3://repozo/read-in-place";
    upload(&env.repo(), "read-in-place");
    run_s3(&env, &["-R", "-r", url, "-D", T1, "-o", "out.fs"], &[]).ok();
    let before = env.read("out.fs").len();
    for quick in [false, true] {
        let mut args = vec!["-R", "-r", url, "-o", "out.fs", "-w"];
        if quick {
            args.push("-Q");
        }
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(env.path("out.fs")).unwrap().ino();
        run_s3(&env, &args, &[]).ok();
        let same = std::fs::metadata(env.path("out.fs")).unwrap().ino() == ino;
        assert!(same, "out.fs was extended in place, not replaced");
        assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "in place");
        env.open_with_index("out.fs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(env.path("out.fs"))
            .unwrap()
            .set_len(before as u64)
            .unwrap();
    }
}

#[test]
fn verify_of_the_prefix_agrees_with_the_directory_and_finds_damage() {
    let env = a_repository();
    upload(&env.repo(), "read-verify");
    let url = "s3://repozo/read-verify";
    env.run(&["-V", "-r", "repo"], LATE).ok();
    let o = run_s3(&env, &["-V", "-r", url], &[]).ok();
    let o2 = run_s3(&env, &["-V", "-Q", "-r", url], &[]).ok();
    assert!(o.code() == Some(0) && o2.code() == Some(0));
    // one byte of the newest increment flipped, in the bucket
    let name = format!("{T5}.deltafsz");
    env.flip_byte(&format!("repo/{name}"), 40);
    upload(&env.repo(), "read-verify-damaged");
    let url = "s3://repozo/read-verify-damaged";
    let e = run_s3(&env, &["-V", "-r", url], &[]).fails().stderr_str();
    assert!(e.contains(&name), "{e}");
    let e = run_s3(&env, &["-R", "-r", url, "-o", "out.fs", "-w"], &[])
        .fails()
        .stderr_str();
    assert!(e.contains(&name), "{e}");
    assert!(!env.exists("out.fs") && !env.exists("out.fs.part"));
    // a missing increment
    let env2 = a_repository();
    env2.remove(&format!("repo/{T5}.deltafsz"));
    upload(&env2.repo(), "read-verify-missing");
    let e = run_s3(&env2, &["-V", "-r", "s3://repozo/read-verify-missing"], &[])
        .fails()
        .stderr_str();
    assert!(e.contains("is missing"), "{e}");
    let e = run_s3(
        &env2,
        &[
            "-R",
            "-r",
            "s3://repozo/read-verify-missing",
            "-o",
            "out.fs",
        ],
        &[],
    )
    .fails()
    .stderr_str();
    assert!(e.contains(&format!("{T5}.deltafsz")), "{e}");
}
