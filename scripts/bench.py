#!/usr/bin/env python3
"""Benchmark: this repozo against ZODB 6.4's repozo, every mode, same states.

Run with the project's venv interpreter (ZODB 6.4), from anywhere:

    .venv/bin/python scripts/bench.py [--size small|large|pickles]
                                      [--runs N]
                                      [--only SCENARIO,...] [--out FILE]

or through scripts/bench.sh, which also creates the venv and builds the
release binary.

Data (generated once by a child process with real ZODB, cached under
``target/bench/bench-<size>-N<objects>-T<txns>-g<version>/``):

* ``base/Data.fs``: ``--objects`` persistent objects (PersistentMapping /
  PersistentList) committed in ``--txns`` transactions.  Payload sizes are
  mixed (small: mostly 20..150 bytes, some up to 600, 3% up to 4000; large:
  up to 8000 bytes, about 1.5 kB on average), and half the payloads are
  compressible text while the other half are random bytes.  small: 1M
  objects, a few hundred MB; large: 2M objects, multi-GB.
* ``--size pickles`` instead writes records like a Plone / Zope site's
  (class ``Pickles``): 160k objects, PersistentMappings of content metadata
  under the same keys (title, description, creator, dates, subjects...),
  OOBTrees of short text (split into OOBucket records) and PersistentLists
  of workflow-history dicts, text from pseudo-words with Zipf-like
  frequencies.  Base Data.fs about 205 MB that ``gzip -9`` compresses
  about 3.4x: the data on which the ``-z`` output size is chosen
  (docs/bench-gzip.md); the half-random payloads of small/large hide
  size differences between gzip levels.
* ``app/Data.fs``: a copy with 1% of the objects appended (half new, half
  modified), ``app2/Data.fs``: ``app`` plus another 1%.  Each has the live,
  fresh ``Data.fs.index`` ZODB wrote on close; ``app-noindex/`` holds a hard
  link to ``app/Data.fs`` without any index, ``app2-noindex/`` the same
  for app2.

Repository templates are made by each tool for its own runs, as a site
running that tool every night would have them, with fixed stamps
(``REPOZO_TEST_NOW``): ``full`` (-B of base), ``incr`` (+ -BQ of app),
``incr2`` (+ -BQ of app2), ``fullz`` (-Bz of base) and ``z2`` (+ -BQz of
app, + -BQz of app2).  ZODB's repozo's templates are made once and cached;
ours are made again at every run (a few seconds), so that they are what the
binary being measured writes (its ``.repozo-sums`` cache included).  The
plain templates of the two tools are byte-identical but for that cache;
gzip files differ in their compressed bytes only.  Scenarios marked
"chain by ZODB's repozo" run both tools on ZODB's repozo's template, where
we have no sums to use.  Before each timed run the template is cloned into
a scratch repository (``cp -a`` semantics, but data and index files are hard
links and only the ``.dat`` is copied: no tool rewrites an existing data
file, and the template's files are stat-checked after every run so a tool
that did would be caught), then ``sync``; none of that is timed.  Read-only
modes (-R, -V) run on the template itself, also stat-checked.

Scenarios (``--only`` takes these keys, comma-separated):

  full        -B into an empty repository (source: base)
  bq-live     -BQ from ``full``, source app with its fresh Data.fs.index
  bq-live-py  the same from ZODB's repozo's ``full`` (no sums: md5 decides)
  bq-none     -BQ from ``full``, source app without any Data.fs.index
  bq-second   -BQ from ``incr`` (last .dat line is an increment), source app2
  bq-second-none  the same without any Data.fs.index beside app2
  b-incr      -B (no -Q) from ``full``, source app: whole chain checksummed
  recover     -R -o from ``incr2`` (3 files)
  recover-w   -R -o -w from ``incr2``
  verify      -V of ``incr2``
  bfz         -BFz into an empty repository (source: base)
  bqz         -BQz from ``fullz``, source app with its fresh index
  recover-gz  -R -o from ``z2`` (3 gzip files)

plus, always, the machine's limit on base/Data.fs: ``md5sum``,
``cat > /dev/null`` and ``cp`` + ``sync`` of the copy.

Each figure is the median of ``--runs`` runs with the tools' order
alternating.  Peak RSS is the tool's own ``ru_maxrss``, taken by GNU time
(``/usr/bin/time -f %M``) that forks it: the ``wait4`` figure of a child this
script spawns directly is never below this script's own peak RSS.  CPU time
(user + sys, in the note column) is given too, since wall times on a shared
machine are noisy.  The page cache is warm (sources and templates are read
before timing).  ``--readme`` also replaces the table in README.md between
``<!-- bench-table:begin -->`` and ``<!-- bench-table:end -->``.

Every run is checked: both tools exit 0; a backup writes the same file names
in both repositories, one data file whose (decompressed) bytes have the md5
of the source's range, the same last ``.dat`` range and checksum in both, and
starting where expected; a recovery writes exactly the source's bytes and
the chain's last ``.index`` beside them; sources and templates are left
untouched.  Otherwise ``MISMATCH`` is printed and the exit status is 1.

Afterwards our binary runs each scenario once more with ``-v`` and the
arrival time of each note on stderr is recorded (``<scratch>/stages-*.txt``):
the longest gaps between notes are a per-stage hint of where the time goes.

The table (with machine facts) is printed and written as Markdown to
``--out`` (default docs/bench.md).
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYREPOZO = os.path.join(ROOT, 'tests', 'py', 'pyrepozo.py')
DEFAULT_OURS = os.path.join(ROOT, 'target', 'release', 'repozo')
DEFAULT_PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')
BENCH_DIR = os.path.join(ROOT, 'target', 'bench')
DEFAULT_OUT = os.path.join(ROOT, 'docs', 'bench.md')

GEN_VERSION = 1
TEMPLATE_VERSION = 1
APPEND_PERCENT = 1
STAMP_FULL = '2024-01-01-00-00-00'
STAMP_INCR = '2024-01-01-01-00-00'
STAMP_INCR2 = '2024-01-01-02-00-00'
STAMP_READ = '2024-01-02-00-00-00'   # "now" for -R / -V: after every backup
TOOLS = ('python', 'ours')
TOOL_NAMES = {'python': "ZODB's repozo", 'ours': 'our binary'}
README_MARKERS = ('<!-- bench-table:begin -->', '<!-- bench-table:end -->')
CHUNK = 1 << 20

# Payload size buckets: (probability, min bytes, max bytes).
PROFILES = {
    'small': [(0.70, 20, 150), (0.27, 150, 600), (0.03, 600, 4000)],
    'large': [(0.40, 20, 300), (0.40, 300, 2000), (0.20, 2000, 8000)],
}
SIZES = {
    'small': {'objects': 1_000_000, 'txns': 500},
    'large': {'objects': 2_000_000, 'txns': 1000},
    'pickles': {'objects': 160_000, 'txns': 500},
}


# ---------------------------------------------------------------------------
# Database generation (in a child process: `bench.py _generate ...`)

def _batch_sizes(objects, txns):
    base, extra = divmod(objects, txns)
    return [base + (1 if i < extra else 0) for i in range(txns)]


class Payloads:
    """Mixed-size payloads, half compressible text, half random bytes."""

    def __init__(self, rng, profile):
        self.rng = rng
        self.buckets = []
        acc = 0.0
        for p, lo, hi in PROFILES[profile]:
            acc += p
            self.buckets.append((acc, lo, hi))
        # A corpus of pseudo-words; slices of it gzip to roughly a third.
        letters = 'etaoinshrdlucmfwypvbgkjqxz'
        weights = [26 - i for i in range(26)]
        words = [''.join(rng.choices(letters, weights, k=rng.randint(2, 10)))
                 for _ in range(3000)]
        text = []
        size = 0
        while size < 2_000_000:
            w = rng.choice(words)
            text.append(w)
            size += len(w) + 1
        self.corpus = ' '.join(text)

    def size(self):
        r = self.rng.random()
        for acc, lo, hi in self.buckets:
            if r < acc:
                return self.rng.randint(lo, hi)
        return self.rng.randint(*self.buckets[-1][1:])

    def make(self):
        n = self.size()
        if self.rng.random() < 0.5:
            off = self.rng.randrange(len(self.corpus) - n)
            return self.corpus[off:off + n]       # str: compressible
        return self.rng.randbytes(n)              # bytes: incompressible


def _new_object(payloads, serial):
    from persistent.list import PersistentList
    from persistent.mapping import PersistentMapping
    payload = payloads.make()
    if serial % 3 == 2:
        return PersistentList([serial, payload])
    return PersistentMapping({'i': serial, 'p': payload})


class Pickles:
    """Records like a Plone / Zope site's: the ``pickles`` profile.

    PersistentMappings of content metadata under the same keys every time
    (title, description, creator, dates, subjects, ...), OOBTrees of short
    text keys to short text (more than 30 keys split into OOBucket records,
    as catalogs and annotations do), and PersistentLists of workflow-history
    dicts.  Text is drawn from a corpus of pseudo-words with Zipf-like
    frequencies, so a Data.fs gzips about 3.5x (gzip -9), as such sites'
    do, instead of the half-random payloads of the other profiles.
    """

    KEYS = ('id', 'title', 'description', 'creator', 'creators',
            'contributors', 'created', 'modified', 'effective', 'expires',
            'subject', 'language', 'rights', 'portal_type', 'review_state',
            'exclude_from_nav', 'allow_discussion', 'location', 'text')
    TYPES = ('Document', 'News Item', 'Event', 'File', 'Image', 'Folder',
             'Link', 'Collection')
    STATES = ('private', 'pending', 'published', 'visible', 'internal')
    ACTIONS = ('submit', 'publish', 'retract', 'reject', 'hide', 'show')

    def __init__(self, rng):
        import itertools
        self.rng = rng
        cons = 'bcdfghjklmnprstvwz'
        vows = ('a', 'e', 'i', 'o', 'u', 'ai', 'ou', 'ea', 'io')
        syll = [c + v for c in cons for v in vows] + \
            [c + v + e for c, v, e in itertools.product(cons[:8], vows[:5],
                                                        'nrst')]
        words = set()
        while len(words) < 6000:
            words.add(''.join(rng.choice(syll)
                              for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        # Zipf-like frequencies: the k-th word about 1/(k+2) as often.
        self.cum = list(itertools.accumulate(1.0 / (k + 2)
                                             for k in range(len(self.words))))
        self.users = ['%s%s' % (rng.choice(self.words), rng.randint(1, 99))
                      for _ in range(60)]
        self.subjects = [self.phrase(1, 2) for _ in range(200)]
        self.t0 = 1_500_000_000.0

    def word(self):
        return self.rng.choices(self.words, cum_weights=self.cum)[0]

    def phrase(self, lo, hi):
        return ' '.join(self.rng.choices(self.words, cum_weights=self.cum,
                                         k=self.rng.randint(lo, hi)))

    def sentence(self, lo, hi):
        s = self.phrase(lo, hi)
        return s[:1].upper() + s[1:] + '.'

    def stamp(self):
        import datetime
        self.t0 += self.rng.random() * 60
        return datetime.datetime.fromtimestamp(self.t0,
                                               datetime.timezone.utc)

    def content(self, serial):
        rng = self.rng
        title = self.sentence(2, 7)[:-1]
        d = {
            'id': '-'.join(title.lower().split()[:5]) + '-%d' % serial,
            'title': title,
            'description': ' '.join(self.sentence(4, 14)
                                    for _ in range(rng.randint(0, 3))),
            'creator': rng.choice(self.users),
            'creators': tuple(rng.sample(self.users, rng.randint(1, 3))),
            'contributors': (),
            'created': self.stamp(),
            'modified': self.stamp(),
            'effective': self.stamp() if rng.random() < 0.7 else None,
            'expires': None,
            'subject': tuple(rng.sample(self.subjects, rng.randint(0, 5))),
            'language': rng.choice(('en', 'en', 'de', 'fr', '')),
            'rights': '',
            'portal_type': rng.choice(self.TYPES),
            'review_state': rng.choice(self.STATES),
            'exclude_from_nav': rng.random() < 0.1,
            'allow_discussion': False,
            'location': self.phrase(1, 3) if rng.random() < 0.2 else '',
            'position': rng.randint(0, 500),
            'rating': round(rng.random() * 5, 2),
        }
        if rng.random() < 0.25:
            d['text'] = '<p>%s</p>' % '</p><p>'.join(
                ' '.join(self.sentence(5, 20) for _ in range(rng.randint(1, 6)))
                for _ in range(rng.randint(1, 4)))
        return d

    def history_entry(self):
        return {'action': self.rng.choice(self.ACTIONS),
                'actor': self.rng.choice(self.users),
                'comments': self.sentence(3, 10) if self.rng.random() < 0.3
                else '',
                'review_state': self.rng.choice(self.STATES),
                'time': self.stamp()}

    def tree_item(self):
        return (self.phrase(1, 3), self.phrase(1, 6))

    def make(self, serial):
        from BTrees.OOBTree import OOBTree
        from persistent.list import PersistentList
        from persistent.mapping import PersistentMapping
        kind = serial % 20
        if kind < 11:
            return PersistentMapping(self.content(serial))
        if kind < 16:
            return OOBTree(dict(self.tree_item() for _ in
                                range(self.rng.choice((4, 10, 20, 40, 80)))))
        return PersistentList(self.history_entry()
                              for _ in range(self.rng.randint(1, 6)))

    def modify(self, obj):
        """Change an object the way an edit does (app/app2 appends)."""
        from persistent.list import PersistentList
        from persistent.mapping import PersistentMapping
        if isinstance(obj, PersistentMapping):
            obj['modified'] = self.stamp()
            obj['description'] = self.sentence(4, 14)
        elif isinstance(obj, PersistentList):
            obj.append(self.history_entry())
        else:
            k, v = self.tree_item()
            obj[k] = v


def generate(data_dir, objects, txns, profile):
    """Write base/, app/, app2/ (Data.fs + live Data.fs.index)."""
    import transaction
    import ZODB
    import ZODB.FileStorage  # noqa: F401
    from BTrees.IOBTree import IOBTree
    from persistent.list import PersistentList
    from ZODB.FileStorage import FileStorage

    # No per-commit fsync, in the generator only: FileStorage calls the
    # module-level name `fsync` (bound at import), not os.fsync.
    fsmod = sys.modules['ZODB.FileStorage.FileStorage']
    fsmod.fsync = None

    rng = random.Random(20240101)
    if profile == 'pickles':
        pickles = Pickles(rng)
        make, modify = pickles.make, pickles.modify
    else:
        payloads = Payloads(rng, profile)

        def make(serial):
            return _new_object(payloads, serial)

        def modify(obj):
            if isinstance(obj, PersistentList):
                obj[1] = payloads.make()
            else:
                obj['p'] = payloads.make()
    base_fs = os.path.join(data_dir, 'base', 'Data.fs')
    os.makedirs(os.path.dirname(base_fs))

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
            batch.append(make(serial))
            serial += 1
        root['batches'][b] = batch
        txn = transaction.get()
        txn.note('batch %d' % b)
        txn.setUser('bench')
        transaction.commit()
        conn.cacheMinimize()
        if (b + 1) % 100 == 0:
            print('  generated %d/%d transactions (%d objects, %.0f s)'
                  % (b + 1, txns, serial, time.monotonic() - t0), flush=True)
    conn.close()
    db.close()  # writes base/Data.fs.index

    cum = []
    acc = 0
    for n in sizes:
        acc += n
        cum.append(acc)
    next_batch = txns
    prev_fs = base_fs
    for name in ('app', 'app2'):
        # 1% more: half new objects, half modified existing ones.
        fs = os.path.join(data_dir, name, 'Data.fs')
        os.makedirs(os.path.dirname(fs))
        shutil.copyfile(prev_fs, fs)
        shutil.copyfile(prev_fs + '.index', fs + '.index')
        n_app = max(1, objects * APPEND_PERCENT // 100)
        n_new = n_app // 2
        n_mod = n_app - n_new
        app_txns = max(1, txns * APPEND_PERCENT // 100)
        modified = rng.sample(range(objects), n_mod)
        db = ZODB.DB(FileStorage(fs), cache_size=5000)
        conn = db.open()
        root = conn.root()
        for t in range(app_txns):
            lo_new, hi_new = n_new * t // app_txns, n_new * (t + 1) // app_txns
            lo_mod, hi_mod = n_mod * t // app_txns, n_mod * (t + 1) // app_txns
            batch = PersistentList()
            for _ in range(hi_new - lo_new):
                batch.append(make(serial))
                serial += 1
            root['batches'][next_batch] = batch
            next_batch += 1
            for g in modified[lo_mod:hi_mod]:
                b = _bisect(cum, g)
                pos = g - (cum[b - 1] if b else 0)
                modify(root['batches'][b][pos])
            txn = transaction.get()
            txn.note('%s %d' % (name, t))
            txn.setUser('bench')
            transaction.commit()
            conn.cacheMinimize()
        conn.close()
        db.close()  # writes <name>/Data.fs.index (the live one)
        prev_fs = fs


def _bisect(cum, g):
    import bisect
    return bisect.bisect_right(cum, g)


# ---------------------------------------------------------------------------
# Helpers

def mb(kib):
    return kib / 1024.0


GNU_TIME = '/usr/bin/time'
# Peak RSS.  The ru_maxrss that wait4 reports for a child this process
# spawns is never below this process's own peak RSS: Python spawns with
# vfork, and exec records the shared (parent's) memory's high-water mark in
# the child.  So the command runs under a small process that forks it and
# reports its ru_maxrss: GNU time (`-f %M`) if installed, else a tiny
# Python helper (its own ~9 MB is then the floor).
RSS_HELPER = r"""
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], 'w') as f:
    f.write('%d\n' % ru.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


def _gnu_time_works():
    try:
        return subprocess.run([GNU_TIME, '-f', '%M', '-o', os.devnull,
                               'true'], capture_output=True).returncode == 0
    except OSError:
        return False


USE_GNU_TIME = _gnu_time_works()
RSS_METHOD = ('GNU time `%M` (the child\'s own `wait4` ru_maxrss)'
              if USE_GNU_TIME else
              'ru_maxrss via a small Python fork helper (floor ~9 MB)')


def measure(cmd, env=None, log_path=None, stdout=None):
    """Run cmd; return (wall s, peak RSS KiB, exit code, user+sys CPU s)."""
    out = open(log_path, 'wb') if log_path else subprocess.DEVNULL
    fd, rss_file = tempfile.mkstemp(prefix='bench-rss-')
    os.close(fd)
    if USE_GNU_TIME:
        wrapped = [GNU_TIME, '-f', '%M', '-o', rss_file, '--'] + cmd
    else:
        wrapped = [sys.executable, '-S', '-c', RSS_HELPER, rss_file] + cmd
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else out,
                             stderr=out, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        with open(rss_file) as f:
            lines = f.read().split()
        rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    finally:
        if log_path:
            out.close()
        os.remove(rss_file)
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc  # already reaped; keep Popen from waiting again
    # The wrapper's times include its reaped child's (CPU times add up).
    return wall, rss, rc, ru.ru_utime + ru.ru_stime


def timeline(cmd, env, path):
    """Run cmd, stamping each stderr line on arrival; write them to path."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env)
    lines = []
    for raw in p.stderr:
        lines.append((time.perf_counter() - t0,
                      raw.decode('utf-8', 'replace').rstrip('\n')))
    p.wait()
    end = time.perf_counter() - t0
    with open(path, 'w') as f:
        prev = 0.0
        for t, text in lines:
            f.write('%8.3f  (+%.3f)  %s\n' % (t, t - prev, text))
            prev = t
        f.write('%8.3f  (+%.3f)  <exit %d>\n' % (end, end - prev, p.returncode))
    return lines, end, p.returncode


def fresh_dir(path):
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def ignored(name):
    """Files a tool may leave in a repository without changing its state."""
    return name.startswith('.repozo') and name.endswith('.lock')


SUMS_NAME = '.repozo-sums'  # our cache of fast checksums (copied, not linked)


def clone(src, dst):
    """cp -a src dst, with every file but the .dat as a hard link."""
    remove(dst)
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        if ignored(name):
            continue
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name.endswith('.dat') or name == SUMS_NAME:
            shutil.copy2(s, d)
        else:
            os.link(s, d)


def snapshot(path):
    """Names, sizes, mtimes and inodes of a directory's files."""
    snap = {}
    for name in sorted(os.listdir(path)):
        if ignored(name):
            continue
        st = os.stat(os.path.join(path, name))
        snap[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return snap


def files_with_stamp(repo, stamp):
    return sorted(f for f in os.listdir(repo) if f.startswith(stamp))


def dat_lines(repo):
    dats = sorted(f for f in os.listdir(repo) if f.endswith('.dat'))
    if not dats:
        return []
    with open(os.path.join(repo, dats[-1])) as f:
        return [ln.split() for ln in f if ln.strip()]


def same_bytes(a, b):
    return subprocess.run(['cmp', '-s', a, b]).returncode == 0


def md5_of(path, start=0, length=None):
    """md5 of a file's bytes [start, start+length), decompressed if gzip."""
    h = hashlib.md5()
    n = 0
    opener = gzip.open if path.endswith('z') else open
    with opener(path, 'rb') as f:
        if start:
            f.seek(start)
        while length is None or n < length:
            want = CHUNK if length is None else min(CHUNK, length - n)
            data = f.read(want)
            if not data:
                break
            h.update(data)
            n += len(data)
    return h.hexdigest(), n


def tail(path, n=5):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ''


def machine_facts():
    model = 'unknown'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ''
    try:
        with open('/proc/meminfo') as f:
            kb = int(f.readline().split()[1])
            mem = '%.1f GB RAM' % (kb / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {'nproc': os.cpu_count(), 'cpu': model, 'mem': mem,
            'kernel': platform.release()}


def date_and_machine(noise='shared with other jobs, so expect noise'):
    """The first two lines of a report's facts: when, and on what."""
    facts = machine_facts()
    return [
        'date: %s' % datetime.datetime.now().astimezone().strftime(
            '%Y-%m-%d %H:%M %Z'),
        'machine: %s cores (`nproc`), %s, %s, Linux %s; %s'
        % (facts['nproc'], facts['cpu'], facts['mem'], facts['kernel'],
           noise),
    ]


def our_gzip_level():
    try:
        with open(os.path.join(ROOT, 'src', 'io', 'gzip.rs')) as f:
            m = re.search(r'GZIP_LEVEL\s*:\s*[iu]32\s*=\s*(\d+)', f.read())
        return (', ours with libdeflate at level %s in 1 MiB members (source tree)'
                % m.group(1) if m else '')
    except OSError:
        return ''


def git_rev():
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                             cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'src'],
                               cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return rev + (' + uncommitted src changes' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


# ---------------------------------------------------------------------------
# Scenarios

class Scenario:
    def __init__(self, key, label, kind, flags, template=None, source=None,
                 stamp=STAMP_READ, start=None, gz=False, min_ratio=None,
                 target='', size_limit=None, expect=None, py_chain=False):
        self.key = key
        self.py_chain = py_chain  # both tools start from ZODB's template
        self.label = label
        self.kind = kind          # 'backup', 'recover', 'verify'
        self.flags = flags
        self.template = template  # None: an empty repository
        self.source = source      # key into Bench.sources (backups)
        self.stamp = stamp
        self.start = start        # source key whose size the range starts at
        self.gz = gz
        self.min_ratio = min_ratio
        self.target = target
        self.size_limit = size_limit  # max ours/python output size
        self.expect = expect      # recovery: source key of the expected bytes


SCENARIOS = [
    Scenario('full', '`-B` full', 'backup', ['-B'], None, 'base',
             STAMP_FULL, None, min_ratio=2.0,
             target='>=2x, <=1.3x md5sum'),
    Scenario('bq-live', '`-BQ` 1% append, fresh index', 'backup', ['-BQ'],
             'full', 'app', STAMP_INCR, 'base', min_ratio=5.0,
             target='>=5x'),
    Scenario('bq-live-py', '`-BQ` 1% append, fresh index, chain by ZODB\'s '
             'repozo', 'backup', ['-BQ'], 'full', 'app', STAMP_INCR, 'base',
             min_ratio=1.0, target='(no sums: md5)', py_chain=True),
    Scenario('bq-none', '`-BQ` 1% append, no index', 'backup', ['-BQ'],
             'full', 'app-noindex', STAMP_INCR, 'base', min_ratio=30.0,
             target='>=30x'),
    Scenario('bq-second', '`-BQ` 2nd increment, fresh index', 'backup',
             ['-BQ'], 'incr', 'app2', STAMP_INCR2, 'app', min_ratio=5.0,
             target='>=5x'),
    Scenario('bq-second-none', '`-BQ` 2nd increment, no index', 'backup',
             ['-BQ'], 'incr', 'app2-noindex', STAMP_INCR2, 'app',
             min_ratio=30.0, target='>=30x'),
    Scenario('b-incr', '`-B` 1% append (no `-Q`)', 'backup', ['-B'],
             'full', 'app', STAMP_INCR, 'base', min_ratio=3.0,
             target='>=3x'),
    Scenario('recover', '`-R -o` (3 files)', 'recover', ['-R'], 'incr2',
             min_ratio=3.0, target='>=3x', expect='app2'),
    Scenario('recover-w', '`-R -o -w` (3 files)', 'recover', ['-R', '-w'],
             'incr2', min_ratio=2.0, target='>=2x', expect='app2'),
    Scenario('verify', '`-V` (3 files)', 'verify', ['-V'], 'incr2',
             min_ratio=1.8, target='>=1.8x'),
    Scenario('bfz', '`-BFz` full', 'backup', ['-BFz'], None, 'base',
             STAMP_FULL, None, gz=True, min_ratio=10.0,
             target='>=10x, size <=1.02x', size_limit=1.02),
    Scenario('bqz', '`-BQz` 1% append, fresh index', 'backup', ['-BQz'],
             'fullz', 'app', STAMP_INCR, 'base', gz=True, min_ratio=5.0,
             target='>=5x, size <=1.05x', size_limit=1.05),
    Scenario('recover-gz', '`-R -o` gzip chain (3 files)', 'recover',
             ['-R'], 'z2', min_ratio=2.0, target='>=2x', expect='app2'),
]
LIMITS = [
    ('md5sum', '`md5sum`', lambda src, dst: ['md5sum', src]),
    ('cat', '`cat > /dev/null`', lambda src, dst: ['cat', src]),
    ('cp', '`cp` + `sync` of the copy',
     lambda src, dst: ['sh', '-c', 'cp "$1" "$2" && sync "$2"', 'sh',
                       src, dst]),
]
# template -> (parent template or None, [(flags, source, stamp), ...])
TEMPLATES = {
    'full': (None, [(['-B'], 'base', STAMP_FULL)]),
    'incr': ('full', [(['-BQ'], 'app', STAMP_INCR)]),
    'incr2': ('incr', [(['-BQ'], 'app2', STAMP_INCR2)]),
    'fullz': (None, [(['-Bz'], 'base', STAMP_FULL)]),
    'z2': ('fullz', [(['-BQz'], 'app', STAMP_INCR),
                     (['-BQz'], 'app2', STAMP_INCR2)]),
}


# ---------------------------------------------------------------------------
# The benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.ours = os.path.abspath(args.ours)
        self.python = os.path.abspath(args.python)
        self.failures = []
        self.warnings = []
        self.results = {}     # (key, tool) -> [(wall, rss)]
        self.out_sizes = {}   # key -> [(python bytes, ours bytes)]
        self.index_identical = {}
        self.md5_cache = {}
        self.stages = {}
        self.scenarios = [s for s in SCENARIOS
                          if args.only is None or s.key in args.only]

    # -- plumbing ----------------------------------------------------------

    def cmd(self, tool, argv):
        if tool == 'python':
            return [self.python, PYREPOZO] + argv
        return [self.ours] + argv

    def fail(self, msg):
        print('!!!!!!!! MISMATCH: %s' % msg, flush=True)
        self.failures.append(msg)

    def warn(self, msg):
        print('warning: %s' % msg, flush=True)
        self.warnings.append(msg)

    def source_md5(self, key, start, end):
        if key.endswith('-noindex'):
            key = key[:-len('-noindex')]
        ck = (key, start, end)
        if ck not in self.md5_cache:
            digest, n = md5_of(self.sources[key], start, end - start)
            self.md5_cache[ck] = digest if n == end - start else None
        return self.md5_cache[ck]

    # -- data and templates ------------------------------------------------

    def prepare_data(self):
        a = self.args
        params = {'version': GEN_VERSION, 'objects': a.objects,
                  'txns': a.txns, 'profile': a.size,
                  'append_percent': APPEND_PERCENT}
        data_dir = os.path.join(BENCH_DIR, 'bench-%s-N%d-T%d-g%d'
                                % (a.size, a.objects, a.txns, GEN_VERSION))
        marker = os.path.join(data_dir, 'PARAMS.json')
        names = ('base', 'app', 'app2')
        if os.path.exists(marker) and not a.regen:
            with open(marker) as f:
                saved = json.load(f)
            if all(saved.get(k) == v for k, v in params.items()) and all(
                    os.path.exists(os.path.join(data_dir, n, 'Data.fs')) and
                    os.path.getsize(os.path.join(data_dir, n, 'Data.fs'))
                    == saved['sizes'][n] for n in names):
                print('reusing %s (generated earlier in %.1f s)'
                      % (data_dir, saved['generation_seconds']))
                self.gen_note = ('database reused from cache; generating it '
                                 'took %.0f s' % saved['generation_seconds'])
                return data_dir, saved
            print('cache %s does not match; regenerating' % data_dir)
        remove(data_dir)
        os.makedirs(data_dir)
        print('generating %d objects (%s profile) in %d transactions into '
              '%s ...' % (a.objects, a.size, a.txns, data_dir), flush=True)
        t0 = time.perf_counter()
        subprocess.run([self.python, os.path.abspath(__file__), '_generate',
                        data_dir, str(a.objects), str(a.txns), a.size],
                       check=True)
        gen_s = time.perf_counter() - t0
        saved = dict(params)
        saved['generation_seconds'] = round(gen_s, 2)
        saved['sizes'] = {n: os.path.getsize(os.path.join(data_dir, n,
                                                          'Data.fs'))
                          for n in names}
        with open(marker, 'w') as f:
            json.dump(saved, f, indent=1)
        print('generation took %.1f s' % gen_s)
        self.gen_note = 'database generated in %.0f s' % gen_s
        return data_dir, saved

    def setup_sources(self, data_dir):
        self.sources = {n: os.path.join(data_dir, n, 'Data.fs')
                        for n in ('base', 'app', 'app2')}
        for name in ('app', 'app2'):
            noidx = os.path.join(data_dir, name + '-noindex')
            fs = os.path.join(noidx, 'Data.fs')
            if not (os.path.exists(fs) and
                    os.path.samefile(fs, self.sources[name])):
                fresh_dir(noidx)
                os.link(self.sources[name], fs)
            self.sources[name + '-noindex'] = fs
        self.source_dirs = {k: os.path.dirname(v)
                            for k, v in self.sources.items()}
        self.source_snaps = {k: snapshot(d)
                             for k, d in self.source_dirs.items()}
        for k in ('app-noindex', 'app2-noindex'):
            if set(self.source_snaps[k]) != {'Data.fs'}:
                sys.exit('%s holds more than Data.fs; remove the rest'
                         % self.source_dirs[k])
        for k in ('base', 'app', 'app2'):
            if 'Data.fs.index' not in self.source_snaps[k]:
                sys.exit('%s has no Data.fs.index; use --regen'
                         % self.sources[k])

    def check_sources(self, context):
        for k, d in self.source_dirs.items():
            now = snapshot(d)
            if now != self.source_snaps[k]:
                if k.endswith('-noindex') and set(now) - {'Data.fs'} and \
                        now.get('Data.fs') == self.source_snaps[k]['Data.fs']:
                    self.fail('%s: wrote %s beside the source'
                              % (context, sorted(set(now) - {'Data.fs'})))
                    for n in set(now) - {'Data.fs'}:
                        remove(os.path.join(d, n))
                else:
                    self.fail('%s: source %s changed: %s -> %s'
                              % (context, d, self.source_snaps[k], now))
                    self.source_snaps[k] = now

    def build_templates(self, data_dir):
        needed = set()
        for s in self.scenarios:
            t = s.template
            while t:
                needed.add(t)
                t = TEMPLATES[t][0]
        self.templates = {}
        self.template_snaps = {}
        for tool in TOOLS:
            if tool == 'python':
                tdir = os.path.join(data_dir, 'templates-v%d' % TEMPLATE_VERSION)
            else:
                tdir = os.path.join(BENCH_DIR, 'templates-ours-%s' % self.args.size)
                remove(tdir)
            os.makedirs(tdir, exist_ok=True)
            for name in TEMPLATES:          # parents come first in the dict
                if name not in needed:
                    continue
                path = os.path.join(tdir, name)
                done = path + '.done'
                if not os.path.exists(done):
                    print('making repository template %s with %s'
                          % (name, TOOL_NAMES[tool]), flush=True)
                    parent, steps = TEMPLATES[name]
                    if parent:
                        clone(self.templates[(tool, parent)], path)
                    else:
                        fresh_dir(path)
                    for flags, src, stamp in steps:
                        env = dict(os.environ, REPOZO_TEST_NOW=stamp)
                        subprocess.run(self.cmd(tool, flags + [
                            '-r', path, '-f', self.sources[src]]), env=env,
                            check=True)
                    env = dict(os.environ, REPOZO_TEST_NOW=STAMP_READ)
                    subprocess.run(self.cmd('python', ['-V', '-r', path]),
                                   env=env, check=True)
                    with open(done, 'w') as f:
                        f.write('ok\n')
                self.templates[(tool, name)] = path
                self.template_snaps[(tool, name)] = snapshot(path)

    def template(self, s, tool):
        """The key of the template scenario `s` starts from for `tool`."""
        owner = 'python' if s.py_chain or tool == 'python' else 'ours'
        return (owner, s.template)

    def check_template(self, key, context):
        now = snapshot(self.templates[key])
        if now != self.template_snaps[key]:
            self.fail('%s: template %s changed: %s -> %s'
                      % (context, key, self.template_snaps[key], now))
            self.template_snaps[key] = now

    # -- runs --------------------------------------------------------------

    def prepare(self, s, tool):
        """Set up the starting state; return (argv, repo, output)."""
        out = None
        if s.kind == 'backup':
            repo = os.path.join(self.scratch, 'repo-%s-%s' % (s.key, tool))
            if s.template:
                clone(self.templates[self.template(s, tool)], repo)
            else:
                fresh_dir(repo)
            argv = s.flags + ['-r', repo, '-f', self.sources[s.source]]
        else:
            repo = self.templates[self.template(s, tool)]
            argv = s.flags + ['-r', repo]
            if s.kind == 'recover':
                odir = os.path.join(self.scratch, 'out-%s-%s' % (s.key, tool))
                fresh_dir(odir)
                out = os.path.join(odir, 'Data.fs')
                argv += ['-o', out]
        return argv, repo, out

    def timed(self, s, tool, run_no):
        argv, repo, out = self.prepare(s, tool)
        env = dict(os.environ, REPOZO_TEST_NOW=s.stamp)
        log = os.path.join(self.scratch, 'log-%s-%s-%d.txt'
                           % (s.key, tool, run_no))
        os.sync()  # flush the untimed preparation's writes first
        wall, rss, rc, cpu = measure(self.cmd(tool, argv), env=env,
                                     log_path=log)
        print('  run %d %-14s %-6s %8.3f s %8.1f MB  cpu %6.3f s%s'
              % (run_no + 1, s.key, tool, wall, mb(rss), cpu,
                 '' if rc == 0 else '  EXIT %d' % rc), flush=True)
        if rc != 0:
            self.fail('%s: %s exited %d: %s\n    repro: REPOZO_TEST_NOW=%s %s'
                      % (s.key, tool, rc, tail(log), s.stamp,
                         ' '.join(self.cmd(tool, argv))))
            return None
        self.results.setdefault((s.key, tool), []).append((wall, rss, cpu))
        return repo, out

    def check_backup(self, s, repos):
        files = {t: files_with_stamp(repos[t], s.stamp) for t in TOOLS}
        if files['python'] != files['ours']:
            self.fail('%s: different files: python %s, ours %s'
                      % (s.key, files['python'], files['ours']))
            return
        start = self.sizes[s.start] if s.start else 0
        if s.start:
            want = '.deltafsz' if s.gz else '.deltafs'
        else:
            want = '.fsz' if s.gz else '.fs'
        data = [f for f in files['python'] if f.endswith(want)]
        if len(data) != 1:
            self.fail('%s: expected one new %s file, got %s'
                      % (s.key, want, files['python']))
            return
        lines = {}
        for t in TOOLS:
            dl = dat_lines(repos[t])
            if not dl or len(dl[-1]) != 4 or \
                    os.path.basename(dl[-1][0]) != data[0]:
                self.fail('%s: %s: bad .dat last line %r'
                          % (s.key, t, dl[-1] if dl else None))
                return
            lines[t] = dl[-1]
        if lines['python'][1:] != lines['ours'][1:]:
            self.fail('%s: .dat ranges differ: python %s, ours %s'
                      % (s.key, lines['python'][1:], lines['ours'][1:]))
            return
        lo, hi, digest = int(lines['ours'][1]), int(lines['ours'][2]), \
            lines['ours'][3]
        if lo != start:
            self.fail('%s: .dat range starts at %d, expected %d'
                      % (s.key, lo, start))
        if self.source_md5(s.source, lo, hi) != digest:
            self.fail('%s: .dat md5 %s is not the md5 of the source\'s '
                      '[%d, %d)' % (s.key, digest, lo, hi))
        for t in TOOLS:
            path = os.path.join(repos[t], data[0])
            got, n = md5_of(path)
            if (got, n) != (digest, hi - lo):
                self.fail('%s: %s\'s %s holds %d bytes with md5 %s, '
                          'expected %d bytes with md5 %s'
                          % (s.key, t, path, n, got, hi - lo, digest))
        if s.gz:
            self.out_sizes.setdefault(s.key, []).append(tuple(
                os.path.getsize(os.path.join(repos[t], data[0]))
                for t in TOOLS))
        idx = [f for f in files['python'] if f.endswith('.index')]
        if idx:
            same = same_bytes(*(os.path.join(repos[t], idx[0])
                                for t in TOOLS))
            self.index_identical.setdefault(s.key, set()).add(same)

    def check_recover(self, s, outs):
        expect = self.sources[s.expect]
        size = self.sizes[s.expect]
        want = self.source_md5(s.expect, 0, size)
        tpl = self.templates[('python', s.template)]
        last_index = sorted(f for f in os.listdir(tpl)
                            if f.endswith('.index'))[-1]
        for t in TOOLS:
            out = outs[t]
            got, n = md5_of(out)
            if (got, n) != (want, size):
                self.fail('%s: %s recovered %d bytes with md5 %s, expected '
                          '%s (%d bytes, md5 %s)'
                          % (s.key, t, n, got, expect, size, want))
            if not os.path.exists(out + '.index') or \
                    not same_bytes(out + '.index',
                                   os.path.join(tpl, last_index)):
                self.fail('%s: %s: %s.index is not the chain\'s %s'
                          % (s.key, t, out, last_index))
            extra = sorted(set(os.listdir(os.path.dirname(out))) -
                           {'Data.fs', 'Data.fs.index'})
            if extra:
                self.fail('%s: %s left %s beside the output'
                          % (s.key, t, extra))

    def run_limits(self, run_no):
        src = self.sources['base']
        dst = os.path.join(self.scratch, 'copy-Data.fs')
        for key, _, mk in LIMITS:
            remove(dst)
            os.sync()
            wall, rss, rc, cpu = measure(mk(src, dst),
                                         stdout=subprocess.DEVNULL)
            if rc != 0:
                self.fail('%s exited %d' % (key, rc))
                continue
            print('  run %d %-14s %-6s %8.3f s %8.1f MB  cpu %6.3f s'
                  % (run_no + 1, key, '', wall, mb(rss), cpu), flush=True)
            self.results.setdefault((key, 'limit'), []).append(
                (wall, rss, cpu))
        remove(dst)

    def stage_hints(self):
        """Run ours once per scenario with -v, timing each note."""
        print('per-stage hints: our binary once per scenario with -v',
              flush=True)
        for s in self.scenarios:
            argv, repo, out = self.prepare(s, 'ours-v')
            env = dict(os.environ, REPOZO_TEST_NOW=s.stamp)
            path = os.path.join(self.scratch, 'stages-%s.txt' % s.key)
            os.sync()
            lines, end, rc = timeline(self.cmd('ours', argv + ['-v']), env,
                                      path)
            if rc != 0:
                self.warn('%s: ours -v exited %d (see %s)' % (s.key, rc, path))
                continue
            # Gaps: the time from each note (or the start) to the next note
            # (or the exit), labelled by the note that opens the gap.
            marks = [(0.0, '<start>')] + lines + [(end, '<exit>')]
            gaps = []
            for (t0, a), (t1, b) in zip(marks, marks[1:]):
                gaps.append((t1 - t0, a, b))
            gaps.sort(reverse=True)
            self.stages[s.key] = (end, gaps[:2], path)
            if s.kind == 'backup':
                remove(repo)
            elif out:
                remove(os.path.dirname(out))
        self.check_sources('per-stage runs')

    def run(self):
        a = self.args
        for path, what in ((self.ours, 'our binary'),
                           (self.python, 'venv python')):
            if not os.access(path, os.X_OK):
                sys.exit('%s not found: %s' % (what, path))
        data_dir, saved = self.prepare_data()
        self.sizes = dict(saved['sizes'])
        self.setup_sources(data_dir)
        self.sizes['app-noindex'] = self.sizes['app']
        self.sizes['app2-noindex'] = self.sizes['app2']
        self.build_templates(data_dir)
        self.scratch = os.path.join(BENCH_DIR, 'scratch-%s' % a.size)
        fresh_dir(self.scratch)

        # Warm the page cache.
        warm = [self.sources[k] for k in ('base', 'app', 'app2')]
        for t in self.templates.values():
            warm += [os.path.join(t, f) for f in sorted(os.listdir(t))]
        for f in warm:
            measure(['cat', f], stdout=subprocess.DEVNULL)

        for r in range(a.runs):
            order = TOOLS if r % 2 == 0 else TOOLS[::-1]
            print('run %d/%d (order: %s)' % (r + 1, a.runs, ', '.join(order)),
                  flush=True)
            self.run_limits(r)
            for s in self.scenarios:
                got = {}
                for tool in order:
                    res = self.timed(s, tool, r)
                    if res:
                        got[tool] = res
                    if s.template:
                        self.check_template(self.template(s, tool),
                                            '%s (%s)' % (s.key, tool))
                    self.check_sources('%s (%s)' % (s.key, tool))
                if len(got) == 2:
                    if s.kind == 'backup':
                        self.check_backup(s, {t: got[t][0] for t in TOOLS})
                    elif s.kind == 'recover':
                        self.check_recover(s, {t: got[t][1] for t in TOOLS})
                # Keep the last run's results for inspection only.
                if r != a.runs - 1:
                    for tool, (repo, out) in got.items():
                        if s.kind == 'backup':
                            remove(repo)
                        elif out:
                            remove(os.path.dirname(out))
        if not a.no_stages:
            self.stage_hints()
        return self.report(data_dir, saved)

    # -- report ------------------------------------------------------------

    def row(self, s):
        py = self.results.get((s.key, 'python'), [])
        us = self.results.get((s.key, 'ours'), [])
        if not py or not us:
            return [s.label, 'n/a', 'n/a', '', s.target, 'NO (failed)',
                    '', '', ''], ['failed']
        pw = statistics.median(r[0] for r in py)
        ow = statistics.median(r[0] for r in us)
        pm = mb(statistics.median(r[1] for r in py))
        om = mb(statistics.median(r[1] for r in us))
        pc = statistics.median(r[2] for r in py)
        oc = statistics.median(r[2] for r in us)
        ratio = pw / ow if ow else float('inf')
        missed = []
        notes = []
        if s.min_ratio and ratio < s.min_ratio:
            missed.append('time')
        def limit(key):
            res = self.results.get((key, 'limit'))
            return statistics.median(r[0] for r in res) if res else None
        md5s, cps = limit('md5sum'), limit('cp')
        if s.key == 'full' and md5s:
            notes.append('%.2fx md5sum' % (ow / md5s))
            if ow > 1.3 * md5s:
                missed.append('vs md5sum')
            if cps:
                # a full backup must both md5 the source and write it
                # durably: the machine's limit is the slower of the two
                notes.append('%.2fx max(md5sum, cp+sync)'
                             % (ow / max(md5s, cps)))
        if s.kind == 'recover' and cps:
            # we fsync the recovered file; ZODB's repozo does not
            notes.append('%.2fx cp+sync' % (ow / cps))
        if om > pm:
            missed.append('memory')
        if s.key in self.out_sizes:
            p_sz, o_sz = self.out_sizes[s.key][-1]
            sr = o_sz / p_sz
            notes.append('size %.3fx (%.1f / %.1f MB)'
                         % (sr, o_sz / 1e6, p_sz / 1e6))
            if s.size_limit and sr > s.size_limit:
                missed.append('size')
        notes.append('CPU %.2f / %.2f s (%.1fx)'
                     % (pc, oc, pc / oc if oc else float('inf')))
        met = 'yes' if not missed else 'NO (%s)' % ', '.join(missed)
        return [s.label, '%.3f' % pw, '%.3f' % ow, '%.1fx' % ratio,
                s.target, met, '%.1f' % pm, '%.1f' % om,
                '; '.join(notes)], missed

    def report(self, data_dir, saved):
        a = self.args
        header = ['scenario', 'python s', 'ours s', 'ratio', 'target',
                  'met?', 'python MB', 'ours MB', 'note']
        rows = []
        missed_all = []
        for s in self.scenarios:
            row, missed = self.row(s)
            rows.append(row)
            if missed:
                missed_all.append('%s: %s' % (s.key, ', '.join(missed)))
        for key, label, _ in LIMITS:
            res = self.results.get((key, 'limit'))
            if not res:
                continue
            rows.append([label, '', '%.3f' % statistics.median(
                r[0] for r in res), '', 'limit', '', '',
                '%.1f' % mb(statistics.median(r[1] for r in res)),
                'base Data.fs; CPU %.2f s'
                % statistics.median(r[2] for r in res)])

        sz = self.sizes
        info = date_and_machine() + [
            'ours: `%s` built %s (tree now at %s); reference: '
            'ZODB %s repozo on Python %s'
            % (os.path.relpath(self.ours, ROOT),
               datetime.datetime.fromtimestamp(
                os.stat(self.ours).st_mtime).astimezone().strftime(
                    '%Y-%m-%d %H:%M'), git_rev(), self.zodb_version(),
               self.python_version()),
            'data (%s): %d objects in %d transactions, %s; base Data.fs %.1f MB, after a 1%% '
            'append %.1f MB (+%.2f MB), after another 1%% %.1f MB (+%.2f MB)'
            % (a.size, a.objects, a.txns,
               'Plone-like records (mappings, OOBTrees, lists of short '
               'text)' if a.size == 'pickles' else
               'payloads of mixed sizes, half compressible',
               sz['base'] / 1e6, sz['app'] / 1e6,
               (sz['app'] - sz['base']) / 1e6, sz['app2'] / 1e6,
               (sz['app2'] - sz['app']) / 1e6),
            self.gen_note,
            'median of %d run(s), tools\' order alternated, page cache warm; '
            'ratio = python s / ours s (wall); MB = peak RSS, measured with '
            '%s; note: CPU = user+sys seconds, python / ours, less '
            'sensitive to other load than wall time' % (a.runs, RSS_METHOD),
            'starting states made by each tool (ours with its .repozo-sums '
            'cache), except rows marked "chain by ZODB\'s repozo"; 3-file chains '
            'are full + 2 increments; "met?" also requires ours MB <= '
            'python MB (and, for `-B` full, ours <= 1.3x `md5sum`)',
            'ZODB\'s repozo writes gzip at zlib level 9%s; ZODB\'s '
            'repozo does not fsync a recovered file' % our_gzip_level(),
        ]
        for s in self.scenarios:
            if s.key in self.index_identical:
                vals = self.index_identical[s.key]
                if vals != {True}:
                    info.append('%s: the two tools\' .index files differ'
                                % s.key)
        info.append('correctness: ' + (
            'OK (same files, data = source bytes, .dat ranges and md5 '
            'agree, recovered files = source bytes, sources and templates '
            'untouched)' if not self.failures else
            '%d MISMATCH(ES)' % len(self.failures)))
        info.append('targets missed: ' + ('; '.join(missed_all)
                                          if missed_all else 'none'))

        widths = [max(len(h), *(len(r[i]) for r in rows))
                  for i, h in enumerate(header)]

        def fmt(cells):
            return ' | '.join(c.ljust(w) if i in (0, 4, 5, 8) else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))
        text = [fmt(header), '-+-'.join('-' * w for w in widths)]
        text += [fmt(r) for r in rows]
        print()
        print('\n'.join(text))
        print()
        for line in info:
            print(line)

        stage_md = []
        if self.stages:
            print()
            print('where our time goes (one -v run each; longest gaps between '
                  'notes, labelled "after note -> until note"):')
            for s in self.scenarios:
                if s.key not in self.stages:
                    continue
                end, gaps, path = self.stages[s.key]
                parts = ['%.3f s: %s -> %s' % (g, self.short(x),
                                                self.short(y))
                         for g, x, y in gaps]
                print('  %-14s %.3f s total; %s' % (s.key, end,
                                                    ' | '.join(parts)))
                stage_md.append('- `%s` (%.3f s): %s' % (
                    s.key, end, '; '.join('%.3f s from “%s” to “%s”'
                                          % (g, self.short(x), self.short(y))
                                          for g, x, y in gaps)))
            print('  (full timelines: %s/stages-*.txt)'
                  % os.path.relpath(self.scratch, ROOT))

        md = ['# Benchmark: this repozo vs ZODB %s repozo'
              % self.zodb_version(), '',
              'Written by `scripts/bench.sh %s` (`scripts/bench.py`; see '
              'its docstring for the method).' % self.command_line(), '',
              '| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---', '---:', '---:', '---:', '---', '---',
                              '---:', '---:', '---']) + '|']
        md += ['| ' + ' | '.join(c.replace('>=', '≥').replace('<=', '≤')
                                 for c in r) + ' |' for r in rows]
        md += [''] + ['- ' + line.replace('>=', '≥').replace('<=', '≤')
                      for line in info]
        if stage_md:
            md += ['', '## Where our time goes', '',
                   'One run of our binary per scenario with `-v`; the two '
                   'longest gaps between its notes on stderr:', ''] + stage_md
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
        if a.readme:
            table_end = 4 + 2 + len(rows)
            self.update_readme(md[4:table_end], out)
        if self.failures:
            print()
            for f in self.failures:
                print('!!!!!!!! MISMATCH: %s' % f)
            return 1
        return 0

    def update_readme(self, table, out):
        """Put the table between the README's bench-table markers."""
        path = os.path.join(ROOT, 'README.md')
        with open(path) as f:
            text = f.read()
        begin, end = README_MARKERS
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            self.warn('README.md has no %s ... %s block; not updated'
                      % README_MARKERS)
            return
        sz = self.sizes
        block = [begin, '',
                 'Latest run (`scripts/bench.sh %s`, %s, %d cores; base '
                 'Data.fs %.0f MB; full results and method in [%s](%s)):'
                 % (self.command_line(), datetime.date.today().isoformat(),
                    os.cpu_count(), sz['base'] / 1e6,
                    os.path.relpath(out, ROOT), os.path.relpath(out, ROOT)),
                 ''] + table + ['']
        text = text[:i] + '\n'.join(block) + text[j:]
        with open(path, 'w') as f:
            f.write(text)
        print('updated the table in %s' % path)

    def command_line(self):
        a = self.args
        parts = ['--size', a.size, '--runs', str(a.runs)]
        if a.objects != SIZES[a.size]['objects']:
            parts += ['--objects', str(a.objects)]
        if a.txns != min(SIZES[a.size]['txns'], a.objects):
            parts += ['--txns', str(a.txns)]
        if a.only:
            parts += ['--only', ','.join(a.only)]
        return ' '.join(parts)

    def short(self, note):
        note = note.replace(self.scratch + '/', '')
        for t in self.templates.values():
            note = note.replace(t + '/', '')
        note = re.sub(r'[0-9a-f]{32}', 'MD5', note)
        return note if len(note) <= 70 else note[:67] + '...'

    def zodb_version(self):
        if not hasattr(self, '_zodb'):
            self._zodb = subprocess.run(
                [self.python, '-c', 'from importlib.metadata import version;'
                 'print(version("ZODB"))'], capture_output=True,
                text=True).stdout.strip() or '?'
        return self._zodb

    def python_version(self):
        return subprocess.run([self.python, '-c', 'import platform;'
                               'print(platform.python_version())'],
                              capture_output=True, text=True).stdout.strip()


