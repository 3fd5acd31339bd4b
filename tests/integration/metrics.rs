//! `--metrics=FILE` (issue 17): after every run, a Prometheus textfile
//! that Prometheus' own parser reads, describing the run and the
//! repository; the last success and failure times carry over.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::*;

/// FILE parsed by `prometheus_client`'s parser: `name{k=v,...}` -> value
/// (labels sorted, without `repository`, which is checked once).
fn parse(env: &Env, rel: &str) -> BTreeMap<String, f64> {
    let code = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
for fam in text_string_to_metric_families(text):
    assert fam.type == 'gauge', fam
    for s in fam.samples:
        labels = dict(s.labels)
        repo = labels.pop('repository')
        assert repo == sys.argv[2], (repo, sys.argv[2])
        extra = ','.join('%s=%s' % kv for kv in sorted(labels.items()))
        print('%s{%s} %r' % (s.name, extra, s.value))
"#;
    let mut cmd = Command::new(python());
    cmd.current_dir(env.root()).args(["-c", code, rel, "repo"]);
    let out = exec(cmd).ok();
    out.stdout_str()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no {key} in {m:#?}"))
}

/// Bytes of every file in `repo/` (`.repozo-sums` included).
fn repo_bytes(env: &Env) -> f64 {
    std::fs::read_dir(env.repo())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum::<u64>() as f64
}

#[test]
fn backups_and_checks_write_their_metrics() {
    let env = Env::with_db(1701, 10);
    env.backup(&["--metrics=b.prom"], T1);
    let m = parse(&env, "b.prom");
    let b = |k: &str| get(&m, &format!("{k}{{mode=backup}}"));
    assert_eq!(b("repozo_last_run_success"), 1.0);
    assert_eq!(
        get(&m, "repozo_last_backup_kind{kind=full,mode=backup}"),
        1.0
    );
    assert_eq!(
        get(&m, "repozo_last_backup_kind{kind=incremental,mode=backup}"),
        0.0
    );
    assert_eq!(b("repozo_repository_chains"), 1.0);
    assert_eq!(b("repozo_repository_bytes"), repo_bytes(&env));
    let source = env.read("Data.fs").len() as f64;
    assert!(b("repozo_last_run_written_bytes") >= source, "{m:#?}");
    assert!(b("repozo_last_run_read_bytes") >= source, "{m:#?}");
    let success = b("repozo_last_success_timestamp_seconds");
    assert!(success > 1.7e9 && success == b("repozo_last_run_timestamp_seconds"));
    assert_eq!(b("repozo_last_failure_timestamp_seconds"), 0.0);
    // T1 is 2026-11-20 01:00:00 UTC
    assert_eq!(b("repozo_newest_backup_timestamp_seconds"), 1_795_136_400.0);

    // an increment
    env.append(1702, 2);
    env.backup(&["-Q", "--metrics=b.prom"], T2);
    let m = parse(&env, "b.prom");
    assert_eq!(
        get(&m, "repozo_last_backup_kind{kind=incremental,mode=backup}"),
        1.0
    );
    assert_eq!(
        get(&m, "repozo_repository_bytes{mode=backup}"),
        repo_bytes(&env)
    );

    // a failed backup: exit 1, the failure time set, the success kept
    env.run(
        &["-B", "-r", "repo", "-f", "missing.fs", "--metrics=b.prom"],
        T3,
    )
    .fails();
    let m2 = parse(&env, "b.prom");
    assert_eq!(get(&m2, "repozo_last_run_success{mode=backup}"), 0.0);
    assert_eq!(
        get(&m2, "repozo_last_success_timestamp_seconds{mode=backup}"),
        get(&m, "repozo_last_success_timestamp_seconds{mode=backup}")
    );
    assert!(get(&m2, "repozo_last_failure_timestamp_seconds{mode=backup}") > 1.7e9);
    assert!(!m2.keys().any(|k| k.starts_with("repozo_last_backup_kind")));

    // the hourly check, in a file of its own
    env.run(&["-V", "-r", "repo", "--metrics=v.prom"], LATE)
        .ok();
    let v = parse(&env, "v.prom");
    assert_eq!(get(&v, "repozo_last_run_success{mode=verify}"), 1.0);
    env.flip_byte(&format!("repo/{T2}.deltafs"), 20);
    env.run(&["-V", "-r", "repo", "--metrics=v.prom"], LATE)
        .fails();
    let v2 = parse(&env, "v.prom");
    assert_eq!(get(&v2, "repozo_last_run_success{mode=verify}"), 0.0);
    assert_eq!(
        get(&v2, "repozo_last_success_timestamp_seconds{mode=verify}"),
        get(&v, "repozo_last_success_timestamp_seconds{mode=verify}")
    );
    // no temporary file is left beside it
    let names: Vec<String> = std::fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom") || n.starts_with(".repozo"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A metrics file that cannot be written does not fail a backup that
/// worked: a warning on stderr, exit 0.
#[test]
fn an_unwritable_metrics_file_is_a_warning() {
    let env = Env::with_db(1711, 5);
    let o = env
        .run(
            &[
                "-B",
                "-r",
                "repo",
                "-f",
                "Data.fs",
                "--metrics=nodir/m.prom",
            ],
            T1,
        )
        .ok();
    assert!(
        o.stderr_str().contains("repozo: warning: --metrics:"),
        "{}",
        o.describe()
    );
    env.assert_recovers_source();
}

/// The hourly check unit sees the repository read-only: its shared lock
/// still takes the lock file a backup made (opened for reading), so a
/// backup holding the lock keeps it out. Needs a private mount namespace
/// (`unshare -m`, as root); skipped with a note where there is none.
#[test]
fn a_check_on_a_read_only_repository_still_locks() {
    let env = Env::with_db(1721, 5);
    env.backup(&[], T1);
    let bin = env!("CARGO_BIN_EXE_repozo");
    let script = format!(
        "mount --bind repo repo && mount -o remount,bind,ro repo || exit 99; \
         touch repo/x 2>/dev/null && exit 98; \
         {bin} -V -v -r repo || exit 1; \
         flock -x -n repo/.repozo.lock {bin} -V -r repo; echo locked=$?"
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.current_dir(env.root())
        .args(["-m", "sh", "-c", &script]);
    let o = exec(cmd);
    if matches!(o.code(), Some(99)) || o.stderr_str().contains("unshare:") {
        eprintln!("skipped: no private read-only mount here: {}", o.describe());
        return;
    }
    let o = o.ok();
    let (out, err) = (o.stdout_str(), o.stderr_str());
    assert!(!err.contains("without a lock"), "{err}");
    assert!(out.contains("locked=1"), "{}", o.describe());
    assert!(err.contains("locked"), "{}", o.describe());
}
