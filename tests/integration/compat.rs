//! Compatibility both ways with ZODB's repozo: each tool recovers and
//! verifies the other's repositories, and chains built by both in turn.

use crate::util::*;

type Tool = fn(&Env, &[&str], &str);

fn ours(env: &Env, extra: &[&str], now: &str) {
    env.backup(extra, now);
}

fn zodb(env: &Env, extra: &[&str], now: &str) {
    env.py_backup(extra, now);
}

/// Build a chain with `tools[i]` making backup i (full, then increments,
/// alternating -Q), with `z[i]` its extra options.
fn build(seed: u64, tools: &[Tool], z: &[&[&str]]) -> Env {
    let env = Env::with_db(seed, 20);
    let stamps = [T1, T2, T3, T4, T5];
    for (i, tool) in tools.iter().enumerate() {
        if i > 0 {
            env.append(seed + i as u64, 3);
        }
        let mut extra = z[i].to_vec();
        if i % 2 == 0 {
            extra.push("-Q");
        }
        tool(&env, &extra, stamps[i]);
    }
    env
}

/// Both tools recover the source (and its index) and both verify.
#[track_caller]
fn check_both_ways(env: &Env, last: &str) {
    let src = env.read("Data.fs");
    assert_bytes(&env.recover("ours.fs", &[]), &src, "ours");
    assert_bytes(&env.recover("oursw.fs", &["-w"]), &src, "ours -w");
    assert_bytes(&env.py_recover("py.fs", &[]), &src, "ZODB's");
    assert_bytes(&env.py_recover("pyw.fs", &["-w"]), &src, "ZODB's -w");
    let index = env.read(&format!("repo/{last}.index"));
    for out in ["ours.fs", "oursw.fs", "py.fs", "pyw.fs"] {
        assert_eq!(env.read(&format!("{out}.index")), index, "{out}.index");
    }
    env.open_with_index("ours.fs");
    for q in [&[][..], &["-Q"]] {
        let mut args = vec!["-V", "-r", "repo"];
        args.extend_from_slice(q);
        env.run(&args, LATE).ok();
        env.py_repozo(&args, LATE).ok();
    }
    // an intermediate date too
    assert_bytes(
        &env.recover("mid.fs", &["-D", T2]),
        &env.py_recover("pymid.fs", &["-D", T2]),
        "-D T2",
    );
}

#[test]
fn zodb_recovers_ours() {
    for z in [&[][..], &["-z"]] {
        let env = build(70, &[ours, ours, ours], &[z, z, z]);
        check_both_ways(&env, T3);
    }
}

#[test]
fn ours_recovers_zodbs() {
    for z in [&[][..], &["-z"]] {
        let env = build(74, &[zodb, zodb, zodb], &[z, z, z]);
        check_both_ways(&env, T3);
    }
}

/// Chains whose files come from both tools in turn recover byte-identically
/// with both; an uncompressed mixed chain is byte-identical to one made by
/// ZODB's repozo alone.
#[test]
fn mixed_chains() {
    let plain: &[&[&str]] = &[&[], &[], &[], &[]];
    let pure = build(78, &[zodb, zodb, zodb, zodb], plain);
    for tools in [
        &[zodb as Tool, ours, zodb, ours][..],
        &[ours as Tool, zodb, ours, zodb],
    ] {
        let env = build(78, tools, plain);
        check_both_ways(&env, T4);
        assert_same(
            &env.repo_snapshot(),
            &pure.repo_snapshot(),
            "mixed chain (left) vs ZODB's alone (right)",
        );
    }
    // compression mixed too
    let env = build(82, &[zodb, ours, zodb, ours], &[&["-z"], &[], &[], &["-z"]]);
    check_both_ways(&env, T4);
    let env = build(86, &[ours, zodb, ours], &[&["-z"], &["-z"], &[]]);
    check_both_ways(&env, T3);
}

/// ZODB's repozo writes an empty increment when only an unfinished
/// transaction was appended; ours recovers, verifies and extends such a
/// chain.
#[test]
fn chain_with_zodbs_empty_increment() {
    let env = Env::with_db(90, 20);
    env.py_backup(&[], T1);
    let (end, _) = env.partial("c");
    env.py_backup(&[], T2);
    assert_eq!(env.read(&format!("repo/{T2}.deltafs")), b"");
    let committed = env.read("Data.fs")[..end as usize].to_vec();
    assert_bytes(&env.recover("out.fs", &["-w"]), &committed, "recovered");
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.append(91, 3); // ZODB drops the unfinished record first
    env.backup(&["-Q"], T3);
    env.append(92, 3);
    env.backup(&[], T4);
    check_both_ways(&env, T4);
}
