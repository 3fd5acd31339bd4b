//! `-R --blob-dir` onto a real full disk: a tmpfs mounted in a private
//! mount namespace (`unshare -m`), found by `scripts/faults.py enospc`.
//! Needs root (and `unshare`, `mount`); elsewhere each test says it was
//! skipped and passes.
//!
//! - A recovery into a new blob directory on a tmpfs just big enough for
//!   the new `Data.fs`, its index and its blobs put them all in place,
//!   then failed with "No space left on device": after the `Data.fs` it
//!   rewrote `.repozo-recovered` with the same contents, which needs room
//!   for a temporary copy.
//! - A recovery onto a tmpfs without a size limit (`size=0`) was refused
//!   with "not enough free space ... 0 available": such a file system
//!   reports no blocks at all.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// A `blobtool write` database with its blob directory, backed up with
/// `--blob-dir`.
fn blob_env() -> Env {
    let env = Env::new();
    let mut c = Command::new(python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/blobtool.py"))
        .args(["write", "Data.fs", "blobs", "--seed", "21", "--txns", "10"])
        .current_dir(env.root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    exec(c).ok();
    env.backup(&["--blob-dir=blobs"], T1).ok();
    env
}

/// `-R -r repo -o mnt/out.fs --blob-dir=mnt/out.blobs` with `mnt` a tmpfs
/// of `size` bytes (0: no limit); what the tmpfs held afterwards is copied
/// to `saved/`. None (after saying so) when no tmpfs can be mounted here.
fn recover_into_tmpfs(env: &Env, size: u64) -> Option<Output> {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    std::fs::create_dir(env.path("mnt")).unwrap();
    let script = r#"mount -t tmpfs -o "size=$1" tmpfs mnt || exit 99
"$2" -R -r repo -o mnt/out.fs --blob-dir=mnt/out.blobs
rc=$?
cp -a mnt saved
exit $rc"#;
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(size.to_string())
        .arg(BIN)
        .current_dir(env.root());
    let out = exec(c);
    if matches!(out.code(), Some(99) | None) || out.stderr_str().contains("unshare failed") {
        eprintln!(
            "skipped: cannot mount a tmpfs here: {}",
            out.stderr_str().trim()
        );
        return None;
    }
    Some(out)
}

/// Pages the files below `dir` take on a tmpfs.
fn pages(dir: &Path) -> u64 {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len().div_ceil(page))
        .sum::<u64>()
        * page
}

/// The files below `dir` (relative names) and their bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn recovery_with_blobs_into_a_tmpfs_that_just_fits_succeeds() {
    let env = blob_env();
    // what a recovery on a roomy disk writes
    env.run(
        &[
            "-R",
            "-r",
            "repo",
            "-o",
            "roomy/out.fs",
            "--blob-dir=roomy/out.blobs",
        ],
        LATE,
    )
    .ok();
    let need = pages(&env.path("roomy"));
    let Some(out) = recover_into_tmpfs(&env, need) else {
        return;
    };
    out.ok();
    assert_eq!(
        files(&env.path("saved")),
        files(&env.path("roomy")),
        "the recovery on a tmpfs of {need} bytes differs from the roomy one"
    );
}

#[test]
fn recovery_onto_a_tmpfs_without_a_size_limit() {
    let env = blob_env();
    let Some(out) = recover_into_tmpfs(&env, 0) else {
        return;
    };
    out.ok();
    assert_bytes(
        &env.read("saved/out.fs"),
        &env.read("Data.fs"),
        "recovered Data.fs",
    );
}
