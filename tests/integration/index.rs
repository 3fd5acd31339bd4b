//! `.index` files (issue 3): every index we write is read by ZODB's
//! `fsIndex.load` and equals ZODB's own scan (`read_index`) of the same
//! bytes; backups start from a trustworthy index and scan only what it does
//! not cover; untrustworthy indexes are skipped, never trusted, never fatal.

use std::process::Command;

use crate::util::*;

/// Run a Python snippet with ZODB in the environment's directory.
#[track_caller]
fn py(env: &Env, code: &str) -> Output {
    let mut cmd = Command::new(python());
    cmd.current_dir(env.root()).arg("-c").arg(code);
    exec(cmd).ok()
}

/// `zodbtool.py check-index Data.fs repo/STAMP.index` must pass.
#[track_caller]
fn check_index(env: &Env, stamp: &str) {
    env.zodb(&["check-index", "Data.fs", &format!("repo/{stamp}.index")])
        .ok();
}

/// The position our `-v` notes say the scan started from.
fn scan_start(o: &Output) -> u64 {
    let err = o.stderr_str();
    let line = err
        .lines()
        .find(|l| l.starts_with("scanned "))
        .unwrap_or_else(|| panic!("no scan note in:\n{err}"));
    // "scanned N bytes from START: committed data ends at END"
    let from = line.split(" from ").nth(1).unwrap();
    from.split(':').next().unwrap().parse().unwrap()
}

/// Full, incremental (both kinds), pack: each `.index` equals ZODB's scan
/// of the source at that moment, with and without a live `Data.fs.index`.
#[test]
fn indexes_equal_zodbs_scan_through_increments_and_packs() {
    for live_index in [true, false] {
        let env = Env::with_db(301, 30);
        let drop_live = |env: &Env| {
            if !live_index && env.exists("Data.fs.index") {
                rm_live(env);
            }
        };
        drop_live(&env);
        env.backup(&[], T1);
        check_index(&env, T1);
        env.append(302, 5);
        drop_live(&env);
        env.backup(&["-Q"], T2);
        check_index(&env, T2);
        env.append(303, 5);
        drop_live(&env);
        env.backup(&[], T3);
        check_index(&env, T3);
        env.pack();
        drop_live(&env);
        env.backup(&["-Q"], T4);
        assert!(
            env.exists(&format!("repo/{T4}.fs")),
            "a pack makes a full backup"
        );
        check_index(&env, T4);
        env.append(304, 3);
        drop_live(&env);
        env.backup(&["-Q", "-z"], T5);
        check_index(&env, T5);
    }
}

/// A quick backup starts scanning at the chain's end when the source has no
/// index of its own: its cost follows the new data.
#[test]
fn quick_backup_scans_only_the_new_transactions() {
    let env = Env::with_db(311, 30);
    rm_live(&env);
    let o = env.backup(&["-v"], T1);
    assert_eq!(scan_start(&o), 4, "no index yet: the whole file is scanned");
    let end1 = fs_len(&env, &format!("repo/{T1}.fs"));
    env.append(312, 4);
    rm_live(&env);
    let o = env.backup(&["-Q", "-v"], T2);
    assert_eq!(scan_start(&o), end1, "{}", o.stderr_str());
    check_index(&env, T2);
    // the chain's index was built by a scan, so it stays the starting
    // point even with a fresh live index: the scan covers the new data
    let end2 = end1 + fs_len(&env, &format!("repo/{T2}.deltafs"));
    env.append(313, 4);
    py(
        &env,
        "from ZODB.FileStorage import FileStorage; FileStorage('Data.fs').close()",
    );
    let o = env.backup(&["-Q", "-v"], T3);
    assert_eq!(scan_start(&o), end2, "{}", o.stderr_str());
    check_index(&env, T3);
}

/// A chain whose `.index` came from the source's `Data.fs.index` (not a
/// scan) is not a starting point: with a live index the scan starts at its
/// end, as ZODB's would; without one, at the beginning (ZODB rescans).
#[test]
fn an_index_built_on_the_live_index_is_not_a_starting_point() {
    let env = Env::with_db(314, 30);
    py(
        &env,
        "from ZODB.FileStorage import FileStorage; FileStorage('Data.fs').close()",
    );
    let live_end = env.committed_size("Data.fs");
    let o = env.backup(&["-v"], T1);
    assert_eq!(scan_start(&o), live_end, "{}", o.stderr_str());
    assert!(
        env.trusted_indexes().is_empty(),
        "{:?}",
        env.trusted_indexes()
    );
    env.append(315, 4);
    rm_live(&env);
    let o = env.backup(&["-Q", "-v"], T2);
    assert_eq!(scan_start(&o), 4, "{}", o.stderr_str());
    check_index(&env, T2);
    // that scan earned trust: the next one starts at the chain's end
    assert!(env.trusted_indexes().contains_key(&format!("{T2}.index")));
    let end2 = env.committed_size("Data.fs");
    env.append(316, 2);
    rm_live(&env);
    let o = env.backup(&["-Q", "-v"], T3);
    assert_eq!(scan_start(&o), end2, "{}", o.stderr_str());
    check_index(&env, T3);
}

