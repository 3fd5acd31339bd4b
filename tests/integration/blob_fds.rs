//! `-B --blob-dir` of more new blob revisions than the process may have
//! files open: the store kept every pending temporary open until they were
//! synced together (up to 1 GiB of them), so a first backup of a few
//! thousand small blobs failed with "Too many open files" under the usual
//! limit of 1024 (found by scripts/bench-blobs.sh).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::util::*;

#[test]
fn more_new_blob_revisions_than_open_files_allowed() {
    let env = Env::new();
    let mut c = Command::new(python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/blobtool.py"))
        .args(["write", "Data.fs", "blobs", "--seed", "7", "--txns", "200"])
        .current_dir(env.root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    exec(c).ok();
    let mut c = repozo_cmd(
        env.root(),
        &["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir=blobs"],
        T1,
    );
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 40,
                rlim_max: 40,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    exec(c).ok();
    let stored = walkdir::WalkDir::new(env.repo().join("blobs"))
        .min_depth(2)
        .into_iter()
        .count();
    assert!(stored > 60, "only {stored} revisions stored");
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.run(
        &["-R", "-r", "repo", "-o", "out.fs", "--blob-dir=out-blobs"],
        LATE,
    )
    .ok();
    assert_bytes(
        &env.read("out.fs"),
        &env.read("Data.fs"),
        "recovered Data.fs",
    );
}
