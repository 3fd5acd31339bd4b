//! `--prune-index` (issue 16): only the `.index` of a chain's full backup
//! and of its newest increment stay; recovery to any date rebuilds the
//! missing `FILE.index` byte for byte; ZODB's repozo recovers the same
//! bytes without it, and ZODB opens them; `-L` shows what the `.index`
//! files cost.

use std::collections::BTreeSet;

use crate::util::*;

const NIGHTS: [&str; 6] = [T1, T2, T3, T4, T5, T6];

/// The `.index` files in `repo/`, by stamp.
fn indexes(env: &Env) -> BTreeSet<String> {
    env.repo_names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".index").map(str::to_string))
        .collect()
}

/// A plain repository and a pruned one, fed the same source: a full
/// backup, then increments (every other one with -Q, with `extra` each
/// time). Returns (plain, pruned).
fn two_repos(seed: u64, extra: &[&str]) -> (Env, Env) {
    let plain = Env::with_db(seed, 20);
    let pruned = Env::new();
    for (i, now) in NIGHTS.iter().enumerate() {
        if i > 0 {
            plain.append(seed + i as u64, 3);
        }
        plain.copy_source_to(&pruned);
        let mut args: Vec<&str> = extra.to_vec();
        if i % 2 == 1 {
            args.push("-Q");
        }
        plain.backup(&args, now);
        args.push("--prune-index");
        pruned.backup(&args, now);
        // the full backup's and the newest one's .index, nothing else
        let mut want = BTreeSet::from([T1.to_string()]);
        want.insert(now.to_string());
        assert_eq!(indexes(&pruned), want, "after the backup at {now}");
        assert_eq!(indexes(&plain).len(), i + 1);
    }
    (plain, pruned)
}

/// Every date, recovered by us from both repositories: the same bytes and
/// the same `FILE.index` bytes; ZODB opens both with that index. ZODB's
/// repozo recovers the same bytes from the pruned one, says that there is
/// no index to restore where there is none, and ZODB opens the file and
/// sees every object.
fn every_date_recovers_the_same(plain: &Env, pruned: &Env) {
    for now in NIGHTS {
        let date = &now[..19];
        let a = plain.recover("a.fs", &["-D", date]);
        // into a new file, and onto the previous date's (extended in place)
        for b in ["b.fs", "c.fs"] {
            if b == "b.fs" && pruned.exists(b) {
                pruned.remove(b);
            }
            let got = pruned.recover(b, &["-D", date]);
            assert_bytes(&a, &got, &format!("{b} at {date}"));
            assert_bytes(
                &plain.read("a.fs.index"),
                &pruned.read(&format!("{b}.index")),
                &format!("{b}.index at {date}"),
            );
            pruned.open_with_index(b);
        }
        // ZODB's repozo on the pruned repository
        let _ = std::fs::remove_file(pruned.path("p.fs.index"));
        let o = pruned
            .py_repozo(&["-R", "-v", "-r", "repo", "-D", date, "-o", "p.fs"], LATE)
            .ok();
        assert_bytes(
            &a,
            &pruned.read("p.fs"),
            &format!("ZODB's repozo at {date}"),
        );
        let has_index = pruned.exists(&format!("repo/{now}.index"));
        assert_eq!(pruned.exists("p.fs.index"), has_index, "{date}");
        if !has_index {
            assert!(
                o.stderr_str().contains("No index file to restore"),
                "{}",
                o.describe()
            );
        }
        let seen = pruned.zodb(&["open", "p.fs"]).ok().stdout_str();
        let want = plain.zodb(&["open", "a.fs"]).ok().stdout_str();
        assert_eq!(
            seen.split_whitespace().nth(1),
            want.split_whitespace().nth(1),
            "objects ZODB sees at {date}"
        );
    }
}

#[test]
fn every_date_recovers_the_same_with_and_without_the_option() {
    let (plain, pruned) = two_repos(1601, &[]);
    every_date_recovers_the_same(&plain, &pruned);
}

#[test]
fn every_date_recovers_the_same_with_gzip() {
    let (plain, pruned) = two_repos(1611, &["-z"]);
    every_date_recovers_the_same(&plain, &pruned);
}

/// Recovery onto an output that holds an earlier state (appending the
/// missing increments) rebuilds the same `FILE.index`, and so does `-w`.
#[test]
fn incremental_recovery_rebuilds_the_same_index() {
    let (plain, pruned) = two_repos(1621, &[]);
    for (env, out) in [(&plain, "a.fs"), (&pruned, "b.fs")] {
        env.recover(out, &["-D", &T2[..19]]);
        let o = env
            .run(
                &["-R", "-v", "-r", "repo", "-D", &T5[..19], "-o", out],
                LATE,
            )
            .ok();
        assert!(
            o.stderr_str().contains("appending"),
            "not extended in place: {}",
            o.describe()
        );
    }
    assert_bytes(&plain.read("a.fs"), &pruned.read("b.fs"), "Data.fs");
    assert_bytes(
        &plain.read("a.fs.index"),
        &pruned.read("b.fs.index"),
        "Data.fs.index",
    );
    pruned.open_with_index("b.fs");
    pruned.recover("w.fs", &["-w", "-D", &T4[..19]]);
    plain.recover("v.fs", &["-w", "-D", &T4[..19]]);
    assert_bytes(&plain.read("v.fs.index"), &pruned.read("w.fs.index"), "-w");
}

