//! Regressions from the break-it reviews of the fixes for issues 13 and 19:
//! an `-o` that cannot be a file is refused before anything is written,
//! and a `.dat` that lists nothing is a damaged chain for `-V` and `-L`
//! as it is for `-R`.

use crate::util::*;

/// `-o` naming a directory (or ending in `/`, `/.`, `/..`, also inside the
/// repository) is refused before any byte is written, and the user's
/// files beside it (`od.index`) stay.
#[test]
fn output_naming_a_directory_is_refused_before_writing() {
    let env = Env::with_db(2201, 10);
    env.backup(&[], T1);
    std::fs::create_dir(env.path("od")).unwrap();
    env.write("od.index", b"mine");
    env.write("od/.index", b"mine too");
    for out in ["od", "od/", "od/.", "od/..", "repo/", "repo/.", "."] {
        let before = env.snapshot("");
        let err = env
            .run(&["-R", "-r", "repo", "-o", out], LATE)
            .fails()
            .stderr_str();
        assert!(err.contains("directory"), "{out}: {err}");
        assert_same(&before, &env.snapshot(""), out);
        assert_eq!(env.read("od.index"), b"mine", "{out}");
        assert_eq!(env.read("od/.index"), b"mine too", "{out}");
    }
    let names = env.repo_names();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with('.') && n.contains("part")),
        "{names:?}"
    );
}

/// An output whose `FILE.index` cannot be named (too long) is refused
/// before the recovery is written, not after.
#[test]
fn output_whose_index_name_is_too_long_is_refused_before_writing() {
    let env = Env::with_db(2202, 10);
    env.backup(&[], T1);
    let out = "x".repeat(250);
    let before = env.snapshot("");
    let err = env
        .run(&["-R", "-r", "repo", "-o", &out], LATE)
        .fails()
        .stderr_str();
    assert!(err.contains(".index"), "{err}");
    assert_same(&before, &env.snapshot(""), "nothing written");
    // a name that fits works
    let out = "y".repeat(240);
    let got = env.recover(&out, &[]);
    assert_bytes(&got, &env.read("Data.fs"), "recovered");
}

/// An empty `.dat` after the newest good chain (a failed or crashed run of
/// ZODB's repozo): `-R` refuses it, so `-V` fails, `--max-age` measures
/// from the newest real backup, and `-L` shows the chain damaged.
#[test]
fn an_empty_dat_is_a_damaged_chain_for_verify_and_list() {
    let env = Env::with_db(2203, 10);
    env.backup(&[], "2026-01-01-00-00-00");
    env.write("repo/2026-01-02-00-00-00.dat", b"");
    let now = "2026-01-03-00-00-00";
    env.run(&["-R", "-r", "repo", "-o", "out.fs"], now)
        .fails()
        .stderr_has("lists no file");
    env.run(&["-V", "-r", "repo"], now)
        .fails()
        .stderr_has("lists no file");
    let err = env
        .run(&["-V", "-v", "--max-age=26h", "-r", "repo"], now)
        .fails()
        .stderr_str();
    assert!(err.contains("2026-01-01-00-00-00, 2d"), "{err}");
    let out = env.run(&["-L", "-r", "repo"], now).ok().stdout_str();
    assert!(
        out.contains("DAMAGED") && out.contains("lists no file"),
        "{out}"
    );
}
