//! Regressions from the review of `--prune-index` and the rebuild of a
//! missing `FILE.index` (issue 16).

use crate::util::*;

fn python_in(env: &Env, code: &str) -> Output {
    let mut cmd = std::process::Command::new(python());
    cmd.current_dir(env.root()).arg("-c").arg(code);
    exec(cmd).ok()
}

/// `zodbtool.py check-index DATAFS INDEX`: the index equals ZODB's scan.
fn index_is_right(env: &Env, datafs: &str, index: &str) -> bool {
    env.zodb(&["check-index", datafs, index]).status.success()
}

/// Write `Data.fs.index` as a stale index that passes ZODB's sanity check
/// (as in review_backup.rs, issue 19 case 7).
const STALE_INDEX: &str = "\
from ZODB.FileStorage import FileStorage, FileIterator
from ZODB.fsIndex import fsIndex
old = fsIndex.load('old.index')['index']
fs = FileStorage('Data.fs', read_only=True)
index, pos = fs._index, fs._pos
fs.close()
last = None
for t in FileIterator('Data.fs'):
    last = set(r.oid for r in t)
stale = fsIndex()
changed = 0
for oid, p in index.items():
    if oid not in last and oid in old and old[oid] != p:
        stale[oid] = old[oid]
        changed += 1
    else:
        stale[oid] = p
assert changed > 0, 'no object changed outside the last transaction'
stale.save(pos, 'Data.fs.index')
print(changed)
";

const OPEN_CLOSE: &str = "from ZODB.FileStorage import FileStorage; FileStorage('Data.fs').close()";

/// Case 1: the full backup's `.index` inherits a stale `Data.fs.index`
/// that passes ZODB's sanity check (ZODB's repozo does the same); the
/// increments after it are built by a scan and are right. When a pruned
/// increment's `.index` is rebuilt, the stale full backup's `.index` must
/// not be the base (a backup never extends it either): the rebuilt
/// `FILE.index` was wrong, passed ZODB's sanity check, and ZODB loaded
/// wrong data through it.
#[test]
fn rebuild_does_not_start_from_an_index_built_on_a_stale_live_index() {
    let env = Env::with_db(2101, 25);
    python_in(&env, OPEN_CLOSE);
    std::fs::copy(env.path("Data.fs.index"), env.path("old.index")).unwrap();
    env.append(2102, 12);
    python_in(&env, OPEN_CLOSE);
    python_in(&env, STALE_INDEX);
    env.backup(&["--prune-index"], T1);
    assert!(
        !index_is_right(&env, "Data.fs", &format!("repo/{T1}.index")),
        "the test needs a full backup that inherits the stale index"
    );
    for (now, seed) in [(T2, 2103), (T3, 2104)] {
        let _ = std::fs::remove_file(env.path("Data.fs.index"));
        env.append(seed, 3);
        let _ = std::fs::remove_file(env.path("Data.fs.index"));
        env.backup(&["--prune-index"], now);
    }
    assert!(!env.exists(&format!("repo/{T2}.index")), "T2's was pruned");
    env.recover("out.fs", &["-D", &T2[..19]]);
    assert!(
        index_is_right(&env, "out.fs", "out.fs.index"),
        "the rebuilt out.fs.index carries the stale entries: {}",
        env.zodb(&["check-index", "out.fs", "out.fs.index"])
            .stdout_str()
    );
    env.open_with_index("out.fs");
}
