//! `.repozo-sums`, our cache of xxh3 checksums: written with every backup,
//! used by `-BQ`, `-B`, `-V`, `-R -w` and incremental recovery when it
//! applies, and never able to change a decision: a wrong, stale or
//! unwritable cache costs time only.

use crate::util::*;

#[track_caller]
fn run_v(env: &Env, args: &[&str], now: &str) -> String {
    let mut a = vec!["-v"];
    a.extend_from_slice(args);
    env.run(&a, now).ok().stderr_str()
}

fn data_files(env: &Env) -> Vec<String> {
    env.repo_names()
        .into_iter()
        .filter(|n| n.ends_with("fs") || n.ends_with("fsz"))
        .collect()
}

/// Rewrite every hash in the repository's sums with a wrong one (the
/// names, ranges and md5s still apply to the `.dat` lines).
fn scramble_sums(env: &Env) {
    let text = String::from_utf8(env.read(&format!("repo/{SUMS_NAME}"))).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with('#') {
            out.push_str(l);
        } else if l.starts_with("index ") {
            // an `.index` recorded as built by a scan, with a wrong hash
            let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
            f[3] = "0123456789abcdef0123456789abcdef".into();
            out.push_str(&f.join(" "));
        } else {
            let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
            f[4] = "0123456789abcdef0123456789abcdef".into();
            f[6] = "fedcba9876543210fedcba9876543210".into();
            out.push_str(&f.join(" "));
        }
        out.push('\n');
    }
    env.write(&format!("repo/{SUMS_NAME}"), out.as_bytes());
}

#[test]
fn every_backup_records_its_sums_and_later_runs_use_them() {
    let env = Env::with_db(901, 20);
    env.backup(&[], T1);
    env.append(902, 3);
    let err = run_v(&env, &["-BQ", "-r", "repo", "-f", "Data.fs"], T2);
    assert!(
        err.contains("has the fast checksum recorded with md5"),
        "{err}"
    );
    env.check_newest_sum();
    env.append(903, 3);
    let err = run_v(&env, &["-B", "-r", "repo", "-f", "Data.fs"], T3);
    assert!(err.contains("(2 of 2 file(s) by fast checksum)"), "{err}");
    env.check_newest_sum();
    env.append(904, 2);
    let err = run_v(&env, &["-BQz", "-r", "repo", "-f", "Data.fs"], T4);
    assert!(err.contains("has the fast checksum recorded"), "{err}");
    env.check_newest_sum();
    // one entry per data file
    let sums = env.sums();
    assert_eq!(
        sums.keys().cloned().collect::<Vec<_>>(),
        data_files(&env),
        "{sums:?}"
    );
    // -V and -R -w settle every file by its fast checksum
    let err = run_v(&env, &["-V", "-r", "repo"], LATE);
    assert_eq!(
        err.matches("have the fast checksum recorded with its md5")
            .count(),
        4,
        "{err}"
    );
    let err = run_v(&env, &["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE);
    assert_eq!(err.matches("(by its fast checksum)").count(), 4, "{err}");
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "out.fs");
    // incremental recovery checks the existing FILE by its fast checksum
    env.append(905, 2);
    env.backup(&["-Q"], T5);
    let err = run_v(&env, &["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE);
    assert!(err.contains("appending 1 more"), "{err}");
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "out.fs");
    // ZODB's repozo reads the repository as if the cache were not there
    assert_bytes(&env.py_recover("py.fs", &[]), &env.read("Data.fs"), "py.fs");
    env.py_repozo(&["-V", "-r", "repo"], LATE).ok();
}

#[test]
fn wrong_sums_change_no_decision_and_no_verdict() {
    // same steps in both tools; ours with a scrambled cache before each
    let twin = Twin::with_db(911, 20);
    twin.backup(&[], T1);
    twin.ours.append(912, 3);
    scramble_sums(&twin.ours);
    twin.sync();
    let err = run_v(&twin.ours, &["-BQ", "-r", "repo", "-f", "Data.fs"], T2);
    assert!(
        err.contains("differs from its fast checksum: checking its md5"),
        "{err}"
    );
    twin.py.py_backup(&["-Q"], T2);
    twin.assert_same_repos();
    twin.ours.append(913, 2);
    scramble_sums(&twin.ours);
    twin.backup(&[], T3); // -B without -Q: byte comparison decides
    twin.assert_same_repos();
    scramble_sums(&twin.ours);
    // -V and -R -w fall back to md5 and pass
    let err = run_v(&twin.ours, &["-V", "-r", "repo"], LATE);
    assert_eq!(err.matches("fast checksum differs").count(), 3, "{err}");
    let err = run_v(
        &twin.ours,
        &["-R", "-w", "-r", "repo", "-o", "out.fs"],
        LATE,
    );
    assert!(!err.contains("by its fast checksum"), "{err}");
    assert_bytes(
        &twin.ours.read("out.fs"),
        &twin.ours.read("Data.fs"),
        "out.fs",
    );
    // a pack is still a pack: the right sums do not match the new file,
    // and the md5 confirms it
    let env = Env::with_db(914, 20);
    env.backup(&[], T1);
    env.pack();
    env.append(915, 40); // longer than the backup again
    let err = run_v(&env, &["-BQ", "-r", "repo", "-f", "Data.fs"], T2);
    assert!(err.contains("differs from its fast checksum"), "{err}");
    assert!(err.contains("(full backup)"), "{err}");
}

#[test]
fn damage_is_still_found_when_the_sums_are_right() {
    for gz in [false, true] {
        let env = Env::with_db(921, 20);
        let z: &[&str] = if gz { &["-z"] } else { &[] };
        env.backup(z, T1);
        env.append(922, 3);
        env.backup(&[&["-Q"][..], z].concat(), T2);
        let name = data_files(&env).pop().unwrap();
        let len = env.read(&format!("repo/{name}")).len();
        env.flip_byte(&format!("repo/{name}"), len / 2);
        let out = env.run(&["-V", "-r", "repo"], LATE).fails();
        let err = out.stderr_str();
        assert!(
            err.contains(&name) && (err.contains("checksum") || err.contains("gzip")),
            "{gz}: {err}"
        );
        let out = env
            .run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
            .fails();
        assert!(out.stderr_str().contains(&name), "{}", out.describe());
        // the same as ZODB's repozo decides for -V
        env.py_repozo(&["-V", "-r", "repo"], LATE).fails();
    }
}

/// A gzip file is judged by the bytes it inflates to, as ZODB's repozo
/// judges it, not by its compressed bytes: a stream that a faulty
/// compressor (or memory) got wrong at backup time is caught even when its
/// compressed bytes are the ones recorded.
#[test]
fn a_gzip_file_is_judged_by_what_it_inflates_to() {
    use std::io::Read;
    let env = Env::with_db(951, 20);
    env.backup(&["-z"], T1);
    let name = data_files(&env).pop().unwrap();
    assert!(name.ends_with(".fsz"), "{name}");
    let path = format!("repo/{name}");
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&env.read(&path)[..])
        .read_to_end(&mut plain)
        .unwrap();
    let k = plain.len() / 2;
    plain[k] ^= 0x20;
    let wrong = repozo::io::gzip::gzip_member(&mut repozo::io::gzip::compressor(), &plain).unwrap();
    env.write(&path, &wrong);
    // the cache records these compressed bytes as the file's
    let text = String::from_utf8(env.read(&format!("repo/{SUMS_NAME}"))).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
        if f[0] == name {
            f[5] = wrong.len().to_string();
            f[6] = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&wrong));
        }
        out.push_str(&f.join(" "));
        out.push('\n');
    }
    env.write(&format!("repo/{SUMS_NAME}"), out.as_bytes());
    let err = env.run(&["-V", "-r", "repo"], LATE).fails().stderr_str();
    assert!(err.contains(&name) && err.contains("checksum"), "{err}");
    let out = env
        .run(&["-R", "-w", "-r", "repo", "-o", "out.fs"], LATE)
        .fails();
    assert!(out.stderr_str().contains(&name), "{}", out.describe());
    assert!(!env.exists("out.fs"), "no output from a failed -w recovery");
    env.py_repozo(&["-V", "-r", "repo"], LATE).fails();
}

