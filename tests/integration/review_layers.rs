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
