#!/usr/bin/env python3
"""Benchmark (not a timed test): quick incremental backup, this tool vs ZODB.

Run with the project's venv interpreter (ZODB 6.4), from anywhere:

    .venv/bin/python scripts/bench_quick.py [--objects N] [--runs R]

or through scripts/bench_quick.sh, which also builds the release binary and
creates the venv.

What it does:

* Builds (once, cached under ``target/bench/data-N<objects>-T<txns>/`` with a
  ``PARAMS.json`` marker) a real ZODB FileStorage of ``--objects`` small
  persistent objects (PersistentMapping / PersistentList holding 20..150
  random bytes) committed in ``--txns`` transactions, then a copy of it with
  1% of the objects appended (half new, half modified) in a few more
  transactions.  Per-commit fsync is disabled in the generator only.
* Measures, for ZODB's repozo (``tests/py/pyrepozo.py``) and for ours
  (``target/release/repozo``), each in its own fresh repository, alternating
  which tool goes first across ``--runs`` repetitions, and reports the
  median wall time and peak RSS (``os.wait4`` ``ru_maxrss``) of the child:

    - ``-B``  full backup of the base file into an empty repository
    - ``-BF`` the same, forced
    - ``-BQ`` of the appended file, starting from a copy (``cp -a``, not
      timed) of the repository the tool's own ``-B`` made, with beside the
      source (a) the live ``Data.fs.index`` ZODB wrote after the append,
      (b) no ``Data.fs.index``, (c) a stale one (from before the append).

* Also times ``md5sum`` and ``cat > /dev/null`` of the base file as the
  machine's limit.  All files are hot in the page cache (nothing is dropped),
  so the numbers are CPU + fsync, not cold-disk reads.
* Checks every run: both tools succeed, their new data files are
  byte-identical (``cmp``) and the ranges (start, end, md5) of the last
  ``.dat`` line agree; otherwise prints ``MISMATCH`` and exits 1 (after the
  table).  Whether the ``.index`` files are byte-identical is reported for
  information only.

The table is printed and written as Markdown to ``target/bench/bench_quick.md``.
"""

import argparse
import bisect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYREPOZO = os.path.join(ROOT, 'tests', 'py', 'pyrepozo.py')
DEFAULT_OURS = os.path.join(ROOT, 'target', 'release', 'repozo')
DEFAULT_PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')
BENCH_DIR = os.path.join(ROOT, 'target', 'bench')

GEN_VERSION = 1
APPEND_PERCENT = 1
STAMP_FULL = '2024-01-01-00-00-00'
STAMP_INCR = '2024-01-01-01-00-00'
TOOLS = ('python', 'ours')


# ---------------------------------------------------------------------------
# Database generation (runs in a child process: `bench_quick.py _generate`)

def _batch_sizes(objects, txns):
    base, extra = divmod(objects, txns)
    return [base + (1 if i < extra else 0) for i in range(txns)]


def _new_object(rng, serial):
    from persistent.list import PersistentList
    from persistent.mapping import PersistentMapping
    payload = rng.randbytes(rng.randint(20, 150))
    if serial % 3 == 2:
        return PersistentList([serial, payload])
    return PersistentMapping({'i': serial, 'p': payload})


