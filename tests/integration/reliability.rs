//! Issue 6: the ways ZODB's repozo loses data (R1–R4 in
//! `shared/RELIABILITY.md`), pinned one regression test each, plus the
//! repository lock, torn `.dat` lines and planted symlinks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::util::*;

/// R1: ZODB's repozo wrote a full backup and an increment in the same
/// second. Recovery must use the full first and the increment after it.
#[test]
fn r1_same_second_pair_from_zodb_recovers_everything() {
    let env = Env::with_db(601, 20);
    env.py_backup(&[], T1);
    env.append(602, 3);
    env.py_backup(&["-Q"], T1);
    assert!(env.exists(&format!("repo/{T1}.fs")) && env.exists(&format!("repo/{T1}.deltafs")));
    let out = env.recover("out.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "same-second pair");
    let out = env.recover("out2.fs", &["-D", T1, "-w"]);
    assert_bytes(&out, &env.read("Data.fs"), "same-second pair at -D");
    // our next backup in that same second is named after it and extends it
    env.append(603, 2);
    let o = env.backup(&["-Q", "-v"], T1);
    assert!(
        o.stderr_str().contains("naming this one"),
        "{}",
        o.stderr_str()
    );
    assert!(
        env.exists("repo/2026-11-20-01-00-01.deltafs"),
        "{:?}",
        env.repo_names()
    );
    env.assert_recovers_source();
}

/// R1 with our tool alone: three backups in one frozen second.
#[test]
fn r1_backups_in_one_second_get_increasing_stamps() {
    let env = Env::with_db(611, 20);
    env.backup(&[], T1);
    for (i, seed) in [612u64, 613].into_iter().enumerate() {
        env.append(seed, 2);
        env.backup(&["-Q"], T1);
        let name = format!("repo/2026-11-20-01-00-0{}.deltafs", i + 1);
        assert!(env.exists(&name), "{name} in {:?}", env.repo_names());
    }
    env.assert_recovers_source();
    // ZODB's repozo (with a late "now") recovers it too
    let out = env.py_recover("py.fs", &[]);
    assert_bytes(&out, &env.read("Data.fs"), "ZODB's recovery");
}

/// A Python child that holds an flock on the repository's lock file until
/// killed.
struct LockHolder(Child);

impl LockHolder {
    fn new(env: &Env, exclusive: bool) -> LockHolder {
        let mode = if exclusive { "LOCK_EX" } else { "LOCK_SH" };
        let code = format!(
            "import fcntl, sys, time\n\
             f = open('repo/{LOCK_NAME}', 'a')\n\
             fcntl.flock(f, fcntl.{mode})\n\
             print('locked', flush=True)\n\
             time.sleep(60)\n"
        );
        let mut child = Command::new(python())
            .current_dir(env.root())
            .args(["-c", &code])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// R2: overlapping runs. A backup needs the repository to itself; recovery
/// and verification can share it with each other, not with a backup.
#[test]
fn r2_repository_lock() {
    let env = Env::with_db(621, 15);
    env.backup(&[], T1);
    env.append(622, 2);
    let before = env.repo_snapshot();
    {
        let _held = LockHolder::new(&env, true);
        let e = env
            .run(&["-B", "-r", "repo", "-f", "Data.fs"], T2)
            .error("repo");
        assert!(e.contains("repository locked"), "{e}");
        env.run(&["-V", "-r", "repo"], LATE)
            .error("repository locked");
        env.run(&["-R", "-r", "repo", "-o", "out.fs"], LATE)
            .error("repository locked");
        assert!(!env.exists("out.fs") && !env.exists("out.fs.part"));
    }
    assert_same(
        &env.repo_snapshot(),
        &before,
        "nothing changed while locked",
    );
    {
        let _held = LockHolder::new(&env, false);
        env.run(&["-V", "-r", "repo"], LATE).ok();
        env.recover("out.fs", &[]);
        env.run(&["-B", "-r", "repo", "-f", "Data.fs"], T2)
            .error("repository locked");
    }
    // a lock holder that died leaves nothing behind
    env.backup(&[], T2);
    env.assert_recovers_source();
}

/// R2: temporary files are unique and never look like backups; none is
/// left after a run.
#[test]
fn r2_no_shared_temporary_name() {
    let env = Env::with_db(625, 15);
    // ZODB's fixed temporary name, planted as a symlink to a victim
    env.write("victim", b"precious");
    std::os::unix::fs::symlink(env.path("victim"), env.path("repo/tmp.tmp")).unwrap();
    env.backup(&["-z"], T1);
    env.append(626, 2);
    env.backup(&["-Q"], T2);
    assert_eq!(env.read("victim"), b"precious");
    for name in env.repo_names() {
        assert!(!name.starts_with(".repozo-tmp-"), "left over: {name}");
    }
    env.assert_recovers_source();
}

fn drop_last_dat_line(env: &Env, stamp: &str) {
    let rel = format!("repo/{stamp}.dat");
    let text = String::from_utf8(env.read(&rel)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    env.write(&rel, format!("{}\n", lines.join("\n")).as_bytes());
}

/// R3: an increment published but never recorded in the `.dat` (a crash
/// between the rename and the append) is an orphan: recovery ignores it,
/// `-V` reports it, and the next backup sets it aside instead of adding an
/// overlapping increment after it.
#[test]
fn r3_orphan_increment() {
    for quick in [true, false] {
        let env = Env::with_db(631, 20);
        env.backup(&[], T1);
        let state1 = env.read("Data.fs");
        env.append(632, 3);
        env.backup(&[], T2);
        drop_last_dat_line(&env, T1);
        let orphan = format!("repo/{T2}.deltafs");
        let e = env.run(&["-V", "-r", "repo"], LATE).fails().stderr_str();
        assert!(e.contains(&orphan) && e.contains("orphan"), "{e}");
        // recovery ignores the orphan: the state of the first backup
        let out = env.recover("old.fs", &[]);
        assert_bytes(&out, &state1, "recovery without the orphan");
        env.append(633, 2);
        let flags: &[&str] = if quick { &["-Q", "-v"] } else { &["-v"] };
        let o = env.backup(flags, T3);
        assert!(
            o.stderr_str().contains("setting aside"),
            "{}",
            o.stderr_str()
        );
        assert!(!env.exists(&orphan) && env.exists(&format!("{orphan}.orphaned")));
        env.assert_recovers_source();
        // ZODB's repozo, which goes by the directory listing, agrees now
        let out = env.py_recover("py.fs", &[]);
        assert_bytes(&out, &env.read("Data.fs"), "ZODB's recovery");
    }
}

/// A crash in the middle of appending a `.dat` line: the torn line does
/// not count, `-V` reports it, and the next backup repairs the `.dat`.
#[test]
fn torn_dat_line() {
    let env = Env::with_db(641, 20);
    env.backup(&[], T1);
    let state1 = env.read("Data.fs");
    env.append(642, 3);
    env.backup(&["-Q"], T2);
    let rel = format!("repo/{T1}.dat");
    let full = env.read(&rel);
    let torn = &full[..full.len() - 20];
    env.write(&rel, torn);
    let e = env.run(&["-V", "-r", "repo"], LATE).fails().stderr_str();
    assert!(e.contains("torn"), "{e}");
    let out = env.recover("old.fs", &[]);
    assert_bytes(&out, &state1, "recovery ignores the torn line");
    env.append(643, 2);
    let o = env.backup(&["-Q", "-v"], T3);
    assert!(o.stderr_str().contains("repairing"), "{}", o.stderr_str());
    let text = String::from_utf8(env.read(&rel)).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 2, "{text}");
    env.assert_recovers_source();
}

/// A last `.dat` line that lost only its newline still counts; the next
/// append adds the newline first instead of gluing two lines together.
#[test]
fn dat_without_final_newline() {
    let env = Env::with_db(645, 20);
    env.backup(&[], T1);
    let rel = format!("repo/{T1}.dat");
    let full = env.read(&rel);
    env.write(&rel, &full[..full.len() - 1]);
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.append(646, 2);
    env.backup(&["-Q"], T2);
    let text = String::from_utf8(env.read(&rel)).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    env.assert_recovers_source();
    let out = env.py_recover("py.fs", &["-w"]);
    assert_bytes(&out, &env.read("Data.fs"), "ZODB's recovery");
}

/// R4: a failed recovery leaves the old output file, and a symlink planted
/// at `FILE.part` is replaced, never written through.
#[test]
fn r4_old_output_survives_and_no_write_through_symlinks() {
    let env = Env::with_db(651, 20);
    env.backup(&[], T1);
    env.append(652, 2);
    env.backup(&["-Q"], T2);
    env.write("out.fs", b"old output");
    env.write("victim", b"precious");
    std::os::unix::fs::symlink(env.path("victim"), env.path("out.fs.part")).unwrap();
    env.flip_byte(&format!("repo/{T2}.deltafs"), 10);
    env.run(&["-R", "-r", "repo", "-o", "out.fs", "-w"], LATE)
        .error(&format!("{T2}.deltafs"));
    assert_eq!(env.read("out.fs"), b"old output");
    assert_eq!(env.read("victim"), b"precious");
    assert!(!env.exists("out.fs.part"));
    env.flip_byte(&format!("repo/{T2}.deltafs"), 10);
    std::os::unix::fs::symlink(env.path("victim"), env.path("out.fs.part")).unwrap();
    let out = env.recover("out.fs", &["-w"]);
    assert_bytes(&out, &env.read("Data.fs"), "recovered");
    assert_eq!(env.read("victim"), b"precious");
}

/// A writer commits transactions while backups run: every backup holds
/// whole committed transactions, and the chain recovers a file ZODB opens.
#[test]
fn backups_while_a_writer_commits() {
    let env = Env::with_db(661, 10);
    let writer = Command::new(python())
        .current_dir(env.root())
        .args([
            "-c",
            "import subprocess, sys, time\n\
             for i in range(25):\n    \
                 subprocess.run([sys.executable, sys.argv[1], 'append', 'Data.fs', '--seed', str(700 + i), '--txns', '2'], check=True)\n",
        ])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/zodbtool.py"),
        )
        .spawn()
        .unwrap();
    backups_while(&env, writer);
}

/// A pack replaces the source (a new file renamed over it) while a backup
/// copies it: the backup notices, keeps nothing, and says so; the next one
/// decides again. Needs strace, to slow the copy down.
#[test]
fn source_replaced_during_a_backup() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: skipped");
        return;
    }
    for quick in [false, true] {
        let env = Env::with_db(671, 20);
        env.backup(&[], T1);
        env.append(672, 3);
        let before = env.repo_snapshot();
        let mut cmd = Command::new("strace");
        cmd.current_dir(env.root())
            .env("REPOZO_TEST_NOW", T2)
            .args(["-f", "-o", "/dev/null", "-P"])
            .arg(env.path("Data.fs"))
            .args([
                "-e",
                "inject=pread64:delay_enter=1500000:when=2",
                BIN,
                "-B",
                "-r",
                "repo",
                "-f",
                "Data.fs",
            ]);
        if quick {
            cmd.arg("-Q");
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        // what a pack does at its end: a new file renamed over the old one
        std::fs::copy(env.path("Data.fs"), env.path("Data.fs.pack")).unwrap();
        std::fs::rename(env.path("Data.fs.pack"), env.path("Data.fs")).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "quick={quick}: {err}");
        assert!(err.contains("was replaced"), "{err}");
        assert_same(&env.repo_snapshot(), &before, "nothing kept");
        env.backup(&["-Q"], T3);
        env.assert_recovers_source();
    }
}

