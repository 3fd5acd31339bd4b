//! Review of `-L -r s3://` (issue 18, first step) against Garage
//! (`scripts/garage.sh`) and small servers of our own on loopback: an
//! endpoint that accepts and never answers, one that is not S3 (a web page
//! answering 200 to everything), no credentials, `--metrics`, and objects
//! in "subdirectories" or under a longer prefix.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::s3::{garage, run_s3, upload};
use crate::util::*;

/// An endpoint on loopback that answers every request with `answer`
/// (`None`: accepts the connection, reads, and never answers).
fn server(answer: Option<&'static str>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 8192];
            let _ = c.read(&mut buf);
            match answer {
                Some(a) => {
                    let _ = c.write_all(a.as_bytes());
                }
                None => held.push(c),
            }
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn s3_endpoint_that_never_answers_fails_after_the_timeout() {
    // was: -L hung forever (no timeout on any request)
    let env = Env::new();
    let url = server(None);
    let t = Instant::now();
    let line = run_s3(
        &env,
        &["-L", "-r", "s3://repozo/x"],
        &[("AWS_ENDPOINT_URL", &url), ("REPOZO_TEST_S3_TIMEOUT", "2")],
    )
    .error("no answer from");
    assert!(line.contains(&url), "{line}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn s3_endpoint_that_is_a_web_page_is_not_an_empty_repository() {
    // was: "no backups", exit 0 (the HTML parsed as an empty listing)
    let env = Env::new();
    let url = server(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 20\r\n\
         Connection: close\r\n\r\n<html>console</html>",
    ));
    run_s3(
        &env,
        &["-L", "-r", "s3://repozo/x"],
        &[("AWS_ENDPOINT_URL", &url)],
    )
    .error("does not answer as an S3 store");
}

#[test]
fn s3_endpoint_answering_404_without_an_s3_error_is_one_short_line() {
    // was: the request's whole context (headers, uri) on the line
    let env = Env::new();
    let url = server(Some(
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    let line = run_s3(
        &env,
        &["-L", "-r", "s3://repozo/x"],
        &[("AWS_ENDPOINT_URL", &url)],
    )
    .error("HTTP 404 without an S3 error");
    assert!(!line.contains("headers"), "{line}");
}

#[test]
fn s3_without_credentials_says_which_variables() {
    // was: "signing http request, source: failed to load signing credential"
    let env = Env::new();
    for profile in [None, Some("no-such-profile")] {
        let mut cmd = repozo_cmd(env.root(), &["-L", "-r", "s3://repozo/x"], LATE);
        for (k, v) in garage() {
            cmd.env(k, v);
        }
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("HOME", env.root());
        if let Some(p) = profile {
            cmd.env("AWS_PROFILE", p);
        }
        let line = exec(cmd).error("no credentials: set AWS_ACCESS_KEY_ID");
        if let Some(p) = profile {
            assert!(line.contains(p), "{line}");
        }
    }
}

#[test]
fn s3_list_metrics_have_the_repository_gauges() {
    // was: chains, bytes and newest backup missing for an s3:// repository
    let env = Env::with_db(1801, 4);
    env.backup(&[], T1);
    env.append(1802, 2);
    env.backup(&[], T2);
    upload(&env.repo(), "review-metrics");
    run_s3(
        &env,
        &["-L", "-r", "repo", "--metrics=local.prom"],
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
    )
    .ok();
    run_s3(
        &env,
        &[
            "-L",
            "-r",
            "s3://repozo/review-metrics",
            "--metrics=s3.prom",
        ],
        &[],
    )
    .ok();
    let gauges = |f: &str| -> Vec<String> {
        std::fs::read_to_string(env.root().join(f))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("repozo_repository_") || l.starts_with("repozo_newest"))
            .map(|l| l.replace("s3://repozo/review-metrics", "repo"))
            .collect()
    };
    let want = gauges("local.prom");
    assert_eq!(want.len(), 3, "{want:?}");
    assert_eq!(gauges("s3.prom"), want);
}

#[test]
fn s3_objects_in_subdirectories_or_a_longer_prefix_are_not_backups() {
    // held: only the objects directly under the prefix count
    let env = Env::with_db(1803, 3);
    env.backup(&[], T1);
    upload(&env.repo(), "review-a/sub");
    upload(&env.repo(), "review-ab");
    let o = run_s3(&env, &["-L", "-r", "s3://repozo/review-a"], &[]).ok();
    assert_eq!(o.stdout_str(), "no backups\n");
    let o = run_s3(&env, &["-L", "-r", "s3://repozo/review-ab"], &[]).ok();
    let want = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
    assert_eq!(
        o.stdout_str().replace("s3://repozo/review-ab", "repo"),
        want
    );
}
