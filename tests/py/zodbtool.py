#!/usr/bin/env python3
"""Test helper for the repozo port: build, damage and inspect ZODB FileStorages.

Run with the project's venv interpreter (ZODB 6.4), e.g.

    .venv/bin/python tests/py/zodbtool.py create /tmp/x/Data.fs --seed 1 --txns 50

Subcommands (see ``--help`` of each):

  create PATH --seed N --txns T [--objs K]
  append PATH --seed N --txns T [--objs K]
  pack PATH [--seed N]
  partial PATH --mode c|trunc [--seed N]
  size PATH
  check-index DATAFS INDEXFILE
  open PATH [--require-index]
  dump-index INDEXFILE

Everything that writes a storage is deterministic given ``--seed`` *and the
input file*: object choices, payloads, transaction metadata and even the
transaction ids (the storage's clock is replaced by a fake clock starting at
2021-01-01 UTC, or just after the last transaction of an existing file), so
the same command sequence produces byte-identical files.

Errors print one line to stderr and exit with status 1.
"""

import argparse
import logging
import os
import random
import shutil
import struct
import sys
import tempfile
import time as _real_time

import transaction
import ZODB
import ZODB.BaseStorage
import ZODB.FileStorage  # noqa: F401 (loads the submodule below)
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from persistent.timestamp import TimeStamp
from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex
from ZODB.POSException import POSKeyError

# The package ZODB.FileStorage re-exports the FileStorage *class* under the
# name of its submodule, so get the module object itself from sys.modules.
FSmod = sys.modules['ZODB.FileStorage.FileStorage']

TRANS_HDR = '>8sQcHHH'
TRANS_HDR_LEN = struct.calcsize(TRANS_HDR)  # 23
STATUS_OFFSET = 16

# 2021-01-01T00:00:00Z: start of the fake storage clock.
FAKE_EPOCH = 1609459200.0


class ToolError(Exception):
    pass


# ---------------------------------------------------------------------------
# Determinism helpers

class FakeTime:
    """Stand-in for the ``time`` module inside ZODB.BaseStorage.

    BaseStorage derives new transaction ids from ``time.time()``; replacing it
    makes tids a function of the seed.  ``TimeStamp.laterThan`` in tpc_begin
    keeps tids increasing even if this clock is behind the file's last tid.
    """

    def __init__(self, seed):
        self._rng = random.Random('clock-%d' % seed)
        self.now = FAKE_EPOCH

    def time(self):
        self.now += self._rng.uniform(1.0, 120.0)
        return self.now

    def gmtime(self, t=None):
        return _real_time.gmtime(self.now if t is None else t)

    def catch_up(self, storage):
        """Make the clock run after the storage's last transaction."""
        last = storage.lastTransaction()
        if last and last != b'\0' * 8:
            self.now = max(self.now, TimeStamp(last).timeTime())


def install_fake_clock(seed):
    clock = FakeTime(seed)
    ZODB.BaseStorage.time = clock
    return clock


def quiet_logging():
    """Keep ZODB's log output (e.g. pack info) off stderr unless asked."""
    if os.environ.get('ZODBTOOL_VERBOSE'):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    else:
        logging.getLogger('ZODB').addHandler(logging.NullHandler())
        logging.getLogger('ZODB').propagate = False


def no_fsync():
    # Test data: skip the per-commit fsync to keep runtimes small.
    FSmod.fsync = None


# ---------------------------------------------------------------------------
# Content generation

WORDS = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do '
         'eiusmod tempor incididunt ut labore et dolore magna aliqua').split()