/// A writer that commits some transactions and aborts others after their
/// data reached the file (ZODB then truncates the file back): every backup
/// holds whole committed transactions only.
#[test]
fn backups_while_a_writer_commits_and_aborts() {
    let env = Env::with_db(681, 10);
    let code = "import os, sys, time, transaction\n\
                from ZODB.FileStorage import FileStorage\n\
                from ZODB.utils import z64, p64\n\
                from ZODB.Connection import TransactionMetaData\n\
                fs = FileStorage('Data.fs')\n\
                big = os.urandom(300000)\n\
                for i in range(60):\n    \
                    t = TransactionMetaData(description='writer %d' % i)\n    \
                    fs.tpc_begin(t)\n    \
                    oid = fs.new_oid()\n    \
                    fs.store(oid, z64, b'(c__builtin__\\nbytes\\nq\\x00)R.' + big, '', t)\n    \
                    fs.tpc_vote(t)\n    \
                    if i % 3 == 0:\n        \
                        fs.tpc_abort(t)\n    \
                    else:\n        \
                        fs.tpc_finish(t)\n    \
                    time.sleep(0.01)\n\
                fs.close()\n";
    let writer = Command::new(python())
        .current_dir(env.root())
        .args(["-c", code])
        .spawn()
        .unwrap();
    backups_while(&env, writer);
}

