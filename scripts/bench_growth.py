#!/usr/bin/env python3
"""Repository growth over a week of nightly 1% backups (issue 16).

Run with the project's venv interpreter (ZODB 6.4), from anywhere:

    .venv/bin/python scripts/bench_growth.py [--size small|large]
                                             [--nights 7] [--runs 5]
                                             [--out FILE]

or through scripts/bench-growth.sh, which also creates the venv and builds
the release binary.

Every backup also stores the whole oid index (about 8 bytes per object in the
database, whatever the size of the increment); `--prune-index` (ours, with
-B) keeps only the `.index` of the newest chain's full backup and of its
newest increment.  This script measures what a repository costs per night:

* The database is the base ``Data.fs`` of ``scripts/bench.py`` (its cache
  ``target/bench/bench-<size>-N<objects>-T<txns>-g<version>/``, generated
  with real ZODB if missing), copied to
  ``target/bench/growth-<size>/src/Data.fs``.
* ``--nights`` nights (default 7, a week with a weekly full backup): night 0
  backs up the base (a full backup, since the repositories start empty);
  each later night first commits 1% of the objects with real ZODB (half new
  objects, half modified existing ones, in ``txns``/100 transactions, as
  bench.py's ``app`` step does; ZODB's close writes a fresh
  ``Data.fs.index``), then runs the same command as a cron job would,
  ``-BQ`` or ``-BQz``, with a fixed stamp (``REPOZO_TEST_NOW``, 02:00 UTC
  each day) into each repository:

    ours -BQ, ours -BQ --prune-index, ours -BQz, ours -BQz --prune-index,
    ZODB's repozo -BQ, ZODB's repozo -BQz (reference)

* After each backup: the increment's bytes (the new data file's size on
  disk), the repository's total bytes (every file: data files, ``.dat``,
  ``.index``, ``.repozo-sums``), that night's growth, and growth /
  increment bytes.  The week's mean ratio is over the increment nights
  (1..nights-1); the target (issue 16) is a mean <= 1.1 with
  ``--prune-index``, plain and ``-z``.  The aggregate ratio (the week's
  growth over the week's increment bytes) and the mean from night 2 on
  (every night prunes one ``.index`` as it adds one) are given too.
* Every backup is checked: exit 0, one new data file, the ``.dat``'s last
  line covers exactly the bytes committed since the previous night with
  their md5, and with ``--prune-index`` exactly the full backup's and the
  newest increment's ``.index`` remain.
* Recovery of a pruned date (the middle night): ours ``-R -D`` from the
  pruned repository (``FILE.index`` rebuilt from the full backup's
  ``.index`` plus a scan of the increments after it) against ours from the
  plain repository (``FILE.index`` copied), median of ``--runs`` with the
  order alternating and an untimed ``sync`` before each (the recovered file
  is fsynced, so the previous run's write-back would otherwise land in the
  next one), plus one ``-v`` run each for the time of the ``FILE.index``
  step alone (from the note that ends the data to the ``FILE.index``
  note); both outputs must be the source's bytes as of that
  night and both ``FILE.index`` files byte-identical (else MISMATCH and
  exit 1).  Then ZODB's repozo recovers the same date from the pruned
  repository (no ``.index`` to copy, so no ``FILE.index``) and ZODB opens
  the result (``FileStorage(path)`` in a child process, rebuilding the
  index by a scan of the whole file), against ZODB opening our output with
  its ``FILE.index``: the trade the option makes for ZODB's repozo users.

The tables (with machine facts) are printed and written as Markdown to
``--out`` (default docs/bench-growth.md).  The scratch repositories stay
under ``target/bench/growth-<size>/`` for inspection.
"""

import argparse
import datetime
import filecmp
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (generator, cache, measure, machine facts)

DEFAULT_OUT = os.path.join(ROOT, 'docs', 'bench-growth.md')
SEED = 20240116
DAY0 = datetime.datetime(2024, 1, 1, 2, 0, 0)
DATA_EXTS = ('.fs', '.fsz', '.deltafs', '.deltafsz')

