#!/usr/bin/env python3
"""Benchmark: backing up and recovering a ZODB blob directory.

Our ``repozo -BQ --blob-dir`` / ``-R --blob-dir`` against the way
collective.recipe.backup (6.0) does it: ZODB 6.4's repozo for the Data.fs
plus ``rsync`` of the blob directory into a new snapshot hard-linked to the
previous one.

Run with the project's venv interpreter (ZODB 6.4), from anywhere:

    .venv/bin/python scripts/bench_blobs.py [--blobs N] [--runs N]
                                            [--only nightly,recover,full]
                                            [--out FILE]

or through scripts/bench-blobs.sh, which also creates the venv and builds
the release binary.

Data (generated once with real ZODB, cached under
``target/bench/blobs-N<blobs>-g<version>/``):

* ``base/Data.fs`` with ``base/blobstorage`` (bushy layout): ``--blobs``
  Blob objects (default 100,000) in an OOBTree, committed 500 per
  transaction; blob sizes log-uniform from 1 KiB to 256 KiB (about 46 KiB on
  average: 100,000 blobs are about 4.7 GB), random bytes.
* ``app/``: "a night" on a copy of base (its blob directory a hard-linked
  copy: ZODB never changes a committed blob file): 1% new blobs and 0.2% of
  the existing ones changed (a new revision each), in 10 transactions.
* the size and md5 of every blob file, for the checks.

Before timing, each side makes its starting state from ``base`` with fixed
stamps (``REPOZO_TEST_NOW``): ours ``-B --blob-dir``; ZODB's repozo ``-B``
plus the recipe's first snapshot ``rsync -a base/blobstorage
snaps/blobstorage.<FULL>``.  For the recovery rows both sides also back up
``app`` the same way (our ``-BQ --blob-dir``; repozo ``-BQ`` + the recipe's
link-dest rsync).

Scenarios (``--only`` takes these keys):

  nightly  ours: ``-BQ --blob-dir=app/blobstorage`` into a hard-linked
           clone of our full repository (its ``.dat`` and ``.repozo-sums``
           copied).  Theirs: ZODB's repozo ``-BQ`` into a clone of its full
           repository, then exactly the command collective.recipe.backup 6.0
           (copyblobs.py, ``use_rsync``, timestamps) runs:
           ``rsync -a --delete --link-dest=../blobstorage.<FULL>
           app/blobstorage snaps/blobstorage.<NIGHT>``.  Rows: ours vs both
           steps, and ours vs the rsync step alone.  Growth of the repository
           per night (bytes of new inodes and growth of existing ones, disk
           blocks, directory entries, inodes) from the last run.
  recover  ours: ``-R -o out/Data.fs --blob-dir=out/blobstorage`` from the
           two-backup repository into an empty directory.  Against: ``cp -a
           app/Data.fs app/blobstorage out/`` (the same bytes), with and
           without a ``sync -f`` after it (ours makes its output durable);
           ZODB's repozo ``-R`` + ``cp -a`` of the rsync snapshot; ZODB's
           repozo ``-R`` + the recipe's restore command ``rsync -a --delete
           snaps/blobstorage.<NIGHT>/blobstorage out/``.
  full     ours ``-B --blob-dir`` into an empty repository vs ZODB's repozo
           ``-B`` + ``rsync -a`` (no link-dest: the recipe's first backup).

Each figure is the median of ``--runs`` runs, the sides' order alternating;
a side made of two commands is the sum of their wall and CPU times and the
larger of their peak RSS (GNU time ``%M``).  The page cache is warm (sources,
templates and snapshots are read before timing); ``sync`` runs before each
timed command.  Templates are made by each invocation (not cached) so that
they are what the binary being measured writes.

Every run is checked, else ``MISMATCH`` is printed and the exit status is 1:
the backups' ``.dat`` ranges start and end where expected with the md5 of
the source's bytes, both data files hold those bytes; our store holds
exactly the source's blob revisions (names mapped, sizes) and the new files
of the night are exactly the night's new revisions, with their md5s; the
rsync snapshot holds exactly the source's blob files with their sizes, and
the files not linked to the previous snapshot have the source's md5; a
recovery writes the source's Data.fs bytes and a blob directory with exactly
the source's blob files (names, sizes, md5 of every file) and its
``.layout``; sources and templates are untouched (every file's size, mtime
and inode).

Afterwards our binary runs each scenario once more with ``-v``; the longest
gaps between its notes are a hint of where the time goes.  The free disk
space is checked first (about 5x the blob bytes are needed).
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (measure, timeline, md5_of, facts, ...)

ROOT = B.ROOT
BENCH_DIR = B.BENCH_DIR
DEFAULT_OUT = os.path.join(ROOT, 'docs', 'bench-blobs.md')

GEN_VERSION = 1
STAMP_FULL = '2024-01-01-00-00-00'
STAMP_NIGHT = '2024-01-02-00-00-00'
STAMP_READ = '2024-01-03-00-00-00'
MIN_BLOB, MAX_BLOB = 1 << 10, 256 << 10
MEAN_BLOB = (MAX_BLOB - MIN_BLOB) / math.log(MAX_BLOB / MIN_BLOB)
BATCH = 500
NEW_PERCENT, CHANGED_PERMILLE, NIGHT_TXNS = 1, 2, 10
BLOBDIR = 'blobstorage'  # the name the recipe's snapshots are made of
SCENARIO_KEYS = ('nightly', 'recover', 'full')


# ---------------------------------------------------------------------------
# Generation (in a child process: `bench_blobs.py _generate DIR N`)

class Contents:
    """Random blob contents: slices of a random pool behind a unique head."""

    def __init__(self, rng):
        self.rng = rng
        self.pool = rng.randbytes(8 << 20)
        self.n = 0

    def make(self):
        size = int(math.exp(self.rng.uniform(math.log(MIN_BLOB),
                                             math.log(MAX_BLOB))))
        self.n += 1
        head = b'blob %012d\n' % self.n
        body = size - len(head)
        off = self.rng.randrange(len(self.pool) - body)
        return head + self.pool[off:off + body]


def generate(data_dir, n_blobs):
    import transaction
    import ZODB
    import ZODB.FileStorage  # noqa: F401
    from BTrees.OOBTree import OOBTree
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage

    # No per-commit fsync, in the generator only (as bench.py).
    sys.modules['ZODB.FileStorage.FileStorage'].fsync = None
    rng = random.Random(20240101)
    contents = Contents(rng)

    def open_db(name):
        d = os.path.join(data_dir, name)
        return ZODB.DB(FileStorage(os.path.join(d, 'Data.fs'),
                                   blob_dir=os.path.join(d, BLOBDIR)),
                       cache_size=2000)

    os.makedirs(os.path.join(data_dir, 'base'))
    db = open_db('base')
    conn = db.open()
    root = conn.root()
    root['blobs'] = tree = OOBTree()
    transaction.commit()
    t0 = time.monotonic()
    for i in range(n_blobs):
        tree['b%07d' % i] = Blob(contents.make())
        if (i + 1) % BATCH == 0 or i + 1 == n_blobs:
            transaction.get().note('blobs up to %d' % i)
            transaction.commit()
            conn.cacheMinimize()
            if (i + 1) % (BATCH * 40) == 0:
                print('  generated %d/%d blobs (%.0f s)'
                      % (i + 1, n_blobs, time.monotonic() - t0), flush=True)
    conn.close()
    db.close()

    # The night, on a copy (blob files hard-linked).
    app = os.path.join(data_dir, 'app')
    os.makedirs(app)
    for f in ('Data.fs', 'Data.fs.index'):
        shutil.copyfile(os.path.join(data_dir, 'base', f),
                        os.path.join(app, f))
    subprocess.run(['cp', '-al', os.path.join(data_dir, 'base', BLOBDIR),
                    os.path.join(app, BLOBDIR)], check=True)
    n_new = max(1, n_blobs * NEW_PERCENT // 100)
    changed = rng.sample(range(n_blobs),
                         max(1, n_blobs * CHANGED_PERMILLE // 1000))
    db = open_db('app')
    conn = db.open()
    tree = conn.root()['blobs']
    for t in range(NIGHT_TXNS):
        for i in range(n_new * t // NIGHT_TXNS, n_new * (t + 1) // NIGHT_TXNS):
            tree['b%07d' % (n_blobs + i)] = Blob(contents.make())
        lo = len(changed) * t // NIGHT_TXNS
        for i in changed[lo:len(changed) * (t + 1) // NIGHT_TXNS]:
            with tree['b%07d' % i].open('w') as f:
                f.write(contents.make())
        transaction.get().note('night %d' % t)
        transaction.commit()
        conn.cacheMinimize()
    conn.close()
    db.close()


# ---------------------------------------------------------------------------
# Helpers

def blob_files(root):
    """{relative path: size} of the *.blob files below root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith('.blob'):
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = os.lstat(p).st_size
    return out


