//! `-B` to an `s3://` repository (issue 18) against a real Garage: the
//! same commands at the same times give the same files with the same bytes
//! as a directory (but the path field of `.dat` lines, which names the
//! repository as given, like ZODB's repozo writes it); `aws s3 sync` of
//! the prefix down gives a repository ZODB's repozo verifies and recovers,
//! and `rclone copy` of ZODB's repository up gives one we recover, extend
//! and verify. The lock objects of restic's protocol keep a second writer
//! out; stale ones go.

use std::path::Path;
use std::process::Command;

use crate::s3::{garage, run_s3};
use crate::util::*;

/// The venv's `aws` and `rclone` (tests/py/requirements.txt).
fn venv_tool(name: &str) -> std::path::PathBuf {
    let p = python().parent().unwrap().join(name);
    assert!(p.exists(), "{} missing: run scripts/venv.sh", p.display());
    p
}

/// `aws s3 sync` between `from` and `to` (one of them `s3://...`).
pub(crate) fn aws_sync(from: &str, to: &str) {
    let o = aws("s3", &["sync", "--only-show-errors", from, to]);
    assert!(o.status.success(), "aws s3 sync: {o:?}");
}

/// `rclone copy` between `from` and `to` (`:s3:BUCKET/PREFIX` for the
/// store).
pub(crate) fn rclone_copy(cwd: &Path, from: &str, to: &str) {
    let g = garage();
    let o = Command::new(venv_tool("rclone"))
        .args(["copy", from, to])
        .current_dir(cwd)
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_S3_PROVIDER", "Other")
        .env("RCLONE_S3_ENDPOINT", &g["AWS_ENDPOINT_URL"])
        .env("RCLONE_S3_REGION", &g["AWS_REGION"])
        .env("RCLONE_S3_ACCESS_KEY_ID", &g["AWS_ACCESS_KEY_ID"])
        .env("RCLONE_S3_SECRET_ACCESS_KEY", &g["AWS_SECRET_ACCESS_KEY"])
        .output()
        .unwrap();
    assert!(o.status.success(), "rclone copy: {o:?}");
}

/// `aws COMMAND ARGS` against the test's Garage.
pub(crate) fn aws(command: &str, args: &[&str]) -> std::process::Output {
    let g = garage();
    Command::new(venv_tool("aws"))
        .arg(command)
        .args(args)
        .args(["--endpoint-url", &g["AWS_ENDPOINT_URL"]])
        .envs(g.iter())
        .output()
        .unwrap()
}

/// `-B -r URL -f Data.fs EXTRA` at `now`.
pub(crate) fn backup_to(env: &Env, url: &str, now: &str, extra: &[&str]) -> Output {
    let mut args = vec!["-B", "-r", url, "-f", "Data.fs"];
    args.extend_from_slice(extra);
    run_s3(env, &args, &[("REPOZO_TEST_NOW", now)])
}

/// The files of `dir` by name, `.dat` path fields replaced by `NAME`.
fn files(dir: &Path, url: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_str().unwrap().to_string();
            let mut bytes = std::fs::read(e.path()).unwrap();
            if name.ends_with(".dat") {
                let text = String::from_utf8(bytes).unwrap();
                bytes = text
                    .replace(&format!("{url}/"), "")
                    .replace(&format!("{}/", dir.display()), "")
                    .replace("repo/", "")
                    .into_bytes();
            }
            (name, bytes)
        })
        .filter(|(n, _)| n != ".repozo.lock")
        .collect();
    out.sort();
    out
}

