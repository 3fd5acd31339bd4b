#!/usr/bin/env bash
# 01: a full backup whose data-file rename falls back to link+unlink
# (renameat2 RENAME_NOREPLACE unsupported: EINVAL) and whose unlink of the
# temporary fails. The old binary rolled the published .fs back; the new one
# leaves YYYY.fs published without a .dat: -V fails, and -R recovers the
# uncommitted backup as the newest chain. Needs strace.
set -u
exec 2>&1
OLD=${OLD:-/work/wt/old/target/debug/repozo}
NEW=${NEW:-/work/wt/rev14/target/debug/repozo}
PY=${PY:-/work/main/.venv/bin/python}
ZT=/work/wt/rev14/tests/py/zodbtool.py
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$w"
$PY $ZT create --seed 1 --txns 20 src.fs
mkdir repo
REPOZO_TEST_NOW=2024-01-01-00-00-00 $OLD -B -r repo -f src.fs
$PY $ZT append --seed 2 --txns 5 src.fs
for which in old new; do
  bin=$OLD; [ $which = new ] && bin=$NEW
  rm -rf r; cp -a repo r
  echo "=== $which"
  REPOZO_TEST_NOW=2024-01-02-00-00-00 strace -f -o /dev/null \
    -e inject=renameat2:error=EINVAL:when=1 -e inject=unlink:error=EIO:when=1 \
    $bin -BF -r r -f src.fs
  echo "-BF exit $?; repository now: $(ls r | tr '\n' ' ')"
  $bin -V -r r; echo "-V exit $?"
  $bin -R -r r -o out.fs; echo "-R exit $?: recovered $(stat -c %s out.fs) bytes (old backup: $(stat -c %s repo/2024-01-01-00-00-00.fs))"
  rm -f out.fs out.fs.index
done
