//! `--prune-index` under faults (found by `scripts/faults.py` io-errors,
//! scenario `prune`): an error after the backup is committed, while the
//! prune reads the chain or looks for the newest `.index`, removed nothing
//! and said nothing (exit 0, no warning), so the repository kept growing
//! unnoticed. Now each is a warning, nothing is removed, and the next run
//! removes what is due.

use std::collections::BTreeSet;

use crate::util::*;

fn indexes(env: &Env) -> BTreeSet<String> {
    env.repo_names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".index").map(str::to_string))
        .collect()
}

/// A chain full (T1) + increments T2, T3, each with its `.index`, and the
/// source grown since; then `-B --prune-index` at T4 is traced, and run
/// again from the same start with EIO on the first call after the commit
/// (the write of the `.dat`) that `pick` selects. Returns the env and that
/// run's output.
fn prune_with_error(seed: u64, pick: impl Fn(&[&str]) -> bool) -> (Env, Output) {
    let env = Env::with_db(seed, 20);
    env.backup(&[], T1);
    env.append(seed + 1, 3);
    env.backup(&[], T2);
    env.append(seed + 2, 3);
    env.backup(&[], T3);
    env.append(seed + 3, 3);
    let args = ["-B", "--prune-index", "-r", "repo", "-f", "Data.fs"];
    copy_dir(&env.repo(), &env.path("repo.orig"));
    let log = env.path("calls.log");
    inject(&env, &args, T4, None, Some(&log)).ok();
    assert_eq!(
        indexes(&env),
        BTreeSet::from([T1.to_string(), T4.to_string()])
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Vec<&str>> = calls.lines().map(|l| l.split('\t').collect()).collect();
    let commit = calls
        .iter()
        .rposition(|c| c[3] == "1" && c[5].starts_with("write(") && c[5].contains(".dat"))
        .expect("the commit");
    let call = calls[commit + 1..]
        .iter()
        .find(|c| pick(c))
        .unwrap_or_else(|| panic!("no such call after the commit:\n{calls:?}"));
    copy_dir(&env.path("repo.orig"), &env.repo());
    let fault = format!("EIO:{}:{}", call[0], call[1]);
    let out = inject(&env, &args, T4, Some(&fault), None).ok();
    (env, out)
}

/// After the failed prune: a warning, the new increment committed, the
/// old `.index` files still there; the next run removes them.
fn check_warned_then_retried(env: &Env, out: &Output) {
    assert!(
        out.stderr_str().contains("warning: --prune-index"),
        "no warning: {}",
        out.describe()
    );
    assert!(env.exists(&format!("repo/{T4}.deltafs")));
    assert_eq!(
        indexes(env),
        BTreeSet::from([T1, T2, T3, T4].map(String::from)),
    );
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.backup(&["--prune-index"], T5);
    assert_eq!(
        indexes(env),
        BTreeSet::from([T1.to_string(), T4.to_string()])
    );
    // every date still recovers with its index
    for now in [T2, T3] {
        env.recover("x.fs", &["-D", now]);
        env.open_with_index("x.fs");
    }
}

/// EIO reading the `.dat` when the prune resolves the chain.
#[test]
fn an_error_reading_the_chain_in_the_prune_is_a_warning() {
    let (env, out) = prune_with_error(71, |c| c[0] == "read" && c[5].contains(".dat"));
    check_warned_then_retried(&env, &out);
}

/// EIO looking for the newest increment's `.index`: it was taken for
/// missing, and the next older one kept instead, without a word.
#[test]
fn an_error_looking_for_the_newest_index_is_a_warning() {
    let newest = format!("repo/{T4}.index)");
    let (env, out) = prune_with_error(72, |c| {
        matches!(c[0], "statx" | "newfstatat" | "lstat") && c[5].ends_with(&newest)
    });
    check_warned_then_retried(&env, &out);
}