#[test]
fn backups_to_a_prefix_are_the_files_of_a_directory_and_zodb_reads_them() {
    let env = Env::with_db(2201, 10);
    let url = "s3://repozo/write-same";
    let steps: &[(&[&str], &str, u32)] = &[
        (&[], T1, 0),
        (&[], T2, 2),
        (&["-Q"], T3, 2),
        (&["-F", "-z"], T4, 1),
        (&["-z", "--prune-index"], T5, 2),
        (&["-z", "-Q", "--prune-index"], T6, 2),
        (&["--keep=1"], "2026-11-23-00-00-00", 1),
    ];
    for (i, (extra, t, txns)) in steps.iter().enumerate() {
        if *txns > 0 {
            env.append(2202 + i as u64, *txns);
        }
        let mut local = vec!["-B", "-r", "repo", "-f", "Data.fs"];
        let mut remote = vec!["-B", "-r", url, "-f", "Data.fs"];
        local.extend_from_slice(extra);
        remote.extend_from_slice(extra);
        env.run(&local, t).ok();
        run_s3(&env, &remote, &[("REPOZO_TEST_NOW", t)]).ok();
        let down = env.path(&format!("down{i}"));
        aws_sync(url, down.to_str().unwrap());
        assert_eq!(
            files(&down, url),
            files(&env.repo(), url),
            "after {extra:?} at {t}: the prefix (left) and the directory"
        );
        // ZODB's repozo verifies and recovers the copy
        let d = down.to_str().unwrap();
        env.py_repozo(&["-V", "-r", d], LATE).ok();
        env.py_repozo(&["-R", "-r", d, "-o", "py.fs"], LATE).ok();
        assert_bytes(&env.read("py.fs"), &env.read("Data.fs"), t);
        // and we recover the same from the prefix
        run_s3(&env, &["-V", "-r", url], &[]).ok();
        run_s3(&env, &["-R", "-r", url, "-o", "ours.fs"], &[]).ok();
        assert_bytes(&env.read("ours.fs"), &env.read("Data.fs"), t);
        env.open_with_index("ours.fs");
        for f in ["py.fs", "py.fs.index", "ours.fs", "ours.fs.index"] {
            let _ = std::fs::remove_file(env.path(f));
        }
    }
    // nothing to do: no new object
    let before = files(&env.path("down6"), url);
    backup_to(&env, url, LATE, &[]).ok();
    aws_sync(url, env.path("down7").to_str().unwrap());
    assert_eq!(files(&env.path("down7"), url), before);
}

#[test]
fn a_repository_of_zodb_copied_up_with_rclone_is_recovered_and_extended() {
    let env = Env::with_db(2211, 8);
    env.py_backup(&[], T1);
    env.append(2212, 2);
    env.py_backup(&["-z"], T2);
    rclone_copy(env.root(), "repo", ":s3:repozo/write-rclone");
    let url = "s3://repozo/write-rclone";
    run_s3(&env, &["-V", "-r", url], &[]).ok();
    run_s3(&env, &["-R", "-r", url, "-o", "a.fs"], &[]).ok();
    assert_bytes(&env.read("a.fs"), &env.read("Data.fs"), "ZODB's chain");
    // our increment onto ZODB's chain, in the bucket; then back down
    env.append(2213, 2);
    for quick in [&["-Q"][..], &[]] {
        let mut args = vec!["-B", "-r", url, "-f", "Data.fs"];
        args.extend_from_slice(quick);
        run_s3(&env, &args, &[("REPOZO_TEST_NOW", T3)]).ok();
    }
    rclone_copy(env.root(), ":s3:repozo/write-rclone", "down");
    env.py_repozo(&["-V", "-r", "down"], LATE).ok();
    env.py_repozo(&["-R", "-r", "down", "-o", "py.fs"], LATE)
        .ok();
    assert_bytes(&env.read("py.fs"), &env.read("Data.fs"), "extended");
    // ZODB's repozo extends the copy, and we read its increment
    env.append(2214, 1);
    env.py_repozo(&["-B", "-r", "down", "-f", "Data.fs"], T4)
        .ok();
    rclone_copy(env.root(), "down", ":s3:repozo/write-rclone");
    run_s3(&env, &["-R", "-r", url, "-o", "b.fs", "-w"], &[]).ok();
    assert_bytes(&env.read("b.fs"), &env.read("Data.fs"), "ZODB's increment");
}

