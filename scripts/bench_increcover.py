#!/usr/bin/env python3
"""Incremental recovery against full recovery, side by side.

A warm standby: FILE was recovered yesterday; since then 1% new data was
backed up. Times `repozo -R -o FILE` onto that FILE (ours: appends only the
new increment), ours with `-F` (full recovery), and ZODB's repozo (always
full), each the median of --runs, and checks that all three give the same
bytes. Uses the databases `scripts/bench.py` generates (`--size large` is
the multi-GB one; the default `small` is a few hundred MB).

Usage: .venv/bin/python scripts/bench_increcover.py [--size small|large] [--runs 3]
"""

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import bench  # noqa: E402  (the generator and the cache live there)

FULL = '2024-01-01-00-00-00'
INCR = '2024-01-01-01-00-00'
LATE = '2024-01-02-00-00-00'


def run(cmd, now, check=True):
    env = dict(os.environ, REPOZO_TEST_NOW=now)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        sys.exit('FAILED: %s\n%s' % (' '.join(cmd), p.stderr.decode()))
    return dt, p.stderr.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', choices=sorted(bench.SIZES), default='small')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--ours', default=os.path.join(ROOT, 'target', 'release', 'repozo'))
    a = ap.parse_args()
    python = sys.executable
    pyrepozo = [python, os.path.join(ROOT, 'tests', 'py', 'pyrepozo.py')]
    ours = [a.ours]

    # the cached databases of scripts/bench.py: base/ and app/ (base + 1%)
    args = argparse.Namespace(size=a.size, regen=False,
                              **bench.SIZES[a.size])
    b = bench.Bench.__new__(bench.Bench)
    b.args = args
    b.python = python
    data_dir, saved = b.prepare_data()
    base = os.path.join(data_dir, 'base', 'Data.fs')
    app = os.path.join(data_dir, 'app', 'Data.fs')

    work = os.path.join(bench.BENCH_DIR, 'increcover-%s' % a.size)
    shutil.rmtree(work, ignore_errors=True)
    repo = os.path.join(work, 'repo')
    os.makedirs(repo)
    run(ours + ['-B', '-r', repo, '-f', base], FULL)
    run(ours + ['-BQ', '-r', repo, '-f', app], INCR)
    standby = os.path.join(work, 'standby.fs')
    run(ours + ['-R', '-r', repo, '-D', FULL, '-o', standby], LATE)

    results = {'ours incremental': [], 'ours full (-F)': [], 'python': []}
    for r in range(a.runs):
        order = list(results) if r % 2 == 0 else list(results)[::-1]
        for name in order:
            out = os.path.join(work, 'out-%d.fs' % len(name))
            for p in (out, out + '.index', out + '.part'):
                if os.path.exists(p):
                    os.remove(p)
            if name == 'ours incremental':
                shutil.copyfile(standby, out)
                subprocess.run(['sync'])
                dt, err = run(ours + ['-R', '-v', '-r', repo, '-o', out], LATE)
                if 'appending 1 more' not in err:
                    sys.exit('MISMATCH: not incremental:\n' + err)
            elif name == 'ours full (-F)':
                dt, _ = run(ours + ['-R', '-F', '-r', repo, '-o', out], LATE)
            else:
                dt, _ = run(pyrepozo + ['-R', '-r', repo, '-o', out], LATE)
            if not filecmp.cmp(out, app, shallow=False):
                sys.exit('MISMATCH: %s did not recover the source' % name)
            results[name].append(dt)
            print('run %d %-18s %.3f s' % (r + 1, name, dt), flush=True)

    size = os.path.getsize(app)
    new = size - os.path.getsize(base)
    lines = ['# Incremental recovery benchmark', '',
             'Recovered file %.1f MB; new data since the standby %.2f MB; '
             'median of %d runs.' % (size / 1e6, new / 1e6, a.runs), '',
             '| recovery | seconds | vs ours incremental |', '|---|---:|---:|']
    inc = statistics.median(results['ours incremental'])
    for name, ts in results.items():
        m = statistics.median(ts)
        lines.append('| %s | %.3f | %.1fx |' % (name, m, m / inc))
    text = '\n'.join(lines) + '\n'
    print(text)
    os.makedirs(os.path.join(ROOT, 'docs'), exist_ok=True)
    with open(os.path.join(ROOT, 'docs', 'bench_increcover.md'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
