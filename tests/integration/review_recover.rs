//! Issue 19, cases 2, 3, 4 and 13 and the `-R -w` promise: recovery onto
//! an existing FILE (a warm standby) never skips a check a full recovery
//! makes, never writes into a file of the repository, and falls back to a
//! full recovery whenever FILE cannot be extended.

use std::path::Path;
use std::process::Command;

use crate::util::*;

const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

fn z(gzip: bool) -> &'static [&'static str] {
    if gzip {
        &["-z"]
    } else {
        &[]
    }
}

fn ext(gzip: bool, full: bool) -> &'static str {
    match (gzip, full) {
        (false, true) => "fs",
        (true, true) => "fsz",
        (false, false) => "deltafs",
        (true, false) => "deltafsz",
    }
}

#[track_caller]
fn recover_v(env: &Env, out: &str, extra: &[&str]) -> String {
    let mut args = vec!["-R", "-v", "-r", "repo", "-o", out];
    args.extend_from_slice(extra);
    env.run(&args, LATE).ok().stderr_str()
}

/// Offsets to damage in a file of `len` bytes: the issue's 20000 when the
/// file is that long, near the start, the middle and near the end.
fn offsets(len: usize) -> Vec<usize> {
    let mut v = vec![100.min(len / 3), len / 2, len - 10];
    if len > 20000 {
        v.push(20000);
    }
    v.sort();
    v.dedup();
    v
}

// -- case 2 -------------------------------------------------------------------

/// `-R -Q -o FILE` checks the last range FILE covers that holds bytes: an
/// empty increment (ZODB's repozo writes one when only an unfinished
/// transaction was appended) matches anything, so checking it let a
/// damaged standby pass as up to date.
#[test]
fn quick_recovery_skips_empty_ranges() {
    for gzip in [false, true] {
        for by_hand in [false, true] {
            let env = Env::with_db(1901, 20);
            env.backup(&[z(gzip), &["-Q"]].concat(), T1);
            env.recover("out.fs", &[]);
            let end = env.read("out.fs").len();
            if by_hand {
                // what ZODB's repozo writes: an empty file and its line
                let name = format!("{T2}.{}", ext(gzip, false));
                let bytes = if gzip {
                    let o = Command::new(python())
                        .args([
                            "-c",
                            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(b''))",
                        ])
                        .output()
                        .unwrap();
                    o.stdout
                } else {
                    Vec::new()
                };
                env.write(&format!("repo/{name}"), &bytes);
                let mut dat = env.read(&format!("repo/{T1}.dat"));
                dat.extend_from_slice(format!("repo/{name} {end} {end} {EMPTY_MD5}\n").as_bytes());
                env.write(&format!("repo/{T1}.dat"), &dat);
            } else {
                env.partial("c");
                env.py_backup(&[z(gzip), &["-Q"]].concat(), T2);
            }
            let dat = String::from_utf8(env.read(&format!("repo/{T1}.dat"))).unwrap();
            let last = dat.lines().last().unwrap().to_string();
            assert!(
                last.ends_with(&format!(" {end} {end} {EMPTY_MD5}")),
                "premise: an empty increment: {last}"
            );
            let want = env.recover("fresh.fs", &["-F"]);
            for off in offsets(end) {
                let what = format!("gzip {gzip}, by hand {by_hand}, offset {off}");
                env.recover("out.fs", &["-F"]);
                env.flip_byte("out.fs", off);
                let err = recover_v(&env, "out.fs", &["-Q"]);
                assert!(err.contains("recovering in full"), "{what}: {err}");
                assert_bytes(&env.read("out.fs"), &want, &what);
            }
            // and after a later increment: still the full's range is checked
            env.append(1902, 3);
            env.backup(&[z(gzip), &["-Q"]].concat(), T3);
            env.recover("out.fs", &["-D", T2, "-F"]);
            env.flip_byte("out.fs", end / 2);
            let err = recover_v(&env, "out.fs", &["-Q"]);
            assert!(err.contains("recovering in full"), "gzip {gzip}: {err}");
            assert_bytes(
                &env.read("out.fs"),
                &env.read("Data.fs"),
                "after a later increment",
            );
            // an undamaged standby is still extended
            env.recover("out.fs", &["-D", T2, "-F"]);
            let err = recover_v(&env, "out.fs", &["-Q"]);
            assert!(err.contains("appending 1 more"), "gzip {gzip}: {err}");
            assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "extended");
            env.open_with_index("out.fs");
        }
    }
}

