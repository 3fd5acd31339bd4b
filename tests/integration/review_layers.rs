//! Review of the "layers" reshaping (behaviour must not change): each test
//! reproduces a difference between the binary before the reshaping and the
//! one after it, and fails on the latter before its fix.

use std::process::Command;

use crate::util::*;

fn have_strace() -> bool {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: skipped");
        return false;
    }
    true
}

/// `repozo ARGS` at `now` under strace, with the given `-e inject=...`
/// specifications.
fn run_injected(env: &Env, injects: &[&str], args: &[&str], now: &str) -> Output {
    let mut cmd = Command::new("strace");
    cmd.current_dir(env.root())
        .env("REPOZO_TEST_NOW", now)
        .args(["-f", "-o", "/dev/null"]);
    for i in injects {
        cmd.args(["-e", i]);
    }
    cmd.arg(BIN).args(args);
    exec(cmd)
}

/// Where renameat2 cannot refuse to replace (EINVAL: a file system without
/// RENAME_NOREPLACE), the data file is published by link + unlink; when
/// that unlink fails, the backup fails, and the data file it linked into
/// place must be taken back, as before the reshaping. Left there, a full
/// backup without its `.dat` became the newest chain: -V failed and -R
/// recovered the uncommitted backup (repro/01.sh); an increment stayed as
/// an orphan.
#[test]
fn failed_link_fallback_takes_the_data_file_back() {
    if !have_strace() {
        return;
    }
    for extra in [&["-F"][..], &["-Q"][..], &["-z"][..]] {
        let env = Env::with_db(1401, 15);
        env.backup(&[], T1);
        env.append(1402, 3);
        let before = env.repo_snapshot();
        let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        args.extend_from_slice(extra);
        run_injected(
            &env,
            &[
                "inject=renameat2:error=EINVAL:when=1",
                "inject=unlink:error=EIO:when=1",
            ],
            &args,
            T2,
        )
        .fails();
        assert_same(&env.repo_snapshot(), &before, &format!("{extra:?}"));
        env.run(&["-V", "-r", "repo"], T2).ok();
        env.backup(&["-Q"], T3);
        env.assert_recovers_source();
    }
}

/// `-o` naming a device or a pipe (`-o /dev/null`, a FIFO, a symbolic link
/// to one) is written into as a stream, as ZODB's repozo writes into it; it
/// was replaced by a regular file (a `.part` renamed over the device node).
#[test]
fn a_device_or_pipe_output_is_written_into_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let env = Env::with_db(41, 4);
    env.backup(&[], T1);
    let want = env.read("Data.fs");
    let fifo = env.path("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("pipe", env.path("link")).unwrap();
    for name in ["pipe", "link"] {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        env.run(&["-R", "-r", "repo", "-o", name], LATE).ok();
        assert_bytes(&reader.join().unwrap(), &want, name);
        let meta = std::fs::symlink_metadata(env.path(name)).unwrap();
        assert!(
            meta.file_type().is_fifo() || meta.file_type().is_symlink(),
            "{name} was replaced"
        );
        assert!(!env.exists(&format!("{name}.index")));
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // and never as a blob recovery's file
    let o = env
        .run(&["-R", "-r", "repo", "-o", "pipe", "--blob-dir=b"], LATE)
        .fails();
    assert!(
        o.stderr_str().contains("is a device or a pipe"),
        "{}",
        o.describe()
    );
}