/// The rebuild starts from the nearest older `.index` that is valid up to
/// the end of its file and agrees with the data; a damaged or misplaced
/// one is passed over; with none at all the whole file is scanned. The
/// result is the same bytes every time.
#[test]
fn a_bad_older_index_is_passed_over() {
    let (plain, pruned) = two_repos(1631, &[]);
    let want = {
        plain.recover("a.fs", &["-D", &T5[..19]]);
        plain.read("a.fs.index")
    };
    // T5's .index was pruned; T1's (the full backup's) is the only older one
    let full_index = format!("repo/{T1}.index");
    let good = pruned.read(&full_index);
    // damaged: not a pickle
    pruned.write(&full_index, b"garbage");
    let o = pruned
        .run(
            &["-R", "-v", "-r", "repo", "-D", &T5[..19], "-o", "b.fs"],
            LATE,
        )
        .ok();
    assert!(
        o.stderr_str().contains("a scan of the whole file"),
        "{}",
        o.describe()
    );
    assert_bytes(&want, &pruned.read("b.fs.index"), "after a damaged .index");
    // valid, but for another position: T3's .index as T1's
    plain.recover("x.fs", &["-D", &T3[..19]]);
    pruned.write(&full_index, &plain.read("x.fs.index"));
    let o = pruned
        .run(
            &["-R", "-v", "-r", "repo", "-D", &T5[..19], "-o", "c.fs"],
            LATE,
        )
        .ok();
    assert!(
        o.stderr_str().contains("is valid up to"),
        "{}",
        o.describe()
    );
    assert_bytes(
        &want,
        &pruned.read("c.fs.index"),
        "after a misplaced .index",
    );
    // none at all
    pruned.remove(&full_index);
    pruned.remove(&format!("repo/{T6}.index"));
    pruned.recover("d.fs", &[]);
    plain.recover("e.fs", &[]);
    assert_bytes(
        &plain.read("e.fs.index"),
        &pruned.read("d.fs.index"),
        "no .index at all",
    );
    // and the good one back: used
    pruned.write(&full_index, &good);
    let o = pruned
        .run(
            &["-R", "-v", "-r", "repo", "-D", &T5[..19], "-o", "f.fs"],
            LATE,
        )
        .ok();
    assert!(
        o.stderr_str()
            .contains(&format!("rebuilt from repo/{T1}.index")),
        "{}",
        o.describe()
    );
    assert_bytes(&want, &pruned.read("f.fs.index"), "from the full backup's");
}

/// A new chain (after a pack, or -F) keeps the old chain's full and newest
/// `.index`; pruning only touches the newest chain.
#[test]
fn a_new_chain_leaves_the_old_one_as_it_is() {
    let env = Env::with_db(1641, 20);
    env.backup(&["--prune-index"], T1);
    for (i, now) in [T2, T3].iter().enumerate() {
        env.append(1642 + i as u64, 2);
        env.backup(&["--prune-index"], now);
    }
    env.append(1650, 2);
    env.backup(&["-F", "--prune-index"], T4);
    env.append(1651, 2);
    env.backup(&["--prune-index"], T5);
    env.append(1652, 2);
    env.backup(&["--prune-index"], T6);
    let want: BTreeSet<String> = [T1, T3, T4, T6].iter().map(|s| s.to_string()).collect();
    assert_eq!(indexes(&env), want);
    env.assert_recovers_source();
    env.run(&["-V", "-r", "repo"], LATE).ok();
}

/// `-L` shows per chain the bytes of data and of `.index` files, and per
/// file whether its `.index` is there.
#[test]
fn list_shows_data_and_index_bytes() {
    let (plain, pruned) = two_repos(1661, &[]);
    for env in [&plain, &pruned] {
        let repo = env.repo();
        let size = |n: &str| {
            std::fs::metadata(repo.join(n))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let data: u64 = env
            .repo_names()
            .iter()
            .filter(|n| n.ends_with(".fs") || n.ends_with(".deltafs"))
            .map(|n| size(n))
            .sum();
        let index: u64 = env
            .repo_names()
            .iter()
            .filter(|n| n.ends_with(".index"))
            .map(|n| size(n))
            .sum();
        let text = env.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
        let want = format!("{data} bytes of data, {index} bytes of .index");
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
        let json = env
            .run(&["-L", "--json", "-r", "repo"], LATE)
            .ok()
            .stdout_str();
        assert!(json.contains(&format!("\"index_size\": {index}")), "{json}");
    }
    let text = pruned.run(&["-L", "-r", "repo"], LATE).ok().stdout_str();
    assert_eq!(
        text.matches("no .index").count(),
        NIGHTS.len() - 2,
        "{text}"
    );
}

/// The option belongs to `-B`: elsewhere it is ignored, with a note
/// under `-v` as for repozo's own options.
#[test]
fn outside_backup_mode_the_option_is_ignored() {
    let env = Env::with_db(1671, 5);
    env.backup(&["--prune-index"], T1);
    env.run(
        &["-R", "-v", "-r", "repo", "-o", "x.fs", "--prune-index"],
        LATE,
    )
    .ok()
    .stderr_has("--prune-index option is ignored outside backup mode");
    env.run(&["-V", "-r", "repo", "--prune"], LATE).ok();
}
