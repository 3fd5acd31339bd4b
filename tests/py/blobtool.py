#!/usr/bin/env python3
"""Test helper for blob backups: write, undo, pack and read a ZODB 6.4
FileStorage with a blob directory (``FileStorage(path, blob_dir=DIR)``).

Run with the project's venv interpreter, e.g.

    .venv/bin/python tests/py/blobtool.py write /tmp/x/Data.fs /tmp/x/blobs --seed 1 --txns 20

Subcommands:

  write PATH BLOBDIR --seed N --txns T [--layout bushy|lawn] [--big]
      commit T transactions that add blobs (0 bytes, 1 byte, up to a few
      hundred KB, and with --big some of several MB), change blobs (new
      revisions), change ordinary objects and drop blobs; every 7th
      transaction is aborted after writing a blob, and a stray file is
      left in tmp/ as an aborted commit of a killed process would.
  undo PATH BLOBDIR [--kind add|change|plain|drop]
                         undo the newest such transaction (default: one
                         that changed a blob, which writes a new revision)
  pack PATH BLOBDIR      pack to now (old revisions and their files go)
  dump PATH BLOBDIR      print one line per blob reachable from the root:
                         `key oid tid size sha256`; exit 1 when one cannot
                         be read
  files BLOBDIR          print the committed blob files: `oid tid size`

Everything is deterministic given the seed and the input files (the
storage clock is zodbtool's fake clock). Errors print one line to stderr
and exit with status 1.
"""

import argparse
import hashlib
import os
import random
import sys

import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import oid_repr, tid_repr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zodbtool  # noqa: E402 (the fake clock and quiet logging)

SIZES = [0, 1, 17, 1000, 4096, 65536, 300000]
BIG = [3 * 1024 * 1024 + 5, 5 * 1024 * 1024]


def blob_bytes(rng, tag, big):
    sizes = SIZES + (BIG if big else [])
    size = rng.choice(sizes)
    if rng.random() < 0.5:
        unit = ('%s ' % tag).encode('ascii')
        return (unit * (size // max(len(unit), 1) + 1))[:size]
    return rng.randbytes(size)


def open_db(path, blob_dir, clock, layout=None):
    if layout and not os.path.exists(path):
        # a new FileStorage empties its blob directory: create both first,
        # then set the layout while the directory holds no blob yet
        FileStorage(path, blob_dir=blob_dir).close()
        with open(os.path.join(blob_dir, '.layout'), 'w') as f:
            f.write(layout)
    storage = FileStorage(path, blob_dir=blob_dir)
    if clock is not None:
        clock.catch_up(storage)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    return db, tm, conn


def cmd_write(args):
    clock = zodbtool.install_fake_clock(args.seed)
    rng = random.Random('blobs-%d' % args.seed)
    db, tm, conn = open_db(args.path, args.blob_dir, clock, args.layout)
    try:
        root = conn.root()
        if 'blobs' not in root:
            tm.begin()
            from persistent.mapping import PersistentMapping
            root['blobs'] = PersistentMapping()
            root['plain'] = PersistentMapping()
            tm.commit()
        blobs, plain = root['blobs'], root['plain']
        for i in range(args.txns):
            txn = tm.begin()
            keys = sorted(blobs)
            r = rng.random()
            tag = 's%di%d' % (args.seed, i)
            if not keys or r < 0.4:
                kind = 'add'
                b = Blob(blob_bytes(rng, tag, args.big))
                blobs['b%d-%d' % (args.seed, i)] = b
            elif r < 0.75:
                kind = 'change'
                k = rng.choice(keys)
                with blobs[k].open('w') as f:
                    f.write(blob_bytes(rng, tag, args.big))
            elif r < 0.9:
                kind = 'plain'
                plain['p%d' % rng.randrange(50)] = rng.randbytes(50)
            else:
                kind = 'drop'
                del blobs[rng.choice(keys)]
            txn.note('blobs %d-%d %s' % (args.seed, i, kind))
            if i % 7 == 6:
                # an aborted commit that had written a blob
                b = Blob(b'aborted ' + tag.encode())
                blobs['aborted'] = b
                tm.abort()
                continue
            tm.commit()
        tmp = os.path.join(args.blob_dir, 'tmp')
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, 'stray-%d' % args.seed), 'wb') as f:
            f.write(b'left by a killed commit')
    except BaseException:
        tm.abort()
        raise
    finally:
        conn.close()
        db.close()


def cmd_undo(args):
    clock = zodbtool.install_fake_clock(0)
    db, tm, conn = open_db(args.path, args.blob_dir, clock)
    try:
        for entry in db.undoLog(0, 200):
            desc = entry['description']
            if isinstance(desc, bytes):
                desc = desc.decode('utf-8', 'replace')
            if desc.startswith('blobs') and desc.endswith(args.kind):
                tm.begin()
                db.undo(entry['id'], tm.get())
                tm.commit()
                return
        raise zodbtool.ToolError('nothing to undo')
    finally:
        conn.close()
        db.close()


def cmd_pack(args):
    clock = zodbtool.install_fake_clock(0)
    db, tm, conn = open_db(args.path, args.blob_dir, clock)
    try:
        db.pack(clock.time() + 3600)
    finally:
        conn.close()
        db.close()


def cmd_dump(args):
    storage = FileStorage(args.path, blob_dir=args.blob_dir, read_only=True)
    db = ZODB.DB(storage)
    conn = db.open()
    bad = 0
    try:
        blobs = conn.root().get('blobs', {})
        for k in sorted(blobs):
            b = blobs[k]
            try:
                with b.open('r') as f:
                    data = f.read()
            except POSKeyError:
                print('%s %s %s missing' % (k, oid_repr(b._p_oid),
                                            tid_repr(b._p_serial)))
                bad += 1
                continue
            print('%s %s %s %d %s' % (k, oid_repr(b._p_oid),
                                      tid_repr(b._p_serial), len(data),
                                      hashlib.sha256(data).hexdigest()))
    finally:
        conn.close()
        db.close()
    if bad:
        raise zodbtool.ToolError('%d blob(s) cannot be read' % bad)


def cmd_files(args):
    from ZODB.blob import FilesystemHelper
    fsh = FilesystemHelper(args.blob_dir)
    out = []
    for oid, oid_path in fsh.listOIDs():
        for name in os.listdir(oid_path):
            if name.endswith('.blob'):
                p = os.path.join(oid_path, name)
                out.append('%s %s %d' % (oid_repr(oid), name[:-5],
                                         os.path.getsize(p)))
    for line in sorted(out):
        print(line)


def main(argv):
    zodbtool.quiet_logging()
    zodbtool.no_fsync()
    p = argparse.ArgumentParser(prog='blobtool')
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('write')
    s.add_argument('path')
    s.add_argument('blob_dir')
    s.add_argument('--seed', type=int, required=True)
    s.add_argument('--txns', type=int, required=True)
    s.add_argument('--layout', choices=['bushy', 'lawn'])
    s.add_argument('--big', action='store_true')
    s.set_defaults(fn=cmd_write)
    for name, fn in (('undo', cmd_undo), ('pack', cmd_pack),
                     ('dump', cmd_dump)):
        s = sub.add_parser(name)
        s.add_argument('path')
        s.add_argument('blob_dir')
        s.set_defaults(fn=fn)
        if name == 'undo':
            s.add_argument('--kind', default='change',
                           choices=['add', 'change', 'plain', 'drop'])
    s = sub.add_parser('files')
    s.add_argument('blob_dir')
    s.set_defaults(fn=cmd_files)
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except zodbtool.ToolError as e:
        print('blobtool: %s' % e, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
