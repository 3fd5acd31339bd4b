//! Break-it review of `-r s3://`, round 2 (after `review_s3_modes.rs`):
//! cases where a run against a real Garage exits 0 with a wrong answer,
//! damages a repository, or lets two writers in. Each test fails on the
//! code it was written against.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::s3::{garage, run_s3};
use crate::s3_write::{aws, backup_to, lock_object, now_secs};
use crate::util::*;

/// Put `bytes` as the object `name` under `prefix` (as another host's
/// run would write it).
fn put_object(env: &Env, prefix: &str, name: &str, bytes: &[u8]) {
    let dir = env.path(&format!("put-{}", name.replace('/', "_")));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    crate::s3::upload(&dir, prefix);
}

/// A lock's age is judged by the `time` its writer's clock put in it,
/// against this host's clock: another host whose clock is 31 minutes
/// behind writes (or refreshes, every 5 minutes) a lock that every other
/// host takes for 31 minutes old, so stale, and removes: both runs write
/// at once, which the lock exists to prevent (and the refresh of the
/// first run puts its lock back, so neither notices). The store's own
/// clock (the object's Last-Modified, one clock for every host) says
/// the lock was written a second ago. Here the lock object of such a
/// host is put just before the backup.
#[test]
fn s3_a_fresh_lock_from_a_host_whose_clock_is_behind_is_not_stale() {
    let env = Env::with_db(3201, 4);
    let prefix = "review2-skew";
    let url = "s3://repozo/review2-skew";
    backup_to(&env, url, T1, &[]).ok();
    env.append(3202, 2);
    // written now, by a live run on a host whose clock is 31 min behind
    put_object(
        &env,
        prefix,
        ".repozo-locks/slow-clock-77-00",
        &lock_object(true, "slow-clock", 77, now_secs() - 31 * 60),
    );
    let o = backup_to(&env, url, T2, &[]);
    let listed = aws(
        "s3",
        &["ls", &format!("{url}/.repozo-locks/slow-clock-77-00")],
    );
    assert!(
        !o.status.success() && o.stderr_str().contains("locked"),
        "-B removed a lock object written a second ago (lock still there: {}) and went on:\n{}",
        !listed.stdout.is_empty(),
        o.describe()
    );
}

/// A proxy to Garage on loopback that, once a request line starting
/// with `trigger` has gone through, answers the next `fail` GET requests
/// itself with `503 Service Unavailable` (a store that is briefly
/// unavailable: each is retried). Its URL.
fn failing_proxy(trigger: String, fail: usize) -> String {
    let upstream = garage()["AWS_ENDPOINT_URL"]
        .trim_start_matches("http://")
        .to_string();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let armed = Arc::new(AtomicUsize::new(usize::MAX));
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { continue };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match s2.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c2.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            let (armed, trigger) = (Arc::clone(&armed), trigger.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    if chunk.starts_with(trigger.as_bytes()) {
                        armed.store(fail, Ordering::SeqCst);
                    } else if chunk.starts_with(b"GET ")
                        && armed
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                                (a != usize::MAX && a > 0).then(|| a - 1)
                            })
                            .is_ok()
                    {
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                              Connection: close\r\n\r\n",
                        );
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    if server.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    url
}

/// A full backup whose `.dat` was written but could not be read back
/// (the store briefly unavailable) is rolled back: its `.dat` first, then
/// its data file. Removing goes by the listing, and a listing that fails
/// is taken for "no such object": the `.dat` is skipped and the data
/// file, listed again a moment later, removed. Left behind: the newest
/// chain's `.dat` naming a data file that is gone, so `-R` of the newest
/// state fails (it never falls back to an older chain) until the next
/// backup, and the failed run said nothing of it. Here the store answers
/// 503 to the 10 GETs after the `.dat` is written: the 5 tries to read it
/// back, then the 5 tries to list the prefix before removing it.
#[test]
fn s3_a_failed_listing_during_roll_back_is_not_no_such_object() {
    let env = Env::with_db(3211, 5);
    let url = "s3://repozo/review2-rollback";
    backup_to(&env, url, T1, &[]).ok();
    let before = env.read("Data.fs");
    env.append(3212, 2);
    let proxy = failing_proxy(format!("PUT /repozo/review2-rollback/{T2}.dat"), 10);
    let b = run_s3(
        &env,
        &["-BF", "-r", url, "-f", "Data.fs"],
        &[("REPOZO_TEST_NOW", T2), ("AWS_ENDPOINT_URL", &proxy)],
    );
    assert!(
        !b.status.success(),
        "premise: the commit fails: {}",
        b.describe()
    );
    let r = run_s3(&env, &["-R", "-r", url, "-o", "r.fs"], &[]);
    let objects = aws("s3", &["ls", &format!("{url}/")]);
    assert!(
        r.status.success(),
        "-R of the newest state after a failed -BF ({}), objects:\n{}\n{}",
        b.stderr_str().trim(),
        String::from_utf8_lossy(&objects.stdout),
        r.describe()
    );
    let got = env.read("r.fs");
    assert!(
        got == before || got == env.read("Data.fs"),
        "-R recovered neither the state before nor the one of the failed run"
    );
}