def main(argv):
    if argv and argv[0] == '_generate':
        generate(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', choices=sorted(SIZES), default='small',
                   help='small: 1M objects, a few hundred MB (default); '
                        'large: 2M bigger objects, multi-GB; pickles: 160k '
                        'Plone-like records, ~200 MB that gzip ~3.4x')
    p.add_argument('--runs', type=int, default=3,
                   help='repetitions per scenario, median reported '
                        '(default 3)')
    p.add_argument('--only', type=lambda v: [x for x in v.split(',') if x],
                   help='comma-separated scenario keys: '
                        + ','.join(s.key for s in SCENARIOS))
    p.add_argument('--out', default=DEFAULT_OUT,
                   help='Markdown output (default docs/bench.md)')
    p.add_argument('--readme', action='store_true',
                   help='also put the table into README.md between the '
                        'lines %s and %s' % README_MARKERS)
    p.add_argument('--objects', type=int,
                   help='override the number of objects (testing)')
    p.add_argument('--txns', type=int,
                   help='override the number of transactions (testing)')
    p.add_argument('--regen', action='store_true',
                   help='regenerate the cached database and templates')
    p.add_argument('--no-stages', action='store_true',
                   help='skip the per-stage -v runs of our binary')
    p.add_argument('--ours', default=DEFAULT_OURS,
                   help='our binary (default target/release/repozo)')
    p.add_argument('--python', default=DEFAULT_PYTHON,
                   help='python with ZODB 6.4 (default .venv/bin/python)')
    args = p.parse_args(argv)
    if args.objects is None:
        args.objects = SIZES[args.size]['objects']
    if args.txns is None:
        args.txns = min(SIZES[args.size]['txns'], args.objects)
    if args.only is not None:
        unknown = set(args.only) - {s.key for s in SCENARIOS}
        if unknown:
            p.error('unknown scenario(s): %s' % ', '.join(sorted(unknown)))
    if args.objects < args.txns or args.runs < 1 or args.objects < 100:
        p.error('need --objects >= max(100, --txns) and --runs >= 1')
    return Bench(args).run()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