/// A lock object as a run of ours writes it.
pub(crate) fn lock_object(exclusive: bool, host: &str, pid: u32, time: u64) -> Vec<u8> {
    // the boot and PID namespace of this test process, which its child
    // processes share
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let space = format!("{}:{}", boot.trim(), ns.display());
    format!(
        "repozo-lock 1\nexclusive {exclusive}\nhost {host}\npid {pid}\ntime {time}\nspace {space}\n"
    )
    .into_bytes()
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn lock_objects_keep_a_second_writer_out_and_stale_ones_go() {
    let env = Env::with_db(2221, 6);
    let url = "s3://repozo/write-lock";
    backup_to(&env, url, T1, &[]).ok();
    env.append(2222, 1);
    let locks = env.path("locks");
    std::fs::create_dir_all(locks.join(".repozo-locks")).unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let dir = env.path(&format!("lock-{name}"));
        std::fs::create_dir_all(dir.join(".repozo-locks")).unwrap();
        std::fs::write(dir.join(".repozo-locks").join(name), bytes).unwrap();
        crate::s3::upload(&dir, "write-lock");
    };
    let gone = |name: &str| {
        let o = aws("s3", &["ls", &format!("{url}/.repozo-locks/{name}")]);
        o.stdout.is_empty()
    };
    let backup = |t: &str| backup_to(&env, url, t, &[]);
    // another host's exclusive lock, fresh: -B and -R are kept out
    put("other-1-aa", lock_object(true, "other-host", 1, now_secs()));
    let e = backup(T2).error("repository locked");
    assert!(
        e.contains(
            "exclusive lock s3://repozo/write-lock/.repozo-locks/other-1-aa by pid 1 on other-host"
        ),
        "{e}"
    );
    run_s3(&env, &["-R", "-r", url, "-o", "x.fs"], &[]).error("locked");
    assert!(!env.exists("x.fs"));
    // -L reads without a lock
    run_s3(&env, &["-L", "-r", url], &[]).ok();
    backup_to(&env, url, T2, &[]).fails();
    // a shared lock (a recovery elsewhere): recovery goes on, a backup not
    put(
        "other-1-aa",
        lock_object(false, "other-host", 1, now_secs()),
    );
    run_s3(&env, &["-R", "-r", url, "-o", "x.fs"], &[]).ok();
    backup(T2).error("locked");
    // stale: not rewritten for longer than the stale time, by the store's
    // clock (30 minutes; 2 s here, REPOZO_TEST_LOCK_STALE)
    put("other-1-aa", lock_object(true, "other-host", 1, now_secs()));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let stale = [("REPOZO_TEST_NOW", T2), ("REPOZO_TEST_LOCK_STALE", "2")];
    run_s3(&env, &["-B", "-r", url, "-f", "Data.fs"], &stale).ok();
    assert!(gone("other-1-aa"), "the stale lock was removed");
    // stale: a process of this host that is gone
    env.append(2223, 1);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    put("dead-aa", lock_object(true, &host, 0x3fff_fff0, now_secs()));
    backup(T3).ok();
    assert!(gone("dead-aa"));
    // our own locks are gone after each run
    let o = aws(
        "s3",
        &["ls", "--recursive", &format!("{url}/.repozo-locks/")],
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    run_s3(&env, &["-R", "-r", url, "-o", "y.fs"], &[]).ok();
    assert_bytes(&env.read("y.fs"), &env.read("Data.fs"), "after the locks");
}

#[test]
fn an_increment_no_dat_lists_is_set_aside_in_the_bucket() {
    let env = Env::with_db(2231, 6);
    env.backup(&[], T1);
    env.append(2232, 1);
    env.backup(&[], T2);
    // an increment whose .dat line was lost (a run killed before its
    // commit): in the bucket, not in the .dat
    let dat = env.repo().join(format!("{T1}.dat"));
    let text = std::fs::read_to_string(&dat).unwrap();
    let first = text.lines().next().unwrap().to_string() + "\n";
    std::fs::write(&dat, first).unwrap();
    crate::s3::upload(&env.repo(), "write-orphan");
    let url = "s3://repozo/write-orphan";
    env.append(2233, 1);
    backup_to(&env, url, T3, &[]).ok();
    aws_sync(url, env.path("down").to_str().unwrap());
    assert!(env.exists(&format!("down/{T2}.deltafs.orphaned")));
    assert!(!env.exists(&format!("down/{T2}.deltafs")));
    env.py_repozo(&["-V", "-r", "down"], LATE).ok();
    env.py_repozo(&["-R", "-r", "down", "-o", "py.fs"], LATE)
        .ok();
    assert_bytes(&env.read("py.fs"), &env.read("Data.fs"), "after the orphan");
}

/// `aws s3api ARGS` against the test's Garage; its stdout.
pub(crate) fn s3api(args: &[&str]) -> String {
    let o = aws("s3api", args);
    assert!(o.status.success(), "aws s3api {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn unfinished_uploads_under_the_prefix_are_aborted_by_the_next_backup() {
    let env = Env::with_db(2241, 6);
    let url = "s3://repozo/write-mpu";
    backup_to(&env, url, T1, &[]).ok();
    // uploads a killed run left: a data file and an .index under the
    // prefix; and one under another prefix, which is not ours to touch
    let ours = [
        format!("write-mpu/{T2}.deltafs"),
        format!("write-mpu/{T2}.index"),
    ];
    for key in ours
        .iter()
        .map(String::as_str)
        .chain(["write-mpu-other/x.fs"])
    {
        let up = s3api(&[
            "create-multipart-upload",
            "--bucket",
            "repozo",
            "--key",
            key,
        ]);
        let id = up.split("\"UploadId\": \"").nth(1).unwrap();
        let id = &id[..id.find('"').unwrap()];
        env.write("part", &[7u8; 1000]);
        let part = env.path("part");
        s3api(&[
            "upload-part",
            "--bucket",
            "repozo",
            "--key",
            key,
            "--part-number",
            "1",
            "--upload-id",
            id,
            "--body",
            part.to_str().unwrap(),
        ]);
    }
    let listed = |prefix: &str| {
        s3api(&[
            "list-multipart-uploads",
            "--bucket",
            "repozo",
            "--prefix",
            prefix,
        ])
        .matches("\"UploadId\"")
        .count()
    };
    assert_eq!(listed("write-mpu/"), 2);
    // -R does not touch them (it may not hold the exclusive lock)
    run_s3(&env, &["-R", "-r", url, "-o", "a.fs"], &[]).ok();
    assert_eq!(listed("write-mpu/"), 2);
    env.append(2242, 1);
    let o = run_s3(
        &env,
        &["-B", "-v", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T3)],
    )
    .ok();
    assert!(
        o.stderr_str().contains("aborted the unfinished upload"),
        "{}",
        o.describe()
    );
    assert_eq!(listed("write-mpu/"), 0);
    assert_eq!(listed("write-mpu-other/"), 1);
    run_s3(&env, &["-R", "-r", url, "-o", "b.fs"], &[]).ok();
    assert_bytes(&env.read("b.fs"), &env.read("Data.fs"), "after the cleanup");
}

/// The files under `dir/blobs` by path, with their bytes.
fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    crate::s3_read::tree(&dir.join("blobs"))
}