#[test]
fn entries_of_replaced_or_removed_files_do_not_apply() {
    let env = Env::with_db(931, 20);
    env.backup(&[], T1);
    let first = data_files(&env);
    // the chain is replaced under the same name by ZODB's repozo backing
    // up another database: our entry no longer describes the .dat line
    for n in env.repo_names() {
        if n != SUMS_NAME {
            env.remove(&format!("repo/{n}"));
        }
    }
    env.create(932, 25);
    env.py_backup(&[], T1);
    assert_eq!(data_files(&env), first, "same name, other bytes");
    env.append(933, 2);
    let err = run_v(&env, &["-BQ", "-r", "repo", "-f", "Data.fs"], T2);
    assert!(!err.contains("fast checksum"), "{err}");
    assert!(err.contains("doing incremental"), "{err}");
    let err = run_v(&env, &["-V", "-r", "repo"], LATE);
    assert_eq!(
        err.matches("have the fast checksum recorded with its md5")
            .count(),
        1,
        "{err}"
    );
    // ZODB's repozo -k removes an old chain; our next backup drops its
    // entries
    env.py_backup(&["-F", "-k"], T3);
    env.append(934, 2);
    env.backup(&["-Q"], T4);
    assert_eq!(
        env.sums().keys().cloned().collect::<Vec<_>>(),
        vec![format!("{T4}.deltafs")],
        "entries of removed files are dropped"
    );
}

#[test]
fn an_unwritable_cache_is_a_warning_not_a_failure() {
    let env = Env::with_db(941, 20);
    std::fs::create_dir_all(env.repo().join(SUMS_NAME)).unwrap();
    let out = env.run(&["-B", "-r", "repo", "-f", "Data.fs"], T1).ok();
    let err = out.stderr_str();
    assert!(
        err.starts_with("repozo: warning: could not update"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // the backup itself is complete and usable
    env.run(&["-V", "-r", "repo"], LATE).ok();
    assert_bytes(&env.recover("out.fs", &[]), &env.read("Data.fs"), "out.fs");
    // a damaged cache file is read for what it holds
    std::fs::remove_dir(env.repo().join(SUMS_NAME)).unwrap();
    env.write(&format!("repo/{SUMS_NAME}"), b"\xff\xfe garbage\n1 2 3\n");
    env.append(942, 2);
    env.backup(&["-Q"], T2);
    assert_eq!(env.sums().len(), 1);
}