# key, label, tool, flags, pruned, gzip
REPOS = [
    ('bq', 'ours `-BQ`', 'ours', ['-BQ'], False, False),
    ('bq-prune', 'ours `-BQ --prune-index`', 'ours',
     ['-BQ', '--prune-index'], True, False),
    ('bqz', 'ours `-BQz`', 'ours', ['-BQz'], False, True),
    ('bqz-prune', 'ours `-BQz --prune-index`', 'ours',
     ['-BQz', '--prune-index'], True, True),
    ('py-bq', "ZODB's repozo `-BQ`", 'python', ['-BQ'], False, False),
    ('py-bqz', "ZODB's repozo `-BQz`", 'python', ['-BQz'], False, True),
]
TARGET = 1.1
# pruned repository -> the plain one of the same tool and compression
PAIRS = [('bq-prune', 'bq'), ('bqz-prune', 'bqz')]

OPEN_SNIPPET = r"""
import sys, time
from ZODB.FileStorage import FileStorage
t0 = time.perf_counter()
fs = FileStorage(sys.argv[1])
t1 = time.perf_counter()
used = fs._used_index
fs.close()
print('%.6f %d' % (t1 - t0, used))
"""


def stamp_of(night):
    return (DAY0 + datetime.timedelta(days=night)).strftime(
        '%Y-%m-%d-%H-%M-%S')


def mbs(n):
    return '%.2f' % (n / 1e6)


def kind_of(name):
    if name.endswith(DATA_EXTS):
        return 'data'
    if name.endswith('.index'):
        return 'index'
    if name.endswith('.dat'):
        return 'dat'
    return 'other'          # .repozo-sums, the lock file


def census(repo):
    """Total bytes of every file, and per kind; sorted .index names."""
    total = 0
    kinds = {'data': 0, 'index': 0, 'dat': 0, 'other': 0}
    indexes = []
    for name in os.listdir(repo):
        path = os.path.join(repo, name)
        if not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        total += size
        kinds[kind_of(name)] += size
        if name.endswith('.index'):
            indexes.append(name)
    return total, kinds, sorted(indexes)


def md5_range(path, start, end):
    digest, n = B.md5_of(path, start, end - start)
    return digest if n == end - start else None


# ---------------------------------------------------------------------------
# The nights: 1% of the objects committed with real ZODB