/// Files set aside as orphans go with their chain under `-k` and `--keep`.
#[test]
fn orphans_set_aside_are_pruned_with_their_chain() {
    for prune in [&["-F", "-k"][..], &["-F", "--keep", "1"][..]] {
        let env = Env::with_db(691, 15);
        env.backup(&[], T1);
        env.append(692, 2);
        env.backup(&[], T2);
        drop_last_dat_line(&env, T1);
        env.append(693, 2);
        env.backup(&["-Q"], T3);
        let orphan = format!("repo/{T2}.deltafs.orphaned");
        assert!(env.exists(&orphan), "{:?}", env.repo_names());
        env.append(694, 2);
        env.backup(prune, T4);
        let names = env.repo_names();
        assert!(
            names.iter().all(|n| n.starts_with(T4)),
            "{prune:?}: {names:?}"
        );
        env.assert_recovers_source();
    }
}

/// Back up (with and without -Q) while `writer` changes the source: every
/// recovery is a committed prefix of the source that ZODB opens with its
/// index; after the writer, the repository recovers the source.
#[track_caller]
fn backups_while(env: &Env, mut writer: std::process::Child) {
    for (i, now) in [T1, T2, T3, T4, T5, T6].iter().enumerate() {
        let flags: &[&str] = if i % 2 == 0 { &["-Q"] } else { &[] };
        env.backup(flags, now);
        let out = env.recover("live.fs", &[]);
        // ZODB finds the committed end at the file's length
        assert_eq!(env.committed_size("live.fs"), out.len() as u64);
        // committed bytes never change afterwards, aborts or not
        assert!(
            env.read("Data.fs").starts_with(&out),
            "a prefix of the source"
        );
        env.open_with_index("live.fs");
    }
    assert!(writer.wait().unwrap().success());
    env.backup(&["-Q"], "2026-11-23-00-00-00");
    env.assert_recovers_source();
}