// -- case 3 -------------------------------------------------------------------

/// A FILE that is a hard link to the full backup (or has any other name)
/// is replaced by a full recovery, never extended: the repository's file
/// and every other name keep their bytes.
#[test]
fn hard_linked_output_is_replaced_not_extended() {
    for gzip in [false, true] {
        let env = Env::with_db(1910, 20);
        // a plain full backup (the one a standby can be a link to), then
        // increments with or without -z
        env.backup(&["-Q"], T1);
        std::fs::create_dir(env.path("standby")).unwrap();
        std::fs::hard_link(
            env.path(&format!("repo/{T1}.fs")),
            env.path("standby/Data.fs"),
        )
        .unwrap();
        env.append(1911, 3);
        env.backup(&[z(gzip), &["-Q"]].concat(), T2);
        let repo_before = env.repo_snapshot();
        for flags in [&[][..], &["-w"], &["-Q"]] {
            let err = recover_v(&env, "standby/Data.fs", flags);
            assert!(
                err.contains("hard link") && err.contains("recovering in full"),
                "{flags:?}: {err}"
            );
            assert_same(&env.repo_snapshot(), &repo_before, "the repository");
            assert_bytes(
                &env.read("standby/Data.fs"),
                &env.read("Data.fs"),
                "standby",
            );
            env.run(&["-V", "-r", "repo"], LATE).ok();
            // link it again for the next round
            env.remove("standby/Data.fs");
            std::fs::hard_link(
                env.path(&format!("repo/{T1}.fs")),
                env.path("standby/Data.fs"),
            )
            .unwrap();
        }
        env.py_repozo(&["-V", "-r", "repo"], LATE).ok();

        // a standby with another name outside the repository (a snapshot
        // made with `cp -l`): the other name keeps the old state
        env.remove("standby/Data.fs");
        env.recover("standby/Data.fs", &[]);
        std::fs::hard_link(env.path("standby/Data.fs"), env.path("snapshot.fs")).unwrap();
        let old = env.read("snapshot.fs");
        env.append(1912, 2);
        env.backup(&[z(gzip), &["-Q"]].concat(), T3);
        let err = recover_v(&env, "standby/Data.fs", &[]);
        assert!(err.contains("2 hard links"), "{err}");
        assert_bytes(&env.read("snapshot.fs"), &old, "the other name");
        assert_bytes(
            &env.read("standby/Data.fs"),
            &env.read("Data.fs"),
            "standby",
        );
        env.open_with_index("standby/Data.fs");
    }
}

/// `-o` naming a file in the repository directory (the newest full
/// backup, by any path) is refused before anything is written: extended
/// or replaced, the backup would be lost.
#[test]
fn output_in_the_repository_is_refused() {
    for gzip in [false, true] {
        let env = Env::with_db(1920, 20);
        env.backup(z(gzip), T1);
        env.append(1921, 3);
        env.backup(&[z(gzip), &["-Q"]].concat(), T2);
        // the newest chain's full backup
        env.backup(&[z(gzip), &["-F"]].concat(), T3);
        std::os::unix::fs::symlink("repo", env.path("link")).unwrap();
        let before = (env.snapshot(""), env.repo_snapshot());
        let full = format!("{T3}.{}", ext(gzip, true));
        let old = format!("{T1}.{}", ext(gzip, true));
        for out in [
            format!("repo/{full}"),
            format!("repo/../repo/{full}"),
            format!("link/{full}"),
            format!("{}/repo/{full}", env.root().display()),
            format!("repo/{old}"),
            format!("repo/{T3}.index"),
            format!("repo/{T3}"),
            "repo/new.fs".to_string(),
        ] {
            for flags in [&[][..], &["-w"], &["-F"], &["-Q"], &["-D", T2]] {
                let mut args = vec!["-R", "-r", "repo", "-o", &out];
                args.extend_from_slice(flags);
                let line = env.run(&args, LATE).error("repository");
                assert!(line.contains(&out), "{line}");
                let what = format!("-o {out} {flags:?}");
                assert_same(&env.snapshot(""), &before.0, &what);
                assert_same(&env.repo_snapshot(), &before.1, &what);
            }
        }
        env.run(&["-V", "-r", "repo"], LATE).ok();
        // a subdirectory is not the repository
        std::fs::create_dir(env.path("repo/restore")).unwrap();
        env.recover("repo/restore/Data.fs", &[]);
        assert_bytes(
            &env.read("repo/restore/Data.fs"),
            &env.read("Data.fs"),
            "restore",
        );
    }
}