class Committer:
    """Commits each night's 1% as bench.py's `app` step does."""

    def __init__(self, fs_path, objects, txns, profile):
        self.fs_path = fs_path
        self.objects = objects
        self.txns = txns
        self.rng = B.random.Random(SEED)
        self.payloads = B.Payloads(self.rng, profile)
        self.cum = []
        acc = 0
        for n in B._batch_sizes(objects, txns):
            acc += n
            self.cum.append(acc)
        self.serial = objects
        self.next_batch = txns

    def night(self, label):
        import transaction
        import ZODB
        from persistent.list import PersistentList
        from ZODB.FileStorage import FileStorage

        n_app = max(1, self.objects * B.APPEND_PERCENT // 100)
        n_new = n_app // 2
        n_mod = n_app - n_new
        app_txns = max(1, self.txns * B.APPEND_PERCENT // 100)
        modified = self.rng.sample(range(self.objects), n_mod)
        db = ZODB.DB(FileStorage(self.fs_path), cache_size=5000)
        try:
            conn = db.open()
            root = conn.root()
            for t in range(app_txns):
                lo_new = n_new * t // app_txns
                hi_new = n_new * (t + 1) // app_txns
                lo_mod = n_mod * t // app_txns
                hi_mod = n_mod * (t + 1) // app_txns
                batch = PersistentList()
                for _ in range(hi_new - lo_new):
                    batch.append(B._new_object(self.payloads, self.serial))
                    self.serial += 1
                root['batches'][self.next_batch] = batch
                self.next_batch += 1
                for g in modified[lo_mod:hi_mod]:
                    b = B._bisect(self.cum, g)
                    pos = g - (self.cum[b - 1] if b else 0)
                    obj = root['batches'][b][pos]
                    if isinstance(obj, PersistentList):
                        obj[1] = self.payloads.make()
                    else:
                        obj['p'] = self.payloads.make()
                txn = transaction.get()
                txn.note('%s %d' % (label, t))
                txn.setUser('bench-growth')
                transaction.commit()
                conn.cacheMinimize()
            conn.close()
        finally:
            db.close()  # writes a fresh Data.fs.index


# ---------------------------------------------------------------------------

class Growth:
    def __init__(self, args):
        self.args = args
        self.ours = os.path.abspath(args.ours)
        self.python = os.path.abspath(args.python)
        self.failures = []
        self.rows = {k[0]: [] for k in REPOS}   # key -> per-night dicts
        self.src_sizes = []
        self.md5_cache = {}

    def fail(self, msg):
        print('!!!!!!!! MISMATCH: %s' % msg, flush=True)
        self.failures.append(msg)

    def cmd(self, tool, argv):
        if tool == 'python':
            return [self.python, B.PYREPOZO] + argv
        return [self.ours] + argv

    def run(self, tool, argv, now, log):
        env = dict(os.environ, REPOZO_TEST_NOW=now)
        wall, rss, rc, cpu = B.measure(self.cmd(tool, argv), env=env,
                                       log_path=log)
        if rc != 0:
            self.fail('%s %s exited %d: %s' % (tool, ' '.join(argv), rc,
                                               B.tail(log)))
        return wall, cpu, rc

    def source_md5(self, start, end):
        key = (start, end)
        if key not in self.md5_cache:
            self.md5_cache[key] = md5_range(self.src, start, end)
        return self.md5_cache[key]

    # -- data ----------------------------------------------------------------

    def prepare(self):
        a = self.args
        bargs = argparse.Namespace(size=a.size, regen=False,
                                   objects=a.objects, txns=a.txns)
        b = B.Bench.__new__(B.Bench)
        b.args = bargs
        b.python = self.python
        data_dir, saved = b.prepare_data()
        self.gen_note = b.gen_note
        base = os.path.join(data_dir, 'base', 'Data.fs')
        self.work = os.path.join(B.BENCH_DIR, 'growth-%s' % a.size)
        B.remove(self.work)
        srcdir = os.path.join(self.work, 'src')
        os.makedirs(srcdir)
        self.src = os.path.join(srcdir, 'Data.fs')
        shutil.copyfile(base, self.src)
        shutil.copyfile(base + '.index', self.src + '.index')
        self.repos = {}
        for key, *_ in REPOS:
            self.repos[key] = os.path.join(self.work, 'repo-' + key)
            os.makedirs(self.repos[key])
        self.logs = os.path.join(self.work, 'logs')
        os.makedirs(self.logs)
        self.committer = Committer(self.src, a.objects, a.txns, a.size)

    # -- one night -------------------------------------------------------------

    def night(self, n):
        stamp = stamp_of(n)
        commit_s = 0.0
        if n > 0:
            t0 = time.perf_counter()
            self.committer.night('night %d' % n)
            commit_s = time.perf_counter() - t0
        start = self.src_sizes[-1] if self.src_sizes else 0
        end = os.path.getsize(self.src)
        self.src_sizes.append(end)
        print('night %d (%s): source %s MB (+%s MB committed in %.1f s)'
              % (n, stamp, mbs(end), mbs(end - start), commit_s), flush=True)
        for key, label, tool, flags, pruned, gz in REPOS:
            repo = self.repos[key]
            before, _, _ = census(repo)
            log = os.path.join(self.logs, 'night%d-%s.log' % (n, key))
            wall, cpu, rc = self.run(tool, flags + ['-r', repo, '-f',
                                                     self.src], stamp, log)
            total, kinds, indexes = census(repo)
            new = [f for f in os.listdir(repo)
                   if f.startswith(stamp) and f.endswith(DATA_EXTS)]
            ctx = 'night %d, %s' % (n, label)
            if len(new) != 1:
                self.fail('%s: %d new data files: %s' % (ctx, len(new), new))
                incr = 0
            else:
                incr = os.path.getsize(os.path.join(repo, new[0]))
                want_ext = ('.fs' if n == 0 else '.deltafs') + \
                    ('z' if gz else '')
                if not new[0].endswith(want_ext):
                    self.fail('%s: wrote %s, expected a %s'
                              % (ctx, new[0], want_ext))
            self.check_dat(ctx, repo, new, start, end)
            if pruned:
                self.check_pruned(ctx, repo, indexes, n)
            self.rows[key].append({
                'night': n, 'stamp': stamp, 'incr': incr, 'total': total,
                'growth': total - before, 'kinds': kinds,
                'n_index': len(indexes), 'wall': wall, 'cpu': cpu})
            r = self.rows[key][-1]
            print('  %-28s incr %8s MB  repo %8s MB  growth %8s MB  '
                  'ratio %6.3f  .index files %d  (%.2f s)'
                  % (label.replace('`', ''), mbs(incr), mbs(total),
                     mbs(r['growth']),
                     r['growth'] / incr if incr else float('inf'),
                     len(indexes), wall), flush=True)

    def check_dat(self, ctx, repo, new, start, end):
        lines = B.dat_lines(repo)
        if not lines:
            self.fail('%s: no .dat lines' % ctx)
            return
        last = lines[-1]
        if len(last) != 4 or os.path.basename(last[0]) not in new or \
                int(last[1]) != start or int(last[2]) != end:
            self.fail('%s: last .dat line %s, expected the new file over '
                      '[%d, %d)' % (ctx, last, start, end))
            return
        if last[3] != self.source_md5(start, end):
            self.fail('%s: .dat md5 %s is not the source range\'s'
                      % (ctx, last[3]))

    def check_pruned(self, ctx, repo, indexes, n):
        full = stamp_of(0) + '.index'
        want = [full] if n == 0 else [full, stamp_of(n) + '.index']
        if indexes != want:
            self.fail('%s: .index files %s, expected %s'
                      % (ctx, indexes, want))

    # -- recovery of a pruned date ----------------------------------------------

    def recoveries(self):
        a = self.args
        # the middle night: an increment whose .index was pruned
        mid = max(1, min(a.nights // 2, a.nights - 2))
        self.mid = mid
        date = stamp_of(mid)
        now = stamp_of(a.nights)
        want_len = self.src_sizes[mid]
        want_md5 = self.source_md5(0, want_len)
        scratch = os.path.join(self.work, 'recover')
        os.makedirs(scratch)
        self.rec = {}
        print('recovering night %d (%s) from each pruned repository and its '
              'plain twin, %d run(s) each' % (mid, date, a.runs), flush=True)
        for pruned_key, plain_key in PAIRS:
            pruned_repo = self.repos[pruned_key]
            if os.path.exists(os.path.join(pruned_repo, date + '.index')):
                self.fail('%s still holds %s.index: not a pruned date'
                          % (pruned_key, date))
            outs = {}
            times = {pruned_key: [], plain_key: []}
            for r in range(a.runs):
                order = [pruned_key, plain_key]
                if r % 2:
                    order.reverse()
                for key in order:
                    out = os.path.join(scratch, key, 'Data.fs')
                    B.fresh_dir(os.path.dirname(out))
                    # the previous output's removal and write-back are not
                    # this run's
                    subprocess.run(['sync'], check=True)
                    log = os.path.join(self.logs, 'recover-%s-%d.log'
                                       % (key, r))
                    wall, cpu, rc = self.run(
                        'ours', ['-R', '-r', self.repos[key], '-D', date,
                                 '-o', out], now, log)
                    times[key].append((wall, cpu))
                    outs[key] = out
            for key, out in outs.items():
                ctx = 'ours -R -D %s from %s' % (date, key)
                if not os.path.exists(out + '.index'):
                    self.fail('%s: no FILE.index' % ctx)
                got = md5_range(out, 0, os.path.getsize(out))
                if os.path.getsize(out) != want_len or got != want_md5:
                    self.fail('%s: output is not the source as of night %d'
                              % (ctx, mid))
            # where the FILE.index step's time goes: one -v run each, the
            # gap between the last data note and the FILE.index note
            steps = {}
            for key in (pruned_key, plain_key):
                out = os.path.join(scratch, key + '-v', 'Data.fs')
                B.fresh_dir(os.path.dirname(out))
                subprocess.run(['sync'], check=True)
                notes, _, rc = B.timeline(
                    self.cmd('ours', ['-R', '-v', '-r', self.repos[key],
                                      '-D', date, '-o', out]),
                    dict(os.environ, REPOZO_TEST_NOW=now),
                    os.path.join(self.logs, 'recover-v-%s.txt' % key))
                t_data = next((t for t, x in notes
                               if x.startswith('Recovered a total')), None)
                t_index = next((t for t, x in notes
                                if x.startswith('Restoring index')), None)
                if rc != 0 or t_data is None or t_index is None:
                    self.fail('ours -R -v from %s: exit %d, notes %s'
                              % (key, rc, [x for _, x in notes]))
                    steps[key] = float('nan')
                else:
                    steps[key] = t_index - t_data
                B.remove(os.path.dirname(out))
            a_out, b_out = outs[pruned_key], outs[plain_key]
            same_out = filecmp.cmp(a_out, b_out, shallow=False)
            same_idx = (os.path.exists(a_out + '.index') and
                        os.path.exists(b_out + '.index') and
                        filecmp.cmp(a_out + '.index', b_out + '.index',
                                    shallow=False))
            if not same_out:
                self.fail('%s and %s: recovered files differ'
                          % (pruned_key, plain_key))
            if not same_idx:
                self.fail('%s and %s: FILE.index files differ'
                          % (pruned_key, plain_key))
            self.rec[pruned_key] = {
                'pruned': times[pruned_key], 'plain': times[plain_key],
                'step_pruned': steps[pruned_key],
                'step_plain': steps[plain_key],
                'same': same_out and same_idx, 'out': a_out,
                'index_size': os.path.getsize(b_out + '.index')
                if os.path.exists(b_out + '.index') else 0}
            print('  %s: pruned %.3f s, plain %.3f s (medians); FILE.index '
                  'step %.3f s rebuilt, %.3f s copied; outputs and '
                  'FILE.index %s' % (
                      pruned_key,
                      statistics.median(w for w, _ in times[pruned_key]),
                      statistics.median(w for w, _ in times[plain_key]),
                      steps[pruned_key], steps[plain_key],
                      'byte-identical' if same_out and same_idx
                      else 'DIFFER'), flush=True)

        # ZODB's repozo recovering a pruned date, then ZODB opening it
        print('ZODB\'s repozo -R of the pruned date, then ZODB opening the '
              'file', flush=True)
        self.py = {'recover': [], 'open_noindex': [], 'open_index': []}
        for r in range(a.runs):
            out = os.path.join(scratch, 'py', 'Data.fs')
            B.fresh_dir(os.path.dirname(out))
            subprocess.run(['sync'], check=True)
            log = os.path.join(self.logs, 'py-recover-%d.log' % r)
            wall, cpu, rc = self.run(
                'python', ['-R', '-r', self.repos['bq-prune'], '-D', date,
                           '-o', out], now, log)
            self.py['recover'].append((wall, cpu))
            if os.path.exists(out + '.index'):
                self.fail("ZODB's repozo wrote FILE.index for a pruned date")
            got = md5_range(out, 0, os.path.getsize(out))
            if os.path.getsize(out) != want_len or got != want_md5:
                self.fail("ZODB's repozo -R of the pruned repository: output "
                          "is not the source as of night %d" % mid)
            secs, used = self.zodb_open(out)
            self.py['open_noindex'].append(secs)
            if used:
                self.fail('ZODB found an index beside ZODB\'s repozo output')
            # the index ZODB saved on close, against ours rebuilt
            ours_idx = self.rec['bq-prune']['out'] + '.index'
            self.py['zodb_index_same'] = filecmp.cmp(
                out + '.index', ours_idx, shallow=False)
            # ZODB opening our output, with its FILE.index (a copy, so that
            # the timed output above stays as it was)
            cp = os.path.join(scratch, 'ours-open', 'Data.fs')
            B.fresh_dir(os.path.dirname(cp))
            shutil.copyfile(self.rec['bq-prune']['out'], cp)
            shutil.copyfile(ours_idx, cp + '.index')
            secs, used = self.zodb_open(cp)
            self.py['open_index'].append(secs)
            if not used:
                self.fail('ZODB did not use our rebuilt FILE.index')
        print('  ZODB\'s repozo -R %.3f s; ZODB open without index %.3f s, '
              'with our FILE.index %.3f s; index ZODB saved %s ours'
              % (statistics.median(w for w, _ in self.py['recover']),
                 statistics.median(self.py['open_noindex']),
                 statistics.median(self.py['open_index']),
                 '==' if self.py['zodb_index_same'] else '!='), flush=True)

    def zodb_open(self, path):
        p = subprocess.run([self.python, '-c', OPEN_SNIPPET, path],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.fail('ZODB could not open %s: %s' % (path, p.stderr[-500:]))
            return float('nan'), 0
        secs, used = p.stdout.split()
        return float(secs), int(used)

    # -- report ----------------------------------------------------------------

    def summary(self, key):
        rows = self.rows[key]
        incr = [r for r in rows if r['night'] > 0]
        ratios = [r['growth'] / r['incr'] for r in incr if r['incr']]
        later = ratios[1:]
        return {
            'full': rows[0]['incr'] if rows else 0,
            'full_growth': rows[0]['growth'] if rows else 0,
            'incr': sum(r['incr'] for r in incr),
            'growth': sum(r['growth'] for r in incr),
            'mean': statistics.mean(ratios) if ratios else float('nan'),
            'agg': (sum(r['growth'] for r in incr) /
                    sum(r['incr'] for r in incr)) if incr else float('nan'),
            'later': statistics.mean(later) if later else float('nan'),
            'final': rows[-1]['total'] if rows else 0,
            'kinds': rows[-1]['kinds'] if rows else {},
        }

    def pruned_note(self, key, label):
        """Where a pruned repository's growth goes, in numbers."""
        rows = self.rows[key]
        incr = [r for r in rows if r['night'] > 0]
        if len(incr) < 2:
            return ''
        d_index = [b['kinds']['index'] - a['kinds']['index']
                   for a, b in zip(rows, rows[1:])]
        first = d_index[0]
        later = statistics.mean(d_index[1:])
        total_incr = sum(r['incr'] for r in incr)
        s = self.summary(key)
        need = (TARGET - 1) * total_incr
        return ('- %s: night 1 adds the first increment\'s `.index` '
                '(%s MB, %.1f× that night\'s %s MB increment) with nothing '
                'to prune; each later night adds its `.index` and removes the '
                'previous one, net %+.1f kB (8 bytes per new object), so '
                'nights 2+ grow by %.3f× the increment. The second `.index` '
                'is a cost per chain, not per night: over %d increments '
                '(%s MB) it adds %.2f to the mean ratio. A week\'s mean of '
                '≤%.1f× leaves room for %s MB of `.index` beyond the full '
                'backup\'s over the week.'
                % (label, mbs(first), first / incr[0]['incr'],
                   mbs(incr[0]['incr']), later / 1e3, s['later'], len(incr),
                   mbs(total_incr), s['mean'] - s['later'], TARGET,
                   mbs(need)))

    def report(self):
        a = self.args
        lines = []          # printed
        md = ['# Benchmark: repository growth over a week of nightly 1% '
              'backups', '',
              'Written by `scripts/bench-growth.sh %s` '
              '(`scripts/bench_growth.py`; see its docstring for the '
              'method). Issue 16: every backup also stores the whole oid '
              'index (about 8 bytes per object in the database); '
              '`--prune-index` keeps only the full backup\'s and the newest '
              'increment\'s. Target: with the option, repository bytes per '
              'nightly 1%% backup ≤ %.1f× the increment\'s bytes, as the '
              'mean over the week\'s increment nights.'
              % (self.command_line(), TARGET), '']

        # summary
        head = ['repository', 'full MB', 'increments MB', 'growth MB',
                'mean ratio', 'aggregate', 'nights 2+', 'repo MB at end',
                'of which .index MB', 'target', 'met?']
        srows = []
        for key, label, tool, flags, pruned, gz in REPOS:
            s = self.summary(key)
            met = ''
            target = ''
            if pruned:
                target = '≤%.1f' % TARGET
                met = 'yes' if s['mean'] <= TARGET else \
                    'NO (mean %+.0f%%)' % (100 * (s['mean'] / TARGET - 1))
                met += '; nights 2+: %s' % (
                    'yes' if s['later'] <= TARGET else 'NO')
            srows.append([label, mbs(s['full']), mbs(s['incr']),
                          mbs(s['growth']), '%.3f' % s['mean'],
                          '%.3f' % s['agg'], '%.3f' % s['later'],
                          mbs(s['final']), mbs(s['kinds'].get('index', 0)),
                          target, met])
        md += ['## Summary (nights 1–%d)' % (a.nights - 1), '']
        md += table_md(head, srows)
        md += ['', 'ratio = a night\'s growth of the repository (every file) '
               '/ that night\'s new data file; "mean ratio" is the mean over '
               'nights 1–%d, "aggregate" their total growth / their total '
               'increment bytes, "nights 2+" the mean from night 2 on (the '
               'first increment adds an `.index` that no older increment\'s '
               'removal offsets). The full backup (night 0) is not counted.'
               % (a.nights - 1), '']
        lines += table_text(head, srows)

        # per repository
        notes = [self.pruned_note(key, label)
                 for key, label, tool, flags, pruned, gz in REPOS if pruned]
        md += notes + ['']
        lines += [''] + [n.replace('`', '') for n in notes]
        md += ['## Per night', '']
        for key, label, tool, flags, pruned, gz in REPOS:
            head2 = ['night', 'increment bytes', 'repo bytes', 'growth',
                     'ratio', 'Δ data', 'Δ .index', 'Δ .dat + sums',
                     '.index files', 'backup s']
            rows2 = []
            prev = None
            for r in self.rows[key]:
                k = r['kinds']
                pk = prev['kinds'] if prev else {x: 0 for x in k}
                rows2.append([
                    '%d%s' % (r['night'], ' (full)' if r['night'] == 0
                              else ''),
                    '{:,}'.format(r['incr']), '{:,}'.format(r['total']),
                    '{:+,}'.format(r['growth']),
                    '%.3f' % (r['growth'] / r['incr']) if r['incr'] else '-',
                    '{:+,}'.format(k['data'] - pk['data']),
                    '{:+,}'.format(k['index'] - pk['index']),
                    '{:+,}'.format(k['dat'] + k['other'] - pk['dat'] -
                                   pk['other']),
                    str(r['n_index']), '%.2f' % r['wall']])
                prev = r
            s = self.summary(key)
            md += ['### %s' % label, '']
            md += table_md(head2, rows2)
            md += ['', 'Mean ratio over nights 1–%d: **%.3f**; aggregate '
                   '%.3f.' % (a.nights - 1, s['mean'], s['agg']), '']
            lines += ['', label.replace('`', '')] + table_text(head2, rows2)
            lines += ['week mean ratio %.3f (aggregate %.3f, nights 2+ %.3f)'
                      % (s['mean'], s['agg'], s['later'])]

        # recovery
        md += ['## Recovering a pruned date (night %d, %s)'
               % (self.mid, stamp_of(self.mid)), '']
        head3 = ['recovery', 'wall s (median)', 'CPU s (median)', 'note']
        rows3 = []
        for pruned_key, plain_key in PAIRS:
            rec = self.rec[pruned_key]
            lab = dict((k[0], k[1]) for k in REPOS)
            rows3.append(['ours `-R` from %s (FILE.index rebuilt)'
                          % lab[pruned_key],
                          '%.3f' % statistics.median(w for w, _ in
                                                     rec['pruned']),
                          '%.3f' % statistics.median(c for _, c in
                                                     rec['pruned']),
                          'FILE.index step %.3f s (`-v`); output and '
                          'FILE.index %s the plain repository\'s'
                          % (rec['step_pruned'],
                             'byte-identical to' if rec['same']
                             else 'DIFFER from')])
            rows3.append(['ours `-R` from %s (FILE.index copied)'
                          % lab[plain_key],
                          '%.3f' % statistics.median(w for w, _ in
                                                     rec['plain']),
                          '%.3f' % statistics.median(c for _, c in
                                                     rec['plain']),
                          'FILE.index step %.3f s (`-v`); FILE.index %s MB'
                          % (rec['step_plain'], mbs(rec['index_size']))])
        rows3.append(["ZODB's repozo `-R` from ours `-BQ --prune-index` "
                      "(no FILE.index)",
                      '%.3f' % statistics.median(w for w, _ in
                                                 self.py['recover']),
                      '%.3f' % statistics.median(c for _, c in
                                                 self.py['recover']),
                      'logs "No index file to restore"'])
        rows3.append(['ZODB opens that file (rebuilds its index: a scan of '
                      'the whole file)',
                      '%.3f' % statistics.median(self.py['open_noindex']), '',
                      '`FileStorage(path)` in a child; the index it saves on '
                      'close is %s our rebuilt FILE.index'
                      % ('byte-identical to' if self.py['zodb_index_same']
                         else 'different from')])
        rows3.append(['ZODB opens our output with its FILE.index',
                      '%.3f' % statistics.median(self.py['open_index']), '',
                      'for comparison'])
        md += table_md(head3, rows3)
        lines += ['', 'recovery of night %d' % self.mid] + \
            table_text(head3, rows3)

        info = B.date_and_machine(
            'shared with other jobs (times are noisy; the byte counts are not)') + [
            'ours: `%s` (tree at %s); reference: ZODB %s repozo'
            % (os.path.relpath(self.ours, ROOT), B.git_rev(),
               self.zodb_version()),
            'data (%s): %d objects in %d transactions (scripts/bench.py\'s '
            'base Data.fs, %s MB; %s); each night commits %d%% of the '
            'objects (half new, half modified) in %d transactions; the '
            'source grew to %s MB over the week'
            % (a.size, a.objects, a.txns, mbs(self.src_sizes[0]),
               self.gen_note, B.APPEND_PERCENT,
               max(1, a.txns * B.APPEND_PERCENT // 100),
               mbs(self.src_sizes[-1])),
            'stamps: night n at 2024-01-0(1+n) 02:00:00 UTC '
            '(`REPOZO_TEST_NOW`); recoveries: median of %d run(s), order '
            'alternated, page cache warm, `sync` before each' % a.runs,
            'bytes are file sizes (`st_size`) of every file in the '
            'repository',
            'correctness: ' + ('OK (every backup\'s `.dat` range and md5 = '
                               'the source\'s new bytes; pruned repositories '
                               'hold exactly the full\'s and the newest '
                               'increment\'s `.index`; recovered files = the '
                               'source as of the date, FILE.index pruned = '
                               'plain)' if not self.failures else
                               '%d MISMATCH(ES)' % len(self.failures)),
        ]
        md += [''] + ['- ' + x for x in info]
        md += ['', '## Reproduce', '', '```sh',
               'scripts/bench-growth.sh %s' % self.command_line(), '```', '',
               'The database is scripts/bench.py\'s cached base (generated on '
               'first use, a minute or two for the small size); the '
               'repositories of the last run stay under '
               '`target/bench/growth-%s/`.' % a.size]
        if self.failures:
            md += ['', '## MISMATCHES', ''] + ['- ' + f.replace('\n', ' ')
                                               for f in self.failures]
        print()
        print('\n'.join(lines))
        print()
        for x in info:
            print(x)
        out = os.path.abspath(a.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, 'w') as f:
            f.write('\n'.join(md) + '\n')
        print('written to %s' % out)
        if self.failures:
            print()
            for f in self.failures:
                print('!!!!!!!! MISMATCH: %s' % f)
            return 1
        return 0

    def command_line(self):
        a = self.args
        parts = ['--size', a.size, '--nights', str(a.nights),
                 '--runs', str(a.runs)]
        if a.objects != B.SIZES[a.size]['objects']:
            parts += ['--objects', str(a.objects)]
        if a.txns != min(B.SIZES[a.size]['txns'], a.objects):
            parts += ['--txns', str(a.txns)]
        return ' '.join(parts)

    def zodb_version(self):
        return subprocess.run(
            [self.python, '-c', 'from importlib.metadata import version;'
             'print(version("ZODB"))'], capture_output=True,
            text=True).stdout.strip() or '?'

    def main(self):
        self.prepare()
        for n in range(self.args.nights):
            self.night(n)
        self.recoveries()
        return self.report()


def table_md(head, rows):
    def numeric(i):
        cell = next((r[i] for r in rows if r[i]), '')
        return i > 0 and cell[:1] != '' and cell[:1] in '0123456789+-'
    return ['| ' + ' | '.join(head) + ' |',
            '|' + '|'.join('---:' if numeric(i) else '---'
                           for i in range(len(head))) + '|'] + \
        ['| ' + ' | '.join(r) + ' |' for r in rows]


def table_text(head, rows):
    rows = [[c.replace('`', '') for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows))
              for i, h in enumerate(head)]
    fmt = ' | '.join('%%-%ds' % w for w in widths)
    return [fmt % tuple(head), '-+-'.join('-' * w for w in widths)] + \
        [fmt % tuple(r) for r in rows]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', choices=sorted(B.SIZES), default='small')
    p.add_argument('--nights', type=int, default=7,
                   help='nights including night 0, the full backup '
                        '(default 7: a week with a weekly full)')
    p.add_argument('--runs', type=int, default=5,
                   help='repetitions of each timed recovery (default 5)')
    p.add_argument('--out', default=DEFAULT_OUT,
                   help='Markdown output (default docs/bench-growth.md)')
    p.add_argument('--objects', type=int,
                   help='override the number of objects (testing)')
    p.add_argument('--txns', type=int,
                   help='override the number of transactions (testing)')
    p.add_argument('--ours', default=B.DEFAULT_OURS,
                   help='our binary (default target/release/repozo)')
    p.add_argument('--python', default=sys.executable,
                   help='python with ZODB 6.4 (default: this one)')
    args = p.parse_args(argv)
    if args.objects is None:
        args.objects = B.SIZES[args.size]['objects']
    if args.txns is None:
        args.txns = min(B.SIZES[args.size]['txns'], args.objects)
    if args.nights < 3 or args.runs < 1 or args.objects < 100 or \
            args.objects < args.txns:
        p.error('need --nights >= 3, --runs >= 1, --objects >= '
                'max(100, --txns)')
    return Growth(args).main()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
