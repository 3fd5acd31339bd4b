"""Drive collective.recipe.backup 6.0's backup, snapshot and restore
functions (they run <bin dir>/repozo) against a real Data.fs, as a site's
bin/backup, bin/snapshotbackup and bin/restore do.

Usage: recipe.py BIN_DIR WORKDIR

Checks: the repository files are ours (our .repozo-sums beside them), the
restore gives the source's bytes back, ZODB opens the restored file and
sees every object, and the snapshot restore too. Exit 0 on success.
"""
import hashlib
import os
import shutil
import sys

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

from collective.recipe.backup import main


def commit(fs_path, start, n):
    db = ZODB.DB(FileStorage(fs_path))
    conn = db.open()
    root = conn.root()
    for i in range(start, start + n):
        root['o%d' % i] = PersistentMapping({'title': 'object %d' % i,
                                             'body': 'text ' * (i % 50)})
        if i % 10 == 9:
            transaction.commit()
    transaction.commit()
    conn.close()
    db.close()


def md5(path):
    with open(path, 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


def objects(fs_path):
    db = ZODB.DB(FileStorage(fs_path, read_only=True))
    conn = db.open()
    n = len(conn.root())
    conn.close()
    db.close()
    return n


def main_(bin_dir, work):
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(os.path.join(work, 'var', 'filestorage'))
    datafs = os.path.join(work, 'var', 'filestorage', 'Data.fs')
    storage = {
        'datafs': datafs,
        'backup_location': os.path.join(work, 'var', 'backups'),
        'snapshot_location': os.path.join(work, 'var', 'snapshotbackups'),
        'blobdir': '',
    }
    common = dict(bin_dir=bin_dir, storage=storage, verbose=True,
                  backup_blobs=False, only_blobs=False, use_rsync=False)
    commit(datafs, 0, 200)
    main.backup_main(keep=2, full=False, **common)
    commit(datafs, 200, 50)
    main.backup_main(keep=2, full=False, **common)   # an increment
    main.snapshot_main(keep=1, full=True, **common)
    backups = sorted(os.listdir(storage['backup_location']))
    assert '.repozo-sums' in backups, ('not our repozo', backups)
    assert any(n.endswith('.deltafsz') for n in backups), backups
    assert '.repozo-sums' in os.listdir(storage['snapshot_location'])
    want, want_objects = md5(datafs), objects(datafs)
    sys.argv = ['restore']          # the recipe reads a date from argv
    for snapshot in (False, True):
        os.remove(datafs)
        main.restore_main(no_prompt=True, restore_snapshot=snapshot, **common)
        assert md5(datafs) == want, ('restore gave other bytes', snapshot)
        assert os.path.exists(datafs + '.index')
        assert objects(datafs) == want_objects == 250, want_objects
    print('recipe OK: backup, increment, snapshot, restore, snapshot restore;'
          ' %d objects' % want_objects)


if __name__ == '__main__':
    main_(sys.argv[1], sys.argv[2])
