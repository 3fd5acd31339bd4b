//! The source of a backup: never modified, checked to be a FileStorage, and
//! every way of it being missing or wrong is one clear error.

use std::fs;
use std::time::SystemTime;

use crate::util::*;

/// Everything beside the repository: names, bytes and modification times.
fn beside_repo(env: &Env) -> Vec<(String, Vec<u8>, SystemTime)> {
    let mut v: Vec<_> = env
        .snapshot("")
        .into_iter()
        .filter(|(n, _)| n != "repo")
        .map(|(n, b)| {
            let m = fs::metadata(env.path(&n)).unwrap().modified().unwrap();
            (n, b, m)
        })
        .collect();
    v.sort();
    v
}

/// No mode of operation writes to the source, touches its mtime, or
/// creates files beside it (no lock, no index, no temporary file), with or
/// without ZODB's `Data.fs.index` beside it and with an unfinished
/// transaction at its end.
#[test]
fn the_source_is_never_modified() {
    let env = Env::with_db(20, 20);
    env.append(21, 2); // ZODB leaves Data.fs.index, .lock and .tmp beside it
    assert!(env.exists("Data.fs.index"));
    let runs: &[(&[&str], &str)] = &[
        (&["-B", "-r", "repo", "-f", "Data.fs"], T1),
        (&["-B", "-r", "repo", "-f", "Data.fs"], T2),
        (&["-B", "-Q", "-r", "repo", "-f", "Data.fs"], T3),
        (&["-B", "-F", "-z", "-r", "repo", "-f", "Data.fs"], T4),
        (&["-B", "-F", "-k", "-r", "repo", "-f", "Data.fs"], T5),
        (&["-V", "-r", "repo"], T6),
    ];
    let check = |runs: &[(&[&str], &str)]| {
        let before = beside_repo(&env);
        for (args, now) in runs {
            env.run(args, now).ok();
            assert_eq!(beside_repo(&env), before, "after {args:?}");
        }
    };
    check(runs);

    // an unfinished transaction at the end, and no index beside the source
    env.partial("trunc");
    assert!(!env.exists("Data.fs.index"));
    for e in env.repo_names() {
        env.remove(&format!("repo/{e}"));
    }
    check(runs);
}

fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A valid FileStorage with one data record in the middle damaged: its
/// `tloc` no longer points back at its transaction (ZODB refuses to read
/// such a file).
fn corrupt_tloc(mut data: Vec<u8>, from: usize) -> Vec<u8> {
    let txns: Vec<Txn> = transactions(&data)
        .into_iter()
        .filter(|t| t.pos >= from && !data_records(&data, *t).is_empty())
        .collect();
    assert!(txns.len() > 2, "too few transactions to damage");
    let t = txns[txns.len() / 2];
    let rec = data_records(&data, t)[0];
    data[rec + 31] ^= 0x55;
    data
}

/// Sources that are not FileStorages: exit 1, one line naming the file,
/// and the repository (empty, or holding a chain) unchanged.
#[test]
fn not_a_filestorage_is_an_error_naming_the_file() {
    let good = Env::with_db(22, 30);
    let valid = good.read("Data.fs");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", pseudo_random(5000, 7)),
        ("empty", Vec::new()),
        ("short", b"FS".to_vec()),
        ("wrong magic", [&b"FS99"[..], &valid[4..]].concat()),
        ("damaged record", corrupt_tloc(valid.clone(), 0)),
    ];
    for (what, bytes) in &cases {
        for with_chain in [false, true] {
            let env = Env::new();
            if with_chain {
                good.copy_source_to(&env);
                env.backup(&[], T1);
            }
            env.write("Data.fs", bytes);
            let before = env.repo_snapshot();
            for extra in [&[][..], &["-Q"], &["-F"], &["-z"]] {
                let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
                args.extend_from_slice(extra);
                let o = env.run(&args, T2);
                let desc = o.describe();
                let line = o.error("Data.fs");
                assert!(
                    line.contains("FileStorage") || line.contains("empty"),
                    "{what}: {line}\n{desc}"
                );
                assert_same(&env.repo_snapshot(), &before, what);
            }
        }
    }
}

/// Damage in the part of the source that an increment would copy is found
/// too, whichever way the increment is decided.
#[test]
fn damage_after_the_backed_up_part_is_an_error() {
    let env = Env::with_db(23, 20);
    env.backup(&[], T1);
    let backed_up = env.read("Data.fs").len();
    env.append(24, 10);
    let _ = fs::remove_file(env.path("Data.fs.index"));
    let damaged = corrupt_tloc(env.read("Data.fs"), backed_up);
    env.write("Data.fs", &damaged);
    let before = env.repo_snapshot();
    for q in [&[][..], &["-Q"]] {
        let mut args = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        args.extend_from_slice(q);
        let line = env.run(&args, T2).error("Data.fs");
        assert!(line.contains("FileStorage"), "{line}");
        assert_same(&env.repo_snapshot(), &before, "repository");
    }
}

/// "FS30" followed by garbage: ZODB reads it as an empty storage (the
/// first transaction header runs past the end of the file), and both tools
/// back up just the 4-byte magic.
#[test]
fn magic_followed_by_garbage_is_an_empty_storage_for_both_tools() {
    let t = Twin::with_db(22, 20);
    let mut bytes = b"FS30".to_vec();
    bytes.extend(pseudo_random(3000, 99));
    bytes[12] = 0x7f; // a huge transaction length
    t.ours.write("Data.fs", &bytes);
    t.backup(&[], T1);
    assert_eq!(t.ours.read(&format!("repo/{T1}.fs")), b"FS30");
    t.assert_same_repos();
}

#[test]
fn missing_source_or_repository() {
    let env = Env::with_db(25, 20);
    let line = env
        .run(&["-B", "-r", "repo", "-f", "nope.fs"], T1)
        .error("nope.fs");
    assert!(line.to_lowercase().contains("no such file"), "{line}");
    assert!(env.repo_names().is_empty());
    env.py_repozo(&["-B", "-r", "repo", "-f", "nope.fs"], T1)
        .fails();

    for args in [
        &["-B", "-r", "nothere", "-f", "Data.fs"][..],
        &["-R", "-r", "nothere", "-o", "out.fs"],
        &["-V", "-r", "nothere"],
    ] {
        let line = env.run(args, T1).error("nothere");
        assert!(line.to_lowercase().contains("no such file"), "{line}");
        assert!(!env.exists("nothere") && !env.exists("out.fs"));
        env.py_repozo(args, T1).fails();
    }
    // a repository that is a file
    env.write("afile", b"x");
    env.run(&["-B", "-r", "afile", "-f", "Data.fs"], T1)
        .error("afile");
    assert_eq!(env.read("afile"), b"x");
}

/// `FS21` (FileStorage written by ZODB on Python 2, same layout) is
/// accepted: backed up byte for byte, with the same index as `FS30`.
#[test]
fn fs21_magic_is_accepted() {
    let fs30 = Env::with_db(26, 20);
    fs30.backup(&[], T1);
    let env = Env::new();
    let mut bytes = fs30.read("Data.fs");
    bytes[..4].copy_from_slice(b"FS21");
    env.write("Data.fs", &bytes);
    env.backup(&[], T1);
    assert_bytes(&env.read(&format!("repo/{T1}.fs")), &bytes, "full backup");
    assert_eq!(
        env.read(&format!("repo/{T1}.index")),
        fs30.read(&format!("repo/{T1}.index"))
    );
    env.run(&["-V", "-r", "repo"], T2).ok();
    assert_bytes(&env.recover("out.fs", &[]), &bytes, "recovered");
}
