//! Regressions from the reviews of issue 19 that concern how `-B` decides
//! and what it carries into a new backup: a damaged backup file is never
//! extended (case 1), and a chain's `.index` is only trusted as far as it
//! is known to come from a scan (case 7).

use crate::util::*;

fn names_ending(env: &Env, suffix: &str) -> Vec<String> {
    env.repo_names()
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// Damage `rel` the way the issue does: flip a byte in its middle, or cut
/// it to half its size.
fn damage(env: &Env, rel: &str, how: &str) {
    let b = env.read(rel);
    match how {
        "flip" => env.flip_byte(rel, b.len() / 2),
        "flip-early" => env.flip_byte(rel, b.len().min(20000) / 3),
        "truncate" => env.write(rel, &b[..b.len() / 2]),
        other => panic!("{other}"),
    }
}

/// Case 1: `-B` without `-Q` must read the backup files, as ZODB's repozo
/// does, so a damaged file makes a new full backup instead of an
/// increment on top of bad bytes; the result recovers the source.
fn damaged_chain_is_not_extended(gzip: bool, in_increment: bool, how: &str) {
    let env = Env::with_db(1901, 20);
    let z: &[&str] = if gzip { &["-z"] } else { &[] };
    env.backup(z, T1);
    let ext = if gzip { "z" } else { "" };
    let mut victim = format!("repo/{T1}.fs{ext}");
    let mut next = T2;
    if in_increment {
        env.append(1902, 8);
        env.backup(z, T2);
        victim = format!("repo/{T2}.deltafs{ext}");
        assert!(env.exists(&victim), "{:?}", env.repo_names());
        next = T3;
    }
    damage(&env, &victim, how);
    env.append(1903, 5);
    let out = env
        .run(&["-B", "-v", "-r", "repo", "-f", "Data.fs"], next)
        .ok();
    let err = out.stderr_str();
    assert!(
        env.exists(&format!("repo/{next}.fs")),
        "damaged {victim} ({how}) was extended: {err}\n{:?}",
        env.repo_names()
    );
    let got = env.recover("out.fs", &[]);
    assert_bytes(
        &got,
        &env.read("Data.fs"),
        "recovered after the new full backup",
    );
    env.run(&["-V", "-r", "repo"], LATE).ok();
    // ZODB's repozo makes the same decision on the same repository
    let py = env.py_recover("py.fs", &[]);
    assert_bytes(&py, &env.read("Data.fs"), "ZODB's repozo recovery");
}

#[test]
fn damaged_full_backup_flipped_is_not_extended() {
    damaged_chain_is_not_extended(false, false, "flip");
    damaged_chain_is_not_extended(false, false, "flip-early");
}

#[test]
fn damaged_full_backup_truncated_is_not_extended() {
    damaged_chain_is_not_extended(false, false, "truncate");
}

#[test]
fn damaged_increment_is_not_extended() {
    damaged_chain_is_not_extended(false, true, "flip");
    damaged_chain_is_not_extended(false, true, "truncate");
}

#[test]
fn damaged_gzip_backups_are_not_extended() {
    damaged_chain_is_not_extended(true, false, "flip");
    damaged_chain_is_not_extended(true, false, "truncate");
    damaged_chain_is_not_extended(true, true, "flip");
}

/// With `-Q`, ZODB's repozo checks only the source's last range, and so do
/// we: the source's hash against the cache is the same decision as its
/// md5 against the `.dat`. Damage in an earlier backup file is then `-V`'s
/// to find, and it does.
#[test]
fn quick_backup_of_a_damaged_chain_is_caught_by_verify() {
    let env = Env::with_db(1904, 20);
    env.backup(&[], T1);
    env.flip_byte(&format!("repo/{T1}.fs"), 5000);
    env.append(1905, 3);
    env.backup(&["-Q"], T2);
    assert_eq!(names_ending(&env, ".deltafs").len(), 1);
    env.run(&["-V", "-r", "repo"], LATE)
        .fails()
        .stderr_has(&format!("{T1}.fs"));
}

/// Case 7: a stale `Data.fs.index` that passes ZODB's sanity check goes
/// into the full backup's `.index` (ZODB's repozo does the same); once the
/// admin deletes it, ZODB's repozo rescans, and so must we: the chain's
/// `.index`, built on the stale file, is not a starting point, and the
/// next increment's `.index` and the recovered `FILE.index` are right.
fn stale_live_index_is_not_propagated(quick: bool, gzip: bool) {
    let env = Env::with_db(1910, 25);
    let open_close = "from ZODB.FileStorage import FileStorage; FileStorage('Data.fs').close()";
    python_in(&env, open_close);
    std::fs::copy(env.path("Data.fs.index"), env.path("old.index")).unwrap();
    env.append(1911, 12);
    python_in(&env, open_close);
    python_in(&env, STALE_INDEX);
    let mut flags: Vec<&str> = Vec::new();
    if gzip {
        flags.push("-z");
    }
    env.backup(&flags, T1);
    assert!(
        !index_is_right(&env, "Data.fs", &format!("repo/{T1}.index")),
        "the test needs a full backup that inherits the stale index"
    );
    // the admin deletes the stale index; more transactions come
    env.remove("Data.fs.index");
    env.append(1912, 3);
    env.remove("Data.fs.index");
    if quick {
        flags.push("-Q");
    }
    env.backup(&flags, T2);
    assert!(
        env.exists(&format!("repo/{T2}.deltafs{}", if gzip { "z" } else { "" })),
        "{:?}",
        env.repo_names()
    );
    assert!(
        index_is_right(&env, "Data.fs", &format!("repo/{T2}.index")),
        "the increment's .index carries the stale entries"
    );
    let got = env.recover("out.fs", &[]);
    assert_bytes(&got, &env.read("Data.fs"), "recovered");
    assert!(index_is_right(&env, "out.fs", "out.fs.index"));
    // and the next increment keeps it right
    env.append(1913, 2);
    env.remove("Data.fs.index");
    env.backup(&flags, T3);
    assert!(index_is_right(&env, "Data.fs", &format!("repo/{T3}.index")));
}

#[test]
fn stale_live_index_is_not_propagated_quick() {
    stale_live_index_is_not_propagated(true, false);
}

#[test]
fn stale_live_index_is_not_propagated_full_check_gzip() {
    stale_live_index_is_not_propagated(false, true);
}