#[test]
fn blobs_go_to_the_bucket_as_to_a_directory_and_come_back() {
    let env = Env::with_db(2251, 4);
    let url = "s3://repozo/write-blobs";
    let steps: &[(&[&str], &str)] = &[
        (&[], T1),
        (&[], T2),
        (&["-Q", "-z"], T3),
        (&["-F"], T4),
        (&["--keep=1"], T5),
    ];
    for (i, (extra, t)) in steps.iter().enumerate() {
        write_blobs(&env, 2252 + i as u64, 2, &[]);
        let mut local = vec!["-B", "-r", "repo", "-f", "Data.fs", "--blob-dir=blobs"];
        let mut remote = vec!["-B", "-r", url, "-f", "Data.fs", "--blob-dir=blobs"];
        local.extend_from_slice(extra);
        remote.extend_from_slice(extra);
        env.run(&local, t).ok();
        run_s3(&env, &remote, &[("REPOZO_TEST_NOW", t)]).ok();
        let down = env.path(&format!("down{i}"));
        aws_sync(url, down.to_str().unwrap());
        assert_eq!(files(&down, url), files(&env.repo(), url), "{t}");
        assert_eq!(
            store_files(&down),
            store_files(&env.repo()),
            "{t}: blob store"
        );
        run_s3(&env, &["-V", "-r", url], &[]).ok();
        let out = format!("out{i}.fs");
        let dir = format!("--blob-dir=out{i}-blobs");
        run_s3(&env, &["-R", "-r", url, "-o", &out, &dir], &[]).ok();
        assert_bytes(&env.read(&out), &env.read("Data.fs"), t);
        // ZODB sees the same objects and blobs in the recovered state
        let want = blobtool(&env, &["dump", "Data.fs", "blobs"]).ok().stdout;
        let got = blobtool(&env, &["dump", &out, &format!("out{i}-blobs")])
            .ok()
            .stdout;
        assert_bytes(&got, &want, &format!("{t}: blobs as ZODB sees them"));
    }
    // a stored revision damaged in the bucket is found by -V
    let store = store_files(&env.path("down4"));
    let (name, bytes) = store.last().unwrap();
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    let dir = env.path("damage");
    std::fs::create_dir_all(dir.join("blobs").join(Path::new(name).parent().unwrap())).unwrap();
    std::fs::write(dir.join("blobs").join(name), bad).unwrap();
    crate::s3::upload(&dir, "write-blobs");
    let e = run_s3(&env, &["-V", "-r", url], &[]).fails().stderr_str();
    assert!(e.contains("md5"), "{e}");
}