// -- case 4 and the -w promise ----------------------------------------------

/// A repository with a full backup and two increments, and `out.fs`
/// recovered with `-w` as of the first increment.
fn standby_before_t3(seed: u64, gzip: bool) -> Env {
    let env = Env::with_db(seed, 20);
    env.backup(z(gzip), T1);
    env.append(seed + 1, 3);
    env.backup(&[z(gzip), &["-Q"]].concat(), T2);
    env.recover("out.fs", &["-w"]);
    env.append(seed + 2, 3);
    env.backup(&[z(gzip), &["-Q"]].concat(), T3);
    env
}

/// `-R -w` onto an existing FILE checks every backup file the state
/// depends on, the ones FILE covers included, by reading it (xxh3 against
/// our sums, or md5 against the `.dat`): a damaged file fails the run
/// with the error a fresh recovery gives, and FILE is left as it was.
#[test]
fn with_verify_onto_a_standby_checks_every_backup_file() {
    for gzip in [false, true] {
        let env = standby_before_t3(1930, gzip);
        let sums = env.read(&format!("repo/{SUMS_NAME}"));
        let standby = env.read("out.fs");
        let index = env.read("out.fs.index");
        let files = [
            format!("{T1}.{}", ext(gzip, true)),
            format!("{T2}.{}", ext(gzip, false)),
            format!("{T3}.{}", ext(gzip, false)),
        ];
        for with_sums in [true, false] {
            if with_sums {
                env.write(&format!("repo/{SUMS_NAME}"), &sums);
            } else {
                env.remove(&format!("repo/{SUMS_NAME}"));
            }
            for name in &files {
                let rel = format!("repo/{name}");
                let good = env.read(&rel);
                for off in offsets(good.len()) {
                    let what = format!("gzip {gzip}, sums {with_sums}, {name} at {off}");
                    env.flip_byte(&rel, off);
                    let fresh = env
                        .run(&["-R", "-w", "-r", "repo", "-o", "fresh.fs"], LATE)
                        .error(name);
                    assert!(!env.exists("fresh.fs"), "{what}");
                    for flags in [&[][..], &["-Q"], &["-v"]] {
                        let mut args = vec!["-R", "-w", "-r", "repo", "-o", "out.fs"];
                        args.extend_from_slice(flags);
                        let o = env.run(&args, LATE).fails();
                        let last = o.stderr_lines().pop().unwrap();
                        assert_eq!(last, fresh, "{what} {flags:?}");
                        assert_bytes(&env.read("out.fs"), &standby, &what);
                        assert_eq!(env.read("out.fs.index"), index, "{what}");
                        assert!(!env.exists("out.fs.part"), "{what}");
                    }
                    env.write(&rel, &good);
                }
            }
        }
        // undamaged: extended, every file checked
        env.write(&format!("repo/{SUMS_NAME}"), &sums);
        let err = recover_v(&env, "out.fs", &["-w"]);
        assert!(err.contains("appending 1 more"), "{err}");
        for name in &files {
            assert!(err.contains(&format!("Checked repo/{name}")), "{err}");
        }
        assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "extended");
        env.open_with_index("out.fs");
        // up to date: still every file is checked
        let good = env.read(&format!("repo/{}", files[0]));
        env.flip_byte(&format!("repo/{}", files[0]), good.len() / 2);
        let now = env.read("out.fs");
        env.run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
            .error(&files[0]);
        assert_bytes(&env.read("out.fs"), &now, "up to date, damaged full");
    }
}

