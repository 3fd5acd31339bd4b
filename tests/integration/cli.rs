//! The command line: help, usage errors (compared with ZODB's repozo),
//! getopt-style spellings, and options ignored in a mode.

use crate::util::*;

#[test]
fn help_prints_usage_on_stdout_and_exits_0() {
    let env = Env::new();
    for args in [&["-h"][..], &["--help"], &["--he"], &["-B", "-h"]] {
        let o = env.run(args, T1).ok();
        let out = o.stdout_str();
        assert!(
            out.starts_with("repozo -- incremental and full backups"),
            "{}",
            o.describe()
        );
        assert!(out.contains("Usage: repozo [options]"), "{}", o.describe());
        assert!(out.contains("-R / --recover"), "{}", o.describe());
        assert!(o.stderr.is_empty(), "{}", o.describe());
    }
    // ZODB's repozo does the same
    let p = env.py_repozo(&["-h"], T1).ok();
    assert!(p.stdout_str().contains("Usage:"));
    assert!(p.stderr.is_empty());
}

/// Each usage error: usage text and the message on stderr, exit 1, with the
/// same message (and exit status) as ZODB's repozo.
#[test]
fn usage_errors_match_zodb() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-r", "repo"],
            "Either --backup, --recover or --verify is required",
        ),
        (&[], "Either --backup, --recover or --verify is required"),
        (
            &["-B", "-R", "-r", "repo"],
            "-B, -R, and -V are mutually exclusive",
        ),
        (
            &["-V", "--backup", "-r", "repo"],
            "-B, -R, and -V are mutually exclusive",
        ),
        (&["-R"], "--repository is required"),
        (&["-V", "-Q"], "--repository is required"),
        (&["-B", "-r", "repo"], "--file is required in backup mode"),
        (
            &["-B", "-r", "repo", "-f", ""],
            "--file is required in backup mode",
        ),
        (&["-B", "-x", "-r", "repo"], "option -x not recognized"),
        (&["--bogus", "-r", "repo"], "option --bogus not recognized"),
        (&["--ver", "-r", "repo"], "option --ver not a unique prefix"),
        (&["-R", "-r"], "option -r requires argument"),
        (&["-R", "-r", "repo", "extra"], "Invalid arguments: extra"),
        (
            &["-R", "-r", "repo", "a", "-v", "b"],
            "Invalid arguments: a, -v, b",
        ),
    ];
    for (args, msg) in cases {
        let ours = env.run(args, T1).usage_error(msg);
        let py = env.py_repozo(args, T1).fails();
        assert_eq!(
            ours.code(),
            py.code(),
            "{}\n{}",
            ours.describe(),
            py.describe()
        );
        assert!(
            py.stderr_str().contains(msg),
            "ZODB's message differs from ours ({msg:?}):\n{}",
            py.describe()
        );
        // nothing was created
        assert!(env.repo_names().is_empty());
    }
}

#[test]
fn clustered_short_flags_and_long_prefixes() {
    let env = Env::with_db(1, 20);
    // -BQr DIR: clustered, with the value as the next word
    env.run(&["-BQr", "repo", "-f", "Data.fs"], T1).ok();
    assert_eq!(
        env.repo_names(),
        [
            format!("{T1}.dat"),
            format!("{T1}.fs"),
            format!("{T1}.index")
        ]
    );
    env.append(2, 3);
    // -rDIR: value attached; --back: unique prefix of --backup
    env.run(&["--back", "-rrepo", "--file=Data.fs"], T2).ok();
    assert!(env.exists(&format!("repo/{T2}.deltafs")));
    env.append(3, 3);
    // --rep=DIR, --fi DIR, -Fz clustered
    env.run(&["-Fz", "--bac", "--rep=repo", "--fi", "Data.fs"], T3)
        .ok();
    assert!(env.exists(&format!("repo/{T3}.fsz")));
    // the .dat spells the repository as given
    let dat = String::from_utf8(env.read(&format!("repo/{T3}.dat"))).unwrap();
    assert!(dat.starts_with(&format!("repo/{T3}.fsz 0 ")), "{dat}");
    // -VQrrepo, --recover --rep repo --out X
    env.run(&["-VQrrepo"], T4).ok();
    env.run(&["--recover", "--rep", "repo", "--out", "out.fs"], T4)
        .ok();
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "recovered");
}

/// Options that do not apply to the mode are noted under -v, and silently
/// ignored otherwise.
#[test]
fn ignored_options_are_noted_under_verbose() {
    let env = Env::with_db(1, 20);
    let o = env
        .run(
            &[
                "-B", "-r", "repo", "-f", "Data.fs", "-D", "x", "-o", "y", "-w", "-v",
            ],
            T1,
        )
        .ok();
    let o = o
        .stderr_has("--date option is ignored in backup mode")
        .stderr_has("--output option is ignored in backup mode")
        .stderr_has("--with-verify option is ignored in backup mode");
    assert!(o.stdout.is_empty(), "{}", o.describe());
    assert!(!env.exists("y"), "the ignored -o was used");

    // same run without -v: silent
    env.append(2, 2);
    let o = env
        .run(&["-B", "-r", "repo", "-f", "Data.fs", "-D", "x"], T2)
        .ok();
    assert!(o.stderr.is_empty(), "{}", o.describe());

    let o = env
        .run(
            &[
                "-V",
                "-v",
                "-r",
                "repo",
                "-D",
                "2020-01-01",
                "-o",
                "y",
                "-F",
                "-z",
                "-f",
                "z",
                "-k",
                "-w",
            ],
            T3,
        )
        .ok();
    o.stderr_has("--date option is ignored in verify mode")
        .stderr_has("--output option is ignored in verify mode")
        .stderr_has("--full option is ignored in verify mode")
        .stderr_has("--gzip option is ignored in verify mode")
        .stderr_has("--file option is ignored in verify mode")
        .stderr_has("--kill-old-on-full option is ignored in verify mode")
        .stderr_has("--with-verify option is ignored in verify mode");

    let o = env
        .run(
            &["-R", "-v", "-r", "repo", "-f", "nope", "-k", "-o", "out.fs"],
            T3,
        )
        .ok();
    o.stderr_has("--file option is ignored in recover mode")
        .stderr_has("--kill-old-on-full option is ignored in recover mode");
    assert_bytes(&env.read("out.fs"), &env.read("Data.fs"), "recovered");
}
