//! `-V`: checking the newest chain against its `.dat`.

use crate::util::*;

/// A chain T1 full, T2 and T3 increments.
fn chain(seed: u64, extra: &[&str]) -> Env {
    let env = Env::with_db(seed, 20);
    env.backup(extra, T1);
    env.append(seed + 1, 3);
    env.backup(extra, T2);
    env.append(seed + 2, 3);
    env.backup(extra, T3);
    env
}

#[test]
fn passes_on_good_repositories() {
    for z in [&[][..], &["-z"]] {
        let env = chain(50, z);
        for q in [&[][..], &["-Q"], &["-v"]] {
            let mut args = vec!["-V", "-r", "repo"];
            args.extend_from_slice(q);
            let o = env.run(&args, LATE).ok();
            assert!(o.stdout.is_empty(), "{}", o.describe());
            if !q.contains(&"-v") {
                assert!(o.stderr.is_empty(), "{}", o.describe());
            }
            env.py_repozo(&args, LATE).ok();
        }
    }
}

/// Two damaged files (one grown, one with a flipped byte): each is reported
/// on its own line, then the run fails once. ZODB's repozo stops at the
/// first. With -Q only the size is checked.
#[test]
fn reports_each_bad_file() {
    let env = chain(53, &[]);
    let grown = format!("repo/{T2}.deltafs");
    let flipped = format!("repo/{T3}.deltafs");
    let mut b = env.read(&grown);
    let want = b.len();
    b.extend_from_slice(b"extra");
    env.write(&grown, &b);
    env.flip_byte(&flipped, 100);

    let o = env.run(&["-V", "-r", "repo"], LATE).fails();
    let lines = o.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", o.describe());
    assert_eq!(
        lines[0],
        format!(
            "repozo: {grown} is {} bytes, should be {want} bytes",
            want + 5
        )
    );
    assert!(
        lines[1].starts_with(&format!("repozo: {flipped} has checksum ")),
        "{}",
        o.describe()
    );
    let py = env.py_repozo(&["-V", "-r", "repo"], LATE).fails();
    assert_eq!(
        py.stderr_lines(),
        [lines[0]["repozo: ".len()..].to_string()]
    );

    let o = env.run(&["-V", "-Q", "-r", "repo"], LATE).fails();
    assert_eq!(o.stderr_lines(), [lines[0].clone()], "{}", o.describe());
}

#[test]
fn reports_missing_files() {
    let env = chain(56, &[]);
    env.remove(&format!("repo/{T2}.deltafs"));
    env.remove(&format!("repo/{T3}.deltafs"));
    for q in [&[][..], &["-Q"]] {
        let mut args = vec!["-V", "-r", "repo"];
        args.extend_from_slice(q);
        let o = env.run(&args, LATE).fails();
        assert_eq!(
            o.stderr_lines(),
            [
                format!("repozo: repo/{T2}.deltafs is missing"),
                format!("repozo: repo/{T3}.deltafs is missing"),
            ],
            "{}",
            o.describe()
        );
        let py = env.py_repozo(&args, LATE).fails();
        assert_eq!(py.stderr_lines(), [format!("repo/{T2}.deltafs is missing")]);
    }
}

/// Damaged gzip files: a truncated stream and a changed byte are reported
/// by name; with -Q a truncated stream still fails (its uncompressed size
/// cannot be read).
#[test]
fn reports_damaged_gzip_files() {
    let env = chain(59, &["-z"]);
    let cut = format!("repo/{T2}.deltafsz");
    let b = env.read(&cut);
    env.write(&cut, &b[..b.len() / 2]);
    let flipped = format!("repo/{T1}.fsz");
    let n = env.read(&flipped).len();
    env.flip_byte(&flipped, n / 2);
    let o = env.run(&["-V", "-r", "repo"], LATE).fails();
    let lines = o.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", o.describe());
    assert!(lines[0].contains(&flipped), "{}", o.describe());
    assert!(lines[1].contains(&cut), "{}", o.describe());
    let o = env.run(&["-V", "-Q", "-r", "repo"], LATE).fails();
    assert!(o.stderr_str().contains(&cut), "{}", o.describe());
}

/// -V checks the newest chain only, as ZODB's repozo does.
#[test]
fn checks_the_newest_chain() {
    let env = chain(62, &[]);
    env.flip_byte(&format!("repo/{T2}.deltafs"), 10);
    env.run(&["-V", "-r", "repo"], LATE).fails();
    env.backup(&["-F"], T4);
    env.run(&["-V", "-r", "repo"], LATE).ok();
    env.py_repozo(&["-V", "-r", "repo"], LATE).ok();
}