/// The same on a chain written by ZODB's repozo (no sums: md5 only).
#[test]
fn with_verify_onto_a_standby_of_a_zodb_chain() {
    for gzip in [false, true] {
        let env = Env::with_db(1940, 20);
        env.py_backup(z(gzip), T1);
        env.append(1941, 3);
        env.py_backup(z(gzip), T2);
        env.recover("out.fs", &[]);
        env.append(1942, 3);
        env.py_backup(z(gzip), T3);
        let standby = env.read("out.fs");
        for name in [
            format!("{T1}.{}", ext(gzip, true)),
            format!("{T2}.{}", ext(gzip, false)),
        ] {
            let rel = format!("repo/{name}");
            let good = env.read(&rel);
            env.flip_byte(&rel, good.len() / 2);
            let fresh = env
                .run(&["-R", "-w", "-r", "repo", "-o", "fresh.fs"], LATE)
                .error(&name);
            let line = env
                .run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
                .error(&name);
            assert_eq!(line, fresh);
            assert_bytes(&env.read("out.fs"), &standby, &name);
            env.write(&rel, &good);
        }
        let out = env.recover("out.fs", &["-w"]);
        assert_bytes(&out, &env.read("Data.fs"), "extended");
    }
}

/// A failed check with `-w` leaves FILE exactly as it was, even the
/// unfinished tail an interrupted run left (which a successful run cuts
/// back): nothing unchecked is ever written into FILE. The usage text says
/// so too.
#[test]
fn failed_with_verify_leaves_the_standby_as_it_was() {
    for gzip in [false, true] {
        let env = standby_before_t3(1950, gzip);
        env.append(1953, 3);
        env.backup(&[z(gzip), &["-Q"]].concat(), T4);
        // an interrupted run: half of T3's bytes appended
        let t3 = {
            let all = env.recover("full.fs", &["-D", T3]);
            all[env.read("out.fs").len()..].to_vec()
        };
        let mut torn = env.read("out.fs");
        torn.extend_from_slice(&t3[..t3.len() / 2]);
        env.write("out.fs", &torn);
        let index = env.read("out.fs.index");
        for name in [
            format!("{T3}.{}", ext(gzip, false)),
            format!("{T4}.{}", ext(gzip, false)),
        ] {
            let rel = format!("repo/{name}");
            let good = env.read(&rel);
            env.flip_byte(&rel, good.len() / 2);
            env.run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
                .error(&name);
            assert_bytes(&env.read("out.fs"), &torn, &name);
            assert_eq!(env.read("out.fs.index"), index, "{name}");
            env.write(&rel, &good);
        }
        let err = recover_v(&env, "out.fs", &["-w"]);
        assert!(err.contains("cutting it back"), "{err}");
        assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "completed");
    }
    let usage = Env::new().run(&["-h"], LATE).ok().stdout_str();
    assert!(usage.contains("left as it was"), "{usage}");
    assert!(!usage.contains("cut back"), "{usage}");
}

// -- case 13 ------------------------------------------------------------------

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// `-R -o FILE` onto a read-only FILE (in a writable directory) replaces
/// it by a full recovery, as ZODB's repozo and our `-F` do, with a note
/// under `-v`. Run as `nobody` when the tests run as root.
#[test]
fn read_only_standby_is_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let root = unsafe { libc::geteuid() } == 0;
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv not installed: skipped");
        return;
    }
    for gzip in [false, true] {
        for flags in [&[][..], &["-w"], &["-Q"]] {
            let env = standby_before_t3(1960, gzip);
            let ro = std::fs::Permissions::from_mode(0o444);
            std::fs::set_permissions(env.path("out.fs"), ro).unwrap();
            let mut args = vec!["-R", "-v", "-r", "repo", "-o", "out.fs"];
            args.extend_from_slice(flags);
            let o = if root {
                chown_tree(env.root(), 65534);
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
                    .args(&args)
                    .current_dir(env.root())
                    .env("REPOZO_TEST_NOW", LATE);
                exec(c)
            } else {
                env.run(&args, LATE)
            };
            let err = o.ok().stderr_str();
            assert!(
                err.contains("cannot open it for writing") && err.contains("recovering in full"),
                "{flags:?}: {err}"
            );
            assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "replaced");
            assert!(!env.exists("out.fs.part"));
            if root {
                chown_tree(env.root(), 0);
            }
            env.open_with_index("out.fs");
        }
    }
}
