//! `dist/repozo-unit`, the command of the systemd units (issue 17), run
//! by hand with our binary: the configuration's settings reach repozo, and
//! a repository locked by another run is waited for, not a failure.

use std::process::Command;

use crate::util::*;

/// Run `repozo-unit MODE site` with `conf` as `site.conf`.
fn unit(env: &Env, mode: &str, conf: &str) -> Output {
    std::fs::create_dir_all(env.path("etc")).unwrap();
    env.write("etc/site.conf", conf.as_bytes());
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/repozo-unit"));
    cmd.current_dir(env.root())
        .args([mode, "site"])
        .env("REPOZO", env!("CARGO_BIN_EXE_repozo"))
        .env("REPOZO_CONF_DIR", env.path("etc"));
    exec(cmd)
}

fn conf(env: &Env, extra: &str) -> String {
    format!(
        "SOURCE={}\nREPOSITORY={}\nMETRICS_DIR={}\nKEEP=2\nBACKUP_FLAGS=\"-Q -z --prune-index\"\n{extra}",
        env.source().display(),
        env.repo().display(),
        env.root().display()
    )
}

#[test]
fn the_units_run_what_the_configuration_says() {
    let env = Env::with_db(1801, 10);
    let c = conf(&env, "");
    unit(&env, "backup", &c).ok();
    env.append(1802, 2);
    unit(&env, "backup", &c).ok();
    let names = env.repo_names();
    assert!(names.iter().any(|n| n.ends_with(".deltafsz")), "{names:?}");
    unit(&env, "check", &c).ok();
    let prom = String::from_utf8(env.read("repozo-check-site.prom")).unwrap();
    assert!(prom.contains("mode=\"verify\"} 1\n"), "{prom}");
    assert!(env.exists("repozo-backup-site.prom"));
    env.assert_recovers_source();
    // no SOURCE: one line, exit 1
    unit(&env, "backup", "SOURCE=\n")
        .fails()
        .stderr_has("sets no SOURCE");
}

/// Another run holding the repository lock: the unit waits and tries
/// again (LOCK_WAIT seconds, LOCK_RETRIES times) instead of failing.
#[test]
fn a_locked_repository_is_waited_for() {
    let env = Env::with_db(1811, 5);
    let c = conf(&env, "LOCK_WAIT=1\nLOCK_RETRIES=10\n");
    unit(&env, "backup", &c).ok();
    let lock = env.repo().join(".repozo.lock");
    let mut holder = Command::new("flock")
        .args(["-x"])
        .arg(&lock)
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = unit(&env, "check", &c).ok();
    assert!(o.stderr_str().contains("trying again"), "{}", o.describe());
    holder.wait().unwrap();
    // with no retries left it fails, saying why
    let mut holder = Command::new("flock")
        .args(["-x"])
        .arg(&lock)
        .args(["sleep", "2"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let c = conf(&env, "LOCK_WAIT=1\nLOCK_RETRIES=0\n");
    unit(&env, "check", &c)
        .fails()
        .stderr_has("repository locked");
    holder.wait().unwrap();
}