def md5_file(path):
    h = hashlib.md5()
    with open(path, 'rb') as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def rev_of(rel):
    """(oid, tid) of a bushy blob path 0x../0x../.../0x<tid>.blob."""
    parts = rel.split('/')
    oid = int(''.join(p[2:] for p in parts[:-1]), 16)
    return oid, int(parts[-1][:-len('.blob')], 16)


def store_name(oid, tid):
    return 'blobs/%02x/%016x.%016x.blob' % (oid & 0xff, oid, tid)


def tree_stat(root):
    """{relative path: (size, mtime_ns, inode)} of everything below root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in files + dirs:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if n.startswith('.repozo') and n.endswith('.lock'):
                continue
            out[os.path.relpath(p, root)] = (
                st.st_size, 0 if n in dirs else st.st_mtime_ns, st.st_ino)
    return out


def census(roots):
    """Entries, and {inode: (size, blocks)} of everything below roots."""
    entries = 0
    inodes = {}
    for root in roots:
        if not os.path.exists(root):
            continue
        for dirpath, dirs, files in os.walk(root):
            for n in files + dirs:
                st = os.lstat(os.path.join(dirpath, n))
                entries += 1
                inodes[st.st_ino] = (st.st_size, st.st_blocks * 512)
    return entries, inodes


def growth(before, after):
    """Growth between two census results: bytes, disk, entries, inodes."""
    (e0, i0), (e1, i1) = before, after
    return {
        'bytes': sum(s for s, _ in i1.values()) - sum(s for s, _ in i0.values()),
        'disk': sum(b for _, b in i1.values()) - sum(b for _, b in i0.values()),
        'entries': e1 - e0,
        'inodes': len(set(i1) - set(i0)),
    }


def clone_ours(src, dst):
    """Our repository, hard-linked but for the files a backup rewrites."""
    B.remove(dst)
    subprocess.run(['cp', '-al', src, dst], check=True)
    for name in os.listdir(src):
        if name.endswith('.dat') or name == B.SUMS_NAME:
            os.remove(os.path.join(dst, name))
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


def warm(paths):
    """Read every file below paths (page cache warm)."""
    subprocess.run(['sh', '-c', 'find "$@" -type f -print0 | '
                    'xargs -0 -r cat > /dev/null', 'sh'] + paths, check=True)


def human(n):
    for unit in ('B', 'KB', 'MB', 'GB'):
        if abs(n) < 1000 or unit == 'GB':
            return ('%d %s' % (n, unit)) if unit == 'B' else \
                '%.1f %s' % (n, unit)
        n /= 1000.0


# ---------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.ours = os.path.abspath(args.ours)
        self.python = os.path.abspath(args.python)
        self.failures = []
        self.warnings = []
        self.results = {}   # (scenario, side, part) -> [(wall, rss, cpu)]
        self.growths = {}   # side -> last nightly growth
        self.stages = {}
        self.md5_cache = {}
        self.data_dir = os.path.join(BENCH_DIR, 'blobs-N%d-g%d'
                                     % (args.blobs, GEN_VERSION))
        self.scratch = os.path.join(BENCH_DIR, 'scratch-blobs')

    def fail(self, msg):
        print('!!!!!!!! MISMATCH: %s' % msg, flush=True)
        self.failures.append(msg)

    def warn(self, msg):
        print('warning: %s' % msg, flush=True)
        self.warnings.append(msg)

    def ours_cmd(self, argv):
        return [self.ours] + argv

    def py_cmd(self, argv):
        return [self.python, B.PYREPOZO] + argv

    # -- data ----------------------------------------------------------------

    def check_space(self, cached):
        est = self.args.blobs * MEAN_BLOB
        need = 4 * est + 2e9 + (0 if cached else 1.02 * est)
        st = os.statvfs(BENCH_DIR if os.path.isdir(BENCH_DIR) else ROOT)
        free = st.f_bavail * st.f_frsize
        print('disk: %.1f GB free under %s, about %.1f GB needed'
              % (free / 1e9, BENCH_DIR, need / 1e9))
        if free < need:
            sys.exit('not enough disk space: %d blobs need about %.1f GB '
                     '(data %.1f GB%s, our repository, the rsync snapshot '
                     'and one recovered copy), but only %.1f GB is free '
                     'under %s; use --blobs to scale down'
                     % (self.args.blobs, need / 1e9, est / 1e9,
                        ', cached' if cached else '', free / 1e9, BENCH_DIR))

    def prepare_data(self):
        d = self.data_dir
        marker = os.path.join(d, 'PARAMS.json')
        params = {'version': GEN_VERSION, 'blobs': self.args.blobs}
        if os.path.exists(marker) and not self.args.regen:
            with open(marker) as f:
                saved = json.load(f)
            if all(saved.get(k) == v for k, v in params.items()) and all(
                    os.path.getsize(os.path.join(d, n, 'Data.fs'))
                    == saved['fs_sizes'][n] for n in ('base', 'app')):
                self.check_space(True)
                print('reusing %s (generated earlier in %.1f s)'
                      % (d, saved['generation_seconds']))
                self.gen_note = ('data reused from cache; generating it took '
                                 '%.0f s' % saved['generation_seconds'])
                return saved
            print('cache %s does not match; regenerating' % d)
        self.check_space(False)
        B.remove(d)
        os.makedirs(d)
        print('generating %d blobs into %s ...' % (self.args.blobs, d),
              flush=True)
        t0 = time.perf_counter()
        subprocess.run([self.python, os.path.abspath(__file__), '_generate',
                        d, str(self.args.blobs)], check=True)
        gen_s = time.perf_counter() - t0
        print('generated in %.1f s; computing md5s' % gen_s, flush=True)
        saved = dict(params)
        saved['generation_seconds'] = round(gen_s, 2)
        saved['fs_sizes'] = {n: os.path.getsize(os.path.join(d, n, 'Data.fs'))
                             for n in ('base', 'app')}
        base = blob_files(os.path.join(d, 'base', BLOBDIR))
        app = blob_files(os.path.join(d, 'app', BLOBDIR))
        saved['blobs_md5'] = {
            rel: [size, md5_file(os.path.join(d, 'app', BLOBDIR, rel))]
            for rel, size in sorted(app.items())}
        saved['base_blobs'] = sorted(base)
        with open(marker, 'w') as f:
            json.dump(saved, f)
        self.gen_note = 'data generated in %.0f s' % gen_s
        return saved

    def setup(self, saved):
        d = self.data_dir
        self.fs = {n: os.path.join(d, n, 'Data.fs') for n in ('base', 'app')}
        self.bdir = {n: os.path.join(d, n, BLOBDIR) for n in ('base', 'app')}
        self.fs_sizes = saved['fs_sizes']
        self.app_blobs = {k: tuple(v) for k, v in saved['blobs_md5'].items()}
        base = set(saved['base_blobs'])
        self.base_blobs = {k: v for k, v in self.app_blobs.items()
                           if k in base}
        self.new_blobs = {k: v for k, v in self.app_blobs.items()
                          if k not in base}
        self.new_bytes = sum(s for s, _ in self.new_blobs.values())
        self.fs_incr = self.fs_sizes['app'] - self.fs_sizes['base']
        for name in ('base', 'app'):
            got = blob_files(self.bdir[name])
            want = self.base_blobs if name == 'base' else self.app_blobs
            if got != {k: v[0] for k, v in want.items()}:
                sys.exit('%s does not hold the blobs PARAMS.json lists; use '
                         '--regen' % self.bdir[name])
        self.source_snaps = {n: tree_stat(os.path.join(d, n))
                             for n in ('base', 'app')}

    def source_md5(self, name, start, end):
        key = (name, start, end)
        if key not in self.md5_cache:
            digest, n = B.md5_of(self.fs[name], start, end - start)
            self.md5_cache[key] = digest if n == end - start else None
        return self.md5_cache[key]

    # -- templates -----------------------------------------------------------

    def run_setup(self, cmd, stamp=None):
        env = dict(os.environ, REPOZO_TEST_NOW=stamp) if stamp else None
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit('setup command failed (%d): %s\n%s'
                     % (p.returncode, ' '.join(cmd), p.stderr[-2000:]))

    def build_templates(self):
        t = os.path.join(self.scratch, 'templates')
        B.fresh_dir(t)
        self.tpl = {
            'ours-full': os.path.join(t, 'ours-full'),
            'ours-incr': os.path.join(t, 'ours-incr'),
            'py-full': os.path.join(t, 'py-full'),
            'py-incr': os.path.join(t, 'py-incr'),
            'snaps': os.path.join(t, 'snaps'),
        }
        self.snap_full = os.path.join(self.tpl['snaps'],
                                      BLOBDIR + '.' + STAMP_FULL)
        self.snap_incr = os.path.join(self.tpl['snaps'],
                                      BLOBDIR + '.' + STAMP_NIGHT)
        need_incr = 'recover' in self.args.only
        need_full = need_incr or 'nightly' in self.args.only
        if not need_full:
            self.tpl_snaps = {}
            return
        print('making the starting states (untimed)', flush=True)
        t0 = time.perf_counter()
        os.makedirs(self.tpl['ours-full'])
        self.run_setup(self.ours_cmd(
            ['-B', '-r', self.tpl['ours-full'], '-f', self.fs['base'],
             '--blob-dir=' + self.bdir['base']]), STAMP_FULL)
        os.makedirs(self.tpl['py-full'])
        self.run_setup(self.py_cmd(['-B', '-r', self.tpl['py-full'], '-f',
                                    self.fs['base']]), STAMP_FULL)
        os.makedirs(self.tpl['snaps'])
        self.run_setup(['rsync', '-a', self.bdir['base'], self.snap_full])
        if need_incr:
            clone_ours(self.tpl['ours-full'], self.tpl['ours-incr'])
            self.run_setup(self.ours_cmd(
                ['-BQ', '-r', self.tpl['ours-incr'], '-f', self.fs['app'],
                 '--blob-dir=' + self.bdir['app']]), STAMP_NIGHT)
            B.clone(self.tpl['py-full'], self.tpl['py-incr'])
            self.run_setup(self.py_cmd(['-BQ', '-r', self.tpl['py-incr'],
                                        '-f', self.fs['app']]), STAMP_NIGHT)
            self.run_setup(['rsync', '-a', '--delete', '--link-dest=../'
                            + os.path.basename(self.snap_full),
                            self.bdir['app'], self.snap_incr])
        os.sync()
        print('  done in %.0f s' % (time.perf_counter() - t0), flush=True)
        self.tpl_snaps = {k: tree_stat(p) for k, p in self.tpl.items()
                          if os.path.exists(p)}

    USES = {('nightly', 'ours'): ['ours-full'],
            ('nightly', 'py'): ['py-full', 'snaps'],
            ('recover', 'ours'): ['ours-incr'],
            ('recover', 'py-cp'): ['py-incr', 'snaps'],
            ('recover', 'py-rsync'): ['py-incr', 'snaps']}

    def check_untouched(self, context, used=None):
        for k, snap in self.tpl_snaps.items():
            if used is not None and k not in used:
                continue
            now = tree_stat(self.tpl[k])
            if now != snap:
                diff = sorted(set(now.items()) ^ set(snap.items()))[:5]
                self.fail('%s: template %s changed: %s' % (context, k, diff))
                self.tpl_snaps[k] = now
        for n, snap in self.source_snaps.items():
            now = tree_stat(os.path.join(self.data_dir, n))
            if now != snap:
                diff = sorted(set(now.items()) ^ set(snap.items()))[:5]
                self.fail('%s: source %s changed: %s' % (context, n, diff))
                self.source_snaps[n] = now

    # -- checks --------------------------------------------------------------

    def check_dat(self, ctx, repo, start_name, end_name, ext):
        lines = B.dat_lines(repo)
        if not lines or len(lines[-1]) != 4:
            self.fail('%s: bad .dat in %s' % (ctx, repo))
            return None
        path, lo, hi, digest = lines[-1]
        lo, hi = int(lo), int(hi)
        start = self.fs_sizes[start_name] if start_name else 0
        if (lo, hi) != (start, self.fs_sizes[end_name]) or \
                not path.endswith(ext):
            self.fail('%s: .dat last line %s, expected [%d, %d) in a %s'
                      % (ctx, lines[-1], start, self.fs_sizes[end_name], ext))
            return None
        if self.source_md5(end_name, lo, hi) != digest:
            self.fail('%s: .dat md5 is not the source\'s' % ctx)
        data = os.path.join(repo, os.path.basename(path))
        if B.md5_of(data) != (digest, hi - lo):
            self.fail('%s: %s does not hold the source\'s bytes' % (ctx, data))
        return lines[-1]

    def check_store(self, ctx, repo, want, new_inodes=None, new_want=None):
        """Our store holds exactly `want`; its files that are new inodes
        are exactly `new_want`, with their md5s (all, when new_inodes is
        None)."""
        expect = {}
        for rel, (size, digest) in want.items():
            expect[store_name(*rev_of(rel))] = (size, digest)
        got = {}
        store = os.path.join(repo, 'blobs')
        for dirpath, _, files in os.walk(store):
            for f in files:
                p = os.path.join(dirpath, f)
                got[os.path.relpath(p, repo)] = os.lstat(p)
        if set(got) != set(expect):
            extra, missing = set(got) - set(expect), set(expect) - set(got)
            self.fail('%s: the store holds %d files, expected %d (%d extra, '
                      'e.g. %s; %d missing, e.g. %s)'
                      % (ctx, len(got), len(expect), len(extra),
                         sorted(extra)[:2], len(missing),
                         sorted(missing)[:2]))
            return
        bad = [n for n, st in got.items() if st.st_size != expect[n][0]]
        if new_inodes is not None:
            fresh = {n for n, st in got.items() if st.st_ino in new_inodes}
            want_fresh = {store_name(*rev_of(r)) for r in new_want}
            if fresh != want_fresh:
                self.fail('%s: %d new files in the store, expected exactly '
                          'the %d new revisions' % (ctx, len(fresh),
                                                    len(want_fresh)))
        else:
            fresh = set(got)
        bad += [n for n in fresh
                if md5_file(os.path.join(repo, n)) != expect[n][1]]
        if bad:
            self.fail('%s: %d stored blob(s) differ from the source, e.g. %s'
                      % (ctx, len(bad), sorted(bad)[:3]))
        lists = [f for f in os.listdir(repo) if f.endswith('.blobs')]
        if not lists:
            self.fail('%s: no .blobs list in %s' % (ctx, repo))

    def check_blobdir(self, ctx, root, want, md5_of=None):
        """root holds exactly want's blob files (sizes); md5 of md5_of
        (default: all)."""
        got = blob_files(root)
        if got != {k: v[0] for k, v in want.items()}:
            self.fail('%s: %s holds %d blob files, expected %d (%d names '
                      'differ, %d sizes)'
                      % (ctx, root, len(got), len(want),
                         len(set(got) ^ set(want)),
                         sum(1 for k in got if k in want and
                             got[k] != want[k][0])))
            return
        todo = want if md5_of is None else md5_of
        bad = [k for k in todo
               if md5_file(os.path.join(root, k)) != want[k][1]]
        if bad:
            self.fail('%s: %d blob file(s) differ from the source, e.g. %s'
                      % (ctx, len(bad), bad[:3]))
        try:
            with open(os.path.join(root, '.layout')) as f:
                layout = f.read().strip()
        except OSError:
            layout = None
        if layout != 'bushy':
            self.fail('%s: %s/.layout is %r, expected bushy'
                      % (ctx, root, layout))

    def check_recovered(self, ctx, out):
        want = self.source_md5('app', 0, self.fs_sizes['app'])
        if B.md5_of(os.path.join(out, 'Data.fs')) != \
                (want, self.fs_sizes['app']):
            self.fail('%s: the recovered Data.fs is not the source\'s bytes'
                      % ctx)
        self.check_blobdir(ctx, os.path.join(out, BLOBDIR), self.app_blobs)

    # -- sides ---------------------------------------------------------------
    # Each returns (parts, context) where parts is [(label, cmd, stamp)].

    def prepare(self, key, side):
        s = self.scratch
        if key == 'nightly':
            if side == 'ours':
                repo = os.path.join(s, 'n-ours')
                clone_ours(self.tpl['ours-full'], repo)
                return [('ours', self.ours_cmd(
                    ['-BQ', '-r', repo, '-f', self.fs['app'],
                     '--blob-dir=' + self.bdir['app']]), STAMP_NIGHT)], \
                    {'repo': repo, 'roots': [repo]}
            repo = os.path.join(s, 'n-py')
            B.clone(self.tpl['py-full'], repo)
            snap = os.path.join(self.tpl['snaps'], BLOBDIR + '.night-run')
            B.remove(snap)
            return [
                ('repozo', self.py_cmd(['-BQ', '-r', repo, '-f',
                                        self.fs['app']]), STAMP_NIGHT),
                ('rsync', ['rsync', '-a', '--delete', '--link-dest=../'
                           + os.path.basename(self.snap_full),
                           self.bdir['app'], snap], None)], \
                {'repo': repo, 'snap': snap,
                 'roots': [repo, self.snap_full, snap]}
        if key == 'recover':
            out = os.path.join(s, 'r-' + side)
            B.fresh_dir(out)
            dfs = os.path.join(out, 'Data.fs')
            ctx = {'out': out}
            if side == 'ours':
                return [('ours', self.ours_cmd(
                    ['-R', '-r', self.tpl['ours-incr'], '-o', dfs,
                     '--blob-dir=' + os.path.join(out, BLOBDIR)]),
                    STAMP_READ)], ctx
            if side in ('cp', 'cp-sync'):
                parts = [('cp', ['cp', '-a', self.fs['app'], self.bdir['app'],
                                 out], None)]
                if side == 'cp-sync':
                    parts.append(('sync', ['sync', '-f', out], None))
                return parts, ctx
            repozo = ('repozo', self.py_cmd(['-R', '-r', self.tpl['py-incr'],
                                             '-o', dfs]), STAMP_READ)
            src = os.path.join(self.snap_incr, BLOBDIR)
            if side == 'py-cp':
                return [repozo, ('cp', ['cp', '-a', src, out], None)], ctx
            return [repozo, ('rsync', ['rsync', '-a', '--delete', src,
                                       out + '/'], None)], ctx
        # full
        if side == 'ours':
            repo = os.path.join(s, 'f-ours')
            B.fresh_dir(repo)
            return [('ours', self.ours_cmd(
                ['-B', '-r', repo, '-f', self.fs['base'],
                 '--blob-dir=' + self.bdir['base']]), STAMP_FULL)], \
                {'repo': repo}
        repo = os.path.join(s, 'f-py')
        B.fresh_dir(repo)
        snaps = os.path.join(s, 'f-snaps')
        B.fresh_dir(snaps)
        return [('repozo', self.py_cmd(['-B', '-r', repo, '-f',
                                        self.fs['base']]), STAMP_FULL),
                ('rsync', ['rsync', '-a', self.bdir['base'],
                           os.path.join(snaps, BLOBDIR + '.' + STAMP_FULL)],
                 None)], {'repo': repo, 'snaps': snaps}

    def check(self, key, side, ctx):
        c = '%s (%s)' % (key, side)
        if key == 'nightly':
            if side == 'ours':
                self.check_dat(c, ctx['repo'], 'base', 'app', '.deltafs')
                self.check_store(c, ctx['repo'], self.app_blobs,
                                 set(ctx['after'][1]) - set(ctx['before'][1]),
                                 self.new_blobs)
            else:
                self.check_dat(c, ctx['repo'], 'base', 'app', '.deltafs')
                snap = os.path.join(ctx['snap'], BLOBDIR)
                prev = {st.st_ino for _, _, st in _walk_stats(self.snap_full)}
                fresh = {rel for rel, _, st in _walk_stats(snap)
                         if rel.endswith('.blob') and st.st_ino not in prev}
                if fresh != set(self.new_blobs):
                    self.fail('%s: %d files of the snapshot are not linked '
                              'to the previous one, expected the %d new '
                              'revisions' % (c, len(fresh),
                                             len(self.new_blobs)))
                self.check_blobdir(c, snap, self.app_blobs, fresh)
                B.remove(ctx['snap'])  # inside the templates: do not keep
        elif key == 'recover':
            self.check_recovered(c, ctx['out'])
            B.remove(ctx['out'])   # a full copy each: do not keep it
        else:
            if side == 'ours':
                self.check_dat(c, ctx['repo'], None, 'base', '.fs')
                self.check_store(c, ctx['repo'], self.base_blobs)
            else:
                self.check_dat(c, ctx['repo'], None, 'base', '.fs')
                self.check_blobdir(c, os.path.join(
                    ctx['snaps'], BLOBDIR + '.' + STAMP_FULL, BLOBDIR),
                    self.base_blobs)
            B.remove(ctx['repo'])
            if 'snaps' in ctx:
                B.remove(ctx['snaps'])

    def timed(self, key, side, run_no):
        parts, ctx = self.prepare(key, side)
        if key == 'nightly':
            ctx['before'] = census(ctx['roots'])
        os.sync()
        ok = True
        for label, cmd, stamp in parts:
            env = dict(os.environ, REPOZO_TEST_NOW=stamp) if stamp else None
            log = os.path.join(self.scratch, 'log-%s-%s-%s-%d.txt'
                               % (key, side, label, run_no))
            wall, rss, rc, cpu = B.measure(cmd, env=env, log_path=log)
            print('  run %d %-8s %-8s %-7s %8.3f s %8.1f MB  cpu %7.3f s%s'
                  % (run_no + 1, key, side, label, wall, B.mb(rss), cpu,
                     '' if rc == 0 else '  EXIT %d' % rc), flush=True)
            if rc != 0:
                self.fail('%s (%s): %s exited %d: %s\n    repro: %s'
                          % (key, side, label, rc, B.tail(log),
                             ' '.join(cmd)))
                ok = False
                break
            self.results.setdefault((key, side, label), []).append(
                (wall, rss, cpu))
        if ok and key == 'nightly':
            ctx['after'] = census(ctx['roots'])
            self.growths[side] = growth(ctx['before'], ctx['after'])
        if ok:
            self.check(key, side, ctx)
        elif key == 'recover':
            B.remove(ctx['out'])
        self.check_untouched('%s (%s)' % (key, side),
                             self.USES.get((key, side), []))
        return ok

    SIDES = {'nightly': ('ours', 'py'),
             'recover': ('ours', 'cp', 'cp-sync', 'py-cp', 'py-rsync'),
             'full': ('ours', 'py')}

    def stage_hints(self):
        print('per-stage hints: our binary once per scenario with -v',
              flush=True)
        for key in self.args.only:
            parts, ctx = self.prepare(key, 'ours')
            _, cmd, stamp = parts[0]
            path = os.path.join(self.scratch, 'stages-%s.txt' % key)
            os.sync()
            lines, end, rc = B.timeline(
                cmd + ['-v'], dict(os.environ, REPOZO_TEST_NOW=stamp), path)
            if rc != 0:
                self.warn('%s: ours -v exited %d (see %s)' % (key, rc, path))
            else:
                marks = [(0.0, '<start>')] + lines + [(end, '<exit>')]
                gaps = sorted(((t1 - t0, a, b) for (t0, a), (t1, b)
                               in zip(marks, marks[1:])), reverse=True)
                self.stages[key] = (end, gaps[:3])
            if key == 'recover':
                B.remove(ctx['out'])
            elif 'repo' in ctx:
                B.remove(ctx['repo'])
        self.check_untouched('per-stage runs')

    def run(self):
        a = self.args
        for path, what in ((self.ours, 'our binary'),
                           (self.python, 'venv python')):
            if not os.access(path, os.X_OK):
                sys.exit('%s not found: %s' % (what, path))
        if not shutil.which('rsync'):
            sys.exit('rsync not found: install it (apt-get install rsync)')
        os.makedirs(BENCH_DIR, exist_ok=True)
        saved = self.prepare_data()
        self.setup(saved)
        B.fresh_dir(self.scratch)
        self.build_templates()
        print('warming the page cache', flush=True)
        warm([os.path.join(self.data_dir, n) for n in ('base', 'app')] +
             [p for p in self.tpl.values() if os.path.exists(p)])
        for r in range(a.runs):
            print('run %d/%d' % (r + 1, a.runs), flush=True)
            for key in a.only:
                sides = self.SIDES[key]
                if r % 2:
                    sides = sides[::-1]
                for side in sides:
                    self.timed(key, side, r)
        if not a.no_stages:
            self.stage_hints()
        return self.report()

    # -- report --------------------------------------------------------------

    def side(self, key, side, parts=None):
        """Median wall, RSS, CPU of a side (sum of its parts per run)."""
        labels = sorted({lab for (k, s, lab) in self.results
                         if k == key and s == side})
        if parts:
            labels = [lab for lab in labels if lab in parts]
        runs = [self.results[(key, side, lab)] for lab in labels]
        if not runs or any(len(r) != len(runs[0]) for r in runs):
            return None
        per_run = list(zip(*runs))
        wall = statistics.median(sum(x[0] for x in r) for r in per_run)
        rss = statistics.median(max(x[1] for x in r) for r in per_run)
        cpu = statistics.median(sum(x[2] for x in r) for r in per_run)
        return wall, rss, cpu

    ROWS = [
        # key, label, ours side, their side, their parts, target, check
        ('nightly', 'nightly: ours `-BQ --blob-dir` vs repozo `-BQ` + '
         'rsync --link-dest', 'py', None, '≥20x', lambda r: r >= 20),
        ('nightly', 'nightly: ours (all of it) vs the rsync step alone',
         'py', ['rsync'], '', None),
        ('recover', 'recover: ours `-R --blob-dir` vs `cp -a`', 'cp', None,
         'ours ≤1.2x cp', lambda r: r >= 1 / 1.2),
        ('recover', 'recover: ours vs `cp -a` + `sync -f`', 'cp-sync', None,
         '', None),
        ('recover', 'recover: ours vs repozo `-R` + `cp -a` of the snapshot',
         'py-cp', None, '', None),
        ('recover', 'recover: ours vs repozo `-R` + `rsync -a --delete` '
         '(the recipe\'s restore)', 'py-rsync', None, '', None),
        ('full', 'full: ours `-B --blob-dir` vs repozo `-B` + `rsync -a`',
         'py', None, '', None),
    ]

    def report(self):
        a = self.args
        header = ['scenario', 'ours s', 'theirs s', 'ratio', 'target',
                  'met?', 'ours MB', 'theirs MB', 'CPU s ours / theirs']
        rows = []
        missed = []
        for key, label, theirs, parts, target, ok in self.ROWS:
            if key not in a.only:
                continue
            o = self.side(key, 'ours')
            t = self.side(key, theirs, parts)
            if not o or not t:
                rows.append([label, 'n/a', 'n/a', '', target, 'NO (failed)',
                             '', '', ''])
                continue
            ratio = t[0] / o[0] if o[0] else float('inf')
            met = ''
            if ok:
                met = 'yes' if ok(ratio) else 'NO'
                if met == 'NO':
                    missed.append(label)
            rows.append([label, '%.3f' % o[0], '%.3f' % t[0],
                         '%.2fx' % ratio, target, met, '%.1f' % B.mb(o[1]),
                         '%.1f' % B.mb(t[1]), '%.2f / %.2f' % (o[2], t[2])])
        # the parts of the composite sides
        parts_rows = []
        for (key, side, label), res in sorted(self.results.items()):
            if side == 'ours' or len({lab for (k, s, lab) in self.results
                                      if k == key and s == side}) < 2:
                continue
            parts_rows.append('%s (%s): `%s` %.3f s median, CPU %.2f s, '
                              '%.1f MB' % (
                                  key, side, label,
                                  statistics.median(r[0] for r in res),
                                  statistics.median(r[2] for r in res),
                                  B.mb(statistics.median(r[1] for r in res))))

        growth_md = []
        if self.growths:
            ref = self.new_bytes + self.fs_incr
            g_o, g_t = self.growths.get('ours'), self.growths.get('py')
            growth_md = ['| per night | ours | repozo + rsync snapshot |',
                         '|---|---:|---:|']

            def cell(g, k, fmt):
                return fmt(g[k]) if g else 'n/a'
            for k, lab, fmt in (
                    ('bytes', 'bytes (new inodes + growth of existing files)',
                     lambda v: '%d (%s)' % (v, human(v))),
                    ('disk', 'disk blocks (`st_blocks`)',
                     lambda v: '%d (%s)' % (v, human(v))),
                    ('entries', 'new directory entries (`find | wc -l`)',
                     str),
                    ('inodes', 'new inodes', str)):
                growth_md.append('| %s | %s | %s |'
                                 % (lab, cell(g_o, k, fmt), cell(g_t, k, fmt)))
            if g_o:
                r = g_o['bytes'] / ref
                ok = r <= 1.05
                if not ok:
                    missed.append('nightly growth')
                growth_md.append('')
                growth_md.append(
                    'Reference: the night\'s new blob bytes %d (%d revisions) '
                    '+ the Data.fs increment %d = %d bytes; ours grows by '
                    '%.3fx of that (target ≤1.05x: %s).'
                    % (self.new_bytes, len(self.new_blobs), self.fs_incr,
                       ref, r, 'met' if ok else 'NOT met'))

        blob_bytes = sum(s for s, _ in self.base_blobs.values())
        info = B.date_and_machine() + [
            'ours: `%s` (tree at %s); theirs: ZODB %s repozo and %s, the '
            'commands of collective.recipe.backup 6.0 (copyblobs.py)'
            % (os.path.relpath(self.ours, ROOT), B.git_rev(),
               self.zodb_version(), self.rsync_version()),
            'data: %d blobs (bushy), %.2f GB, log-uniform 1 KiB..256 KiB; '
            'Data.fs %.1f MB; the night: %d new revisions (%d new blobs, '
            '%d changed), %.1f MB, Data.fs +%.2f MB; %s'
            % (len(self.base_blobs), blob_bytes / 1e9,
               self.fs_sizes['base'] / 1e6, len(self.new_blobs),
               max(1, a.blobs * NEW_PERCENT // 100),
               len(self.new_blobs) - max(1, a.blobs * NEW_PERCENT // 100),
               self.new_bytes / 1e6, self.fs_incr / 1e6, self.gen_note),
            'median of %d run(s), sides\' order alternated, page cache warm; '
            'ratio = theirs s / ours s (wall; > 1: ours faster); a side of '
            'two commands sums their times; MB = peak RSS by %s'
            % (a.runs, B.RSS_METHOD),
            'ours makes everything it writes durable (fsync/syncfs); repozo, '
            'rsync and `cp -a` do not (the `cp -a` + `sync -f` row adds it)',
            'correctness: ' + ('OK (every run: data files = source bytes, '
                               'store / snapshot / recovered blob files = '
                               'the source\'s names, sizes and md5s, sources '
                               'and templates untouched)'
                               if not self.failures else
                               '%d MISMATCH(ES)' % len(self.failures)),
            'targets missed: ' + ('; '.join(missed) if missed else 'none'),
        ]

        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(header)]

        def fmt(cells):
            return ' | '.join(c.ljust(w) if i in (0, 4, 5, 8) else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))
        print()
        print('\n'.join([fmt(header), '-+-'.join('-' * w for w in widths)] +
                        [fmt(r) for r in rows]))
        print()
        for line in parts_rows + info:
            print(line)
        if growth_md:
            print()
            print('\n'.join(growth_md))

        stage_md = []
        for key, (end, gaps) in self.stages.items():
            stage_md.append('- `%s` (%.3f s): %s' % (key, end, '; '.join(
                '%.3f s from “%s” to “%s”' % (g, self.short(x), self.short(y))
                for g, x, y in gaps)))
        if stage_md:
            print()
            print('\n'.join(stage_md))

        md = ['# Benchmark: blob directories, this repozo vs ZODB %s repozo '
              '+ rsync (collective.recipe.backup)' % self.zodb_version(), '',
              'Written by `scripts/bench-blobs.sh %s` (`scripts/'
              'bench_blobs.py`; see its docstring for the method).'
              % self.command_line(), '',
              '| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---', '---:', '---:', '---:', '---', '---',
                              '---:', '---:', '---:']) + '|']
        md += ['| ' + ' | '.join(r) + ' |' for r in rows]
        md += [''] + ['- ' + line for line in parts_rows + info]
        if growth_md:
            md += ['', '## Repository growth per night (last run)', '']
            md += growth_md
        if stage_md:
            md += ['', '## Where our time goes', '',
                   'One run of our binary per scenario with `-v`; the longest '
                   'gaps between its notes on stderr:', ''] + stage_md
        if self.warnings:
            md += ['', '## Warnings', ''] + ['- ' + w for w in self.warnings]
        if self.failures:
            md += ['', '## MISMATCHES', ''] + ['- ' + f.replace('\n', ' ')
                                               for f in self.failures]
        out = os.path.abspath(a.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, 'w') as f:
            f.write('\n'.join(md) + '\n')
        print('written to %s' % out)
        if self.failures:
            for f in self.failures:
                print('!!!!!!!! MISMATCH: %s' % f)
            return 1
        return 0

    def command_line(self):
        a = self.args
        parts = ['--blobs', str(a.blobs), '--runs', str(a.runs)]
        if list(a.only) != list(SCENARIO_KEYS):
            parts += ['--only', ','.join(a.only)]
        return ' '.join(parts)

    def short(self, note):
        note = note.replace(self.scratch + '/', '').replace(
            self.data_dir + '/', '')
        return note if len(note) <= 80 else note[:77] + '...'

    def zodb_version(self):
        if not hasattr(self, '_zodb'):
            self._zodb = subprocess.run(
                [self.python, '-c', 'from importlib.metadata import version;'
                 'print(version("ZODB"))'], capture_output=True,
                text=True).stdout.strip() or '?'
        return self._zodb

    def rsync_version(self):
        out = subprocess.run(['rsync', '--version'], capture_output=True,
                             text=True).stdout.split('\n')[0].split()
        return 'rsync ' + (out[2] if len(out) > 2 else '?')


def _walk_stats(root):
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            yield os.path.relpath(p, root), p, os.lstat(p)


def main(argv):
    if argv and argv[0] == '_generate':
        generate(argv[1], int(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--blobs', type=int, default=100_000,
                   help='number of blobs (default 100000, about 4.7 GB)')
    p.add_argument('--runs', type=int, default=3,
                   help='repetitions, median reported (default 3)')
    p.add_argument('--only', type=lambda v: [x for x in v.split(',') if x],
                   default=list(SCENARIO_KEYS),
                   help='comma-separated: ' + ','.join(SCENARIO_KEYS))
    p.add_argument('--out', default=DEFAULT_OUT,
                   help='Markdown output (default docs/bench-blobs.md)')
    p.add_argument('--regen', action='store_true',
                   help='regenerate the cached data')
    p.add_argument('--no-stages', action='store_true',
                   help='skip the per-stage -v runs of our binary')
    p.add_argument('--ours', default=B.DEFAULT_OURS,
                   help='our binary (default target/release/repozo)')
    p.add_argument('--python', default=B.DEFAULT_PYTHON,
                   help='python with ZODB 6.4 (default .venv/bin/python)')
    args = p.parse_args(argv)
    unknown = set(args.only) - set(SCENARIO_KEYS)
    if unknown:
        p.error('unknown scenario(s): %s' % ', '.join(sorted(unknown)))
    args.only = [k for k in SCENARIO_KEYS if k in args.only]
    if args.blobs < 500 or args.runs < 1:
        p.error('need --blobs >= 500 and --runs >= 1')
    return Bench(args).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
