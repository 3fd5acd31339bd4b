//! Review of issue 17 (install and operate): `--metrics`, the shared lock
//! on a read-only repository, the units' helper script.

use std::os::unix::fs::FileTypeExt;
use std::process::Command;

use crate::util::*;

/// `--metrics=FILE` never replaces a file that is not a metrics file of
/// ours: `--metrics=Data.fs` replaced the source database with the
/// metrics text and exited 0. Refused before anything is done.
#[test]
fn metrics_never_replace_the_source() {
    let env = Env::with_db(1801, 5);
    let before = env.read("Data.fs");
    env.run(
        &["-B", "-r", "repo", "-f", "Data.fs", "--metrics=Data.fs"],
        T1,
    )
    .error("Data.fs");
    assert_bytes(&env.read("Data.fs"), &before, "the source");
    assert!(env.repo_names().iter().all(|n| n.starts_with('.')));
    // the same through a symbolic link
    std::os::unix::fs::symlink("Data.fs", env.path("m.prom")).unwrap();
    env.run(
        &["-B", "-r", "repo", "-f", "Data.fs", "--metrics=m.prom"],
        T1,
    )
    .error("Data.fs");
    assert_bytes(&env.read("Data.fs"), &before, "the source");
}

/// A recovered FILE (or FILE.index) named as the metrics FILE is not
/// replaced by the metrics: the recovery stands, with a warning.
#[test]
fn metrics_never_replace_the_recovered_file() {
    let env = Env::with_db(1802, 5);
    env.backup(&[], T1);
    let o = env
        .run(
            &["-R", "-r", "repo", "-o", "out.fs", "--metrics=out.fs"],
            T2,
        )
        .ok();
    assert!(
        o.stderr_str().contains("warning: --metrics"),
        "{}",
        o.describe()
    );
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "recovered");
    // FILE.index exists now: refused up front
    env.run(
        &["-R", "-r", "repo", "-o", "out.fs", "--metrics=out.fs.index"],
        T2,
    )
    .error("out.fs.index");
    env.open_with_index("out.fs");
}

/// A metrics FILE inside the repository: named like a backup it became a
/// (bogus) chain of the repository. Refused before anything is done.
#[test]
fn metrics_never_go_into_the_repository() {
    let env = Env::with_db(1803, 5);
    env.backup(&[], T1);
    let names = env.repo_names();
    for m in [
        "--metrics=repo/2020-01-01-00-00-00.fs",
        "--metrics=repo/m.prom",
        "--metrics=repo/../repo/x.prom",
    ] {
        env.run(&["-B", "-r", "repo", "-f", "Data.fs", m], T2)
            .error("in the repository");
    }
    assert_eq!(env.repo_names(), names);
}

/// Anything but a regular file: a FIFO hung the run forever (after the
/// backup), a device node was replaced by a regular file (as root,
/// `--metrics=/dev/null` replaced the system's /dev/null).
#[test]
fn metrics_never_replace_a_device_or_read_a_fifo() {
    let env = Env::with_db(1804, 5);
    let fifo = env.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut cmd = repozo_cmd(
        env.root(),
        &["-B", "-r", "repo", "-f", "Data.fs", "--metrics=fifo"],
        T1,
    );
    cmd.stdin(std::process::Stdio::null());
    let mut timeout = Command::new("timeout");
    timeout
        .arg("20")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    timeout.current_dir(env.root());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timeout.env(k, v),
            None => timeout.env_remove(k),
        };
    }
    exec(timeout).error("fifo");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // a character device (made where we may: as root)
    let dev = env.path("null");
    if Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        env.run(&["-B", "-r", "repo", "-f", "Data.fs", "--metrics=null"], T1)
            .error("null");
        let t = std::fs::symlink_metadata(&dev).unwrap().file_type();
        assert!(t.is_char_device());
    }
}

/// The units run with `UMask=0077`: the metrics file was 0600, owned by
/// root, which node_exporter (its own user) cannot read, so the alerts on
/// its series never fired. It is 0644 whatever the umask.
#[test]
fn metrics_are_readable_by_the_collector_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_db(1805, 5);
    let script = format!("umask 077; exec {BIN} \"$@\"");
    let mut cmd = repozo_cmd(env.root(), &[], T1);
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    cmd = Command::new("sh");
    cmd.current_dir(env.root()).args([
        "-c",
        &script,
        "sh",
        "-B",
        "-r",
        "repo",
        "-f",
        "Data.fs",
        "--metrics=m.prom",
    ]);
    for (k, v) in envs {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    exec(cmd).ok();
    let mode = std::fs::metadata(env.path("m.prom"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    // the backup itself keeps the umask
    let fs = env
        .repo_names()
        .into_iter()
        .find(|n| n.ends_with(".fs"))
        .unwrap();
    let mode = std::fs::metadata(env.repo().join(fs))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
}

/// A check by a user who may not write to the repository opens the lock
/// file for reading; when that is a FIFO (planted or made by mistake), the
/// open waited for a writer forever: the check hung. Needs root (to run
/// as `nobody`); skipped otherwise.
#[test]
fn a_read_only_check_never_hangs_on_a_fifo_lock_file() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_db(1806, 5);
    env.backup(&[], T1);
    let lock = env.repo().join(LOCK_NAME);
    std::fs::remove_file(&lock).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&lock)
        .status()
        .unwrap()
        .success());
    for p in [env.root().to_path_buf(), env.repo()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for n in env.repo_names() {
        let p = env.repo().join(n);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut cmd = Command::new("timeout");
    cmd.current_dir(env.root()).args([
        "20",
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        BIN,
        "-V",
        "-r",
        "repo",
    ]);
    let o = exec(cmd);
    if o.stderr_str().contains("setpriv") {
        eprintln!("skipped: cannot run as nobody: {}", o.describe());
        return;
    }
    assert_ne!(o.code(), Some(124), "the check hung: {}", o.describe());
    o.ok();
}