def payload(rng, tag):
    if rng.random() < 0.05:
        size = rng.randint(2000, 100 * 1024)
    else:
        size = rng.randint(10, 2000)
    if rng.random() < 0.5:
        # compressible: repeated text
        unit = ('%s %s ' % (tag, ' '.join(rng.choice(WORDS)
                                          for _ in range(rng.randint(1, 6)))))
        unit = unit.encode('ascii')
        return (unit * (size // len(unit) + 1))[:size]
    return rng.randbytes(size)


def set_txn_meta(rng, txn, label):
    r = rng.random()
    if r < 0.3:
        txn.user = 'user%d' % rng.randint(0, 9)
    if rng.random() < 0.4:
        txn.note('%s %s' % (label, ' '.join(rng.choice(WORDS)
                                            for _ in range(rng.randint(1, 8)))))
    if rng.random() < 0.15:
        txn.setExtendedInfo('k%d' % rng.randint(0, 3),
                            'v' * rng.randint(1, 40))


class Populator:
    """Objects live in root['objs'], an OOBTree of int -> PersistentMapping
    (each holding a 'data' bytes payload); a few live directly in the root
    under 'extraN' keys."""

    def __init__(self, conn, rng):
        self.conn = conn
        self.rng = rng
        self.root = conn.root()

    def ensure_init(self):
        # Must run inside the transaction (tm.begin() discards changes).
        if 'objs' not in self.root:
            self.root['objs'] = OOBTree()
            self.root['next'] = 0
            self.root['created_by'] = 'zodbtool'

    @property
    def objs(self):
        return self.root['objs']

    def new_key(self):
        k = self.root['next']
        self.root['next'] = k + 1
        return k

    def add(self, tag):
        k = self.new_key()
        ob = PersistentMapping()
        ob['data'] = payload(self.rng, '%s-%d' % (tag, k))
        ob['rev'] = 0
        if self.rng.random() < 0.1:
            self.root['extra%d' % k] = ob
        else:
            self.objs[k] = ob

    def existing(self):
        keys = list(self.objs.keys())
        keys += [k for k in sorted(self.root.keys()) if k.startswith('extra')]
        return keys

    def get(self, key):
        return self.root[key] if isinstance(key, str) else self.objs[key]

    def modify(self, key, tag):
        ob = self.get(key)
        ob['rev'] = ob.get('rev', 0) + 1
        ob['data'] = payload(self.rng, '%s-%s' % (tag, key))

    def transaction_step(self, k, tag, add_bias):
        self.ensure_init()
        n = max(1, k + self.rng.randint(-2, 2)) if k > 0 else 0
        existing = self.existing()
        for _ in range(n):
            if existing and self.rng.random() >= add_bias:
                self.modify(self.rng.choice(existing), tag)
            else:
                self.add(tag)


def open_db(path, clock):
    storage = FileStorage(path)
    clock.catch_up(storage)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    return db, tm, conn


def commit_txns(path, seed, txns, objs, clock, label, add_bias):
    rng = random.Random('%s-%d' % (label, seed))
    db, tm, conn = open_db(path, clock)
    try:
        pop = Populator(conn, rng)
        for i in range(txns):
            txn = tm.begin()
            set_txn_meta(rng, txn, '%s %d' % (label, i))
            pop.transaction_step(objs, '%s%d' % (label, i), add_bias)
            tm.commit()
    except BaseException:
        tm.abort()
        raise
    finally:
        conn.close()
        db.close()


def remove_storage_files(path):
    for ext in ('', '.index', '.lock', '.tmp'):
        p = path + ext
        if os.path.lexists(p):
            os.remove(p)


# ---------------------------------------------------------------------------
# Scanning helpers

def scan_file(path):
    """Full read-only scan of PATH (no index): (pos, fsIndex, ltid)."""
    index = fsIndex()
    with open(path, 'rb') as f:
        pos, _maxoid, ltid = FSmod.read_index(f, path, index, {},
                                              read_only=1)
    return pos, index, ltid


def committed_size(path):
    """FileStorage(read_only=True).getSize() for PATH, ignoring PATH.index.

    The storage is opened through a symlink (or copy) in a temporary directory
    that has no .index file, so the size comes from a full read_index scan.
    """
    if not os.path.isfile(path):
        raise ToolError('no such file: %s' % path)
    with tempfile.TemporaryDirectory(prefix='zodbtool-') as td:
        tmp = os.path.join(td, 'Data.fs')
        try:
            os.symlink(os.path.abspath(path), tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        fs = FileStorage(tmp, read_only=True)
        try:
            if fs._used_index:
                raise ToolError('internal: index unexpectedly used')
            return fs.getSize()
        finally:
            fs.close()


# ---------------------------------------------------------------------------
# Subcommands

def cmd_create(args):
    clock = install_fake_clock(args.seed)
    remove_storage_files(args.path)
    commit_txns(args.path, args.seed, args.txns, args.objs, clock,
                'create', add_bias=0.6)


def cmd_append(args):
    if not os.path.isfile(args.path):
        raise ToolError('no such file: %s' % args.path)
    clock = install_fake_clock(args.seed)
    commit_txns(args.path, args.seed, args.txns, args.objs, clock,
                'append', add_bias=0.3)


def cmd_pack(args):
    if not os.path.isfile(args.path):
        raise ToolError('no such file: %s' % args.path)
    clock = install_fake_clock(args.seed)
    rng = random.Random('pack-%d' % args.seed)
    db, tm, conn = open_db(args.path, clock)
    try:
        pop = Populator(conn, rng)
        txn = tm.begin()
        txn.note('zodbtool pack: drop and modify')
        pop.ensure_init()
        existing = pop.existing()
        removed = modified = 0
        for key in existing:
            r = rng.random()
            if r < 0.3:
                if isinstance(key, str):
                    del pop.root[key]
                else:
                    del pop.objs[key]
                removed += 1
            elif r < 0.5:
                pop.modify(key, 'pack')
                modified += 1
        pop.root['packed'] = pop.root.get('packed', 0) + 1
        tm.commit()
        conn.close()
        last = db.storage.lastTransaction()
        # "Now", but never before the (fake-clock) last transaction.
        t = max(_real_time.time(), TimeStamp(last).timeTime() + 1.0)
        db.pack(t=t)
    finally:
        db.close()
    # FileStorage.pack() deletes PATH.old first and, if it really packed,
    # renames the unpacked file to PATH.old (pack_keep_old defaults to True).
    if not os.path.exists(args.path + '.old'):
        raise ToolError('pack did not rewrite %s' % args.path)
    print('packed removed=%d modified=%d size=%d'
          % (removed, modified, os.path.getsize(args.path)))


def cmd_partial(args):
    path = args.path
    if not os.path.isfile(path):
        raise ToolError('no such file: %s' % path)
    start = committed_size(path)
    fsize = os.path.getsize(path)
    if fsize != start:
        raise ToolError('%s already has %d bytes after the last committed '
                        'transaction (at %d)' % (path, fsize - start, start))
    clock = install_fake_clock(args.seed)
    rng = random.Random('partial-%s-%d' % (args.mode, args.seed))
    with tempfile.TemporaryDirectory(prefix='zodbtool-') as td:
        tmp = os.path.join(td, 'Data.fs')
        shutil.copyfile(path, tmp)
        commit_txns(tmp, args.seed, 1, 3, clock, 'partial', add_bias=0.3)
        with open(tmp, 'rb') as f:
            f.seek(start)
            rec = f.read()
    if len(rec) < TRANS_HDR_LEN + 8:
        raise ToolError('internal: commit appended only %d bytes' % len(rec))
    tid, tlen, status, ul, dl, el = struct.unpack(TRANS_HDR,
                                                  rec[:TRANS_HDR_LEN])
    if tlen + 8 != len(rec) or status != b' ':
        raise ToolError('internal: unexpected record tlen=%d status=%r len=%d'
                        % (tlen, status, len(rec)))
    if args.mode == 'c':
        rec = rec[:STATUS_OFFSET] + b'c' + rec[STATUS_OFFSET + 1:]
    else:
        cut = rng.randint(1, len(rec) - 1)
        rec = rec[:cut]
    with open(path, 'ab') as f:
        f.write(rec)
    if os.path.exists(path + '.index'):
        os.remove(path + '.index')
    # committed end, bytes appended, full length of the record
    print('%d %d %d' % (start, len(rec), tlen + 8))


def cmd_size(args):
    print(committed_size(args.path))


def load_index_file(indexfile):
    if not os.path.isfile(indexfile):
        raise ToolError('no such file: %s' % indexfile)
    info = fsIndex.load(indexfile)
    if not isinstance(info, dict) or 'pos' not in info:
        raise ToolError('%s: old-format or invalid index file' % indexfile)
    return info


def cmd_check_index(args):
    info = load_index_file(args.indexfile)
    ipos = info['pos']
    got = dict(info['index'].items())
    if not os.path.isfile(args.datafs):
        raise ToolError('no such file: %s' % args.datafs)
    if os.path.getsize(args.datafs) < ipos:
        print('index pos %d is beyond the end of %s (%d bytes)'
              % (ipos, args.datafs, os.path.getsize(args.datafs)))
        return 1
    with tempfile.TemporaryDirectory(prefix='zodbtool-') as td:
        tmp = os.path.join(td, 'Data.fs')
        with open(args.datafs, 'rb') as src, open(tmp, 'wb') as dst:
            remaining = ipos
            while remaining:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
        spos, sindex, _ltid = scan_file(tmp)
    want = dict(sindex.items())
    problems = []
    if spos != ipos:
        problems.append('pos: index says %d, scan of first %d bytes ends at %d'
                        % (ipos, ipos, spos))
    for oid in sorted(set(want) | set(got)):
        a, b = got.get(oid), want.get(oid)
        if a != b:
            problems.append('oid %s: index %s, scan %s' % (
                oid.hex(), 'missing' if a is None else a,
                'missing' if b is None else b))
    if problems:
        ndiff = len(problems)
        for p in problems[:10]:
            print(p)
        if ndiff > 10:
            print('... %d differences in total' % ndiff)
        return 1
    print('OK %d %d' % (ipos, len(got)))
    return 0


class ListHandler(logging.Handler):
    def __init__(self):
        logging.Handler.__init__(self, logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def cmd_open(args):
    path = args.path
    if not os.path.isfile(path):
        raise ToolError('no such file: %s' % path)
    had_index = os.path.exists(path + '.index')
    logger = logging.getLogger('ZODB.FileStorage')
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fs = FileStorage(path, read_only=True)
    try:
        msgs = [r.getMessage() for r in handler.records]
        used = bool(fs._used_index)
        if any('Ignoring index' in m for m in msgs):
            raise ToolError('FileStorage ignored %s.index: %s'
                            % (path, ' | '.join(msgs)))
        if had_index and not used:
            raise ToolError('%s.index exists but was not used: %s'
                            % (path, ' | '.join(msgs) or 'no log output'))
        if args.require_index and not used:
            raise ToolError('%s.index was not used (exists: %s)'
                            % (path, had_index))
        n = 0
        for oid in list(fs._index.keys()):
            try:
                fs.load(oid)
            except POSKeyError:
                # Current record without data (e.g. undone creation): the
                # index entry is still valid if it points at this oid.
                pos = fs._lookup_pos(oid)
                fs._read_data_header(pos, oid)
            n += 1
    finally:
        fs.close()
    print('OK %d used_index=%d' % (n, int(used)))


def cmd_dump_index(args):
    info = load_index_file(args.indexfile)
    print('pos %d' % info['pos'])
    for oid, pos in sorted(info['index'].items()):
        print('%s %d' % (oid.hex(), pos))


# ---------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write('%s: error: %s\n' % (self.prog, message))
        sys.exit(1)


def build_parser():
    p = Parser(prog='zodbtool', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', metavar='COMMAND',
                           parser_class=Parser)
    sub.required = True

    s = sub.add_parser('create', help='create a new FileStorage')
    s.add_argument('path')
    s.add_argument('--seed', type=int, required=True)
    s.add_argument('--txns', type=int, required=True)
    s.add_argument('--objs', type=int, default=5)
    s.set_defaults(func=cmd_create)

    s = sub.add_parser('append', help='commit more transactions')
    s.add_argument('path')
    s.add_argument('--seed', type=int, required=True)
    s.add_argument('--txns', type=int, required=True)
    s.add_argument('--objs', type=int, default=5)
    s.set_defaults(func=cmd_append)

    s = sub.add_parser('pack', help='drop some objects, then pack to now')
    s.add_argument('path')
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=cmd_pack)

    s = sub.add_parser('partial',
                       help='append an unfinished transaction record')
    s.add_argument('path')
    s.add_argument('--mode', choices=('c', 'trunc'), required=True)
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=cmd_partial)

    s = sub.add_parser('size', help='print end of last committed transaction')
    s.add_argument('path')
    s.set_defaults(func=cmd_size)

    s = sub.add_parser('check-index',
                       help='compare an index file with a full scan')
    s.add_argument('datafs')
    s.add_argument('indexfile')
    s.set_defaults(func=cmd_check_index)

    s = sub.add_parser('open', help='open read-only and load every object')
    s.add_argument('path')
    s.add_argument('--require-index', action='store_true')
    s.set_defaults(func=cmd_open)

    s = sub.add_parser('dump-index', help='print an index file')
    s.add_argument('indexfile')
    s.set_defaults(func=cmd_dump_index)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_logging()
    no_fsync()
    try:
        rc = args.func(args)
    except BrokenPipeError:
        # e.g. `dump-index ... | head`
        try:
            sys.stdout = open(os.devnull, 'w')
        except OSError:
            pass
        return 0
    except ToolError as e:
        sys.stderr.write('zodbtool %s: %s\n' % (args.cmd, e))
        return 1
    except Exception as e:  # noqa: BLE001 - one-line error report
        msg = str(e).replace('\n', ' ')
        sys.stderr.write('zodbtool %s: %s: %s\n'
                         % (args.cmd, type(e).__name__, msg))
        return 1
    return rc or 0


if __name__ == '__main__':
    sys.exit(main())