def generate(data_dir, objects, txns):
    """Write base/Data.fs(.index), app/Data.fs(.index) and the stale index."""
    import transaction
    import ZODB
    import ZODB.FileStorage  # noqa: F401
    from BTrees.IOBTree import IOBTree
    from persistent.list import PersistentList
    from ZODB.FileStorage import FileStorage

    # Turn off the per-commit fsync, here only: FileStorage calls the
    # module-level name `fsync` (bound at import), not os.fsync.
    fsmod = sys.modules['ZODB.FileStorage.FileStorage']
    fsmod.fsync = None

    rng = random.Random(20240101)
    base_dir = os.path.join(data_dir, 'base')
    app_dir = os.path.join(data_dir, 'app')
    for d in (base_dir, app_dir):
        os.makedirs(d)
    base_fs = os.path.join(base_dir, 'Data.fs')
    app_fs = os.path.join(app_dir, 'Data.fs')

    sizes = _batch_sizes(objects, txns)
    db = ZODB.DB(FileStorage(base_fs, create=True), cache_size=5000)
    conn = db.open()
    root = conn.root()
    root['batches'] = IOBTree()
    transaction.get().note('create root')
    transaction.commit()
    serial = 0
    t0 = time.monotonic()
    for b, n in enumerate(sizes):
        batch = PersistentList()
        for _ in range(n):
            batch.append(_new_object(rng, serial))
            serial += 1
        root['batches'][b] = batch
        txn = transaction.get()
        txn.note('batch %d' % b)
        txn.setUser('bench')
        transaction.commit()
        conn.cacheMinimize()
        if (b + 1) % 50 == 0:
            print('  generated %d/%d transactions (%d objects, %.0f s)'
                  % (b + 1, txns, serial, time.monotonic() - t0), flush=True)
    conn.close()
    db.close()  # writes base/Data.fs.index

    shutil.copyfile(base_fs, app_fs)
    shutil.copyfile(base_fs + '.index', app_fs + '.index')
    shutil.copyfile(base_fs + '.index', os.path.join(app_dir, 'stale.index'))

    # The 1% append: half new objects, half modified existing ones.
    n_app = max(1, objects * APPEND_PERCENT // 100)
    n_new = n_app // 2
    n_mod = n_app - n_new
    app_txns = max(1, txns * APPEND_PERCENT // 100)
    cum = []
    acc = 0
    for n in sizes:
        acc += n
        cum.append(acc)
    modified = rng.sample(range(objects), n_mod)
    db = ZODB.DB(FileStorage(app_fs), cache_size=5000)
    conn = db.open()
    root = conn.root()
    for t in range(app_txns):
        lo_new, hi_new = n_new * t // app_txns, n_new * (t + 1) // app_txns
        lo_mod, hi_mod = n_mod * t // app_txns, n_mod * (t + 1) // app_txns
        batch = PersistentList()
        for _ in range(hi_new - lo_new):
            batch.append(_new_object(rng, serial))
            serial += 1
        root['batches'][txns + t] = batch
        for g in modified[lo_mod:hi_mod]:
            b = bisect.bisect_right(cum, g)
            pos = g - (cum[b - 1] if b else 0)
            obj = root['batches'][b][pos]
            payload = rng.randbytes(rng.randint(20, 150))
            if isinstance(obj, PersistentList):
                obj[1] = payload
            else:
                obj['p'] = payload
        txn = transaction.get()
        txn.note('append %d' % t)
        txn.setUser('bench')
        transaction.commit()
        conn.cacheMinimize()
    conn.close()
    db.close()  # writes app/Data.fs.index (the live one)


# ---------------------------------------------------------------------------
# Helpers

def mb(kib):
    return kib / 1024.0


def measure(cmd, env=None, log_path=None, stdout=None):
    """Run cmd; return (wall seconds, peak RSS KiB, exit code)."""
    out = open(log_path, 'wb') if log_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else out,
                             stderr=out, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    finally:
        if log_path:
            out.close()
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc  # already reaped; keep Popen from waiting again
    return wall, ru.ru_maxrss, rc


def run_quiet(cmd):
    subprocess.run(cmd, check=True)


def fresh_dir(path):
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path)


def dat_last_line(repo):
    dats = sorted(f for f in os.listdir(repo) if f.endswith('.dat'))
    if not dats:
        return None, None
    with open(os.path.join(repo, dats[-1])) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    return dats[-1], (lines[-1] if lines else None)


def files_with_stamp(repo, stamp):
    return sorted(f for f in os.listdir(repo) if f.startswith(stamp))


def same_bytes(a, b):
    return subprocess.run(['cmp', '-s', a, b]).returncode == 0


def tail(path, n=5):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ''


# ---------------------------------------------------------------------------
# The benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.ours = os.path.abspath(args.ours)
        self.python = os.path.abspath(args.python)
        self.failures = []
        self.notes = []
        # (scenario, tool) -> list of (wall, rss)
        self.results = {}
        self.index_identical = {}

    def cmd(self, tool, argv):
        if tool == 'python':
            return [self.python, PYREPOZO] + argv
        return [self.ours] + argv

    def fail(self, msg):
        line = '!!!!!!!! MISMATCH: %s' % msg
        print(line, flush=True)
        self.failures.append(msg)

    def prepare_data(self):
        a = self.args
        params = {'version': GEN_VERSION, 'objects': a.objects,
                  'txns': a.txns, 'append_percent': APPEND_PERCENT}
        data_dir = os.path.join(BENCH_DIR, 'data-N%d-T%d' % (a.objects,
                                                             a.txns))
        marker = os.path.join(data_dir, 'PARAMS.json')
        if os.path.exists(marker) and not a.regen:
            with open(marker) as f:
                saved = json.load(f)
            if all(saved.get(k) == v for k, v in params.items()) and \
                    os.path.getsize(os.path.join(data_dir, 'base', 'Data.fs')) \
                    == saved['base_size'] and \
                    os.path.getsize(os.path.join(data_dir, 'app', 'Data.fs')) \
                    == saved['app_size']:
                print('reusing %s (generated earlier in %.1f s)'
                      % (data_dir, saved['generation_seconds']))
                self.gen_note = ('database reused from cache; its generation '
                                 'took %.1f s' % saved['generation_seconds'])
                return data_dir, saved
            print('cache %s does not match; regenerating' % data_dir)
        if os.path.lexists(data_dir):
            shutil.rmtree(data_dir)
        os.makedirs(BENCH_DIR, exist_ok=True)
        print('generating %d objects in %d transactions into %s ...'
              % (a.objects, a.txns, data_dir), flush=True)
        t0 = time.perf_counter()
        subprocess.run([self.python, os.path.abspath(__file__), '_generate',
                        data_dir, str(a.objects), str(a.txns)], check=True)
        gen_s = time.perf_counter() - t0
        saved = dict(params)
        saved['generation_seconds'] = round(gen_s, 2)
        saved['base_size'] = os.path.getsize(
            os.path.join(data_dir, 'base', 'Data.fs'))
        saved['app_size'] = os.path.getsize(
            os.path.join(data_dir, 'app', 'Data.fs'))
        with open(marker, 'w') as f:
            json.dump(saved, f, indent=1)
        print('generation took %.1f s' % gen_s)
        self.gen_note = 'database generated in %.1f s' % gen_s
        return data_dir, saved

    def record(self, scenario, tool, wall, rss):
        self.results.setdefault((scenario, tool), []).append((wall, rss))

    def timed(self, scenario, tool, argv, stamp, run_no):
        env = dict(os.environ, REPOZO_TEST_NOW=stamp)
        log = os.path.join(self.scratch, 'log-%s-%s-%d.txt'
                           % (scenario.replace(' ', '_').replace('/', '_'),
                              tool, run_no))
        os.sync()  # flush the untimed preparation's writes first
        wall, rss, rc = measure(self.cmd(tool, argv), env=env, log_path=log)
        print('  run %d %-22s %-6s %7.2f s %8.1f MB%s'
              % (run_no + 1, scenario, tool, wall, mb(rss),
                 '' if rc == 0 else '  EXIT %d' % rc), flush=True)
        if rc != 0:
            self.fail('%s: %s exited %d: %s\n    repro: REPOZO_TEST_NOW=%s %s'
                      % (scenario, tool, rc, tail(log), stamp,
                         ' '.join(self.cmd(tool, argv))))
            return False
        self.record(scenario, tool, wall, rss)
        return True

    def compare(self, scenario, repos, stamp, expect_start):
        """Check the two tools' outputs (made with `stamp`) agree."""
        files = {t: files_with_stamp(repos[t], stamp) for t in TOOLS}
        if files['python'] != files['ours']:
            self.fail('%s: different files: python %s, ours %s'
                      % (scenario, files['python'], files['ours']))
            return
        data = [f for f in files['python']
                if f.endswith(('.fs', '.deltafs', '.fsz', '.deltafsz'))]
        want = '.fs' if expect_start == 0 else '.deltafs'
        if len(data) != 1 or not data[0].endswith(want):
            self.fail('%s: expected one new %s file, got %s'
                      % (scenario, want, files['python']))
            return
        a, b = (os.path.join(repos[t], data[0]) for t in TOOLS)
        if not same_bytes(a, b):
            self.fail('%s: data files differ: cmp %s %s' % (scenario, a, b))
        lines = {}
        for t in TOOLS:
            _, line = dat_last_line(repos[t])
            if line is None or len(line) != 4:
                self.fail('%s: %s: bad .dat last line %r' % (scenario, t, line))
                return
            lines[t] = line
        if lines['python'][1:] != lines['ours'][1:]:
            self.fail('%s: .dat ranges differ: python %s, ours %s'
                      % (scenario, lines['python'][1:], lines['ours'][1:]))
        elif int(lines['ours'][1]) != expect_start:
            self.fail('%s: .dat range starts at %s, expected %d'
                      % (scenario, lines['ours'][1], expect_start))
        idx = [f for f in files['python'] if f.endswith('.index')]
        if idx:
            same = same_bytes(*(os.path.join(repos[t], idx[0]) for t in TOOLS))
            self.index_identical.setdefault(scenario, set()).add(same)

    def run(self):
        a = self.args
        for path, what in ((self.ours, 'our binary'),
                           (self.python, 'venv python')):
            if not os.access(path, os.X_OK):
                sys.exit('%s not found: %s' % (what, path))
        data_dir, saved = self.prepare_data()
        base_dir = os.path.join(data_dir, 'base')
        app_dir = os.path.join(data_dir, 'app')
        base_fs = os.path.join(base_dir, 'Data.fs')
        app_fs = os.path.join(app_dir, 'Data.fs')
        app_index = app_fs + '.index'
        live_index = os.path.join(app_dir, 'live.index')
        stale_index = os.path.join(app_dir, 'stale.index')
        if not os.path.exists(live_index):
            shutil.copyfile(app_index, live_index)
        base_size = saved['base_size']
        app_size = saved['app_size']
        self.sizes = (base_size, app_size)

        self.scratch = os.path.join(BENCH_DIR, 'scratch')
        fresh_dir(self.scratch)

        # Warm the page cache and measure the machine's limit.
        for _ in range(2):
            measure(['cat', base_fs], stdout=subprocess.DEVNULL)
            measure(['cat', app_fs], stdout=subprocess.DEVNULL)
        limits = {}
        for name, cmd in (('md5sum', ['md5sum', base_fs]),
                          ('cat > /dev/null', ['cat', base_fs])):
            walls = [measure(cmd, stdout=subprocess.DEVNULL)[0]
                     for _ in range(max(3, a.runs))]
            limits[name] = statistics.median(walls)
        self.limits = limits

        templates = {}
        incr_scenarios = (('-BQ live index', 'live'),
                          ('-BQ no index', 'none'),
                          ('-BQ stale index', 'stale'))
        base_mtime = os.stat(base_fs).st_mtime_ns
        app_mtime = os.stat(app_fs).st_mtime_ns
        for r in range(a.runs):
            order = TOOLS if r % 2 == 0 else TOOLS[::-1]
            print('run %d/%d (order: %s)' % (r + 1, a.runs, ', '.join(order)),
                  flush=True)
            # (1) full backups of the base file; it keeps its live index.
            for scen, flags in (('-B full', ['-B']), ('-BF full', ['-BF'])):
                repos = {}
                for tool in order:
                    repo = os.path.join(self.scratch, 'full-%s-%s'
                                        % (flags[0][1:], tool))
                    fresh_dir(repo)
                    repos[tool] = repo
                    self.timed(scen, tool, flags + ['-r', repo, '-f', base_fs],
                               STAMP_FULL, r)
                self.compare(scen, repos, STAMP_FULL, 0)
                if scen == '-B full':
                    for tool in TOOLS:
                        tpl = os.path.join(self.scratch, 'template-%s' % tool)
                        if tool not in templates and \
                                files_with_stamp(repos[tool], STAMP_FULL):
                            if os.path.lexists(tpl):
                                shutil.rmtree(tpl)
                            run_quiet(['cp', '-a', repos[tool], tpl])
                            templates[tool] = tpl
            if set(templates) != set(TOOLS):
                self.fail('no full-backup repository to start -BQ from '
                          '(the full backup failed)')
                break
            # (2) -BQ of the appended file from the tool's full repository.
            for scen, index_state in incr_scenarios:
                repos = {}
                for tool in order:
                    repo = os.path.join(self.scratch, 'incr-%s' % tool)
                    if os.path.lexists(repo):
                        shutil.rmtree(repo)
                    run_quiet(['cp', '-a', templates[tool], repo])
                    repos[tool] = repo
                    if os.path.lexists(app_index):
                        os.remove(app_index)
                    if index_state == 'live':
                        shutil.copyfile(live_index, app_index)
                    elif index_state == 'stale':
                        shutil.copyfile(stale_index, app_index)
                    self.timed(scen, tool,
                               ['-BQ', '-r', repo, '-f', app_fs],
                               STAMP_INCR, r)
                    # Keep this tool's result for the comparison.
                    kept = repo + '-' + index_state
                    if os.path.lexists(kept):
                        shutil.rmtree(kept)
                    os.rename(repo, kept)
                    repos[tool] = kept
                self.compare(scen, repos, STAMP_INCR, base_size)
            if os.stat(base_fs).st_mtime_ns != base_mtime or \
                    os.stat(app_fs).st_mtime_ns != app_mtime or \
                    os.path.getsize(app_fs) != app_size:
                self.fail('a source Data.fs was modified by a backup')
        # Leave the live index in place for anyone poking at the cache.
        if os.path.lexists(app_index):
            os.remove(app_index)
        shutil.copyfile(live_index, app_index)

        # Untimed: each tool verifies its own incremental repository.
        for tool in TOOLS:
            repo = os.path.join(self.scratch, 'incr-%s-live' % tool)
            if not os.path.isdir(repo):
                continue
            log = os.path.join(self.scratch, 'verify-%s.txt' % tool)
            _, _, rc = measure(self.cmd(tool, ['-V', '-r', repo]),
                               env=dict(os.environ, REPOZO_TEST_NOW=STAMP_INCR),
                               log_path=log)
            if rc != 0:
                self.fail('-V of %s\'s repository failed (%d): %s'
                          % (tool, rc, tail(log)))
        return self.report(incr_scenarios)

    def report(self, incr_scenarios):
        a = self.args
        scenarios = ['-B full', '-BF full'] + [s for s, _ in incr_scenarios]
        header = ['scenario', 'python s', 'ours s', 'ratio (python/ours)',
                  'python MB', 'ours MB', 'memory ratio']
        rows = []
        for scen in scenarios:
            py = self.results.get((scen, 'python'), [])
            us = self.results.get((scen, 'ours'), [])
            if not py or not us:
                rows.append([scen, 'n/a', 'n/a', '', '', '', ''])
                continue
            pw = statistics.median(w for w, _ in py)
            ow = statistics.median(w for w, _ in us)
            pm = mb(statistics.median(m for _, m in py))
            om = mb(statistics.median(m for _, m in us))
            rows.append([scen, '%.3f' % pw, '%.3f' % ow,
                         '%.1fx' % (pw / ow) if ow else 'inf',
                         '%.1f' % pm, '%.1f' % om,
                         '%.1fx' % (pm / om) if om else 'inf'])
        base_size, app_size = self.sizes
        info = [
            'objects: %d in %d transactions; base Data.fs %.1f MB, '
            'after the %d%% append %.1f MB (+%.2f MB)'
            % (a.objects, a.txns, base_size / 1e6, APPEND_PERCENT,
               app_size / 1e6, (app_size - base_size) / 1e6),
            self.gen_note,
            'median of %d run(s), tool order alternated; page cache warm'
            % a.runs,
            'machine limit on the base file: md5sum %.3f s, '
            'cat > /dev/null %.3f s'
            % (self.limits['md5sum'], self.limits['cat > /dev/null']),
        ]
        for scen in scenarios:
            if scen in self.index_identical:
                vals = self.index_identical[scen]
                info.append('%s: .index files byte-identical: %s'
                            % (scen, 'yes' if vals == {True} else
                               'no' if vals == {False} else 'sometimes'))
        info.append('correctness: ' + ('OK (data files cmp-identical, .dat '
                                       'ranges agree, -V passes)'
                                       if not self.failures else
                                       '%d MISMATCH(ES)' % len(self.failures)))

        widths = [max(len(h), *(len(r[i]) for r in rows))
                  for i, h in enumerate(header)]

        def fmt(cells):
            return ' | '.join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))
        text = [fmt(header), '-+-'.join('-' * w for w in widths)]
        text += [fmt(r) for r in rows]
        print()
        print('\n'.join(text))
        print()
        for line in info:
            print(line)

        md = ['# repozo quick-backup benchmark', '',
              '| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
        md += ['| ' + ' | '.join(r) + ' |' for r in rows]
        md += [''] + ['- ' + line for line in info]
        if self.failures:
            md += ['', '## MISMATCHES', ''] + ['- ' + f for f in self.failures]
        md_path = os.path.join(BENCH_DIR, 'bench_quick.md')
        with open(md_path, 'w') as f:
            f.write('\n'.join(md) + '\n')
        print('written to %s' % md_path)
        if self.failures:
            print()
            for f in self.failures:
                print('!!!!!!!! MISMATCH: %s' % f)
            return 1
        return 0


def main(argv):
    if argv and argv[0] == '_generate':
        generate(argv[1], int(argv[2]), int(argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--objects', type=int, default=1_000_000,
                   help='number of objects in the base database '
                        '(default 1000000)')
    p.add_argument('--txns', type=int, default=500,
                   help='transactions the objects are committed in '
                        '(default 500)')
    p.add_argument('--runs', type=int, default=3,
                   help='repetitions per scenario, median reported '
                        '(default 3)')
    p.add_argument('--regen', action='store_true',
                   help='regenerate the cached database')
    p.add_argument('--ours', default=DEFAULT_OURS,
                   help='our binary (default target/release/repozo)')
    p.add_argument('--python', default=DEFAULT_PYTHON,
                   help='python with ZODB 6.4 (default .venv/bin/python)')
    args = p.parse_args(argv)
    if args.objects < args.txns or args.runs < 1:
        p.error('need --objects >= --txns and --runs >= 1')
    return Bench(args).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
