//! Break-it review of every mode with `-r s3://` (issue 18) against a real
//! Garage (`scripts/garage.sh`): cases where a run exits 0 with a wrong
//! answer, damages a repository (for us or for ZODB's repozo after
//! `aws s3 sync` down), or says something unclear. A small TCP proxy in
//! front of Garage holds one request of a run, so that another run can
//! happen in between, deterministically.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::s3::{garage, run_s3};
use crate::s3_write::aws_sync;
use crate::util::*;

/// A proxy to Garage on loopback that holds the first request whose bytes
/// contain `needle` until `resume` is sent, after telling `paused`.
/// Signatures stay valid: the Host header is the proxy's, as signed.
struct Proxy {
    url: String,
    paused: mpsc::Receiver<()>,
    resume: mpsc::Sender<()>,
}

fn proxy(needle: &'static str) -> Proxy {
    proxy_with(Some(needle), None)
}

/// Copy `from` to `to` at most `rate` bytes a second (unlimited: `None`).
fn pipe(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(r) = rate {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// [`proxy`], holding the first request that holds `needle` (if any),
/// and passing at most `rate` bytes a second each way per connection (a
/// slow link that keeps answering).
fn proxy_with(needle: Option<&'static str>, rate: Option<u64>) -> Proxy {
    let upstream = garage()["AWS_ENDPOINT_URL"]
        .trim_start_matches("http://")
        .to_string();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (paused_tx, paused) = mpsc::channel::<()>();
    let (resume, resume_rx) = mpsc::channel::<()>();
    let resume_rx = Arc::new(std::sync::Mutex::new(resume_rx));
    let fired = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { continue };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pipe(s2, c2, rate));
            let Some(needle) = needle else {
                std::thread::spawn(move || pipe(client, server, rate));
                continue;
            };
            let (paused_tx, resume_rx, fired) = (
                paused_tx.clone(),
                Arc::clone(&resume_rx),
                Arc::clone(&fired),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let hit = buf[..n]
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes());
                    if hit && !fired.swap(true, Ordering::SeqCst) {
                        let _ = paused_tx.send(());
                        let _ = resume_rx
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(60));
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Proxy {
        url,
        paused,
        resume,
    }
}

/// Our binary with the Garage environment through `endpoint`, started.
fn spawn_s3(env: &Env, args: &[&str], now: &str, endpoint: &str) -> std::process::Child {
    let mut cmd = repozo_cmd(env.root(), args, now);
    cmd.envs(garage().iter())
        .env("AWS_ENDPOINT_URL", endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn describe(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `-B` lists the prefix when it opens the repository, before it takes
/// the lock, and keeps that listing: a backup that another run committed
/// in between (a full one, `-F` or after a pack) is not seen. The second
/// run extends the old chain with an increment stamped after the new
/// chain's full backup; ZODB's repozo then recovers the new full backup
/// followed by that increment, a corrupt `Data.fs`, with exit 0.
#[test]
fn s3_backup_uses_the_listing_made_before_its_lock() {
    let env = Env::with_db(3101, 6);
    let url = "s3://repozo/review-modes-stale-listing";
    run_s3(
        &env,
        &["-B", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T1)],
    )
    .ok();
    env.append(3102, 3);
    // run B: opens (lists), then is held on its first look at the locks
    let p = proxy(".repozo-locks");
    let b = spawn_s3(&env, &["-B", "-r", url, "-f", "Data.fs"], T3, &p.url);
    p.paused
        .recv_timeout(Duration::from_secs(30))
        .expect("run B asks for the locks");
    // run A: a full backup, committed, its lock gone
    run_s3(
        &env,
        &["-BF", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T2)],
    )
    .ok();
    p.resume.send(()).unwrap();
    let b = b.wait_with_output().unwrap();
    assert!(b.status.success(), "run B: {}", describe(&b));
    // what ZODB's repozo recovers from a copy of the prefix
    let down = env.path("down");
    aws_sync(url, down.to_str().unwrap());
    env.py_repozo(&["-R", "-r", down.to_str().unwrap(), "-o", "py.fs"], LATE)
        .ok();
    assert_bytes(
        &env.read("py.fs"),
        &env.read("Data.fs"),
        "ZODB's repozo -R of the prefix after two -B runs",
    );
}

/// An object under `.repozo-locks/` that is not a lock of ours (a lock
/// of a later format, an object another tool put there) counts as an
/// exclusive lock and, holding no time, never goes stale: every run is
/// refused with "another repozo run is using ...; try again when it has
/// finished", which will never happen, and nothing on the line says which
/// object holds the repository (that is only under `-v`).
#[test]
fn s3_an_unreadable_lock_object_is_named_in_the_error() {
    let env = Env::with_db(3111, 4);
    let url = "s3://repozo/review-modes-bad-lock";
    run_s3(
        &env,
        &["-B", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T1)],
    )
    .ok();
    let dir = env.path("up");
    std::fs::create_dir_all(dir.join(".repozo-locks")).unwrap();
    std::fs::write(dir.join(".repozo-locks/junk"), b"repozo-lock 2\nwhatever\n").unwrap();
    crate::s3::upload(&dir, "review-modes-bad-lock");
    for args in [
        &["-B", "-r", url, "-f", "Data.fs"][..],
        &["-R", "-r", url, "-o", "x.fs"][..],
    ] {
        let line = run_s3(&env, args, &[("REPOZO_TEST_NOW", T2)]).error("locked");
        assert!(
            line.contains(".repozo-locks/junk"),
            "{args:?}: the line does not say which object keeps the repository locked: {line}"
        );
    }
}

/// Every call on an upload or a download (each part written, the close
/// that waits for the parts in flight, each range read) must end within
/// the timeout (30 s; `REPOZO_TEST_S3_TIMEOUT` here), however busy the
/// link is: a store that keeps answering, only slowly, is "no answer"
/// after 4 retries. With parts of 8 MiB, 4 in flight, a backup or a
/// recovery over a link below about 9 Mbit/s (an ADSL or a small office
/// uplink; one part alone needs 2.2 Mbit/s) never completes. Here the
/// link is scaled down with the timeout: 3 MB at 512 KiB/s (6 s), a
/// timeout of 2 s.
#[test]
fn s3_a_slow_link_that_keeps_answering_is_not_no_answer() {
    let env = Env::with_db(3121, 150);
    let url = "s3://repozo/review-modes-slow-link";
    let slow = proxy_with(None, Some(512 << 10));
    let run = |args: &[&str]| {
        run_s3(
            &env,
            args,
            &[
                ("AWS_ENDPOINT_URL", &slow.url),
                ("REPOZO_TEST_S3_TIMEOUT", "2"),
                ("REPOZO_TEST_NOW", T1),
            ],
        )
    };
    let b = run(&["-B", "-r", url, "-f", "Data.fs"]);
    assert!(b.status.success(), "-B over a slow link: {}", b.describe());
    // the recovery of a backup made over a fast link
    run_s3(
        &env,
        &["-B", "-r", &format!("{url}-2"), "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T1)],
    )
    .ok();
    let r = run(&["-R", "-r", &format!("{url}-2"), "-o", "r.fs"]);
    assert!(r.status.success(), "-R over a slow link: {}", r.describe());
    assert_bytes(
        &env.read("r.fs"),
        &env.read("Data.fs"),
        "-R over a slow link",
    );
}

/// A lock object of this host whose pid does not exist *here* is taken
/// for a dead run's and removed, but the pid is only meaningful in the
/// PID namespace that wrote it: runs in containers that share the host's
/// name (host networking, Kubernetes `hostNetwork`) each see the other's
/// live lock as stale, and both go on writing. Here run A holds its lock
/// (held by the proxy just after it took it) while run B, in its own PID
/// namespace, removes A's lock and backs up.
#[test]
fn s3_a_live_lock_from_another_pid_namespace_is_not_stale() {
    // a PID namespace of our own needs root (or user namespaces)
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `unshare --pid --fork` is not allowed here");
        return;
    }
    let env = Env::with_db(3131, 6);
    let url = "s3://repozo/review-modes-pidns";
    run_s3(
        &env,
        &["-B", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T1)],
    )
    .ok();
    env.append(3132, 2);
    // run A: locked, then held on its look for unfinished uploads
    let p = proxy("?uploads");
    let a = spawn_s3(&env, &["-B", "-r", url, "-f", "Data.fs"], T3, &p.url);
    p.paused
        .recv_timeout(Duration::from_secs(30))
        .expect("run A takes its lock");
    // run B on the same host, in a PID namespace of its own
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", BIN, "-BF", "-r", url, "-f", "Data.fs"])
        .current_dir(env.root())
        .env("REPOZO_TEST_NOW", T2)
        .envs(garage().iter());
    let b = exec(cmd);
    p.resume.send(()).unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(
        b.stderr_str().contains("locked"),
        "run B went on while run A held the lock (A: {}):\n{}",
        describe(&a),
        b.describe()
    );
}

