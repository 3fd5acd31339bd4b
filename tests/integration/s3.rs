//! `-r s3://BUCKET/PREFIX` (issue 18) against a real Garage server on
//! loopback (`scripts/garage.sh`, started once for the test binary):
//! `-L` of a prefix holding a repository's files gives what `-L` of the
//! directory gives; a wrong key, a missing bucket, an endpoint that does
//! not answer, and a mode that does not take object storage yet are one
//! line each, exit 1. `scripts/test.sh` builds Garage first; without it
//! these tests fail saying so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::util::*;

/// The Garage server's AWS_* environment.
pub(crate) fn garage() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::Builder::new()
            .prefix("repozo-garage-")
            .tempdir()
            .unwrap()
            .keep();
        let o = Command::new(root.join("scripts/garage.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "scripts/garage.sh start failed (run scripts/garage.sh install first): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// Our binary with the Garage environment (and `extra` over it).
pub(crate) fn run_s3(env: &Env, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = repozo_cmd(env.root(), args, LATE);
    for (k, v) in garage() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    exec(cmd)
}

/// An OpenDAL operator on `prefix` of the bucket of the Garage whose
/// environment is `g`, with a runtime to block on.
pub(crate) fn operator(
    g: &BTreeMap<String, String>,
    prefix: &str,
) -> (opendal::Operator, tokio::runtime::Runtime) {
    opendal::install_default();
    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket(&g["REPOZO_S3_BUCKET"])
            .endpoint(&g["AWS_ENDPOINT_URL"])
            .region(&g["AWS_REGION"])
            .access_key_id(&g["AWS_ACCESS_KEY_ID"])
            .secret_access_key(&g["AWS_SECRET_ACCESS_KEY"])
            .root(&format!("/{prefix}")),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (op, rt)
}

/// Upload every file of `dir` (recursively) under `prefix` of the bucket,
/// with the same names, as `aws s3 sync` would.
pub(crate) fn upload(dir: &Path, prefix: &str) {
    let (op, rt) = operator(garage(), prefix);
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let bytes = std::fs::read(e.path()).unwrap();
        rt.block_on(op.write(&rel, bytes)).unwrap();
    }
}

/// A repository with two chains, increments, `-z`, blobs, a pruned
/// `.index`, a chain by ZODB's repozo and a damaged one.
fn a_repository() -> Env {
    let env = Env::with_db(1901, 10);
    write_blobs(&env, 1902, 3, &[]);
    env.backup(&["--blob-dir=blobs"], T1);
    write_blobs(&env, 1903, 2, &[]);
    env.backup(&["--blob-dir=blobs", "--prune-index"], T2);
    write_blobs(&env, 1904, 2, &[]);
    env.backup(&["--blob-dir=blobs", "--prune-index"], T3);
    env.append(1905, 2);
    env.py_backup(&["-F", "-z"], T4);
    env.append(1906, 2);
    env.py_backup(&["-z"], T5);
    // an increment that its .dat does not list
    std::fs::copy(
        env.repo().join(format!("{T5}.deltafsz")),
        env.repo().join(format!("{T6}.deltafsz")),
    )
    .unwrap();
    env
}

#[test]
fn list_of_a_prefix_equals_list_of_the_directory() {
    let env = a_repository();
    upload(&env.repo(), "list-same");
    for json in [false, true] {
        let mut local = vec!["-L", "-r", "repo"];
        let mut remote = vec!["-L", "-r", "s3://repozo/list-same"];
        if json {
            local.push("--json");
            remote.push("--json");
        }
        let want = env.run(&local, LATE).ok().stdout_str();
        let got = run_s3(&env, &remote, &[]).ok().stdout_str();
        let got = got.replace("s3://repozo/list-same", "repo");
        assert_eq!(got, want, "-L of the prefix (left) and of the directory");
        assert!(
            want.contains("blob store:") || want.contains("\"blob_store\""),
            "{want}"
        );
        assert!(want.contains("orphan"), "{want}");
    }
    // a prefix given with a trailing slash is the same prefix
    let a = run_s3(&env, &["-L", "-r", "s3://repozo/list-same/"], &[])
        .ok()
        .stdout_str();
    let b = run_s3(&env, &["-L", "-r", "s3://repozo/list-same"], &[])
        .ok()
        .stdout_str();
    assert_eq!(a, b);
    // an empty prefix
    let o = run_s3(&env, &["-L", "-r", "s3://repozo/nothing-here"], &[]).ok();
    assert_eq!(o.stdout_str(), "no backups\n");
}

#[test]
fn connection_errors_are_one_line_each() {
    let env = Env::new();
    let one_line = |o: Output, needle: &str| {
        let o = o.fails();
        let lines = o.stderr_lines();
        assert_eq!(lines.len(), 1, "{}", o.describe());
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    };
    one_line(
        run_s3(
            &env,
            &["-L", "-r", "s3://repozo/x"],
            &[("AWS_SECRET_ACCESS_KEY", "0000")],
        ),
        "access denied",
    );
    one_line(
        run_s3(&env, &["-L", "-r", "s3://no-such-bucket/x"], &[]),
        "no such bucket",
    );
    one_line(
        run_s3(
            &env,
            &["-L", "-r", "s3://repozo/x"],
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
        ),
        "cannot reach http://127.0.0.1:9",
    );
    one_line(
        run_s3(&env, &["-L", "-r", "s3:///x"], &[]),
        "is not s3://BUCKET/PREFIX",
    );
}

/// Without `AWS_REGION`, the region is the profile's in the AWS config
/// file, as the AWS tools read it (Garage refuses a request signed for
/// another region); a prefix that S3 would not read as meant is refused.
#[test]
fn the_region_comes_from_the_config_file_and_odd_prefixes_are_refused() {
    let env = Env::new();
    let run = |config: &str, profile: Option<&str>| {
        env.write("aws-config", config.as_bytes());
        let mut cmd = repozo_cmd(env.root(), &["-L", "-r", "s3://repozo/region"], LATE);
        for (k, v) in garage() {
            cmd.env(k, v);
        }
        cmd.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_CONFIG_FILE", env.path("aws-config"));
        match profile {
            Some(p) => cmd.env("AWS_PROFILE", p),
            None => cmd.env_remove("AWS_PROFILE"),
        };
        exec(cmd)
    };
    run("[default]\nregion = garage\n", None).ok();
    run(
        "[default]\nregion = elsewhere\n[profile g]\nregion = garage\n",
        Some("g"),
    )
    .ok();
    // the wrong region: refused by Garage, one line
    let o = run("[default]\nregion = elsewhere\n", None).fails();
    assert_eq!(o.stderr_lines().len(), 1, "{}", o.describe());
    for bad in [
        "s3://repozo/a/../b",
        "s3://repozo/./b",
        "s3://repozo//b",
        "s3://repozo/b?x=1",
    ] {
        let o = run_s3(&env, &["-L", "-r", bad], &[]).fails();
        assert!(
            o.stderr_str().contains("is not s3://BUCKET/PREFIX"),
            "{}",
            o.describe()
        );
    }
}
