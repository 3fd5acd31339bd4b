//! Issue 4: the randomized model test (`tests/py/montecarlo.py`) on a real
//! ZODB database, backed up in turn by this tool and by ZODB's repozo, with
//! recoveries and verifications by both after every step. The number of
//! steps is `$REPOZO_MC_STEPS` (default [`DEFAULT_STEPS`]), the seed
//! `$REPOZO_MC_SEED` (default: random, printed). A failure prints the
//! script's report, which ends with the command that replays it.
//!
//! Bugs the model test found have their own small regression tests below.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// About a minute with the debug binary on a 2-core machine.
const DEFAULT_STEPS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() & 0xffff_ffff
}

#[test]
fn monte_carlo() {
    let steps = env_u64("REPOZO_MC_STEPS").unwrap_or(DEFAULT_STEPS);
    let seed = env_u64("REPOZO_MC_SEED").unwrap_or_else(random_seed);
    eprintln!(
        "montecarlo: seed {seed}, {steps} steps \
         (again: REPOZO_MC_SEED={seed} REPOZO_MC_STEPS={steps} \
         cargo test --test integration montecarlo)"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (s, n) = (seed.to_string(), steps.to_string());
    let out = Command::new(python())
        .arg(root.join("tests/py/montecarlo.py"))
        .args([
            "--seed",
            &s,
            "--steps",
            &n,
            "--bin",
            env!("CARGO_BIN_EXE_repozo"),
        ])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("montecarlo: {steps} passed, 0 failed");
    if !out.status.success() || stdout.lines().last() != Some(want.as_str()) {
        panic!(
            "the Monte Carlo test failed (seed {seed}, {steps} steps; {})\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n---",
            out.status
        );
    }
    eprint!("{stdout}");
}

/// Found by the model test: ZODB's repozo writes an empty increment when
/// only an unfinished transaction was appended. After a pack, `-Q` used to
/// compare the source with that empty last range (the md5 of nothing always
/// matches) and append the packed file's tail to the old chain: recovery
/// then gave a file that was neither the old nor the new database, and
/// `-V` passed. The source changed, so the backup must be a full one.
#[test]
fn quick_backup_after_empty_increment_and_pack_is_full() {
    let env = Env::with_db(1, 20);
    env.backup(&["-Q"], T1);
    let (end, _) = env.partial("c");
    env.py_backup(&["-Q"], T2);
    let dat = String::from_utf8(env.read(&format!("repo/{T1}.dat"))).unwrap();
    let last = dat.lines().last().unwrap().to_string();
    assert!(
        last.ends_with(&format!(" {end} {end} d41d8cd98f00b204e9800998ecf8427e")),
        "premise: ZODB's repozo wrote an empty increment: {last}"
    );
    env.pack();
    env.append(7, 40);
    let committed = env.committed_size("Data.fs");
    assert!(
        committed > end,
        "premise: the packed source grew past {end}"
    );

    env.backup(&["-Q"], T3);
    assert!(
        env.exists(&format!("repo/{T3}.fs")),
        "expected a full backup at {T3}; repository: {:?}\n.dat of {T1}:\n{}",
        env.repo_names(),
        String::from_utf8_lossy(&env.read(&format!("repo/{T1}.dat")))
    );
    let src = env.read("Data.fs");
    assert_bytes(&env.recover("out.fs", &[]), &src, "recovered");
    env.open_with_index("out.fs");
}
