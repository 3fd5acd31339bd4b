#!/usr/bin/env python3
"""Benchmark: ``-r s3://`` straight to object storage against a local
backup followed by ``rclone copy`` (issue 18).

Run through scripts/bench-s3.sh, which creates the venv, builds the
release binary, starts a Garage server on loopback (scripts/garage.sh; set
``GARAGE_BIN`` to use another garage binary, e.g. a release build) and
stops it afterwards:

    scripts/bench-s3.sh [--size pickles|small|large] [--runs N]
                        [--no-python] [--out FILE]

Needs the AWS_* variables of that server (scripts/garage.sh writes them)
and ``.venv/bin/rclone``.

Data: the database of scripts/bench.py (its generator and cache, imported
from it): ``base/Data.fs`` and ``app/Data.fs``, the same plus about 1% of
the objects appended by real ZODB (half new, half modified), with ZODB's
fresh ``Data.fs.index``.  ``--size pickles`` (the default) is bench.py's
Plone-like profile (160k objects, about 205 MB); ``small`` its 1M objects
of half-random payloads (382 MB); ``large`` its 2M objects (3.4 GB).

Each run, with the ways' order alternating between runs:

1. full backup of base, ``-B``:
   *direct*: ``repozo -B -r s3://BUCKET/bench-direct``;
   *local + rclone*: ``repozo -B -r DIR`` then
   ``rclone copy DIR REMOTE:BUCKET/bench-rclone``; its rclone step alone is
   the store's limit for the same bytes (rclone's defaults: 4 transfers,
   multipart uploads of 5 MiB parts, 4 at a time, above 200 MiB);
   *ZODB's repozo + rclone* (unless ``--no-python``): the same with ZODB
   6.4's repozo into ``bench-py``.
2. nightly ``-BQ`` of app onto each of those repositories (rclone copies
   the new increment, its ``.index`` and the rewritten ``.dat``).
3. recovery of app: *direct* ``repozo -R -r s3://... -o OUT``; the others
   ``rclone copy`` the prefix down into an empty directory, then ``-R``
   from it.

Stamps are fixed (``REPOZO_TEST_NOW``), so every way writes the same
names.  Every command is timed alone (``os.sync()`` first, untimed); a
way's time is the sum of its steps, its peak memory the largest step's
max RSS (GNU time ``%M``, as in bench.py).  The page cache is warm for the
sources; Garage's own memory is not counted.  Prefixes are purged
between runs (untimed).

Checks (failures print MISMATCH and exit 1): every command exits 0; the
direct and rclone prefixes hold the same data files (.fs, .deltafs,
.index, .dat), with the same sizes (but the .dat) and the same ``.dat``
lines (file basename, range, md5); every recovered file has app's bytes.

Targets (a verdict line each; times are reported, never asserted):
direct >= 1.5x faster than local + rclone for ``-B`` and ``-BQ``, and
within 1.2x of the rclone step alone.  Peak memory must not grow with the
database: when ``--size large`` and the default size have both run with
the same Garage, direct's peak minus the local run's (which holds the
index, so grows with the objects) is compared between the two sizes
(met: at most 8 MB more at large).  Each run's results are kept in
``target/bench/s3-results-SIZE-GARAGE.json``; ``--report-from FILE``
writes a report again from one without running anything.

The Markdown goes into ``--out`` (default docs/bench-s3.md), one section
per (size, Garage) between ``<!-- bench-s3:KEY -->`` markers; a run
replaces its own section and keeps the rest of the file (hand-written
notes included).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (generator, cache, measure, machine facts)

ROOT = B.ROOT
DEFAULT_OUT = os.path.join(ROOT, 'docs', 'bench-s3.md')
RCLONE = os.path.join(ROOT, '.venv', 'bin', 'rclone')
REMOTE = 'benchs3'            # the rclone remote, configured by environment
SIZE_CHOICES = ('pickles', 'small', 'large')
DEFAULT_SIZE = 'pickles'

# way -> (label, prefix, tool for the local step or None for direct)
WAYS = {
    'direct': ('ours `-r s3://` direct', 'bench-direct', None),
    'rclone': ('ours `-r DIR` + `rclone copy`', 'bench-rclone', 'ours'),
    'py': ("ZODB's repozo `-r DIR` + `rclone copy`", 'bench-py', 'python'),
}
# scenario -> (label, repozo flags, source key, stamp)
SCENARIOS = {
    'full': ('`-B` full', ['-B'], 'base', B.STAMP_FULL),
    'nightly': ('`-BQ` nightly (1% appended)', ['-BQ'], 'app', B.STAMP_INCR),
    'recover': ('`-R -o` (full + increment)', ['-R'], None, B.STAMP_READ),
}
DATA_SUFFIXES = ('.fs', '.deltafs', '.index', '.dat')
MIN_RATIO = 1.5      # direct vs local + rclone, -B and -BQ
MAX_VS_LIMIT = 1.2   # direct vs the rclone step alone


def garage_key():
    """('debug' | 'bin', description) of the Garage the wrapper started."""
    binary = os.environ.get('GARAGE_BIN')
    if binary:
        return 'bin', 'GARAGE_BIN=`%s`' % binary
    return 'debug', ('debug build (scripts/garage.sh default, `cargo install '
                     '--debug`)')


class S3Bench:
    def __init__(self, args):
        self.args = args
        self.ours = os.path.abspath(args.ours)
        self.python = os.path.abspath(args.python)
        self.bucket = os.environ.get('REPOZO_S3_BUCKET', 'repozo')
        self.ways = [w for w in WAYS if w != 'py' or not args.no_python]
        self.failures = []
        # (scenario, way) -> [{'wall', 'rss', 'cpu', 'steps': {...}}]
        self.results = {}
        self.gkey, self.glabel = garage_key()

    # -- plumbing ----------------------------------------------------------

    def fail(self, msg):
        print('!!!!!!!! MISMATCH: %s' % msg, flush=True)
        self.failures.append(msg)

    def env(self, stamp=None):
        env = dict(os.environ)
        ep = env['AWS_ENDPOINT_URL']
        prefix = 'RCLONE_CONFIG_%s_' % REMOTE.upper()
        env.update({
            prefix + 'TYPE': 's3', prefix + 'PROVIDER': 'Other',
            prefix + 'ENDPOINT': ep,
            prefix + 'REGION': env.get('AWS_REGION', 'us-east-1'),
            prefix + 'ACCESS_KEY_ID': env['AWS_ACCESS_KEY_ID'],
            prefix + 'SECRET_ACCESS_KEY': env['AWS_SECRET_ACCESS_KEY'],
            'RCLONE_CONFIG': self.rclone_conf,
        })
        if stamp:
            env['REPOZO_TEST_NOW'] = stamp
        return env

    def remote(self, way):
        return '%s:%s/%s' % (REMOTE, self.bucket, WAYS[way][1])

    def url(self, way):
        return 's3://%s/%s' % (self.bucket, WAYS[way][1])

    def rclone(self, *argv, check=True):
        p = subprocess.run([RCLONE] + list(argv), env=self.env(),
                           capture_output=True, text=True)
        if check and p.returncode != 0:
            sys.exit('rclone %s failed: %s' % (' '.join(argv),
                                               p.stderr.strip()))
        return p.stdout

    def repozo(self, tool, argv):
        if tool == 'python':
            return [self.python, B.PYREPOZO] + argv
        return [self.ours] + argv

    def step(self, name, cmd, stamp, run_no, scen, way):
        """Time one command; return (wall, rss KiB, cpu) or None."""
        log = os.path.join(self.scratch, 'log-%s-%s-%s-%d.txt'
                           % (scen, way, name, run_no))
        os.sync()
        wall, rss, rc, cpu = B.measure(cmd, env=self.env(stamp),
                                       log_path=log)
        print('  run %d %-8s %-7s %-7s %8.3f s %8.1f MB  cpu %6.3f s%s'
              % (run_no + 1, scen, way, name, wall, B.mb(rss), cpu,
                 '' if rc == 0 else '  EXIT %d' % rc), flush=True)
        if rc != 0:
            self.fail('%s %s %s exited %d: %s\n    repro: %s'
                      % (scen, way, name, rc, B.tail(log),
                         ' '.join(cmd)))
            return None
        return wall, rss, cpu

    def record(self, scen, way, steps):
        """steps: [(name, (wall, rss, cpu)) ...], all succeeded."""
        self.results.setdefault((scen, way), []).append({
            'wall': sum(s[1][0] for s in steps),
            'rss': max(s[1][1] for s in steps),
            'cpu': sum(s[1][2] for s in steps),
            'steps': {n: list(v) for n, v in steps},
        })

    # -- the scenarios -----------------------------------------------------

    def backup(self, scen, way, run_no):
        _, flags, src, stamp = SCENARIOS[scen]
        source = self.sources[src]
        tool = WAYS[way][2]
        if tool is None:
            got = self.step('repozo', self.repozo('ours', flags + [
                '-r', self.url(way), '-f', source]), stamp, run_no, scen, way)
            if got:
                self.record(scen, way, [('repozo', got)])
            return bool(got)
        local = self.local_dir(way)
        if scen == 'full':
            B.fresh_dir(local)
        got = self.step('repozo', self.repozo(tool, flags + [
            '-r', local, '-f', source]), stamp, run_no, scen, way)
        if not got:
            return False
        up = self.step('rclone', [RCLONE, 'copy', local, self.remote(way)],
                       None, run_no, scen, way)
        if not up:
            return False
        self.record(scen, way, [('repozo', got), ('rclone', up)])
        return True

    def recover(self, way, run_no):
        stamp = SCENARIOS['recover'][3]
        odir = os.path.join(self.scratch, 'out-%s' % way)
        B.fresh_dir(odir)
        out = os.path.join(odir, 'Data.fs')
        tool = WAYS[way][2]
        if tool is None:
            got = self.step('repozo', self.repozo('ours', [
                '-R', '-r', self.url(way), '-o', out]), stamp, run_no,
                'recover', way)
            steps = [('repozo', got)] if got else None
        else:
            down = os.path.join(self.scratch, 'down-%s' % way)
            B.fresh_dir(down)
            got_down = self.step('rclone', [RCLONE, 'copy', self.remote(way),
                                            down], None, run_no, 'recover',
                                 way)
            got = got_down and self.step('repozo', self.repozo(tool, [
                '-R', '-r', down, '-o', out]), stamp, run_no, 'recover', way)
            steps = [('rclone', got_down), ('repozo', got)] if got else None
            B.remove(down)
        if steps:
            self.record('recover', way, steps)
            digest, n = B.md5_of(out)
            if (digest, n) != self.app_md5:
                self.fail('recover %s: %d bytes with md5 %s, expected app '
                          '(%d bytes, md5 %s)' % (way, n, digest,
                                                  self.app_md5[1],
                                                  self.app_md5[0]))
        B.remove(odir)  # large outputs: do not keep them around

    def local_dir(self, way):
        return os.path.join(self.scratch, 'repo-%s' % way)

    def listing(self, way):
        """{name: size} of the data files under a way's prefix."""
        items = json.loads(self.rclone('lsjson', self.remote(way)))
        return {i['Name']: i['Size'] for i in items
                if i['Name'].endswith(DATA_SUFFIXES)}

    def check_prefixes(self, scen):
        ways = [w for w in self.ways if self.results.get((scen, w))]
        lists = {w: self.listing(w) for w in ways}
        ref = lists.get('direct')
        if ref is None:
            return
        def sizes(listing):   # a .dat names local paths: see below
            return {n: s for n, s in listing.items()
                    if not n.endswith('.dat')}
        for w in ways:
            if sizes(lists[w]) != sizes(ref) or \
                    sorted(lists[w]) != sorted(ref):
                self.fail('%s: %s holds %s, direct holds %s'
                          % (scen, self.remote(w), lists[w], ref))
        dats = sorted(n for n in ref if n.endswith('.dat'))
        if dats:
            # the first field is a path (the local directory's for local
            # repositories): compare its basename and the rest
            lines = {w: [[os.path.basename(x[0])] + x[1:] for x in (
                ln.split() for ln in self.rclone(
                    'cat', '%s/%s' % (self.remote(w), dats[-1])).splitlines()
                if ln.strip())] for w in ways}
            for w in ways:
                if lines[w] != lines['direct']:
                    self.fail('%s: %s/%s differs from direct\'s: %s vs %s'
                              % (scen, self.remote(w), dats[-1], lines[w],
                                 lines['direct']))

    def purge(self):
        for way in WAYS:
            self.rclone('purge', self.remote(way), check=False)
            B.remove(self.local_dir(way))

    # -- main ---------------------------------------------------------------

    def run(self):
        a = self.args
        for path, what in ((self.ours, 'our binary'),
                           (self.python, 'venv python'),
                           (RCLONE, 'rclone (from the venv)')):
            if not os.access(path, os.X_OK):
                sys.exit('%s not found: %s' % (what, path))
        if 'AWS_ENDPOINT_URL' not in os.environ:
            sys.exit('no AWS_ENDPOINT_URL: run through scripts/bench-s3.sh '
                     '(or source the env file of scripts/garage.sh start)')
        base = B.Bench(argparse.Namespace(
            size=a.size, objects=a.objects, txns=a.txns, regen=False,
            ours=self.ours, python=self.python, only=None))
        data_dir, saved = base.prepare_data()
        self.facts = {
            'date_and_machine': B.date_and_machine(),
            'gen_note': base.gen_note,
            'ours': '`%s` built %s (tree at %s)' % (
                os.path.relpath(self.ours, ROOT), self.built(), B.git_rev()),
        }
        self.sizes = saved['sizes']
        self.sources = {n: os.path.join(data_dir, n, 'Data.fs')
                        for n in ('base', 'app')}
        self.scratch = os.path.join(B.BENCH_DIR, 's3-scratch-%s' % a.size)
        B.fresh_dir(self.scratch)
        self.rclone_conf = os.path.join(self.scratch, 'rclone.conf')
        open(self.rclone_conf, 'w').close()
        self.rclone('lsd', '%s:%s' % (REMOTE, self.bucket))  # reachable?
        self.facts['rclone'] = self.rclone('version').splitlines()[0]
        self.app_md5 = B.md5_of(self.sources['app'])
        for f in self.sources.values():   # warm the page cache
            B.measure(['cat', f], stdout=subprocess.DEVNULL)

        for r in range(a.runs):
            order = self.ways if r % 2 == 0 else self.ways[::-1]
            print('run %d/%d (order: %s)' % (r + 1, a.runs, ', '.join(order)),
                  flush=True)
            self.purge()
            for scen in ('full', 'nightly'):
                for way in order:
                    if scen == 'nightly' and not self.ok(('full', way), r):
                        continue
                    self.backup(scen, way, r)
                self.check_prefixes(scen)
            for way in self.ways:         # not needed any more: disk space
                B.remove(self.local_dir(way))
            for way in order:
                if self.ok(('nightly', way), r):
                    self.recover(way, r)
        self.purge()
        self.save_results()
        return self.report()

    def ok(self, key, run_no):
        return len(self.results.get(key, [])) == run_no + 1

    # -- report ------------------------------------------------------------

    def med(self, scen, way, field='wall', step=None):
        res = self.results.get((scen, way))
        if not res:
            return None
        if step:
            idx = {'wall': 0, 'rss': 1, 'cpu': 2}[field]
            vals = [x['steps'][step][idx] for x in res if step in x['steps']]
            return statistics.median(vals) if vals else None
        return statistics.median(x[field] for x in res)

    def rows(self):
        header = ['scenario', 'way', 'time s', 'steps s', 'vs direct',
                  'peak MB', 'CPU s']
        rows = []
        for scen, (label, _, _, _) in SCENARIOS.items():
            direct = self.med(scen, 'direct')
            for way in self.ways:
                t = self.med(scen, way)
                if t is None:
                    rows.append([label, WAYS[way][0], 'failed', '', '', '',
                                 ''])
                    continue
                steps = ''
                if WAYS[way][2]:
                    names = ('rclone', 'repozo') if scen == 'recover' else \
                        ('repozo', 'rclone')
                    steps = ' + '.join(
                        '%s %.3f (%.0f MB)' % (
                            n, self.med(scen, way, step=n),
                            B.mb(self.med(scen, way, 'rss', n)))
                        for n in names)
                rows.append([label, WAYS[way][0], '%.3f' % t, steps,
                             '%.2fx' % (t / direct) if direct and
                             way != 'direct' else '',
                             '%.1f' % B.mb(self.med(scen, way, 'rss')),
                             '%.2f' % self.med(scen, way, 'cpu')])
            lim = self.med(scen, 'rclone', step='rclone')
            if lim is not None:
                rows.append([label, '`rclone copy` %s alone (store\'s limit)'
                             % ('down' if scen == 'recover' else 'up'),
                             '%.3f' % lim, '',
                             '%.2fx' % (lim / direct) if direct else '',
                             '%.1f' % B.mb(self.med(scen, 'rclone', 'rss',
                                                    'rclone')),
                             '%.2f' % self.med(scen, 'rclone', 'cpu',
                                               'rclone')])
        return header, rows

    def verdicts(self):
        lines = []
        for scen in ('full', 'nightly'):
            label = SCENARIOS[scen][0]
            d = self.med(scen, 'direct')
            lr = self.med(scen, 'rclone')
            lim = self.med(scen, 'rclone', step='rclone')
            if d is None or lr is None:
                lines.append('%s: no verdict (a way failed)' % label)
                continue
            ratio = lr / d
            lines.append('%s, direct >= %.1fx faster than local + rclone: %s '
                         '(%.2fx: %.3f s vs %.3f s)'
                         % (label, MIN_RATIO, 'met' if ratio >= MIN_RATIO
                            else 'NOT met', ratio, d, lr))
            vs = d / lim
            lines.append('%s, direct within %.1fx of the rclone step alone: '
                         '%s (%.2fx: %.3f s vs %.3f s)'
                         % (label, MAX_VS_LIMIT, 'met' if vs <= MAX_VS_LIMIT
                            else 'NOT met', vs, d, lim))
        d = self.med('recover', 'direct')
        lr = self.med('recover', 'rclone')
        if d and lr:
            lines.append('%s (no target): direct %.2fx faster than rclone '
                         'down + local (%.3f s vs %.3f s)'
                         % (SCENARIOS['recover'][0], lr / d, d, lr))
        lines += self.memory_verdict()
        return lines

    def results_path(self, size):
        return os.path.join(B.BENCH_DIR, 's3-results-%s-%s.json'
                            % (size, self.gkey))

    def save_results(self):
        """Everything the report needs, for --report-from and for the
        memory verdict of the other size's run."""
        a = self.args
        with open(self.results_path(a.size), 'w') as f:
            json.dump({'size': a.size, 'runs': a.runs,
                       'no_python': a.no_python, 'gkey': self.gkey,
                       'glabel': self.glabel,
                       'garage_bin': os.environ.get('GARAGE_BIN'),
                       'sizes': self.sizes, 'facts': self.facts,
                       'failures': self.failures,
                       'results': [[k[0], k[1], v]
                                   for k, v in self.results.items()]},
                      f, indent=1)

    def load_results(self, path):
        with open(path) as f:
            d = json.load(f)
        a = self.args
        a.size, a.runs, a.no_python = d['size'], d['runs'], d['no_python']
        self.gkey, self.glabel = d['gkey'], d['glabel']
        if d.get('garage_bin'):
            os.environ['GARAGE_BIN'] = d['garage_bin']
        self.ways = [w for w in WAYS if w != 'py' or not a.no_python]
        self.sizes, self.facts = d['sizes'], d['facts']
        self.failures = d['failures']
        self.results = {(sc, w): v for sc, w, v in d['results']}

    def extra_peaks(self):
        """scenario -> (direct peak, local repozo peak) in KiB."""
        return {scen: (self.med(scen, 'direct', 'rss'),
                       self.med(scen, 'rclone', 'rss', 'repozo'))
                for scen in SCENARIOS}

    def memory_verdict(self):
        """Direct's peak at --size large against the default size's.

        What the database's size may change is what a local run's peak
        changes by (the index held in memory); the memory direct adds to
        that (its streaming buffers) must not grow."""
        a = self.args
        if a.size not in (DEFAULT_SIZE, 'large'):
            return []
        other_size = DEFAULT_SIZE if a.size == 'large' else 'large'
        path = self.results_path(other_size)
        if not os.path.exists(path):
            return ['peak memory vs database size: no verdict (run both '
                    '`--size %s` and `--size large` with this Garage)'
                    % DEFAULT_SIZE]
        other = S3Bench(self.args_copy())
        other.load_results(path)
        small, large = (other, self) if other_size == DEFAULT_SIZE else \
            (self, other)
        ps, pl = small.extra_peaks(), large.extra_peaks()
        lines = []
        for scen, (label, _, _, _) in SCENARIOS.items():
            (ds, ls), (dl, ll) = ps[scen], pl[scen]
            if None in (ds, ls, dl, ll):
                lines.append('peak memory of direct %s: no verdict (a way '
                             'failed at one size)' % label)
                continue
            es, el = B.mb(ds - ls), B.mb(dl - ll)
            ok = el <= es + 8
            lines.append(
                'peak memory of direct %s does not grow with the database '
                'beyond the local run\'s (the index): %s (direct %.1f MB '
                'at %.0f MB, %.1f MB at %.0f MB; local %.1f -> %.1f MB; '
                'direct minus local %.1f -> %.1f MB)'
                % (label, 'met' if ok else 'NOT met', B.mb(ds),
                   small.sizes['base'] / 1e6, B.mb(dl),
                   large.sizes['base'] / 1e6, B.mb(ls), B.mb(ll), es, el))
        return lines

    def args_copy(self):
        return argparse.Namespace(**vars(self.args))

    def report(self):
        a = self.args
        header, rows = self.rows()
        verdicts = self.verdicts()
        widths = [max(len(h), *(len(r[i]) for r in rows))
                  for i, h in enumerate(header)]

        def fmt(cells):
            return ' | '.join(c.ljust(w) if i in (0, 1, 3) else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))
        print()
        print(fmt(header))
        print('-+-'.join('-' * w for w in widths))
        for r in rows:
            print(fmt(r))
        print()
        f = self.facts
        info = f['date_and_machine'] + [
            'ours: %s; %s; Garage 2.5.0 on loopback, single node, sqlite '
            'metadata: %s' % (f['ours'], f['rclone'], self.glabel),
            'data (%s, scripts/bench.py\'s generator): base Data.fs %.1f MB, '
            'app (1%% appended by ZODB) %.1f MB (+%.2f MB); %s'
            % (a.size, self.sizes['base'] / 1e6, self.sizes['app'] / 1e6,
               (self.sizes['app'] - self.sizes['base']) / 1e6, f['gen_note']),
            'median of %d run(s), ways\' order alternated; a way\'s time is '
            'the sum of its steps (each timed alone), its peak the largest '
            'step\'s (%s); "vs direct" = time / direct\'s time'
            % (a.runs, B.RSS_METHOD),
            'correctness: ' + ('OK (all exits 0; prefixes hold the same data '
                               'files and .dat; every recovery = app\'s '
                               'bytes)' if not self.failures else
                               '%d MISMATCH(ES)' % len(self.failures)),
        ]
        for line in info + [''] + verdicts:
            print(line)
        self.write_md(header, rows, info, verdicts)
        if self.failures:
            print()
            for f in self.failures:
                print('!!!!!!!! MISMATCH: %s' % f)
            return 1
        return 0

    def built(self):
        import datetime
        return datetime.datetime.fromtimestamp(
            os.stat(self.ours).st_mtime).astimezone().strftime(
                '%Y-%m-%d %H:%M')

    def write_md(self, header, rows, info, verdicts):
        a = self.args
        key = '%s-%s' % (a.size, self.gkey)
        cmd = 'scripts/bench-s3.sh --size %s --runs %d%s' % (
            a.size, a.runs, ' --no-python' if a.no_python else '')
        if self.gkey == 'bin':
            cmd = 'GARAGE_BIN=%s %s' % (os.environ['GARAGE_BIN'], cmd)
        md = ['<!-- bench-s3:%s -->' % key,
              '## %s database (%.0f MB), Garage %s'
              % (a.size, self.sizes['base'] / 1e6, self.glabel), '',
              'Written by `%s`.' % cmd, '',
              '| ' + ' | '.join(header) + ' |',
              '|---|---|---:|---|---:|---:|---:|']
        md += ['| ' + ' | '.join(r) + ' |' for r in rows]
        md += [''] + ['- ' + x for x in info]
        md += ['', 'Verdicts:', ''] + ['- ' + x.replace('>=', '≥')
                                       for x in verdicts]
        if self.failures:
            md += ['', 'MISMATCHES:', ''] + ['- ' + f.replace('\n', ' ')
                                             for f in self.failures]
        md.append('<!-- /bench-s3:%s -->' % key)
        section = '\n'.join(md)
        out = os.path.abspath(a.out)
        if os.path.exists(out):
            with open(out) as f:
                text = f.read()
        else:
            text = ('# Benchmark: `-r s3://` direct vs a local backup + '
                    '`rclone copy`\n\n'
                    'Written by `scripts/bench-s3.sh` (`scripts/bench_s3.py`; '
                    'see its docstring for the method); one section per '
                    'database size and Garage build, each replaced by its '
                    'next run.\n')
        pat = re.compile(r'<!-- bench-s3:%s -->.*?<!-- /bench-s3:%s -->'
                         % (re.escape(key), re.escape(key)), re.S)
        if pat.search(text):
            text = pat.sub(lambda m: section, text)
        else:
            text = text.rstrip('\n') + '\n\n' + section + '\n'
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, 'w') as f:
            f.write(text)
        print('written to %s (section %s)' % (out, key))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', choices=SIZE_CHOICES, default=DEFAULT_SIZE,
                   help='scripts/bench.py\'s database: pickles (Plone-like, '
                        '~205 MB, default), small (382 MB), large (3.4 GB)')
    p.add_argument('--runs', type=int, default=3,
                   help='repetitions, median reported (default 3)')
    p.add_argument('--no-python', action='store_true',
                   help="skip the ZODB's repozo + rclone reference")
    p.add_argument('--out', default=DEFAULT_OUT,
                   help='Markdown output (default docs/bench-s3.md)')
    p.add_argument('--objects', type=int,
                   help='override the number of objects (testing)')
    p.add_argument('--txns', type=int,
                   help='override the number of transactions (testing)')
    p.add_argument('--ours', default=B.DEFAULT_OURS,
                   help='our binary (default target/release/repozo)')
    p.add_argument('--python', default=B.DEFAULT_PYTHON,
                   help='python with ZODB 6.4 (default .venv/bin/python)')
    p.add_argument('--report-from', metavar='JSON',
                   help='no run: write the report of a saved run '
                        '(target/bench/s3-results-SIZE-GARAGE.json)')
    args = p.parse_args(argv)
    if args.report_from:
        bench = S3Bench(args)
        bench.load_results(args.report_from)
        return bench.report()
    if args.objects is None:
        args.objects = B.SIZES[args.size]['objects']
    if args.txns is None:
        args.txns = min(B.SIZES[args.size]['txns'], args.objects)
    if args.runs < 1 or args.objects < max(100, args.txns):
        p.error('need --objects >= max(100, --txns) and --runs >= 1')
    return S3Bench(args).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