/// Remove the live `Data.fs.index` if there is one.
fn rm_live(env: &Env) {
    if env.exists("Data.fs.index") {
        env.remove("Data.fs.index");
    }
}

fn fs_len(env: &Env, rel: &str) -> u64 {
    env.read(rel).len() as u64
}

/// Indexes ZODB wrote in other pickle protocols, and the old dict format
/// (which falls back to a scan), give the same `.index` as a scan.
#[test]
fn python_written_indexes_in_other_formats() {
    let base = Env::with_db(321, 25);
    rm_live(&base);
    base.backup(&[], T1);
    let reference = base.read(&format!("repo/{T1}.index"));
    let writers = [
        ("protocol 1", "p = Pickler(f, 1)"),
        ("protocol 2", "p = Pickler(f, 2); p.fast = True"),
        ("protocol 2 memo", "p = Pickler(f, 2)"),
        ("protocol 3 memo", "p = Pickler(f, 3)"),
    ];
    for (what, make) in writers {
        let env = Env::new();
        base.copy_source_to(&env);
        py(
            &env,
            &format!(
                "from ZODB.FileStorage import FileStorage\n\
                 from ZODB._compat import Pickler\n\
                 fs = FileStorage('Data.fs', read_only=True)\n\
                 with open('Data.fs.index', 'wb') as f:\n    \
                     {make}\n    \
                     p.dump(fs._pos)\n    \
                     for k, v in fs._index._data.items(): p.dump((k, v.toString()))\n    \
                     p.dump(None)\n"
            ),
        );
        let o = env.backup(&["-v"], T1);
        assert!(
            o.stderr_str().contains("using index Data.fs.index"),
            "{what}: {}",
            o.stderr_str()
        );
        assert_bytes(&env.read(&format!("repo/{T1}.index")), &reference, what);
    }
    // the pre-fsIndex dict format: skipped, and a scan gives the same result
    let env = Env::new();
    base.copy_source_to(&env);
    py(
        &env,
        "from ZODB.FileStorage import FileStorage\n\
         from ZODB._compat import Pickler\n\
         fs = FileStorage('Data.fs', read_only=True)\n\
         with open('Data.fs.index', 'wb') as f:\n    \
             Pickler(f, 2).dump({'pos': fs._pos, 'index': dict(fs._index.items())})\n",
    );
    let o = env.backup(&["-v"], T1);
    assert!(
        o.stderr_str().contains("ignoring index Data.fs.index"),
        "{}",
        o.stderr_str()
    );
    assert_bytes(
        &env.read(&format!("repo/{T1}.index")),
        &reference,
        "dict format",
    );
}

/// An index whose position fits but whose entries do not match the file
/// (ZODB's sanity check fails) is not used, in the repository or beside
/// the source.
#[test]
fn insane_indexes_are_skipped() {
    let env = Env::with_db(331, 25);
    env.backup(&[], T1);
    env.append(332, 3);
    // corrupt the chain's index: point the newest records somewhere else
    let corrupt = "from ZODB.fsIndex import fsIndex\n\
                   import sys\n\
                   name = sys.argv[1]\n\
                   info = fsIndex.load(name)\n\
                   ix = info['index']\n\
                   for oid, pos in list(ix.items()): ix[oid] = pos + 1\n\
                   ix.save(info['pos'], name)\n";
    let mut cmd = Command::new(python());
    cmd.current_dir(env.root())
        .args(["-c", corrupt, &format!("repo/{T1}.index")]);
    exec(cmd).ok();
    let mut cmd = Command::new(python());
    cmd.current_dir(env.root())
        .args(["-c", corrupt, "Data.fs.index"]);
    exec(cmd).ok();
    let o = env.backup(&["-Q", "-v"], T2);
    let err = o.stderr_str();
    assert!(err.contains("does not match the source"), "{err}");
    assert_eq!(scan_start(&o), 4, "{err}");
    check_index(&env, T2);
}

/// Mixed chains: our increments start from ZODB-written indexes and ZODB's
/// increments from ours, and every index equals ZODB's scan.
#[test]
fn mixed_chain_indexes() {
    let env = Env::with_db(341, 25);
    rm_live(&env);
    env.py_backup(&[], T1);
    env.append(342, 3);
    rm_live(&env);
    // ZODB's index is not known to come from a scan (ours would say so in
    // our sums): with no live index, ZODB would rescan, and so do we
    let o = env.backup(&["-Q", "-v"], T2);
    assert_eq!(scan_start(&o), 4, "{}", o.stderr_str());
    check_index(&env, T2);
    env.append(343, 3);
    env.py_backup(&["-Q"], T3);
    check_index(&env, T3);
    env.append(344, 3);
    rm_live(&env);
    env.backup(&["-Q"], T4);
    check_index(&env, T4);
    let out = env.recover("out.fs", &[]);
    assert_eq!(out.len() as u64, env.committed_size("Data.fs"));
    env.open_with_index("out.fs");
}
