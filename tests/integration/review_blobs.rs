//! Review of `--blob-dir` (break-it round): each test reproduces a case
//! where the blob support failed a promise, and fails before its fix.

use std::process::Command;

use crate::util::*;

/// The committed blob files of a blob directory: `oid tid size`.
fn files(env: &Env, dir: &str) -> String {
    blobtool(env, &["files", dir]).ok().stdout_str()
}

fn have_strace() -> bool {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: skipped");
        return false;
    }
    true
}

/// A first `-R --blob-dir` into a new directory that stops (killed, or an
/// error such as a full disk) after creating `DIR/tmp` but before `DIR/.layout`
/// is in place left a directory that every later run refused ("not empty
/// and not an earlier recovery"): the user had to remove it by hand. Such a
/// start (an empty `tmp/` and our temporaries) is now started afresh;
/// anything else in it is still refused (repro-blobs/04).
#[test]
fn a_first_recovery_stopped_before_its_layout_is_completed_by_the_next() {
    let env = Env::new();
    write_blobs(&env, 11, 6, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    let want = (dump_blobs(&env, "Data.fs", "blobs"), files(&env, "blobs"));
    // the state a kill leaves (as strace -e inject=write:signal=KILL:when=1)
    std::fs::create_dir_all(env.path("sb/tmp")).unwrap();
    env.write("sb/.repozo-tmp-1-0-00000000", b"");
    env.run(&["-R", "-r", "repo", "-o", "sb.fs", "--blob-dir=sb"], LATE)
        .ok();
    assert_eq!((dump_blobs(&env, "sb.fs", "sb"), files(&env, "sb")), want);
    assert!(!env.exists("sb/.repozo-tmp-1-0-00000000"));
    // and with a real kill, when strace is there
    if have_strace() {
        for call in ["write", "fsync", "rename"] {
            let _ = std::fs::remove_dir_all(env.path("sk"));
            let mut cmd = Command::new("strace");
            cmd.current_dir(env.root())
                .env("REPOZO_TEST_NOW", LATE)
                .args(["-f", "-o", "/dev/null", "-e"])
                .arg(format!("inject={call}:signal=KILL:when=1"))
                .arg(BIN)
                .args(["-R", "-r", "repo", "-o", "sk.fs", "--blob-dir=sk"]);
            exec(cmd);
            env.run(&["-R", "-r", "repo", "-o", "sk.fs", "--blob-dir=sk"], LATE)
                .ok();
            assert_eq!(
                (dump_blobs(&env, "sk.fs", "sk"), files(&env, "sk")),
                want,
                "{call}"
            );
        }
    }
    // a tmp/ holding something, or another file: still refused, untouched
    for (dir, what) in [("x1", "tmp/stray"), ("x2", "notes.txt")] {
        std::fs::create_dir_all(env.path(&format!("{dir}/tmp"))).unwrap();
        env.write(&format!("{dir}/{what}"), b"mine");
        let o = env
            .run(
                &[
                    "-R",
                    "-r",
                    "repo",
                    "-o",
                    "x.fs",
                    &format!("--blob-dir={dir}"),
                ],
                LATE,
            )
            .fails();
        assert!(
            o.stderr_str().contains("refusing to touch it"),
            "{}",
            o.describe()
        );
        assert!(env.exists(&format!("{dir}/{what}")));
        assert!(!env.exists(&format!("{dir}/.layout")));
    }
}

/// A blob list naming sizes whose sum passes 2^64 (damaged, or written by
/// hand) made `-L` panic ("attempt to add with overflow") in debug builds
/// and print a wrapped total in release builds; `-V` reports the list's
/// revisions as missing. The total now saturates (repro-blobs/06).
#[test]
fn absurd_sizes_in_a_blob_list_never_overflow() {
    let env = Env::new();
    write_blobs(&env, 11, 3, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    let max = u64::MAX;
    env.write(
        &format!("repo/{T1}.blobs"),
        format!(
            "repozo-blobs 1 bushy\n0x01 0x02 {max} 0123456789abcdef0123456789abcdef\n\
             0x01 0x03 {max} 0123456789abcdef0123456789abcdef\n"
        )
        .as_bytes(),
    );
    let o = env.run(&["-L", "-r", "repo"], LATE).ok();
    assert!(
        o.stdout_str().contains(&format!("blobs: 2 ({max} bytes)")),
        "{}",
        o.describe()
    );
    env.run(&["-L", "--json", "-r", "repo"], LATE).ok();
    let o = env.run(&["-V", "-r", "repo"], LATE).fails();
    assert!(o.stderr_str().contains("is missing"), "{}", o.describe());
}

/// A backup killed after renaming its new revisions into the store but
/// before the `syncfs` that makes the renames durable left them in the
/// store, named by no list. The next backup reused them and, having
/// nothing new to copy, published its blob list without any `syncfs`: a
/// power loss could then leave a committed list naming revisions that
/// are not in the store. A `syncfs` now comes before the list is
/// published (repro-blobs/08).
#[test]
fn revisions_left_by_a_killed_backup_are_made_durable_before_a_list_names_them() {
    if !have_strace() {
        return;
    }
    let env = Env::new();
    write_blobs(&env, 1, 6, &[]);
    let mut cmd = Command::new("strace");
    cmd.current_dir(env.root())
        .env("REPOZO_TEST_NOW", T1)
        .args(["-f", "-o", "/dev/null", "-e"])
        .arg("inject=syncfs:signal=KILL:when=2")
        .arg(BIN)
        .args(["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir=blobs"]);
    exec(cmd);
    assert!(env.path("repo/blobs").is_dir(), "{:?}", env.repo_names());
    assert!(!env.exists(&format!("repo/{T1}.blobs")));
    let mut cmd = Command::new("strace");
    cmd.current_dir(env.root())
        .env("REPOZO_TEST_NOW", T2)
        .args(["-f", "-o", "trace", "-e", "trace=syncfs,rename"])
        .arg(BIN)
        .args(["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir=blobs"]);
    exec(cmd).ok();
    let trace = String::from_utf8(env.read("trace")).unwrap();
    let list = trace
        .find(&format!("{T2}.blobs\""))
        .expect("the list is renamed into place");
    assert!(trace[..list].contains("syncfs("), "{trace}");
    env.run(&["-V", "-r", "repo"], LATE).ok();
}