/// A backup whose lock object was removed while it ran (another run took
/// it for stale: this one was cut off or stopped for longer than the
/// stale time) must not commit: the other run may be writing. (Was: it
/// committed, and its refresh would have written the lock back.)
#[test]
fn s3_a_backup_that_lost_its_lock_does_not_commit() {
    let env = Env::with_db(3141, 6);
    let prefix = "review-modes-lost-lock";
    let url = format!("s3://repozo/{prefix}");
    run_s3(
        &env,
        &["-B", "-r", &url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T1)],
    )
    .ok();
    env.append(3142, 2);
    // held when it starts uploading its increment, after it took its lock
    let p = proxy("2026-11-20-02-30-15.deltafs");
    let a = spawn_s3(&env, &["-B", "-r", &url, "-f", "Data.fs"], T3, &p.url);
    p.paused
        .recv_timeout(Duration::from_secs(30))
        .expect("the backup starts its upload");
    let g = garage();
    let o = std::process::Command::new(python().parent().unwrap().join("aws"))
        .args(["s3", "rm", "--recursive", &format!("{url}/.repozo-locks/")])
        .args(["--endpoint-url", &g["AWS_ENDPOINT_URL"]])
        .envs(g.iter())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    p.resume.send(()).unwrap();
    let a = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(
        !a.status.success() && err.contains("lock") && err.lines().count() == 1,
        "{}",
        describe(&a)
    );
    // nothing of it stays; the chain recovers as it was
    aws_sync(&url, env.path("down").to_str().unwrap());
    assert!(!env.exists(&format!("down/{T3}.deltafs")));
    let dat = env.read(&format!("down/{T1}.dat"));
    assert_eq!(String::from_utf8_lossy(&dat).lines().count(), 1);
    run_s3(&env, &["-V", "-r", &url], &[]).ok();
}
