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
