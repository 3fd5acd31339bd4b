//! Fault runs of `-r s3://` (issue 18) against a real Garage, with real
//! ZODB data: throttling (`503 SlowDown`) and dropped connections from a
//! fault-injecting proxy (`tests/py/s3_proxy.py`), the store down at each
//! request of a backup, a lost answer to the completion of a multipart
//! upload, a Garage server (`scripts/garage.sh`, one of the test's own)
//! killed or restarted in the middle of a backup and of a recovery, lock
//! objects left by a killed run or by another host, and two backups
//! started together. Each run either succeeds with the right bytes or
//! fails with one line; after a failure every earlier state recovers, and
//! the repository that a later backup completes is read by ZODB's repozo
//! from an `aws s3 sync` copy.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use md5::Digest as _;

use crate::s3::garage;
use crate::util::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A number that differs from run to run (printed by the tests that use
/// it, with how to fix it: `REPOZO_S3_FAULTS_SEED`).
fn run_seed() -> u64 {
    if let Ok(s) = std::env::var("REPOZO_S3_FAULTS_SEED") {
        return s.parse().expect("REPOZO_S3_FAULTS_SEED is a number");
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % 1_000_000
}

/// A small generator for the test's own random choices.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

fn md5_hex(b: &[u8]) -> String {
    format!("{:x}", md5::Md5::digest(b))
}

// ---------------------------------------------------------------------------
// Stores: the shared Garage of the test binary, or one of a test's own

/// An S3 store: its AWS_* environment; a Garage of the test's own
/// (`dir`) can be killed and restarted.
struct Store {
    env: BTreeMap<String, String>,
    dir: Option<PathBuf>,
}

impl Store {
    /// The Garage the test binary shares.
    fn shared() -> Store {
        Store {
            env: garage().clone(),
            dir: None,
        }
    }

    /// A Garage of our own (`scripts/garage.sh start`), killed when dropped.
    fn own() -> Store {
        let dir = tempfile::Builder::new()
            .prefix("repozo-garage-")
            .tempdir()
            .unwrap()
            .keep();
        let env = garage_sh("start", &dir);
        Store {
            env,
            dir: Some(dir),
        }
    }

    fn endpoint(&self) -> &str {
        &self.env["AWS_ENDPOINT_URL"]
    }

    /// SIGKILL the server (our own only).
    fn kill(&self) {
        let dir = self.dir.as_ref().expect("a Garage of our own");
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: a signal to the server this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // gone when its port no longer answers
        let addr = self.endpoint().trim_start_matches("http://").to_string();
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_ok() {
            assert!(t.elapsed() < Duration::from_secs(10), "garage still up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the killed server again, same data, ports and key.
    fn restart(&self) {
        garage_sh("restart", self.dir.as_ref().expect("a Garage of our own"));
    }

    /// An OpenDAL operator on `prefix` of the bucket, with its runtime.
    fn op(&self, prefix: &str) -> (opendal::Operator, tokio::runtime::Runtime) {
        crate::s3::operator(&self.env, prefix)
    }

    /// Every object under `prefix/` (recursively) with its size.
    fn list(&self, prefix: &str) -> BTreeMap<String, u64> {
        let (op, rt) = self.op(prefix);
        let entries = rt
            .block_on(async { op.list_with("").recursive(true).await })
            .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
        entries
            .into_iter()
            .filter(|e| !e.metadata().is_dir())
            .map(|e| (e.path().to_string(), e.metadata().content_length()))
            .filter(|(n, _)| !n.is_empty())
            .collect()
    }

    fn put(&self, prefix: &str, name: &str, bytes: &[u8]) {
        let (op, rt) = self.op(prefix);
        rt.block_on(op.write(name, bytes.to_vec())).unwrap();
    }

    /// `aws s3 sync s3://BUCKET/PREFIX DIR` with the awscli of the venv.
    fn aws_sync(&self, prefix: &str, dir: &Path) {
        let aws = python().parent().unwrap().join("aws");
        let mut c = Command::new(aws);
        c.args(["s3", "sync", "--only-show-errors"])
            .arg(format!("s3://{}/{prefix}", self.env["REPOZO_S3_BUCKET"]))
            .arg(dir);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // awscli 1.x reads the region from AWS_DEFAULT_REGION only
        c.env("AWS_DEFAULT_REGION", &self.env["AWS_REGION"]);
        exec(c).ok();
    }

    /// Our binary on this store (through `endpoint` when given: a proxy).
    fn cmd(&self, env: &Env, args: &[&str], endpoint: Option<&str>, now: &str) -> Command {
        let mut cmd = repozo_cmd(env.root(), args, now);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(e) = endpoint {
            cmd.env("AWS_ENDPOINT_URL", e);
        }
        cmd.env("REPOZO_TEST_S3_TIMEOUT", "3");
        cmd
    }

    fn run(&self, env: &Env, args: &[&str], endpoint: Option<&str>, now: &str) -> Output {
        exec(self.cmd(env, args, endpoint, now))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            if let Ok(pid) = std::fs::read_to_string(dir.join("pid")) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: a signal to the server this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn garage_sh(what: &str, dir: &Path) -> BTreeMap<String, String> {
    let o = Command::new(root().join("scripts/garage.sh"))
        .arg(what)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/garage.sh {what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// The proxy

/// `tests/py/s3_proxy.py` in front of a store; killed when dropped.
struct Proxy {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Proxy {
    fn start(store: &Store, log: &Path, args: &[&str]) -> Proxy {
        let _ = std::fs::remove_file(log);
        let mut child = Command::new(python())
            .arg(root().join("tests/py/s3_proxy.py"))
            .arg("--upstream")
            .arg(store.endpoint().trim_start_matches("http://"))
            .arg("--log")
            .arg(log)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("s3_proxy.py said {line:?}"))
            .to_string();
        Proxy {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        }
    }

    /// The requests so far: (number, method, path, fault).
    fn requests(&self) -> Vec<(usize, String, String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 4).then(|| {
                    (
                        f[0].parse().unwrap(),
                        f[1].to_string(),
                        f[2].to_string(),
                        f[3].to_string(),
                    )
                })
            })
            .collect()
    }

    /// How many requests got each fault.
    fn faults(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, _, _, f) in self.requests() {
            *out.entry(f).or_default() += 1;
        }
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Checks

/// A failed run: exit 1, every line of stderr ours, no panic; at most
/// `max_lines` lines (one, but `-V` prints each problem on its own line).
#[track_caller]
fn failed_cleanly(o: &Output, max_lines: usize) {
    let lines = o.stderr_lines();
    assert!(
        o.code() == Some(1)
            && !lines.is_empty()
            && lines.len() <= max_lines
            && lines.iter().all(|l| l.starts_with("repozo: "))
            && !o.stderr_str().contains("panicked"),
        "expected a clean failure (exit 1, at most {max_lines} line(s) `repozo: ...`)\n{}",
        o.describe()
    );
}

/// The names of the objects directly under the prefix that carry `stamp`.
fn with_stamp(store: &Store, prefix: &str, stamp: &str) -> Vec<String> {
    store
        .list(prefix)
        .into_keys()
        .filter(|n| n.starts_with(stamp))
        .collect()
}

/// The source's committed bytes.
fn committed(env: &Env) -> Vec<u8> {
    let n = env.committed_size("Data.fs") as usize;
    env.read("Data.fs")[..n].to_vec()
}

/// ZODB's repozo on an `aws s3 sync` copy of the prefix: `-V` passes and
/// `-R` gives `want`.
#[track_caller]
fn zodb_reads_a_copy(store: &Store, env: &Env, prefix: &str, want: &[u8]) {
    let copy = format!("copy-{}", prefix.replace('/', "-"));
    store.aws_sync(prefix, &env.path(&copy));
    env.py_repozo(&["-V", "-r", &copy], LATE).ok();
    let out = format!("{copy}.fs");
    env.py_repozo(&["-R", "-r", &copy, "-o", &out], LATE).ok();
    assert_bytes(
        &env.read(&out),
        want,
        "ZODB's repozo from the aws s3 sync copy",
    );
}

// ---------------------------------------------------------------------------
// Throttling and dropped connections

/// What a run of [`backups_through`] saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    faults: BTreeMap<String, usize>,
}

/// Backups (full, incremental, `-z`, `-Q`), recoveries and verifications
/// of one prefix through a faulty proxy: each succeeds with the right
/// bytes or fails cleanly. `strict`: the proxy spares listings and
/// removals, so a failed backup can always take back what it wrote: no
/// object of its stamp may stay, and every committed state must recover
/// exactly at its date. Otherwise (every request faulty) a failed backup
/// may leave whole objects that the next one sets aside, and the checks
/// are on what the runs say and on the next clean backup.
fn backups_through(
    seed: u64,
    prefix: &str,
    proxy_args: &[&str],
    strict: bool,
    n_steps: usize,
) -> Tally {
    let store = Store::shared();
    let env = Env::with_db(seed, 30);
    let url = format!("s3://repozo/{prefix}");
    let proxy = Proxy::start(&store, &env.path("proxy.log"), proxy_args);
    let via = Some(proxy.endpoint.as_str());
    let mut tally = Tally::default();
    // (stamp, state) of the backups that succeeded
    let mut states: Vec<(&str, Vec<u8>)> = Vec::new();
    let steps: [(&str, &[&str]); 6] = [
        (T1, &[]),
        (T2, &[]),
        (T3, &["-Q"]),
        (T4, &["-F", "-z"]),
        (T5, &["-z"]),
        (T6, &["-Q", "-z"]),
    ];
    for (i, (stamp, flags)) in steps.iter().take(n_steps).enumerate() {
        if i > 0 {
            env.append(seed * 10 + i as u64, 3);
        }
        let mut args = vec!["-B", "-r", &url, "-f", "Data.fs"];
        args.extend_from_slice(flags);
        let o = store.run(&env, &args, via, stamp);
        if o.status.success() {
            tally.ok += 1;
            states.push((stamp, committed(&env)));
        } else {
            tally.failed += 1;
            failed_cleanly(&o, 1);
            if strict {
                let left = with_stamp(&store, prefix, stamp);
                assert!(
                    left.is_empty(),
                    "a failed backup left {left:?}\n{}",
                    o.describe()
                );
            }
        }
        // the newest state through the proxy, to a file and with -V
        let Some((_, want)) = states.last() else {
            continue;
        };
        let _ = std::fs::remove_file(env.path("out.fs"));
        let o = store.run(&env, &["-R", "-r", &url, "-o", "out.fs"], via, LATE);
        if o.status.success() {
            tally.ok += 1;
            assert_bytes(&env.read("out.fs"), want, "recovered through the proxy");
        } else {
            tally.failed += 1;
            failed_cleanly(&o, 1);
            assert!(
                !env.exists("out.fs") && !env.exists("out.fs.part"),
                "a failed recovery left a file\n{}",
                o.describe()
            );
        }
        let o = store.run(&env, &["-V", "-r", &url], via, LATE);
        if o.status.success() {
            tally.ok += 1;
        } else {
            tally.failed += 1;
            // each problem on its own line; never a verdict on the bytes
            failed_cleanly(&o, 8);
            for bad in ["checksum", "should be", "starts at"] {
                assert!(
                    !o.stderr_str().contains(bad),
                    "a fault of the connection read as damage\n{}",
                    o.describe()
                );
            }
        }
    }
    tally.faults = proxy.faults();
    drop(proxy);
    if strict {
        // every committed state at its date, without faults
        for (stamp, want) in &states {
            let o = store.run(
                &env,
                &["-R", "-r", &url, "-D", stamp, "-o", "at.fs"],
                None,
                LATE,
            );
            o.ok();
            assert_bytes(&env.read("at.fs"), want, stamp);
        }
        if !states.is_empty() {
            store.run(&env, &["-V", "-r", &url], None, LATE).ok();
        }
    }
    // a clean backup completes the repository: -V, -R, and ZODB's repozo
    // from an aws s3 sync copy
    store
        .run(&env, &["-B", "-r", &url, "-f", "Data.fs"], None, LATE)
        .ok();
    store.run(&env, &["-V", "-r", &url], None, LATE).ok();
    let want = committed(&env);
    store
        .run(&env, &["-R", "-r", &url, "-o", "final.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("final.fs"), &want, "after a clean backup");
    zodb_reads_a_copy(&store, &env, prefix, &want);
    tally
}

/// 30% of the requests throttled and 10% of the connections dropped
/// (before the request reaches the store, or in the middle of its answer,
/// after the store did the work): the retries carry almost every run
/// through; none gives a wrong answer, a failed backup leaves nothing.
#[test]
fn s3_throttled_and_dropped_requests_give_the_right_bytes_or_one_line() {
    let seed = run_seed();
    eprintln!("proxy seed {seed} (again: REPOZO_S3_FAULTS_SEED={seed})");
    let s = seed.to_string();
    let t = backups_through(
        2201,
        &format!("faults-mild-{seed}"),
        &[
            "--slowdown",
            "0.3",
            "--drop",
            "0.1",
            "--seed",
            &s,
            "--only",
            "GET,HEAD,PUT,POST",
            "--spare",
            "list-type=",
        ],
        true,
        6,
    );
    assert!(
        t.faults.get("slowdown").copied().unwrap_or(0) > 5
            && t.faults.get("drop-mid").copied().unwrap_or(0) > 0
            && t.faults.get("drop-before").copied().unwrap_or(0) > 0,
        "the proxy injected too few faults: {t:?}"
    );
    eprintln!("mild: {t:?}");
}

/// Every request may fail (listings and removals too): 35% throttled and
/// 25% dropped, so that calls fail after their retries. Runs fail with
/// one line or succeed with the right bytes; the next clean backup gives
/// a repository that both tools verify and recover.
#[test]
fn s3_heavy_faults_fail_cleanly_and_the_next_backup_heals() {
    let seed = run_seed();
    eprintln!("proxy seed {seed} (again: REPOZO_S3_FAULTS_SEED={seed})");
    let s = seed.to_string();
    let t = backups_through(
        2202,
        &format!("faults-heavy-{seed}"),
        &["--slowdown", "0.35", "--drop", "0.25", "--seed", &s],
        false,
        3,
    );
    eprintln!("heavy: {t:?}");
}

// ---------------------------------------------------------------------------
// The store down at one request of a backup, for a while

/// An incremental backup whose store goes away at one request and comes
/// back after 5 requests (each refused: the call fails after its 4
/// retries, and what follows reaches the store again), at each request
/// that writes or commits: the data object, its `.index`, the `.dat`, the
/// `.dat` read back, `.repozo-sums`, the lock's removal. Before the
/// commit: exit 1, one line, nothing of the backup left, the previous
/// state recovers; after: exit 0 and the new state. And an answer lost
/// after the store did the work (the `.dat` written, its answer cut) is
/// retried to success.
#[test]
fn s3_store_down_at_each_write_of_a_backup() {
    let store = Store::shared();
    let env = Env::with_db(2211, 12);
    let base = committed(&env);
    let base_fs = env.read("Data.fs");
    env.append(2212, 3);
    let grown = committed(&env);
    let new = format!("{T2}.deltafs");
    let setup = |prefix: &str| {
        env.write("base.fs", &base_fs);
        let url = format!("s3://repozo/{prefix}");
        store
            .run(&env, &["-B", "-r", &url, "-f", "base.fs"], None, T1)
            .ok();
        url
    };
    // the requests of a clean run
    let url = setup("down-probe");
    let proxy = Proxy::start(&store, &env.path("probe.log"), &[]);
    store
        .run(
            &env,
            &["-B", "-r", &url, "-f", "Data.fs"],
            Some(&proxy.endpoint),
            T2,
        )
        .ok();
    let reqs = proxy.requests();
    drop(proxy);
    let find = |method: &str, has: &str, nth: usize| -> usize {
        reqs.iter()
            .filter(|(_, m, p, _)| m == method && p.contains(has))
            .nth(nth)
            .unwrap_or_else(|| panic!("no {method} {has} in {reqs:?}"))
            .0
    };
    let dat = format!("{T1}.dat");
    let dat_put = find("PUT", &dat, 0);
    let readback = reqs
        .iter()
        .find(|(n, m, p, _)| *n > dat_put && m == "GET" && p.ends_with(&dat))
        .expect("the .dat read back")
        .0;
    // (request, whether the backup is committed when it fails: None for
    // the streamed writes, whose 8 tries may ride out the outage)
    let points = [
        (find("PUT", &new, 0), None),
        (find("PUT", &format!("{T2}.index"), 0), None),
        (dat_put, Some(false)),
        (readback, Some(false)),
        (find("PUT", ".repozo-sums", 0), Some(true)),
        (find("DELETE", ".repozo-locks/", 0), Some(true)),
    ];
    for (i, (n, commits)) in points.iter().enumerate() {
        let prefix = format!("down-{i}");
        let url = setup(&prefix);
        let n = n.to_string();
        let proxy = Proxy::start(
            &store,
            &env.path(&format!("down-{i}.log")),
            &["--down-from", &n, "--down-for", "5"],
        );
        let o = store.run(
            &env,
            &["-B", "-r", &url, "-f", "Data.fs"],
            Some(&proxy.endpoint),
            T2,
        );
        let what = format!(
            "store down at request {n}: {:?}",
            reqs[n.parse::<usize>().unwrap() - 1]
        );
        let commits = commits.unwrap_or(o.status.success());
        let want = if commits {
            assert!(o.status.success(), "{what}\n{}", o.describe());
            &grown
        } else {
            failed_cleanly(&o, 1);
            let left = with_stamp(&store, &prefix, T2);
            assert!(left.is_empty(), "{what}: left {left:?}\n{}", o.describe());
            &base
        };
        drop(proxy);
        store.run(&env, &["-V", "-r", &url], None, LATE).ok();
        store
            .run(&env, &["-R", "-r", &url, "-o", "out.fs"], None, LATE)
            .ok();
        assert_bytes(&env.read("out.fs"), want, &what);
        if !commits {
            // and the next backup makes the increment
            store
                .run(&env, &["-B", "-r", &url, "-f", "Data.fs"], None, T3)
                .ok();
            store
                .run(&env, &["-R", "-r", &url, "-o", "out.fs"], None, LATE)
                .ok();
            assert_bytes(&env.read("out.fs"), &grown, &format!("{what}, then"));
        }
    }
    // the answer to the .dat's PUT lost, once: retried, the same bytes
    let url = setup("down-lost-answer");
    let n = dat_put.to_string();
    let proxy = Proxy::start(
        &store,
        &env.path("lost.log"),
        &["--drop-nth", &n, "--drop-when", "mid"],
    );
    store
        .run(
            &env,
            &["-B", "-r", &url, "-f", "Data.fs"],
            Some(&proxy.endpoint),
            T2,
        )
        .ok();
    assert_eq!(proxy.faults().get("drop-mid"), Some(&1));
    drop(proxy);
    store.run(&env, &["-V", "-r", &url], None, LATE).ok();
    store
        .run(&env, &["-R", "-r", &url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &grown, "after a lost answer");
}

/// A data file of more than one part (a multipart upload) whose
/// completion the store did but whose answer was lost: the retry is told
/// "NoSuchUpload" and the backup fails. It used to leave the whole object
/// behind, a full backup without a `.dat` that recovery uses; now it is
/// taken back.
#[test]
fn s3_lost_answer_to_an_upload_completion_leaves_no_backup() {
    let store = Store::shared();
    let env = Env::new();
    env.zodb(&[
        "create", "Data.fs", "--seed", "2221", "--txns", "60", "--objs", "50",
    ])
    .ok();
    assert!(env.read("Data.fs").len() > 9 << 20, "premise: two parts");
    let url = "s3://repozo/lost-completion";
    let proxy = Proxy::start(
        &store,
        &env.path("proxy.log"),
        &[
            "--drop",
            "1",
            "--only",
            "POST",
            "--path-has",
            "uploadId=",
            "--max-faults",
            "1",
            "--drop-when",
            "mid",
        ],
    );
    let o = store.run(
        &env,
        &["-B", "-r", url, "-f", "Data.fs"],
        Some(&proxy.endpoint),
        T1,
    );
    assert_eq!(
        proxy.faults().get("drop-mid"),
        Some(&1),
        "{:?}",
        proxy.requests()
    );
    drop(proxy);
    if o.status.success() {
        // a client that finds the object complete may go on: then it is
        // the whole backup
        store.run(&env, &["-V", "-r", url], None, LATE).ok();
    } else {
        failed_cleanly(&o, 1);
        let left = with_stamp(&store, "lost-completion", T1);
        assert!(
            left.is_empty(),
            "the failed backup left {left:?}\n{}",
            o.describe()
        );
        store
            .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
            .fails();
        store
            .run(&env, &["-B", "-r", url, "-f", "Data.fs"], None, T2)
            .ok();
    }
    store
        .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &committed(&env), "recovered");
}

/// The store away for one second in the middle of a data file of
/// several parts (a multipart upload, 4 parts in flight): the backup must
/// ride it out, as a single request does (4 retries, 0.2 s to 1.6 s
/// apart: about 3 s). It fails: OpenDAL starts a failed part again at
/// once, without the backoff, and every part that fails, of the 4 in
/// flight, takes one of the 4 retries of the one `write` call: even half
/// a second of outage (or a store restarted in a second, see
/// `s3_server_killed_or_restarted_mid_backup_and_mid_recovery`) fails the
/// backup, while an object of one part survives 2.5 s.
#[test]
fn s3_multipart_upload_rides_out_a_one_second_outage() {
    let store = Store::shared();
    let env = Env::new();
    env.zodb(&[
        "create", "Data.fs", "--seed", "2261", "--txns", "100", "--objs", "50",
    ])
    .ok();
    assert!(env.read("Data.fs").len() > 16 << 20, "premise: three parts");
    let url = "s3://repozo/outage-multipart";
    // the first part's PUT: after the listing, the lock, the creation
    let probe = Proxy::start(&store, &env.path("probe.log"), &[]);
    store
        .run(
            &env,
            &["-B", "-r", "s3://repozo/outage-probe", "-f", "Data.fs"],
            Some(&probe.endpoint),
            T1,
        )
        .ok();
    let first_part = probe
        .requests()
        .iter()
        .find(|(_, m, p, _)| m == "PUT" && p.contains("partNumber="))
        .expect("a part")
        .0
        .to_string();
    drop(probe);
    let proxy = Proxy::start(
        &store,
        &env.path("proxy.log"),
        &["--down-from", &first_part, "--down-secs", "1"],
    );
    let o = store.run(
        &env,
        &["-B", "-r", url, "-f", "Data.fs"],
        Some(&proxy.endpoint),
        T1,
    );
    drop(proxy);
    o.ok();
    store
        .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &committed(&env), "recovered");
}

// ---------------------------------------------------------------------------
// A server killed or restarted

/// A run of our binary in the background, to be waited for.
fn spawn(mut cmd: Command) -> (Child, String) {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, what)
}

fn wait(child: Child, what: String, cwd: &Path) -> Output {
    let o = child.wait_with_output().unwrap();
    Output {
        cmd: what,
        cwd: cwd.to_path_buf(),
        status: o.status,
        stdout: o.stdout,
        stderr: o.stderr,
    }
}

/// A database of about 40 MB: its upload takes seconds.
fn big_db(seed: u64) -> Env {
    let env = Env::new();
    let s = seed.to_string();
    env.zodb(&[
        "create", "Data.fs", "--seed", &s, "--txns", "200", "--objs", "50",
    ])
    .ok();
    assert!(env.read("Data.fs").len() > 30 << 20);
    env
}

/// The Garage server SIGKILLed at a random moment of a full backup of
/// about 40 MB (five parts): the backup fails with one line within the
/// retries; restarted, the store holds no object of it, `-V` passes, the
/// previous state recovers, and the next backup gives a repository that
/// ZODB's repozo verifies and recovers from an `aws s3 sync` copy. Then
/// the server killed and restarted a second later in the middle of
/// another backup: it succeeds, or fails cleanly the same way.
/// Then the server killed in the middle of a recovery: no output file
/// (nor `FILE.part`); an existing one is left as it was.
#[test]
fn s3_server_killed_or_restarted_mid_backup_and_mid_recovery() {
    let seed = run_seed();
    eprintln!("seed {seed} (again: REPOZO_S3_FAULTS_SEED={seed})");
    let mut rng = seed;
    let mut frac = || (next(&mut rng) % 1000) as f64 / 1000.0;
    let store = Store::own();
    let env = big_db(2231);
    let url = "s3://repozo/killed";
    let t = Instant::now();
    store
        .run(&env, &["-B", "-r", url, "-f", "Data.fs"], None, T1)
        .ok();
    let full = t.elapsed();
    let s1 = committed(&env);

    // killed
    env.append(2232, 3);
    let at = full.mul_f64(0.1 + 0.4 * frac());
    let (child, what) = spawn(store.cmd(&env, &["-B", "-F", "-r", url, "-f", "Data.fs"], None, T2));
    std::thread::sleep(at);
    store.kill();
    let killed = Instant::now();
    let o = wait(child, what, env.root());
    let took = killed.elapsed();
    eprintln!(
        "full backup {full:?}; killed after {at:?}; failed {took:?} later: {}",
        o.stderr_str().trim()
    );
    failed_cleanly(&o, 1);
    // bounded, never a hang: 8 tries of a streamed upload with backoff
    // (about 25 s), the abort, the roll back and the lock's removal, on
    // a loaded machine
    assert!(
        took < Duration::from_secs(150),
        "{took:?}\n{}",
        o.describe()
    );
    store.restart();
    let left = with_stamp(&store, "killed", T2);
    assert!(left.is_empty(), "the killed backup left {left:?}");
    store.run(&env, &["-V", "-r", url], None, LATE).ok();
    store
        .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(
        &env.read("out.fs"),
        &s1,
        "the state before the killed backup",
    );
    // the next backup: an increment
    store
        .run(&env, &["-B", "-r", url, "-f", "Data.fs"], None, T3)
        .ok();
    let s3 = committed(&env);
    assert!(env.exists("Data.fs") && s3.len() > s1.len());
    store
        .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &s3, "after the next backup");
    zodb_reads_a_copy(&store, &env, "killed", &s3);

    // killed and restarted within a second or two
    env.append(2233, 3);
    let at = full.mul_f64(0.1 + 0.5 * frac());
    let down = Duration::from_millis(300 + (frac() * 1500.0) as u64);
    let (child, what) = spawn(store.cmd(&env, &["-B", "-F", "-r", url, "-f", "Data.fs"], None, T4));
    std::thread::sleep(at);
    store.kill();
    let killed = Instant::now();
    std::thread::sleep(down);
    store.restart();
    let back = killed.elapsed();
    let o = wait(child, what, env.root());
    eprintln!(
        "restarted: killed after {at:?}, answering again {back:?} later: exit {:?} {}",
        o.code(),
        o.stderr_str().trim()
    );
    let want = if o.status.success() {
        committed(&env)
    } else {
        failed_cleanly(&o, 1);
        let left = with_stamp(&store, "killed", T4);
        assert!(left.is_empty(), "the interrupted backup left {left:?}");
        s3.clone()
    };
    store.run(&env, &["-V", "-r", url], None, LATE).ok();
    store
        .run(&env, &["-R", "-r", url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &want, "after the restart");
    if o.status.success() {
        zodb_reads_a_copy(&store, &env, "killed", &want);
    }

    // killed in the middle of a recovery of the 40 MB full backup
    let t = Instant::now();
    store
        .run(
            &env,
            &["-R", "-r", url, "-D", T1, "-o", "clean.fs"],
            None,
            LATE,
        )
        .ok();
    let recovery = t.elapsed();
    assert_bytes(&env.read("clean.fs"), &s1, "clean recovery");
    let before = b"not a database, and not to be lost".repeat(1000);
    for existing in [false, true] {
        let _ = std::fs::remove_file(env.path("out.fs"));
        let _ = std::fs::remove_file(env.path("out.fs.index"));
        if existing {
            env.write("out.fs", &before);
        }
        let at = recovery.mul_f64(0.3 + 0.5 * frac());
        let (child, what) = spawn(store.cmd(
            &env,
            &["-R", "-r", url, "-D", T1, "-o", "out.fs"],
            None,
            LATE,
        ));
        std::thread::sleep(at);
        store.kill();
        let killed = Instant::now();
        let o = wait(child, what, env.root());
        eprintln!(
            "recovery {recovery:?}; killed after {at:?}: exit {:?}",
            o.code()
        );
        assert!(killed.elapsed() < Duration::from_secs(150));
        if o.status.success() {
            // it was done before the kill
            assert_bytes(&env.read("out.fs"), &s1, "recovered before the kill");
        } else {
            failed_cleanly(&o, 1);
            assert!(
                !env.exists("out.fs.part"),
                "out.fs.part left\n{}",
                o.describe()
            );
            if existing {
                assert_bytes(&env.read("out.fs"), &before, "the existing out.fs");
            } else {
                assert!(!env.exists("out.fs"), "out.fs written\n{}", o.describe());
            }
        }
        store.restart();
    }
    store
        .run(
            &env,
            &["-R", "-r", url, "-D", T1, "-o", "out.fs"],
            None,
            LATE,
        )
        .ok();
    assert_bytes(&env.read("out.fs"), &s1, "recovered after the restart");
}

// ---------------------------------------------------------------------------
// Locks

/// A lock object as `src/repository/lock.rs` writes it.
fn lock_object(host: &str, pid: u32, age_secs: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "repozo-lock 1\nexclusive true\nhost {host}\npid {pid}\ntime {}\nspace -\n",
        now - age_secs
    )
    .into_bytes()
}

fn locks(store: &Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .into_keys()
        .filter(|n| n.starts_with(".repozo-locks/"))
        .collect()
}

/// A backup killed (SIGKILL) while it holds the lock leaves its lock
/// object and no object of its backup; on this host the next backup
/// finds the process gone, removes the lock and goes on. The lock of a
/// run on another host blocks `-B` and `-V` ("repository locked") until
/// it is older than 30 minutes; then it is removed and the backup goes on.
#[test]
fn s3_lock_left_by_a_killed_backup_or_by_another_host() {
    let store = Store::shared();
    let env = Env::new();
    env.zodb(&[
        "create", "Data.fs", "--seed", "2241", "--txns", "80", "--objs", "50",
    ])
    .ok();
    let prefix = "lock-killed";
    let url = format!("s3://repozo/{prefix}");
    let (mut child, _) = spawn(store.cmd(&env, &["-B", "-r", &url, "-f", "Data.fs"], None, T1));
    let t = Instant::now();
    while locks(&store, prefix).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no lock object appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = locks(&store, prefix);
    assert_eq!(left.len(), 1, "{left:?}");
    let objects = with_stamp(&store, prefix, T1);
    assert!(objects.is_empty(), "the killed backup left {objects:?}");
    // this host: its process is gone
    store
        .run(&env, &["-B", "-v", "-r", &url, "-f", "Data.fs"], None, T2)
        .ok()
        .stderr_has("removing the stale lock");
    assert!(locks(&store, prefix).is_empty());
    // another host's lock, fresh
    let other = ".repozo-locks/elsewhere-4242-0123456789abcdef";
    store.put(prefix, other, &lock_object("elsewhere", 4242, 60));
    env.append(2242, 2);
    let line = store
        .run(&env, &["-B", "-r", &url, "-f", "Data.fs"], None, T3)
        .error("repository locked");
    assert!(line.contains(&url), "{line}");
    store
        .run(&env, &["-V", "-r", &url], None, LATE)
        .error("repository locked");
    assert!(with_stamp(&store, prefix, T3).is_empty());
    // ... older than the stale time by the store's clock (30 minutes; 2 s
    // here, REPOZO_TEST_LOCK_STALE)
    store.put(prefix, other, &lock_object("elsewhere", 4242, 0));
    std::thread::sleep(Duration::from_secs(3));
    let mut cmd = store.cmd(&env, &["-B", "-r", &url, "-f", "Data.fs"], None, T3);
    cmd.env("REPOZO_TEST_LOCK_STALE", "2");
    exec(cmd).ok();
    assert!(locks(&store, prefix).is_empty());
    store.run(&env, &["-V", "-r", &url], None, LATE).ok();
    store
        .run(&env, &["-R", "-r", &url, "-o", "out.fs"], None, LATE)
        .ok();
    assert_bytes(&env.read("out.fs"), &committed(&env), "recovered");
}

/// Two backups of two different databases started together on one
/// prefix, at the same second: never both write the same stamp; each
/// succeeds or says "repository locked"; every `.dat` verifies and each
/// chain recovers one of the two databases, whole.
#[test]
fn s3_two_backups_started_together() {
    let store = Store::shared();
    let a = Env::with_db(2251, 20);
    let b = Env::with_db(2252, 25);
    let (sa, sb) = (committed(&a), committed(&b));
    let mut tally = BTreeMap::<String, usize>::new();
    for round in 0..4 {
        let prefix = format!("together-{round}");
        let url = format!("s3://repozo/{prefix}");
        let (ca, wa) = spawn(store.cmd(&a, &["-B", "-r", &url, "-f", "Data.fs"], None, T1));
        let (cb, wb) = spawn(store.cmd(&b, &["-B", "-r", &url, "-f", "Data.fs"], None, T1));
        let oa = wait(ca, wa, a.root());
        let ob = wait(cb, wb, b.root());
        for o in [&oa, &ob] {
            if !o.status.success() {
                failed_cleanly(o, 1);
                assert!(
                    o.stderr_str().contains("repository locked"),
                    "{}",
                    o.describe()
                );
            }
        }
        let key = format!("{}+{}", oa.status.success(), ob.status.success());
        *tally.entry(key).or_default() += 1;
        let names = store.list(&prefix);
        assert!(
            names.keys().all(|n| !n.starts_with(".repozo-locks/")),
            "{names:?}"
        );
        let dats: Vec<&String> = names.keys().filter(|n| n.ends_with(".dat")).collect();
        let ok = [&oa, &ob].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            dats.len(),
            ok,
            "one chain per backup that succeeded: {names:?}"
        );
        if ok == 0 {
            continue;
        }
        store.run(&a, &["-V", "-r", &url], None, LATE).ok();
        let mut got = Vec::new();
        for dat in dats {
            let stamp = dat.trim_end_matches(".dat");
            store
                .run(
                    &a,
                    &["-R", "-r", &url, "-D", stamp, "-o", "out.fs"],
                    None,
                    LATE,
                )
                .ok();
            let bytes = a.read("out.fs");
            assert!(
                bytes == sa || bytes == sb,
                "the chain {stamp} recovers neither database ({} bytes)",
                bytes.len()
            );
            got.push(md5_hex(&bytes));
        }
        got.dedup();
        assert_eq!(got.len(), ok, "two chains of the same database");
    }
    eprintln!("outcomes (a ok + b ok): {tally:?}");
}

// ---------------------------------------------------------------------------
// The randomized model suite on object storage

/// `tests/py/montecarlo.py --s3`: the model test of `montecarlo.rs` with
/// our binary on a prefix of the Garage (ZODB's repozo on a mirror of
/// it, synced both ways), for a few seeds of `$REPOZO_MC_S3_STEPS`
/// (default 25) steps each (half the seeds in blob mode). `$REPOZO_MC_SEED` runs that
/// seed only.
#[test]
fn montecarlo_s3() {
    let steps: u64 = std::env::var("REPOZO_MC_S3_STEPS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(25);
    let seeds: Vec<u64> = match std::env::var("REPOZO_MC_SEED") {
        Ok(s) if !s.trim().is_empty() => vec![s.trim().parse().expect("REPOZO_MC_SEED")],
        _ => {
            let mut r = run_seed();
            (0..3).map(|_| next(&mut r) & 0xffff_ffff).collect()
        }
    };
    let store = Store::shared();
    for seed in seeds {
        let (s, n) = (seed.to_string(), steps.to_string());
        let url = format!("s3://repozo/mc-{seed}");
        eprintln!(
            "montecarlo --s3: seed {seed}, {steps} steps (again: REPOZO_MC_SEED={seed} \
             REPOZO_MC_S3_STEPS={steps} cargo test --test integration montecarlo_s3)"
        );
        let mut cmd = Command::new(python());
        cmd.arg(root().join("tests/py/montecarlo.py"))
            .args(["--seed", &s, "--steps", &n, "--s3", &url])
            .args(["--bin", env!("CARGO_BIN_EXE_repozo")])
            .current_dir(root())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in &store.env {
            cmd.env(k, v);
        }
        let o = exec(cmd);
        let want = format!("montecarlo: {steps} passed, 0 failed");
        let stdout = o.stdout_str();
        if !o.status.success() || stdout.lines().last() != Some(want.as_str()) {
            panic!(
                "the Monte Carlo test on s3:// failed (seed {seed})\n{}",
                o.describe()
            );
        }
        eprint!("{stdout}");
    }
}
