#!/usr/bin/env python3
"""Fault injection for the repozo port (RELIABILITY.md, T1, T3, T4, T5).

Run through scripts/faults.sh (which makes sure the venv and the release
binary exist), e.g.

    scripts/faults.sh all --short          # CI: a few minutes
    scripts/faults.sh kill-sweep           # T1: SIGKILL before every mutating syscall
    scripts/faults.sh io-errors            # T4: EIO/ENOSPC/EACCES once and persistent, EINTR, short I/O
    scripts/faults.sh enospc               # T5: real full disk (tmpfs)
    scripts/faults.sh power-cuts --trials 50   # T3: ext4 on loop + shutdown ioctl
    scripts/faults.sh kill-sweep --scenario quick --only kill:fsync:3 --keep   # one trial

Every mode prints the details of each failure (with a command that repeats
the trial) and then exactly one line `<mode>: N trials, F failures`; the exit
status is 1 if any trial failed.

How a fault point is found: one clean run of a scenario runs under this
file's own ptrace injector (`_inject`, see below), which logs every call of
a file syscall that touches the trial folder; each is a point `(syscall,
k)`, k counting those calls of that syscall over all threads of the
process. Each trial copies the scenario's starting state, reruns the same
command with one fault at one point, and checks the oracle of its mode
(functions `oracle_*`).

Why not `strace -e inject`: strace counts `when=k` per thread, and the tool
copies on a writer thread and hashes on another, so `when=k` hits the k-th
write of every thread at once and never reaches most points of the main
thread; and `retval=1` skips the call (the byte is lost) instead of making
a short write. The injector counts per process, only calls on trial files
(never stdio, libraries, /proc), and makes real short reads/writes by
lowering the byte count of the call.

Scenarios (starting states are built once per run from a `zodbtool create
--txns 30` database: a chain full+increment, the source grown since):
full, full-gz (-B/-Bz into an empty repository), incr (-B), quick (-BQ),
quick-gz (-BQz), full-k (-BFk over the chain), quick-orphan (-BQ with an
increment missing from the .dat), recover, recover-w, recover-q (-R [-w|-Q]
-o out.fs over an older out.fs and its index: the missing files are
appended in place), recover-full (-R -F: through out.fs.part) and
recover-foreign (-R over an out.fs that is not a prefix: through
out.fs.part). Blobs (a `blobtool write` database with its blob directory,
backed up with --blob-dir at T0 and T1, grown with new blobs, -BQ at T2,
packed and grown, full backup at T3): blob-full (-B into an empty
repository), blob-incr, blob-quick (-B/-BQ over the chain), blob-keep
(-B --keep=1 after the pack: removes the chain and its unused stored
revisions), blob-recover (-R --blob-dir into a new directory),
blob-standby (onto an earlier recovery from before the pack: through
out.fs.part, revisions added and removed), blob-standby-inplace (-D T2
onto the recovery at T0: extended in place). --prune-index (the chain
full + 3 increments grown by a -BQ at T3 to s4, each with its .index; the
source at s5): prune (-BQ --prune-index: a new increment, then the .index
of the 3 older increments is removed), prune-recover and
prune-recover-full (-R -D T3 [-F] -o out.fs on the repository pruned by a
-BQ --prune-index at T4, over out.fs recovered at T1: FILE.index rebuilt
from T0's .index and a scan; in place, or through out.fs.part).
--short: quick-gz, full-k, recover-w, recover-full, blob-quick,
blob-keep, blob-standby, prune, every 3rd point (io-errors: every 9th of
blob-quick and blob-keep, and not blob-standby or prune).

With --prune-index (prune) the oracles also require, after the fault and
after the rerun or repair (which use --prune-index too): every earlier
date (T0..T3) and the newest state recover with ours to the bytes saved
then and a FILE.index byte for byte the .index its backup wrote (rebuilt
where it was pruned); ZODB's repozo recovers every earlier date to the same
bytes (with that .index, or none); after a complete run the chain keeps
only its full backup's and its newest increment's .index.

With blobs the oracles also require: -R --blob-dir of the old or new
state and at every earlier date gives the bytes and the `blobtool dump`
saved then (ZODB reads every blob; dumps run on copies, cached); the
source blob directory is untouched; after a recovery fault, ZODB reads the
old (or new) state's blobs from out.blobs beside the old (or new) out.fs,
and the rerun leaves exactly the clean run's out.blobs.

Oracles:
  kill-sweep  backups: -V passes or reports only an orphan / torn .dat /
              missing .dat; -R gives the old or the new state; a -BQ then
              succeeds, -V passes, -R equals the source's committed bytes
              and ZODB opens it with its index (`zodbtool open
              --require-index`); the source is never touched.
              recovery: out.fs is the old or the new bytes (or, when it is
              extended in place, a longer prefix of the new bytes, which
              the next run completes), out.fs.index is absent or belongs
              to it; a rerun gives the new state and index.
  io-errors   EIO, ENOSPC and EACCES (once and from then on) at every point: exit 1
              with one "repozo: " line, no panic, no temporary file left,
              the repository unchanged or still verifying and recovering to
              the old state, a rerun without the fault succeeds; an exit 0 must
              give exactly the clean run's files, except after an error in
              the cleanup of a committed backup (-k removals): then exit 0,
              a warning, only old files the clean run removed are left,
              -V and -R pass and a rerun removes them. --lenient accepts a data
              file left published by the failed run (an orphan, as after a
              crash) or a backup committed before a failed fsync. EINTR and
              short reads/writes: exit 0 and the clean run's files (gzip
              files compared uncompressed: member sizes follow read sizes);
              EINTR on open may fail cleanly instead (opendir does not retry).
              copy_file_range failing with EXDEV or EOPNOTSUPP (file
              systems the kernel cannot copy between) and fallocate with
              EOPNOTSUPP (no reservations), once and from then on: the
              run falls back and must give the clean run's files, as for
              EINTR.
  enospc      tmpfs repository from too small to enough: below the need a
              clean "No space left" failure judged as in io-errors, at or
              above success; nr_inodes 1..8; recovery into a tmpfs without
              room: through out.fs.part "not enough free space" with the old
              output and index intact, in place a clean failure leaving a
              prefix; with room again the rerun completes. Blobs: -B/-BQ
              --blob-dir with the blob store on the tmpfs (a failure is
              judged by the blob oracles, the rerun with room gives the
              roomy run's files), -R --blob-dir with out.fs, its index and
              out.blobs on it (never an out.fs without its blobs).
  power-cuts  ext4 image on loop (noauto_da_alloc) in a private mount
              namespace; an acknowledged -BQ (exit 0), the source grows,
              then a second run is cut (shutdown ioctl) before a random
              mutating call, after a random time (frozen with SIGSTOP) or
              after it exits; after remount the acknowledged backup is
              there, the state is old or new (new if it had exited 0), and
              the repository repairs as in kill-sweep.

Stdlib only; ZODB is used through tests/py/zodbtool.py in subprocesses.
"""

import argparse
import concurrent.futures
import ctypes
import gzip
import hashlib
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZODBTOOL = os.path.join(ROOT, 'tests', 'py', 'zodbtool.py')
PYREPOZO = os.path.join(ROOT, 'tests', 'py', 'pyrepozo.py')
BLOBTOOL = os.path.join(ROOT, 'tests', 'py', 'blobtool.py')
THIS = os.path.abspath(__file__)

# Backup stamps (REPOZO_TEST_NOW): fixture chain, the run under test, the
# repair run after a fault.
T0 = '2024-01-01-00-00-00'
T1 = '2024-01-01-01-00-00'
T2 = '2024-01-01-02-00-00'
T4 = '2024-01-01-04-00-00'
T_RUN = '2024-01-02-00-00-00'
T_FIX = '2024-01-03-00-00-00'

BACKUP_ARGS = ['-r', 'repo', '-f', 'src.fs']
BLOB_ARGS = ['--blob-dir', 'blobs']
OUT_BLOBS = 'out.blobs'
REC_BLOB_ARGS = ['-R', '-r', 'repo', '-o', 'out.fs', '--blob-dir', OUT_BLOBS]
T3 = '2024-01-01-03-00-00'
SCENARIOS = {
    # name: (starting state, arguments, kind)
    'full': ('empty', ['-B'] + BACKUP_ARGS, 'backup'),
    'full-gz': ('empty', ['-Bz'] + BACKUP_ARGS, 'backup'),
    'incr': ('chain', ['-B'] + BACKUP_ARGS, 'backup'),
    'quick': ('chain', ['-BQ'] + BACKUP_ARGS, 'backup'),
    'quick-gz': ('chain', ['-BQz'] + BACKUP_ARGS, 'backup'),
    'full-k': ('chain', ['-BFk'] + BACKUP_ARGS, 'backup'),
    'quick-orphan': ('orphan', ['-BQ'] + BACKUP_ARGS, 'backup'),
    # recovery onto an older out.fs: appends the missing files in place
    'recover': ('recover', ['-R', '-r', 'repo', '-o', 'out.fs'], 'recover'),
    'recover-w': ('recover', ['-R', '-w', '-r', 'repo', '-o', 'out.fs'], 'recover'),
    'recover-q': ('recover', ['-R', '-Q', '-r', 'repo', '-o', 'out.fs'], 'recover'),
    # a full recovery through out.fs.part: forced, or over a foreign out.fs
    'recover-full': ('recover', ['-R', '-F', '-r', 'repo', '-o', 'out.fs'], 'recover'),
    'recover-foreign': ('recover-foreign', ['-R', '-r', 'repo', '-o', 'out.fs'], 'recover'),
    # power cuts: the second backup after an acknowledged one (s3 -> s4)
    'p-quick': ('power', ['-BQ'] + BACKUP_ARGS, 'backup'),
    'p-quick-gz': ('power', ['-BQz'] + BACKUP_ARGS, 'backup'),
    'p-full-k': ('power', ['-BFk'] + BACKUP_ARGS, 'backup'),
    # blobs (a `blobtool write` database with its blob directory `blobs`)
    'blob-full': ('bempty', ['-B'] + BACKUP_ARGS + BLOB_ARGS, 'backup'),
    'blob-incr': ('bchain', ['-B'] + BACKUP_ARGS + BLOB_ARGS, 'backup'),
    'blob-quick': ('bchain', ['-BQ'] + BACKUP_ARGS + BLOB_ARGS, 'backup'),
    # the source was packed: a new full backup, --keep=1 removes the old
    # chain and the stored revisions only it referred to
    'blob-keep': ('bpacked', ['-B', '--keep=1'] + BACKUP_ARGS + BLOB_ARGS, 'backup'),
    # recovery with its blob directory: into none, onto a standby from
    # before the pack (through out.fs.part; revisions added and removed),
    # onto a standby that is a prefix (extended in place; -D T2)
    'blob-recover': ('brecover', REC_BLOB_ARGS, 'recover'),
    'blob-standby': ('bstandby', REC_BLOB_ARGS, 'recover'),
    'blob-standby-inplace': ('bstandby0', ['-D', T2] + REC_BLOB_ARGS, 'recover'),
    # --prune-index: a new increment on a chain full + 3 increments, each
    # with its .index; then the .index of the 3 older increments is removed
    'prune': ('pchain', ['-BQ', '--prune-index'] + BACKUP_ARGS, 'backup'),
    # recovery to a pruned date (T3: .index rebuilt from T0's and a scan),
    # extending out.fs (recovered at T1) in place, or through out.fs.part
    'prune-recover': ('precover', ['-R', '-D', T3, '-r', 'repo', '-o', 'out.fs'], 'recover'),
    'prune-recover-full': ('precover', ['-R', '-F', '-D', T3, '-r', 'repo', '-o', 'out.fs'],
                           'recover'),
}
PRUNE_STATES = {'pchain', 'precover'}
SWEEP_SCENARIOS = [s for s in SCENARIOS if not s.startswith('p-')]
SHORT_SCENARIOS = ['quick-gz', 'full-k', 'recover-w', 'recover-full',
                   'blob-quick', 'blob-keep', 'blob-standby', 'prune']
BLOB_STATES = {'bempty', 'bchain', 'bpacked', 'brecover', 'bstandby', 'bstandby0'}

MUTATING = {'write', 'pwrite64', 'fsync', 'fdatasync', 'rename', 'renameat',
            'renameat2', 'link', 'linkat', 'unlink', 'unlinkat', 'ftruncate',
            'mkdir', 'mkdirat', 'symlink', 'symlinkat', 'chmod', 'fchmod',
            'fchmodat', 'openat', 'open', 'creat', 'fallocate', 'copy_file_range',
            'sync_file_range', 'syncfs'}
# Errors that mean "not here" and that the tool answers by doing the work
# another way: the run must succeed as if nothing happened.
FALLBACK_FAULTS = {'copy_file_range': ('EXDEV', 'EXDEV+', 'EOPNOTSUPP+'),
                   'fallocate': ('EOPNOTSUPP', 'EOPNOTSUPP+')}
# Calls for which Linux documents EINTR (or POSIX does): a retry is expected.
EINTR_CALLS = {'read', 'pread64', 'write', 'pwrite64', 'openat', 'open',
               'ftruncate', 'fsync', 'fdatasync', 'flock'}
EACCES_CALLS = {'open', 'openat', 'rename', 'renameat', 'renameat2', 'link', 'linkat',
                'unlink', 'unlinkat', 'mkdir', 'mkdirat'}
ENOSPC_CALLS = {'write', 'pwrite64', 'fsync', 'fdatasync', 'openat', 'copy_file_range',
                'rename', 'renameat2', 'link', 'linkat', 'mkdir', 'fallocate'}

TEMP_PREFIX = '.repozo-tmp-'
LOCK_NAME = '.repozo.lock'
SUMS_NAME = '.repozo-sums'  # our cache of fast checksums: never decides anything


# ---------------------------------------------------------------------------
# small helpers

def sha(data):
    return None if data is None else hashlib.sha256(data).hexdigest()[:16]


def read_or_none(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        return None


def leftovers(*dirs):
    """Temporary files (ours) and FILE.part files in the given folders and
    below (blob directories, the blob store)."""
    found = set()
    top = os.path.dirname(dirs[0].rstrip('/')) if dirs else ''
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for root, subdirs, names in os.walk(d):
            for name in names + subdirs:
                if name.startswith(TEMP_PREFIX) or name.endswith('.part'):
                    found.add(os.path.relpath(os.path.join(root, name), top))
    return sorted(found)


def snapshot(repo):
    """relative name -> content hash of every published file of a
    repository (and of the blob store below it), or of a blob directory."""
    out = {}
    if not os.path.isdir(repo):
        return out
    for root, subdirs, names in os.walk(repo):
        subdirs[:] = sorted(n for n in subdirs if not n.startswith(TEMP_PREFIX))
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), repo)
            if rel in (LOCK_NAME, SUMS_NAME) or name.startswith(TEMP_PREFIX):
                continue
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                data = read_or_none(p)
                if name.endswith('fsz'):
                    # member boundaries follow read sizes: compare the content
                    try:
                        data = b'gzip:' + gzip.decompress(data)
                    except Exception:
                        data = b'bad gzip:' + data
                out[rel] = sha(data)
            else:
                out[rel] = 'not-a-file'
        for name in subdirs:
            p = os.path.join(root, name)
            if os.path.islink(p):
                out[os.path.relpath(p, repo)] = 'not-a-file'
    return out


def tree_sha(d):
    """One hash of every file below d (None when d is absent)."""
    if not os.path.isdir(d):
        return None
    return sha(repr(sorted(snapshot(d).items())).encode())


def snap_diff(a, b):
    parts = []
    for n in sorted(set(a) | set(b)):
        if n not in a:
            parts.append('+' + n)
        elif n not in b:
            parts.append('-' + n)
        elif a[n] != b[n]:
            parts.append('~' + n)
    return ' '.join(parts) or '(same)'


def explain_diff(clean, now):
    """How a repository differs from the clean run's, in words."""
    added = set(now) - set(clean)
    gone = set(clean) - set(now)
    if (any(n.endswith(('.fs', '.fsz')) for n in added)
            and any(n.endswith(('.deltafs', '.deltafsz')) for n in gone)):
        return 'a new full backup instead of the clean run\'s increment (the error was swallowed)'
    if any(n.endswith('.orphaned') for n in gone) or any(n.endswith('.orphaned') for n in added):
        return 'orphans not set aside as in the clean run: ' + snap_diff(clean, now)
    if gone - {n for n in gone if n.endswith('.orphaned')} == set() and added and not gone:
        return 'files the clean run removed (-k) are still there: ' + snap_diff(clean, now)
    return snap_diff(clean, now)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(cmd, cwd=None, env=None, timeout=60, stdin=subprocess.DEVNULL):
    """Run a command in its own process group; returns (rc, stdout, stderr).
    rc is 'timeout' when it had to be killed."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return 'timeout', out, err
    return proc.returncode, out, err


def errlines(err):
    """stderr lines of the tool."""
    text = err.decode('utf-8', 'replace')
    return [l for l in text.splitlines() if l.strip()]


class Failure(Exception):
    pass


def must(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------
# the injector: a small ptrace tracer (hidden subcommand `_inject`). It can
# kill before the call (kill), run a command then kill (cut: power cuts),
# fail the call with an errno once or from then on (EIO, EIO+, ...), or
# lower its byte count to 1 so that the kernel does a real short read or
# write (short). x86_64 only.

AT_FDCWD = -100
O_WRITE_MASK = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # WRONLY RDWR CREAT TRUNC APPEND
# x86_64 syscall number -> (name, fd argument indices, [(dirfd index|None, path index)])
SYSCALLS = {
    0: ('read', [0], []), 1: ('write', [0], []), 2: ('open', [], [(None, 0)]),
    4: ('stat', [], [(None, 0)]), 5: ('fstat', [0], []), 6: ('lstat', [], [(None, 0)]),
    17: ('pread64', [0], []), 18: ('pwrite64', [0], []), 21: ('access', [], [(None, 0)]),
    73: ('flock', [0], []), 74: ('fsync', [0], []), 75: ('fdatasync', [0], []),
    77: ('ftruncate', [0], []), 78: ('getdents', [0], []),
    82: ('rename', [], [(None, 0), (None, 1)]), 83: ('mkdir', [], [(None, 0)]),
    85: ('creat', [], [(None, 0)]), 86: ('link', [], [(None, 0), (None, 1)]),
    87: ('unlink', [], [(None, 0)]), 88: ('symlink', [], [(None, 1)]),
    90: ('chmod', [], [(None, 0)]), 91: ('fchmod', [0], []),
    137: ('statfs', [], [(None, 0)]), 138: ('fstatfs', [0], []),
    217: ('getdents64', [0], []), 257: ('openat', [], [(0, 1)]),
    258: ('mkdirat', [], [(0, 1)]), 262: ('newfstatat', [], [(0, 1)]),
    263: ('unlinkat', [], [(0, 1)]), 264: ('renameat', [], [(0, 1), (2, 3)]),
    265: ('linkat', [], [(0, 1), (2, 3)]), 266: ('symlinkat', [], [(1, 2)]),
    268: ('fchmodat', [], [(0, 1)]), 277: ('sync_file_range', [0], []),
    285: ('fallocate', [0], []), 306: ('syncfs', [0], []),
    316: ('renameat2', [], [(0, 1), (2, 3)]), 326: ('copy_file_range', [0, 2], []),
    332: ('statx', [], [(0, 1)]),
}
# which register holds the byte count of a call that can be made short
SHORT_REG = {'read': 'rdx', 'write': 'rdx', 'pread64': 'rdx', 'pwrite64': 'rdx',
             'copy_file_range': 'r8'}
SYSCALL_NAMES = {v[0] for v in SYSCALLS.values()}
SHORT_ARG = {'read': 2, 'write': 2, 'pread64': 2, 'pwrite64': 2, 'copy_file_range': 4}


class _Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        'r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax '
        'rip cs eflags rsp ss fs_base gs_base ds es fs gs').split()]


class _SyscallInfo(ctypes.Structure):
    _fields_ = [('op', ctypes.c_uint8), ('pad', ctypes.c_uint8 * 3),
                ('arch', ctypes.c_uint32), ('ip', ctypes.c_uint64),
                ('sp', ctypes.c_uint64), ('nr', ctypes.c_uint64),
                ('args', ctypes.c_uint64 * 6)]


def _signed(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def _fd(v):
    """An int argument (fd, dirfd) from its 64-bit register."""
    v &= 0xffffffff
    return v - (1 << 32) if v >= (1 << 31) else v


def _read_cstr(tid, addr):
    try:
        fd = os.open('/proc/%d/mem' % tid, os.O_RDONLY)
    except OSError:
        return None
    try:
        out = b''
        while len(out) < 4096:
            n = 4096 - (addr % 4096)
            try:
                chunk = os.pread(fd, n, addr)
            except OSError:
                return None
            if not chunk:
                return None
            i = chunk.find(b'\0')
            if i >= 0:
                return (out + chunk[:i]).decode('utf-8', 'surrogateescape')
            out += chunk
            addr += n
        return None
    finally:
        os.close(fd)


def inject_main(argv):
    """_inject --scope DIR [--log F] [--report F] [--fault KIND:SYSCALL:K]
    [--at-point CMD] -- PROG ARGS...   (exit status: PROG's, 128+sig if killed)"""
    import errno as errno_mod
    p = argparse.ArgumentParser(prog='_inject')
    p.add_argument('--scope', required=True)
    p.add_argument('--log')
    p.add_argument('--report')
    p.add_argument('--fault')
    p.add_argument('--at-point')
    p.add_argument('cmd', nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == '--' else a.cmd
    scope = os.path.realpath(a.scope).rstrip('/')
    fkind = fname = None
    fk = 0
    if a.fault:
        fkind, fname, fk = a.fault.split(':')
        fk = int(fk)
    persistent = bool(fkind) and fkind.endswith('+')
    err_no = None
    if fkind and fkind.rstrip('+') not in ('kill', 'cut', 'short'):
        err_no = getattr(errno_mod, fkind.rstrip('+'))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def inscope(path):
        return path == scope or path.startswith(scope + '/')

    def rel(path):
        if path == scope:
            return '.'
        r = path[len(scope) + 1:] if path.startswith(scope + '/') else path
        return re.sub(re.escape(TEMP_PREFIX) + r'[^/ ]*', TEMP_PREFIX + '*', r)

    def fdpath(tid, fd):
        if fd < 0:
            return None
        try:
            return os.readlink('/proc/%d/fd/%d' % (tid, fd))
        except OSError:
            return None

    def classify(tid, name, fds, paths, args):
        found = []
        for i in fds:
            fd = _fd(args[i])
            if fd <= 2:
                continue
            pth = fdpath(tid, fd)
            if pth and inscope(pth):
                found.append(pth)
        for di, pi in paths:
            s = _read_cstr(tid, args[pi])
            if s is None:
                continue
            dfd = AT_FDCWD if di is None else _fd(args[di])
            if s == '':
                pth = fdpath(tid, dfd)
            elif s.startswith('/'):
                pth = os.path.normpath(s)
            else:
                base = fdpath(tid, dfd) if dfd != AT_FDCWD else fdpath_cwd(tid)
                pth = os.path.normpath(os.path.join(base, s)) if base else None
            if pth and inscope(pth):
                found.append(pth)
        return found

    def fdpath_cwd(tid):
        try:
            return os.readlink('/proc/%d/cwd' % tid)
        except OSError:
            return None

    pid = os.fork()
    if pid == 0:
        try:
            libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
    # TRACESYSGOOD | TRACECLONE | TRACEEXEC | EXITKILL
    libc.ptrace(0x4200, pid, None, ctypes.c_void_p(0x1 | 0x8 | 0x10 | 0x100000))

    def resume(tid, sig=0):
        libc.ptrace(24, tid, None, ctypes.c_void_p(sig))  # PTRACE_SYSCALL

    resume(pid)
    log = open(a.log, 'w') if a.log else None
    tids = {pid: 0}
    counts = {}
    pending = {}
    fired = []
    status = None
    killed = False
    regs, info = _Regs(), _SyscallInfo()
    while True:
        try:
            tid, st = os.waitpid(-1, 0x40000000)  # __WALL
        except ChildProcessError:
            break
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            if tid == pid:
                status = os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
            tids.pop(tid, None)
            continue
        if not os.WIFSTOPPED(st):
            continue
        sig = os.WSTOPSIG(st)
        if tid not in tids:
            tids[tid] = len(tids)
            if sig == signal.SIGSTOP:
                resume(tid)
                continue
        if killed:
            continue
        if st >> 16:
            resume(tid)  # clone/exec event
            continue
        if sig != (signal.SIGTRAP | 0x80):
            resume(tid, sig)  # a signal for the program
            continue
        libc.ptrace(0x420e, tid, ctypes.c_void_p(ctypes.sizeof(info)), ctypes.byref(info))
        if info.op == 2:  # exit
            pd = pending.pop(tid, None)
            if pd:
                rval = _signed(info.nr)
                if pd.get('errno'):
                    libc.ptrace(12, tid, None, ctypes.byref(regs))
                    regs.rax = (-pd['errno']) & ((1 << 64) - 1)
                    libc.ptrace(13, tid, None, ctypes.byref(regs))
                    rval = -pd['errno']
                if log:
                    log.write('%s\t%d\t%d\t%d\t%d\t%s\t%d%s\n' % (
                        pd['name'], pd['k'], tids.get(tid, -1), pd['mut'], pd['count'],
                        pd['desc'], rval, '\tINJECTED' if pd.get('injected') else ''))
            resume(tid)
            continue
        if info.op != 1 or info.nr not in SYSCALLS:
            resume(tid)
            continue
        name, fds, paths = SYSCALLS[info.nr]
        args = list(info.args)
        found = classify(tid, name, fds, paths, args)
        if not found:
            resume(tid)
            continue
        counts[name] = counts.get(name, 0) + 1
        k = counts[name]
        mut = name in MUTATING
        if name in ('open', 'openat'):
            mut = bool(args[1 if name == 'open' else 2] & O_WRITE_MASK)
        if name == 'copy_file_range':
            mut = any(True for _ in found)  # writes its output
        cnt = args[SHORT_ARG[name]] if name in SHORT_ARG else 0
        desc = '%s(%s)' % (name, ', '.join(rel(x) for x in found))
        pd = dict(name=name, k=k, mut=int(mut), desc=desc, count=cnt)
        pending[tid] = pd
        hit = fname == name and (k == fk or (persistent and k >= fk))
        if hit and fkind == 'short' and cnt <= 1:
            hit = False
        if hit:
            fired.append('%s:%s:%d %s' % (fkind, name, k, desc))
            pd['injected'] = True
            if fkind in ('kill', 'cut'):
                if fkind == 'cut' and a.at_point:
                    subprocess.run(a.at_point, shell=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                os.kill(pid, signal.SIGKILL)
                killed = True
                if log:
                    log.write('%s\t%d\t%d\t%d\t%d\t%s\tKILLED\tINJECTED\n' % (
                        name, k, tids.get(tid, -1), int(mut), cnt, desc))
                continue
            libc.ptrace(12, tid, None, ctypes.byref(regs))
            if fkind == 'short':
                setattr(regs, SHORT_REG[name], 1)
            else:
                regs.orig_rax = (1 << 64) - 1  # skip the call
                pd['errno'] = err_no
            libc.ptrace(13, tid, None, ctypes.byref(regs))
        resume(tid)
    if log:
        log.close()
    if a.report:
        with open(a.report, 'w') as f:
            f.write(''.join(x + '\n' for x in fired))
    sys.exit(status if status is not None else 125)


# ---------------------------------------------------------------------------
# the world: binary, fixtures, scenarios

class World:
    def __init__(self, args):
        self.args = args
        self.keep = args.keep
        self.timeout = args.timeout
        self.jobs = args.jobs or os.cpu_count() or 2
        self.py = args.python or sys.executable
        if args.workdir:
            os.makedirs(args.workdir, exist_ok=True)
            self.work = os.path.realpath(args.workdir)
        else:
            self.work = os.path.realpath(tempfile.mkdtemp(prefix='repozo-faults-'))
        # a private copy of the binary: other people may rebuild meanwhile
        bindir = os.path.join(self.work, 'bin')
        os.makedirs(bindir, exist_ok=True)
        self.bin = os.path.join(bindir, 'repozo')
        shutil.copy2(args.bin, self.bin)
        self.print_lock = threading.Lock()
        self.open_cache = {}
        self.open_lock = threading.Lock()
        self.fixture = None
        self.bfixture = None
        self.clean = {}
        self.counter = 0

    def log(self, msg):
        with self.print_lock:
            print(msg, flush=True)

    def new_dir(self, group, label):
        with self.print_lock:
            self.counter += 1
            n = self.counter
        d = os.path.join(self.work, group, '%05d-%s' % (n, re.sub(r'[^A-Za-z0-9_.+-]', '_', label)))
        os.makedirs(os.path.dirname(d), exist_ok=True)
        return d

    # -- running things -------------------------------------------------

    def env(self, now=None):
        env = dict(os.environ)
        env.pop('REPOZO_TEST_NOW', None)
        if now:
            env['REPOZO_TEST_NOW'] = now
        return env

    def repozo(self, cwd, args, now=None):
        return run([self.bin] + args, cwd=cwd, env=self.env(now), timeout=self.timeout)

    def zodbtool(self, *args, cwd=None):
        rc, out, err = run([self.py, ZODBTOOL] + list(args), cwd=cwd, timeout=max(120, self.timeout))
        if rc != 0:
            raise RuntimeError('zodbtool %s: %s' % (' '.join(args), err.decode(errors='replace').strip()))
        return out.decode().strip()

    def open_check(self, fs):
        """`zodbtool open FS --require-index`, cached on (data, index) bytes."""
        key = (sha(read_or_none(fs)), sha(read_or_none(fs + '.index')))
        with self.open_lock:
            if key in self.open_cache:
                return self.open_cache[key]
        rc, _, err = run([self.py, ZODBTOOL, 'open', fs, '--require-index'],
                         timeout=max(120, self.timeout))
        res = None if rc == 0 else err.decode(errors='replace').strip()
        with self.open_lock:
            self.open_cache[key] = res
        return res

    def must_ok(self, cwd, args, now=None):
        rc, out, err = self.repozo(cwd, args, now)
        if rc != 0:
            raise RuntimeError('repozo %s (in %s) failed: %s' % (' '.join(args), cwd, err.decode(errors='replace')))
        return out

    # -- fixtures -------------------------------------------------------

    def build_fixture(self):
        if self.fixture:
            return self.fixture
        t = time.time()
        fx = os.path.join(self.work, 'fixture')
        os.makedirs(fx)
        build = os.path.join(fx, 'build')
        os.makedirs(os.path.join(build, 'repo'))
        src = os.path.join(build, 'src.fs')
        self.zodbtool('create', src, '--seed', '1', '--txns', str(self.args.txns))
        s1 = read_or_none(src)
        self.must_ok(build, ['-B'] + BACKUP_ARGS, T0)
        self.zodbtool('append', src, '--seed', '2', '--txns', '3')
        self.must_ok(build, ['-B'] + BACKUP_ARGS, T1)
        s2 = read_or_none(src)
        self.zodbtool('append', src, '--seed', '3', '--txns', '5')
        s3 = read_or_none(src)
        size = int(self.zodbtool('size', src))
        assert size == len(s3), (size, len(s3))
        for junk in ('src.fs.lock', 'src.fs.tmp'):
            if os.path.exists(os.path.join(build, junk)):
                os.unlink(os.path.join(build, junk))

        def state(name, repo_from=None, src_files=True):
            d = os.path.join(fx, name)
            os.makedirs(d)
            if repo_from:
                shutil.copytree(repo_from, os.path.join(d, 'repo'), symlinks=True)
                lk = os.path.join(d, 'repo', LOCK_NAME)
                if os.path.exists(lk):
                    os.unlink(lk)
            else:
                os.makedirs(os.path.join(d, 'repo'))
            if src_files:
                shutil.copy2(src, os.path.join(d, 'src.fs'))
                shutil.copy2(src + '.index', os.path.join(d, 'src.fs.index'))
            return d

        state('empty')
        state('chain', os.path.join(build, 'repo'))
        # recover: the chain plus an increment to s3; out.fs = state at T0
        # (so that an incremental recovery appends two files)
        rec = state('recover', os.path.join(build, 'repo'))
        self.must_ok(rec, ['-BQ'] + BACKUP_ARGS, T2)
        self.must_ok(rec, ['-R', '-r', 'repo', '-D', T0, '-o', 'out.fs'])
        old_out = read_or_none(os.path.join(rec, 'out.fs'))
        old_index = read_or_none(os.path.join(rec, 'out.fs.index'))
        assert old_out == s1, 'fixture: recovery at T0 is not s1'
        new_index = read_or_none(os.path.join(rec, 'repo', T2 + '.index'))
        for n in ('src.fs', 'src.fs.index'):
            os.unlink(os.path.join(rec, n))
        os.unlink(os.path.join(rec, 'repo', LOCK_NAME))
        # orphan: an increment to s3 whose .dat line is missing (a crash
        # between the rename and the append)
        orph = state('orphan', os.path.join(rec, 'repo'))
        dat = os.path.join(orph, 'repo', T0 + '.dat')
        with open(dat, 'rb') as f:
            lines = f.read().splitlines(keepends=True)
        with open(dat, 'wb') as f:
            f.writelines(lines[:2])
        # power: the recover repository (chain + s3) and the source at s4
        pw = state('power', os.path.join(rec, 'repo'))
        self.zodbtool('append', os.path.join(pw, 'src.fs'), '--seed', '4', '--txns', '3')
        for junk in ('src.fs.lock', 'src.fs.tmp'):
            if os.path.exists(os.path.join(pw, junk)):
                os.unlink(os.path.join(pw, junk))
        s4 = read_or_none(os.path.join(pw, 'src.fs'))
        s4index = read_or_none(os.path.join(pw, 'src.fs.index'))
        # recover-foreign: out.fs is not a prefix of the state recovered
        # (a longer, other file): recovery goes through out.fs.part
        fo = state('recover-foreign', os.path.join(rec, 'repo'), src_files=False)
        with open(os.path.join(fo, 'out.fs'), 'wb') as f:
            f.write(s4)
        with open(os.path.join(fo, 'out.fs.index'), 'wb') as f:
            f.write(s4index)
        # pchain: the power repository plus an increment to s4 at T3 (full
        # and three increments, each with its .index); the source at s5
        pc = state('pchain', os.path.join(rec, 'repo'), src_files=False)
        for n in ('src.fs', 'src.fs.index'):
            shutil.copy2(os.path.join(pw, n), os.path.join(pc, n))
        self.must_ok(pc, ['-BQ'] + BACKUP_ARGS, T3)
        os.unlink(os.path.join(pc, 'repo', LOCK_NAME))
        # each date's state and the .index its backup wrote
        dates = [(T, data, read_or_none(os.path.join(pc, 'repo', T + '.index')))
                 for T, data in ((T0, s1), (T1, s2), (T2, s3), (T3, s4))]
        assert all(x[2] for x in dates), 'fixture: pchain lacks an .index'
        self.zodbtool('append', os.path.join(pc, 'src.fs'), '--seed', '5', '--txns', '3')
        for junk in ('src.fs.lock', 'src.fs.tmp'):
            if os.path.exists(os.path.join(pc, junk)):
                os.unlink(os.path.join(pc, junk))
        s5 = read_or_none(os.path.join(pc, 'src.fs'))
        # precover: pchain after a -BQ --prune-index at T4 (T1..T3 lose
        # their .index); out.fs recovered at T1 (its index rebuilt)
        prc = state('precover', os.path.join(pc, 'repo'), src_files=False)
        for n in ('src.fs', 'src.fs.index'):
            shutil.copy2(os.path.join(pc, n), os.path.join(prc, n))
        self.must_ok(prc, ['-BQ', '--prune-index'] + BACKUP_ARGS, T4)
        s5_index = read_or_none(os.path.join(prc, 'repo', T4 + '.index'))
        left = sorted(n for n in os.listdir(os.path.join(prc, 'repo')) if n.endswith('.index'))
        assert left == [T0 + '.index', T4 + '.index'], 'fixture: pruned to %s' % left
        self.must_ok(prc, ['-R', '-r', 'repo', '-D', T1, '-o', 'out.fs'])
        p_old = read_or_none(os.path.join(prc, 'out.fs'))
        p_old_index = read_or_none(os.path.join(prc, 'out.fs.index'))
        assert p_old == s2 and p_old_index == dates[1][2], 'fixture: rebuilt recovery at T1'
        for n in ('src.fs', 'src.fs.index', os.path.join('repo', LOCK_NAME)):
            os.unlink(os.path.join(prc, n))
        self.fixture = dict(dir=fx, s1=s1, s2=s2, s3=s3, s4=s4, new_index=new_index,
                            s5=s5, s5_index=s5_index, prune_dates=dates,
                            rec_old={'recover': (old_out, old_index),
                                     'recover-foreign': (s4, s4index),
                                     'precover': (p_old, p_old_index)},
                            rec_new={'precover': (s4, dates[3][2])})
        self.log('fixture: %d-byte source (%d bytes at T1), built in %.1fs'
                 % (len(s3), len(s2), time.time() - t))
        return self.fixture

    def build_blob_fixture(self):
        """The blob states: a `blobtool write` database with its blob
        directory, backed up with --blob-dir at T0 (full) and T1; grown
        (new blobs) to b2; a -BQ at T2; then packed and grown to b3 and a
        full backup at T3. Each state's bytes and `blobtool dump`."""
        if self.bfixture:
            return self.bfixture
        t = time.time()
        fx = os.path.join(self.work, 'bfixture')
        build = os.path.join(fx, 'build')
        os.makedirs(os.path.join(build, 'repo'))
        src = os.path.join(build, 'src.fs')
        blobs = os.path.join(build, 'blobs')
        states = {}  # stamp -> (bytes, dump)

        def blobtool(*args):
            rc, out, err = run([self.py, BLOBTOOL] + [str(a) for a in args], cwd=build,
                               timeout=max(120, self.timeout))
            if rc != 0:
                raise RuntimeError('blobtool %s: %s' % (' '.join(map(str, args)),
                                                         err.decode(errors='replace').strip()))
            return out.decode()

        def at(stamp):
            states[stamp] = (read_or_none(src), self.blob_dump(src, blobs))

        def state(name, with_src=True):
            d = os.path.join(fx, name)
            shutil.copytree(os.path.join(build, 'repo'), os.path.join(d, 'repo'), symlinks=True)
            for junk in (LOCK_NAME, SUMS_NAME):
                if os.path.exists(os.path.join(d, 'repo', junk)):
                    os.unlink(os.path.join(d, 'repo', junk))
            if with_src:
                shutil.copy2(src, os.path.join(d, 'src.fs'))
                shutil.copy2(src + '.index', os.path.join(d, 'src.fs.index'))
                shutil.copytree(blobs, os.path.join(d, 'blobs'), symlinks=True)
            return d

        def clean_src():
            for junk in ('src.fs.lock', 'src.fs.tmp', 'src.fs.old'):
                if os.path.exists(os.path.join(build, junk)):
                    os.unlink(os.path.join(build, junk))

        blobtool('write', src, blobs, '--seed', 11, '--txns', 8)
        clean_src()
        self.must_ok(build, ['-B'] + BACKUP_ARGS + BLOB_ARGS, T0)
        at(T0)
        blobtool('write', src, blobs, '--seed', 12, '--txns', 5)
        clean_src()
        self.must_ok(build, ['-B'] + BACKUP_ARGS + BLOB_ARGS, T1)
        at(T1)
        blobtool('write', src, blobs, '--seed', 13, '--txns', 5)
        clean_src()
        at(T2)
        os.makedirs(os.path.join(fx, 'bempty', 'repo'))
        shutil.copy2(src, os.path.join(fx, 'bempty', 'src.fs'))
        shutil.copy2(src + '.index', os.path.join(fx, 'bempty', 'src.fs.index'))
        shutil.copytree(blobs, os.path.join(fx, 'bempty', 'blobs'), symlinks=True)
        state('bchain')
        self.must_ok(build, ['-BQ'] + BACKUP_ARGS + BLOB_ARGS, T2)
        blobtool('pack', src, blobs)
        blobtool('write', src, blobs, '--seed', 14, '--txns', 4)
        clean_src()
        at(T3)
        state('bpacked')
        self.must_ok(build, ['-B'] + BACKUP_ARGS + BLOB_ARGS, T3)
        state('brecover', with_src=False)
        # standbys: earlier recoveries with their blob directories
        rec = {}
        for name, date in (('bstandby', T1), ('bstandby0', T0)):
            d = state(name, with_src=False)
            self.must_ok(d, REC_BLOB_ARGS[:1] + ['-D', date] + REC_BLOB_ARGS[1:])
            rec[name] = (read_or_none(os.path.join(d, 'out.fs')),
                         read_or_none(os.path.join(d, 'out.fs.index')), states[date][1])
            assert rec[name][0] == states[date][0], 'bfixture: recovery at %s' % date
            assert rec[name][2] == self.blob_dump(os.path.join(d, 'out.fs'),
                                                  os.path.join(d, OUT_BLOBS)), 'bfixture: standby dump'
        # what each recovery scenario must give (bytes, index, dump, blob files)
        news = {}
        for scen, date in (('blob-recover', T3), ('blob-standby', T3),
                           ('blob-standby-inplace', T2)):
            d = os.path.join(fx, 'new-' + scen)
            os.makedirs(d)
            self.must_ok(build, ['-R', '-D', date, '-r', 'repo', '-o', os.path.join(d, 'out.fs'),
                                 '--blob-dir', os.path.join(d, OUT_BLOBS)])
            out = os.path.join(d, 'out.fs')
            news[scen] = dict(new=read_or_none(out), new_index=read_or_none(out + '.index'),
                              new_dump=self.blob_dump(out, os.path.join(d, OUT_BLOBS)),
                              new_tree=snapshot(os.path.join(d, OUT_BLOBS)))
            assert news[scen]['new'] == states[date][0], 'bfixture: recovery of %s' % scen
            assert news[scen]['new_dump'] == states[date][1], 'bfixture: dump of %s' % scen
        news['blob-recover'].update(old=None, old_index=None, old_dump=None)
        for scen, name in (('blob-standby', 'bstandby'), ('blob-standby-inplace', 'bstandby0')):
            news[scen].update(old=rec[name][0], old_index=rec[name][1], old_dump=rec[name][2])
        for name in (T0, T1, T2, T3):
            assert 'missing' not in states[name][1], 'bfixture: a blob is missing at %s' % name
        self.bfixture = dict(dir=fx, states=states, rec=news)
        self.log('blob fixture: %d-byte source, %d blob files, built in %.1fs'
                 % (len(states[T3][0]), len([n for n in snapshot(blobs) if n.endswith('.blob')]),
                    time.time() - t))
        return self.bfixture

    def blob_expect(self, scen):
        """Blob backup scenarios: (old (bytes, dump) or None, new (bytes,
        dump), earlier [(date, bytes, dump)], whether the run removes the
        old chain)."""
        st = self.build_blob_fixture()['states']
        state = SCENARIOS[scen][0]
        if state == 'bempty':
            return None, st[T2], [], False
        if state == 'bchain':
            return st[T1], st[T2], [(T0,) + st[T0], (T1,) + st[T1]], False
        assert state == 'bpacked', scen
        return st[T2], st[T3], [(T0,) + st[T0], (T1,) + st[T1], (T2,) + st[T2]], True

    def rec_expect(self, scen):
        """Recovery scenarios: dict(old, old_index, new, new_index, and with
        blobs old_dump, new_dump, new_tree)."""
        if is_blob(scen):
            return self.build_blob_fixture()['rec'][scen]
        fx = self.build_fixture()
        old, old_index = fx['rec_old'][SCENARIOS[scen][0]]
        new, new_index = fx['rec_new'].get(SCENARIOS[scen][0], (fx['s3'], fx['new_index']))
        return dict(old=old, old_index=old_index, new=new, new_index=new_index)

    def blob_dump(self, fs, bdir):
        """`blobtool dump FS BDIR` (its output, or FAILED and its error),
        run on copies (ZODB creates tmp/ and .layout), cached on the
        content of both."""
        key = ('dump', sha(read_or_none(fs)), tree_sha(bdir))
        with self.open_lock:
            if key in self.open_cache:
                return self.open_cache[key]
        td = tempfile.mkdtemp(prefix='dump-', dir=self.work)
        try:
            shutil.copy2(fs, os.path.join(td, 'x.fs'))
            if os.path.isdir(bdir):
                shutil.copytree(bdir, os.path.join(td, 'b'), symlinks=True)
            rc, out, err = run([self.py, BLOBTOOL, 'dump', os.path.join(td, 'x.fs'),
                                os.path.join(td, 'b')], timeout=max(120, self.timeout))
        finally:
            shutil.rmtree(td, ignore_errors=True)
        res = out.decode() if rc == 0 else 'FAILED (%s): %s %s' % (
            rc, err.decode(errors='replace').strip(), out.decode(errors='replace').strip())
        with self.open_lock:
            self.open_cache[key] = res
        return res

    def zodb_recover(self, d, date, out):
        """ZODB's repozo -R -D DATE -o OUT in D (OUT and OUT.index removed
        first: it leaves an old OUT.index beside the new OUT when the
        backup's .index is missing). Returns (rc, OUT bytes, OUT.index bytes
        or None, stderr), cached on the repository's files and the date."""
        key = ('zodb -R', tree_sha(os.path.join(d, 'repo')), date)
        with self.open_lock:
            if key in self.open_cache:
                return self.open_cache[key]
        for p in (out, out + '.index'):
            if os.path.exists(p):
                os.unlink(p)
        rc, _, err = run([self.py, PYREPOZO, '-R', '-r', 'repo', '-D', date, '-o', out], cwd=d,
                         timeout=max(120, self.timeout))
        res = (rc, read_or_none(out), read_or_none(out + '.index'), err)
        if rc == 0:
            with self.open_lock:
                self.open_cache[key] = res
        return res

    def state_dir(self, scen):
        if SCENARIOS[scen][0] in BLOB_STATES:
            return os.path.join(self.build_blob_fixture()['dir'], SCENARIOS[scen][0])
        return os.path.join(self.build_fixture()['dir'], SCENARIOS[scen][0])

    def old_new(self, scen):
        """(old, new) recovered bytes for a scenario (old None: no backup)."""
        if is_blob(scen):
            if SCENARIOS[scen][2] == 'recover':
                e = self.rec_expect(scen)
                return e['old'], e['new']
            old, new, _, _ = self.blob_expect(scen)
            return (old and old[0]), new[0]
        fx = self.build_fixture()
        st = SCENARIOS[scen][0]
        if SCENARIOS[scen][2] == 'recover':
            e = self.rec_expect(scen)
            return e['old'], e['new']
        if st == 'power':
            return fx['s3'], fx['s4']
        if st == 'pchain':
            return fx['s4'], fx['s5']
        return (None if st == 'empty' else fx['s2']), fx['s3']

    def copy_state(self, scen, dest):
        shutil.copytree(self.state_dir(scen), dest, symlinks=True)
        os.makedirs(os.path.join(dest, 'chk'), exist_ok=True)

    # -- clean runs and fault points ------------------------------------

    def inject_cmd(self, tdir, args, fault=None, at_point=None, log=None):
        cmd = [self.py, THIS, '_inject', '--scope', tdir,
               '--report', os.path.join(tdir, 'inject.report')]
        if log:
            cmd += ['--log', log]
        if fault:
            cmd += ['--fault', fault]
        if at_point:
            cmd += ['--at-point', at_point]
        return cmd + ['--', self.bin] + args

    def clean_run(self, scen):
        """Trace one clean run; returns dict(points, end, dir)."""
        with self.open_lock:
            if scen in self.clean:
                return self.clean[scen]
        d = os.path.join(self.work, 'clean', scen)
        shutil.rmtree(d, ignore_errors=True)
        self.copy_state(scen, d)
        log = os.path.join(d, 'calls.log')
        rc, out, err = run(self.inject_cmd(d, SCENARIOS[scen][1], log=log), cwd=d,
                           env=self.env(T_RUN), timeout=self.timeout)
        if rc != 0:
            raise RuntimeError('clean run of %s failed (%s): %s' % (scen, rc, err.decode(errors='replace')))
        points = parse_calls(log)
        end = self.end_state(scen, d)
        res = dict(points=points, end=end, dir=d)
        # the untraced clean run must end in the same state
        d2 = d + '-plain'
        shutil.rmtree(d2, ignore_errors=True)
        self.copy_state(scen, d2)
        rc, _, err = self.repozo(d2, SCENARIOS[scen][1], T_RUN)
        if rc != 0 or self.end_state(scen, d2) != end:
            raise RuntimeError('clean run of %s is not reproducible' % scen)
        with self.open_lock:
            self.clean[scen] = res
        return res

    def end_state(self, scen, d):
        if SCENARIOS[scen][2] == 'recover':
            res = dict(out=sha(read_or_none(os.path.join(d, 'out.fs'))),
                       index=sha(read_or_none(os.path.join(d, 'out.fs.index'))),
                       repo=snapshot(os.path.join(d, 'repo')))
            if is_blob(scen):
                res['outblobs'] = snapshot(os.path.join(d, OUT_BLOBS))
            return res
        res = dict(repo=snapshot(os.path.join(d, 'repo')),
                   src=sha(read_or_none(os.path.join(d, 'src.fs'))),
                   srcindex=sha(read_or_none(os.path.join(d, 'src.fs.index'))))
        if is_blob(scen):
            res['srcblobs'] = tree_sha(os.path.join(d, 'blobs'))
        return res


def is_blob(scen):
    return SCENARIOS[scen][0] in BLOB_STATES


def is_prune(scen):
    return SCENARIOS[scen][0] in PRUNE_STATES


def parse_calls(log):
    """The calls an `_inject --log` run made on trial files: a list of
    dicts (name, k, thread, mutating, count, desc, result)."""
    points = []
    with open(log, errors='replace') as f:
        for line in f:
            parts = line.rstrip('\n').split('\t')
            if len(parts) < 7:
                continue
            points.append(dict(name=parts[0], k=int(parts[1]), thread=int(parts[2]),
                               mut=parts[3] == '1', count=int(parts[4]), desc=parts[5],
                               result=parts[6]))
    return points


# ---------------------------------------------------------------------------
# faults

class Fault:
    """kind: kill | EIO | EIO+ | ENOSPC | ENOSPC+ | EACCES | EACCES+ | EINTR | short
    | EXDEV | EXDEV+ | EOPNOTSUPP | EOPNOTSUPP+ (see FALLBACK_FAULTS)."""

    def __init__(self, kind, syscall, k, desc=''):
        self.kind, self.syscall, self.k, self.desc = kind, syscall, k, desc

    @property
    def id(self):
        return '%s:%s:%d' % (self.kind, self.syscall, self.k)

    @property
    def persistent(self):
        return self.kind.endswith('+')

    def command(self, world, tdir, args):
        return world.inject_cmd(tdir, args, fault=self.id)

    def fired(self, tdir):
        report = read_or_none(os.path.join(tdir, 'inject.report'))
        return bool(report and report.strip())


def is_acceptable_verify_line(line, old_empty):
    return ('(an orphan' in line or 'ends with a torn line' in line
            or re.search(r'cannot read \S+\.dat: No such file', line) is not None
            or (old_empty and 'No files in repository' in line))


class Trial:
    def __init__(self, world, mode, scen, fault):
        self.w, self.mode, self.scen, self.fault = world, mode, scen, fault
        self.notes = []
        self.dir, self.cmd, self.rc, self.err = '(not created)', [], None, b''

    @property
    def repro(self):
        return 'scripts/faults.sh %s --scenario %s --only %s --keep' % (self.mode, self.scen, self.fault.id)

    def run(self):
        w = self.w
        self.dir = w.new_dir(self.mode, '%s-%s' % (self.scen, self.fault.id))
        w.copy_state(self.scen, self.dir)
        args = SCENARIOS[self.scen][1]
        self.cmd = self.fault.command(w, self.dir, args)
        rc, out, err = run(self.cmd, cwd=self.dir, env=w.env(T_RUN), timeout=w.timeout)
        self.rc, self.err = rc, err
        try:
            must(rc != 'timeout', 'timed out after %ss' % w.timeout)
            must(self.fault.fired(self.dir), 'the fault did not fire (the calls differ from the clean run)')
            if self.mode == 'kill-sweep':
                oracle_kill(self, rc, err)
            elif self.fault.kind in ('EINTR', 'short') or \
                    self.fault.kind in FALLBACK_FAULTS.get(self.fault.syscall, ()):
                oracle_retry(self, rc, err)
            else:
                oracle_error(self, rc, err)
        except Failure as e:
            return str(e)
        return None

    def describe(self, problem):
        cmd = 'cd %s && REPOZO_TEST_NOW=%s %s' % (self.dir, T_RUN, ' '.join(shlex.quote(c) for c in self.cmd))
        lines = ['FAIL %s %s %s (%s): %s' % (self.mode, self.scen, self.fault.id, self.fault.desc, problem),
                 '  exit %s; stderr: %s' % (self.rc, ' | '.join(errlines(self.err))[:400] or '(empty)'),
                 '  repro: ' + self.repro]
        if self.w.keep:
            lines.append('  raw:   ' + cmd)
        return '\n'.join(lines)


# -- oracles ------------------------------------------------------------------

def check_repaired(t, now=T_FIX, label='repair', state='old'):
    """A plain -BQ, then -V, then -R equal to the source, opened by ZODB
    (with blobs: -BQ --blob-dir, and every earlier state recovers with
    its blobs)."""
    w, d = t.w, t.dir
    blob = is_blob(t.scen)
    prune = ['--prune-index'] if is_prune(t.scen) else []
    rc, _, err = w.repozo(d, ['-BQ'] + prune + BACKUP_ARGS + (BLOB_ARGS if blob else []), now)
    must(rc == 0, '%s -BQ failed (%s): %s' % (label, rc, ' | '.join(errlines(err))))
    rc, _, err = w.repozo(d, ['-V', '-r', 'repo'])
    must(rc == 0, '-V after the %s -BQ failed: %s' % (label, ' | '.join(errlines(err))))
    check_recovers_new(t, 'post')
    if blob:
        check_earlier(t, 'after the %s' % label, state)
    if prune:
        check_pruned(t, 'after the %s -BQ --prune-index' % label)
        check_prune_dates(t, 'after the %s' % label, 'new')


def check_pruned(t, label):
    """After a complete -B --prune-index: of the .index files of the
    files the .dat lists, only the full backup's and the newest's are
    left."""
    repo = os.path.join(t.dir, 'repo')
    with open(os.path.join(repo, T0 + '.dat'), 'rb') as f:
        listed = [os.path.basename(l.split()[0].decode()) for l in f.read().splitlines() if l.strip()]
    stamps = [n.rsplit('.', 1)[0] for n in listed]
    have = [st for st in stamps if os.path.exists(os.path.join(repo, st + '.index'))]
    must(have == [stamps[0], stamps[-1]], '%s: the .index files of the chain are %s, not those of '
         '%s and %s' % (label, have, stamps[0], stamps[-1]))


def check_prune_dates(t, label, state):
    """--prune-index backups: every earlier date recovers (ours) to the
    bytes saved then with FILE.index equal to the .index its backup wrote,
    rebuilt where it was pruned; ZODB's repozo recovers the same bytes
    (with that .index, or none where it was pruned); the newest state
    recovers with the .index of its backup."""
    w, d = t.w, t.dir
    fx = w.build_fixture()
    dates = fx['prune_dates']
    for i, (date, data, index) in enumerate(dates):
        out = os.path.join(d, 'chk', 'pd%d.fs' % i)
        for p in (out, out + '.index'):
            if os.path.exists(p):
                os.unlink(p)
        rc, _, err = w.repozo(d, ['-R', '-r', 'repo', '-D', date, '-o', out])
        must(rc == 0, '-R -D %s %s failed (%s): %s' % (date, label, rc, ' | '.join(errlines(err))))
        must(read_or_none(out) == data, '-R -D %s %s: not the bytes saved then' % (date, label))
        got = read_or_none(out + '.index')
        must(got == index, '-R -D %s %s: FILE.index is %s, not the .index the backup wrote'
             % (date, label, 'missing' if got is None else 'different'))
        zrc, zdata, zindex, zerr = w.zodb_recover(d, date, os.path.join(d, 'chk', 'zd%d.fs' % i))
        must(zrc == 0, "ZODB's repozo -R -D %s %s failed (%s): %s"
             % (date, label, zrc, ' | '.join(errlines(zerr))[:300]))
        must(zdata == data, "ZODB's repozo -R -D %s %s: not the bytes saved then" % (date, label))
        must(zindex in (None, index), "ZODB's repozo -R -D %s %s: a FILE.index that is not the "
             "backup's" % (date, label))
    out = os.path.join(d, 'chk', 'pdnew.fs')
    rc, _, err = w.repozo(d, ['-R', '-r', 'repo', '-o', out])
    must(rc == 0, '-R %s failed (%s): %s' % (label, rc, ' | '.join(errlines(err))))
    data, got = read_or_none(out), read_or_none(out + '.index')
    want = {fx['s4']: dates[-1][2], fx['s5']: fx['s5_index']}.get(data)
    must(want is not None, '-R %s: neither the old nor the new state' % label)
    must(got == want, '-R %s: FILE.index is %s, not the .index the backup wrote'
         % (label, 'missing' if got is None else 'different'))


def recover_args(t, out, date=None):
    """-R into chk/: with --blob-dir OUT.blobs for blob scenarios."""
    args = ['-R', '-r', 'repo', '-o', out] + (['-D', date] if date else [])
    if is_blob(t.scen):
        shutil.rmtree(out + '.blobs', ignore_errors=True)
        args += ['--blob-dir', out + '.blobs']
    return args


def check_dump(t, out, want, what, bdir=None):
    """The blobs ZODB reads from OUT with BDIR (default OUT.blobs) are WANT
    (a saved `blobtool dump`)."""
    got = t.w.blob_dump(out, bdir or out + '.blobs')
    if got != want:
        gl, wl = got.splitlines(), want.splitlines()
        diff = [('+' + x) for x in gl if x not in wl] + [('-' + x) for x in wl if x not in gl]
        raise Failure('%s: blobtool dump differs from the saved one: %s'
                      % (what, ' | '.join(diff[:4]) or got[:200]))


def check_recovers_new(t, name):
    w, d = t.w, t.dir
    _, new = w.old_new(t.scen)
    out = os.path.join(d, 'chk', name + '.fs')
    rc, _, err = w.repozo(d, recover_args(t, out))
    must(rc == 0, '-R failed (%s): %s' % (rc, ' | '.join(errlines(err))))
    data = read_or_none(out)
    must(data == new, '-R gave %d bytes, not the source\'s %d committed bytes%s'
         % (len(data), len(new), ' (a prefix)' if new.startswith(data) else ''))
    problem = w.open_check(out)
    must(problem is None, 'ZODB cannot open the recovery with its index: %s' % problem)
    if is_blob(t.scen) and SCENARIOS[t.scen][2] == 'backup':
        check_dump(t, out, w.blob_expect(t.scen)[1][1], '-R --blob-dir of the new state')


def check_earlier(t, label, state='old'):
    """Blob backups: every earlier backup date recovers with --blob-dir to
    the bytes and blobs saved then. After a run that removes the old chain
    (--keep) and committed, such a recovery may fail, never be wrong."""
    w, d = t.w, t.dir
    _, _, earlier, drops = w.blob_expect(t.scen)
    for i, (date, data, dump) in enumerate(earlier):
        out = os.path.join(d, 'chk', 'at%d.fs' % i)
        rc, _, err = w.repozo(d, recover_args(t, out, date))
        if rc != 0 and drops and state == 'new':
            continue
        must(rc == 0, '-R -D %s %s failed (%s): %s' % (date, label, rc, ' | '.join(errlines(err))))
        must(read_or_none(out) == data, '-R -D %s %s: not the bytes saved then' % (date, label))
        check_dump(t, out, dump, '-R -D %s --blob-dir %s' % (date, label))


def check_old_or_new(t, label):
    """-V passes or reports only orphans/torn lines/a missing .dat; -R gives
    old or new (with blobs: and ZODB reads the blobs saved then, and every
    earlier date still recovers). Returns (state, what -V reported or
    None)."""
    w, d = t.w, t.dir
    old, new = w.old_new(t.scen)
    rc, _, err = w.repozo(d, ['-V', '-r', 'repo'])
    report = None
    if rc != 0:
        bad = [l for l in errlines(err) if not is_acceptable_verify_line(l, old is None)]
        must(not bad, '-V %s: %s' % (label, ' | '.join(bad)))
        report = ('orphan' if b'orphan' in err else 'torn .dat' if b'torn' in err else
                  'missing .dat' if b'.dat' in err else 'no files')
        t.notes.append('-V reports ' + report)
    out = os.path.join(d, 'chk', 'pre.fs')
    rc, _, err = w.repozo(d, recover_args(t, out))
    if rc != 0:
        must(old is None and b'No files in repository' in err,
             '-R %s failed: %s' % (label, ' | '.join(errlines(err))))
        return 'old', report
    data = read_or_none(out)
    if data == old:
        state = 'old'
    else:
        must(data == new, '-R %s gave %d bytes: neither the old (%s) nor the new (%d) state'
             % (label, len(data), 'none' if old is None else len(old), len(new)))
        state = 'new'
    if is_blob(t.scen):
        o, n, _, _ = w.blob_expect(t.scen)
        check_dump(t, out, (o if state == 'old' else n)[1],
                   '-R --blob-dir %s (the %s state)' % (label, state))
        check_earlier(t, label, state)
    if is_prune(t.scen):
        check_prune_dates(t, label, state)
    return state, report


def check_source_untouched(t):
    clean = t.w.clean_run(t.scen)['end']
    now = t.w.end_state(t.scen, t.dir)
    must(now['src'] == clean['src'] and now['srcindex'] == clean['srcindex'],
         'the source Data.fs or its index changed')
    must(now.get('srcblobs') == clean.get('srcblobs'), 'the source blob directory changed')


def appends_in_place(scen):
    """Whether a recovery scenario extends the old out.fs in place (then a
    crash or an error may leave a longer prefix of the new state, which the
    next run completes) rather than going through out.fs.part."""
    st, args, _ = SCENARIOS[scen]
    return st in ('recover', 'bstandby0', 'precover') and '-F' not in args


def check_output_consistent(t):
    """Recovery scenarios: out.fs is the old or the new bytes (or, when it
    is extended in place, a prefix of the new bytes longer than the old),
    and out.fs.index is absent or belongs to it. With blobs, ZODB reads
    from out.blobs the blobs of whichever state out.fs holds. Returns old,
    new or prefix."""
    e = t.w.rec_expect(t.scen)
    old, old_index, new = e['old'], e['old_index'], e['new']
    d = t.dir
    data = read_or_none(os.path.join(d, 'out.fs'))
    index = read_or_none(os.path.join(d, 'out.fs.index'))
    blob = is_blob(t.scen)
    if data == old:
        must(index in (None, old_index), 'out.fs is the old state but out.fs.index is not its index')
        if blob and old is not None:
            check_dump(t, os.path.join(d, 'out.fs'), e['old_dump'], 'the old out.fs with out.blobs',
                       os.path.join(d, OUT_BLOBS))
        return 'old'
    must(data is not None, 'out.fs is gone')
    if data == new:
        must(index in (None, e['new_index']), 'out.fs is the new state but out.fs.index is not its index')
        if blob:
            check_dump(t, os.path.join(d, 'out.fs'), e['new_dump'], 'the new out.fs with out.blobs',
                       os.path.join(d, OUT_BLOBS))
        return 'new'
    if (appends_in_place(t.scen) and old is not None and len(old) < len(data) < len(new)
            and new.startswith(data)):
        must(index is None, 'out.fs is partly extended but out.fs.index is still there')
        return 'prefix'
    must(False, 'out.fs has %d bytes: neither the old (%s) nor the new (%d) state%s'
         % (len(data), 'none' if old is None else len(old), len(new),
            ' nor a prefix of it' if appends_in_place(t.scen) else ''))


def rerun_recover(t):
    w, d = t.w, t.dir
    e = w.rec_expect(t.scen)
    rc, _, err = w.repozo(d, SCENARIOS[t.scen][1])
    must(rc == 0, 'recovery rerun without the fault failed (%s): %s' % (rc, ' | '.join(errlines(err))))
    must(read_or_none(os.path.join(d, 'out.fs')) == e['new'], 'recovery rerun: out.fs is not the new state')
    must(read_or_none(os.path.join(d, 'out.fs.index')) == e['new_index'], 'recovery rerun: wrong out.fs.index')
    must(not os.path.exists(os.path.join(d, 'out.fs.part')), 'recovery rerun left out.fs.part')
    if is_blob(t.scen):
        left = leftovers(os.path.join(d, OUT_BLOBS))
        must(not left, 'recovery rerun left ' + ' '.join(left))
        now = snapshot(os.path.join(d, OUT_BLOBS))
        must(now == e['new_tree'], 'recovery rerun: out.blobs is not the clean run\'s: %s'
             % snap_diff(e['new_tree'], now))
        check_dump(t, os.path.join(d, 'out.fs'), e['new_dump'], 'recovery rerun',
                   os.path.join(d, OUT_BLOBS))


def oracle_kill(t, rc, err):
    """T1: killed before the k-th call of a mutating syscall."""
    must(rc == 137, 'not killed: exit %s' % rc)
    kind = SCENARIOS[t.scen][2]
    if kind == 'recover':
        state = check_output_consistent(t)
        t.notes.append('output ' + state)
        left = leftovers(t.dir)
        if left:
            t.notes.append('left by the kill: ' + ' '.join(left))
        rerun_recover(t)
        return
    check_source_untouched(t)
    state, _ = check_old_or_new(t, 'after the kill')
    t.notes.append('state ' + state)
    check_repaired(t, state=state)
    left = leftovers(os.path.join(t.dir, 'repo'))
    if left:
        t.notes.append('stale temporary files survive the repair backup')


def phase_of(world, scen, fault):
    """Where a fault point lies in a clean backup: 'work' (before the .dat
    that commits the backup is written), 'commit' (that write or rename and
    the fsync that makes it durable) or 'cleanup' (the sums cache and -k
    removals after it)."""
    pts = world.clean_run(scen)['points']
    commit = None
    for i, p in enumerate(pts):
        if p['mut'] and p['name'] in ('write', 'pwrite64', 'rename', 'renameat2') and '.dat' in p['desc'].split(', ')[-1]:
            commit = i
    idx = next((i for i, p in enumerate(pts) if p['name'] == fault.syscall and p['k'] == fault.k), None)
    if commit is None or idx is None or idx < commit:
        return 'work'
    # the commit is durable once the fsync after it (of the .dat, or of the
    # directory after the rename) returns; what follows (our sums cache,
    # -k removals) is cleanup
    j = commit + 1
    while j < len(pts) and pts[j]['name'] not in ('fsync', 'fdatasync'):
        j += 1
    return 'commit' if idx <= j else 'cleanup'


def judge_failed_backup(t, start):
    """After a backup that failed cleanly: the repository is unchanged, or
    -V passes and -R gives the old state (strict), or (--lenient, or a -k
    removal after a complete backup) an orphan / a committed new state."""
    w, d, f = t.w, t.dir, t.fault
    now = snapshot(os.path.join(d, 'repo'))
    if now == start:
        return
    state, report = check_old_or_new(t, 'after the error')
    if report == 'no files' and state == 'old':
        # into an empty repository: only stored blob revisions (no list
        # names them) may be left; nothing recovers
        t.notes.append('changed but still empty: ' + snap_diff(start, now))
        return
    phase = phase_of(w, t.scen, f) if f.syscall in SYSCALL_NAMES else 'work'
    if state == 'new' and phase == 'cleanup':
        t.notes.append('complete backup, then a -k cleanup error')
        return
    if state == 'new' and report is None:
        problem = ('exit 1 but the new backup is committed (%s failed at the commit: '
                   'not known to be durable)' % f.syscall)
    elif report is not None:
        problem = ('exit 1 but a data file stays published (-V: %s; -R gives the %s state)'
                   % (report, state))
    else:
        t.notes.append('changed but old state: ' + snap_diff(start, now))
        return
    if w.args.lenient:
        t.notes.append('lenient: ' + problem)
    else:
        raise Failure(problem)


def check_cleanup_left(t, clean, now, err):
    """Exit 0 after an error in the cleanup that follows a committed backup
    (-k removals): the backup is the clean run's, the only difference is
    files of the old state the clean run removed, a warning says so, and
    the next run removes them."""
    w, d = t.w, t.dir
    start = snapshot(os.path.join(w.state_dir(t.scen), 'repo'))
    for k in clean:
        if k != 'repo':
            must(now[k] == clean[k], 'exit 0 after a cleanup error, but %s differs' % k)
    cr, nr = clean['repo'], now['repo']
    extra = set(nr) - set(cr)
    must(all(nr.get(n) == h for n, h in cr.items()),
         'exit 0 after a cleanup error, but the new backup differs: ' + snap_diff(cr, nr))
    must(all(start.get(n) == nr[n] for n in extra),
         'exit 0 after a cleanup error, but new files: ' + snap_diff(cr, nr))
    must(b'repozo: warning:' in err, 'exit 0 after a cleanup error without a warning: '
         + ' | '.join(errlines(err)))
    rc, _, err = w.repozo(d, ['-V', '-r', 'repo'])
    must(rc == 0, '-V after the cleanup error failed: %s' % ' | '.join(errlines(err)))
    check_recovers_new(t, 'post')
    if is_prune(t.scen):
        check_prune_dates(t, 'after the cleanup error', 'new')
    rc, _, err = w.repozo(d, SCENARIOS[t.scen][1], T_RUN)
    must(rc == 0, 'rerun without the fault failed (%s): %s' % (rc, ' | '.join(errlines(err))))
    after = snapshot(os.path.join(d, 'repo'))
    must(not (extra & set(after)), 'the rerun did not remove what the cleanup left: '
         + ' '.join(sorted(extra & set(after))))
    if is_prune(t.scen):
        check_pruned(t, 'after the rerun')
        check_prune_dates(t, 'after the rerun', 'new')
    t.notes.append('committed, cleanup error: a warning, left %d file(s)' % len(extra))


def oracle_error(t, rc, err):
    """T4: an injected error (once or persistent). The run must fail
    cleanly (exit 1, one "repozo: " line, no temporary files) and leave the
    repository as it was, or changed such that -V passes and -R gives the
    old state; a rerun without the fault must succeed. With --lenient, an
    orphan left behind or a backup published before the error are only
    noted (the kill-sweep accepts both)."""
    w, d = t.w, t.dir
    kind = SCENARIOS[t.scen][2]
    clean = w.clean_run(t.scen)['end']
    f = t.fault
    lines = errlines(err)
    must(b'panicked' not in err, 'panic: ' + ' | '.join(lines))
    left = leftovers(os.path.join(d, 'repo'), d, os.path.join(d, 'chk'))
    if left and f.persistent and f.syscall in ('unlink', 'unlinkat'):
        t.notes.append('left (unlink fails): ' + ' '.join(left))
        left = []
    if rc == 0:
        must(not left, 'exit 0 but left ' + ' '.join(left))
        now = w.end_state(t.scen, d)
        phase = phase_of(w, t.scen, f) if f.syscall in SYSCALL_NAMES else 'work'
        # a persistent error tolerated before the commit (a stat while
        # listing) may still fail the cleanup after it, with a warning
        if now != clean and kind == 'backup' and (
                phase == 'cleanup' or (f.persistent and b'repozo: warning:' in err)):
            check_cleanup_left(t, clean, now, err)
            return
        must(now == clean, 'exit 0 but the result differs from the clean run: %s'
             % explain_diff(clean['repo'], now['repo']))
        t.notes.append('tolerated (exit 0, same result)')
        return
    must(rc == 1, 'exit status %s, not 1' % rc)
    must(len(lines) == 1 and lines[0].startswith('repozo: '),
         'stderr is not one "repozo: " line: %r' % lines[:5])
    must(not left, 'temporary files left behind: ' + ' '.join(left))
    if kind == 'recover':
        state = check_output_consistent(t)
        if state == 'new':
            t.notes.append('output replaced, then an error')
        elif state == 'prefix':
            t.notes.append('output partly extended, then an error')
        rerun_recover(t)
        return
    check_source_untouched(t)
    judge_failed_backup(t, snapshot(os.path.join(w.state_dir(t.scen), 'repo')))
    # a rerun without the fault succeeds and gives the new state
    rc, _, err = w.repozo(d, SCENARIOS[t.scen][1], T_RUN)
    must(rc == 0, 'rerun without the fault failed (%s): %s' % (rc, ' | '.join(errlines(err))))
    rc, _, err = w.repozo(d, ['-V', '-r', 'repo'])
    must(rc == 0, '-V after the rerun failed: %s' % ' | '.join(errlines(err)))
    check_recovers_new(t, 'post')
    if is_blob(t.scen):
        check_earlier(t, 'after the rerun', 'new')
    if is_prune(t.scen):
        check_pruned(t, 'after the rerun')
        check_prune_dates(t, 'after the rerun', 'new')


def oracle_retry(t, rc, err):
    """EINTR where the kernel may return it, and short reads/writes: the run
    must succeed with byte-identical results."""
    w, d = t.w, t.dir
    clean = w.clean_run(t.scen)['end']
    lines = errlines(err)
    if rc != 0 and t.fault.kind == 'EINTR' and t.fault.syscall in ('open', 'openat'):
        # Rust retries open(2) of files, but opendir(3) does not; Linux
        # returns EINTR there only on exotic file systems: a clean failure
        # is acceptable.
        t.notes.append('EINTR not retried: %s' % t.fault.desc)
        return oracle_error(t, rc, err)
    must(rc == 0, 'exit %s: %s' % (rc, ' | '.join(lines)))
    if (t.fault.kind == 'EINTR' and t.fault.syscall in ('open', 'openat')
            and SCENARIOS[t.scen][2] == 'backup' and lines
            and all(l.startswith('repozo: warning:') for l in lines)):
        # opendir(3) does not retry: the best-effort cleanup after the
        # commit (removing unused blob revisions) may give up with a
        # warning, as after any error there
        now = w.end_state(t.scen, d)
        if now != clean:
            check_cleanup_left(t, clean, now, err)
        t.notes.append('EINTR not retried (cleanup): %s' % t.fault.desc)
        return
    must(not lines, 'unexpected stderr: %s' % ' | '.join(lines))
    left = leftovers(os.path.join(d, 'repo'), d, os.path.join(d, 'chk'))
    must(not left, 'left behind: ' + ' '.join(left))
    now = w.end_state(t.scen, d)
    must(now == clean, 'result differs from the clean run: %s' % explain_diff(clean['repo'], now['repo'])
         if now.get('repo') != clean.get('repo') else 'output differs from the clean run')


# ---------------------------------------------------------------------------
# modes

def select_scenarios(world, default):
    if world.args.scenario:
        names = [s for a in world.args.scenario for s in a.split(',')]
        for n in names:
            if n not in SCENARIOS:
                sys.exit('unknown scenario %r (known: %s)' % (n, ', '.join(SCENARIOS)))
        return names
    return list(SHORT_SCENARIOS if world.args.short else default)


def thin(ks, short, step=3):
    """--short: every `step`-th point, always the first and the last."""
    if not short or len(ks) <= 2:
        return ks
    return [k for i, k in enumerate(ks) if i % step == 0 or i == len(ks) - 1]


def by_call(points, pred=lambda p: True):
    out = {}
    for p in points:
        if pred(p):
            out.setdefault(p['name'], []).append((p['k'], p['desc']))
    return sorted(out.items())


def kill_faults(world, scen):
    """SIGKILL before every mutating call (between two mutating calls the
    files do not change, so this covers every state a crash can leave)."""
    faults = []
    for name, ks in by_call(world.clean_run(scen)['points'], lambda p: p['mut']):
        for k, desc in thin(ks, world.args.short):
            faults.append(Fault('kill', name, k, desc))
    return faults


def io_faults(world, scen):
    points = world.clean_run(scen)['points']
    faults = []
    short = world.args.short
    # --short: the blob scenarios (more points, slower trials) thinner,
    # and blob-standby and prune in the kill-sweep only, to keep `all
    # --short` near two minutes
    if short and scen in ('blob-standby', 'prune') and not world.args.scenario:
        return []
    mult = 3 if short and is_blob(scen) else 1
    for name, ks in by_call(points):
        for kind in ('EIO', 'EIO+'):
            for k, desc in thin(ks, short, (3 if kind == 'EIO' else 4) * mult):
                faults.append(Fault(kind, name, k, desc))
        if name in EINTR_CALLS:
            for k, desc in thin(ks, short, 3 * mult):
                faults.append(Fault('EINTR', name, k, desc))
    for name, ks in by_call(points, lambda p: p['name'] in ENOSPC_CALLS and p['mut']):
        for kind in ('ENOSPC', 'ENOSPC+'):
            for k, desc in thin(ks, short, 3 * mult):
                faults.append(Fault(kind, name, k, desc))
    # permission denied where the kernel checks permissions: opening,
    # creating, renaming and removing names
    for name, ks in by_call(points, lambda p: p['name'] in EACCES_CALLS):
        for kind in ('EACCES', 'EACCES+'):
            for k, desc in thin(ks, short, 3 * mult):
                faults.append(Fault(kind, name, k, desc))
    for name, ks in by_call(points, lambda p: p['name'] in SHORT_ARG and p['count'] > 1):
        for k, desc in thin(ks, short, 3 * mult):
            faults.append(Fault('short', name, k, desc))
    for name, ks in by_call(points, lambda p: p['name'] in FALLBACK_FAULTS):
        for kind in FALLBACK_FAULTS[name]:
            for k, desc in thin(ks, short, 3 * mult):
                faults.append(Fault(kind, name, k, desc))
    return faults


def problem_signature(problem):
    """A failure message with names and numbers taken out, to group alike."""
    s = re.sub(r'\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d', 'STAMP', problem)
    s = re.sub(r'deltafsz?|fsz?\b', 'DATA', s)
    s = re.sub(r'\(\w+ failed at the commit', '(failed at the commit', s)
    s = re.sub(r'\.repozo-tmp-\S+', '.repozo-tmp-*', s)
    s = re.sub(r'\d{2,}', 'N', s)
    return s[:160]


def parse_only(world):
    if not world.args.only:
        return None
    out = set()
    for a in world.args.only:
        out.update(a.split(','))
    return out


def sweep(world, mode, make_faults, default_scens):
    scens = select_scenarios(world, default_scens)
    only = parse_only(world)
    trials = []
    for scen in scens:
        faults = make_faults(world, scen)
        if only:
            faults = [f for f in faults if f.id in only]
        trials += [Trial(world, mode, scen, f) for f in faults]
        world.log('%s: %s: %d fault points' % (mode, scen, len(faults)))
    failures = 0
    notes = {}
    problems = {}
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=world.jobs) as ex:
        futs = {ex.submit(tr.run): tr for tr in trials}
        for fut in concurrent.futures.as_completed(futs):
            tr = futs[fut]
            try:
                problem = fut.result()
            except Exception as e:  # a bug in this script or its fixture
                problem = 'harness error: %r' % (e,)
            for n in tr.notes:
                key = '%s %s' % (tr.scen, re.sub(r'\s+\S*(tmp|part)\S*', ' <file>', n))
                notes[key] = notes.get(key, 0) + 1
            if problem:
                failures += 1
                world.log(tr.describe(problem))
                g = problems.setdefault(problem_signature(problem),
                                        dict(n=0, first=tr.repro, faults=set(), scens=set()))
                g['n'] += 1
                g['faults'].add('%s %s' % (tr.fault.kind, tr.fault.syscall))
                g['scens'].add(tr.scen)
            elif not world.keep:
                shutil.rmtree(tr.dir, ignore_errors=True)
    if problems:
        world.log('%s: failures grouped by problem:' % mode)
        for sig, g in sorted(problems.items(), key=lambda x: -x[1]['n']):
            world.log('  %4d x %s\n         faults: %s\n         scenarios: %s\n         e.g. %s'
                      % (g['n'], sig, ', '.join(sorted(g['faults'])),
                         ', '.join(sorted(g['scens'])), g['first']))
    if world.args.verbose:
        for k in sorted(notes):
            world.log('  note: %s: %d' % (k, notes[k]))
    else:
        for k in sorted(notes):
            if 'lenient:' in k or 'not retried' in k or 'stale' in k:
                world.log('  note: %s: %d' % (k, notes[k]))
    world.log('  (%s took %.1fs with %d jobs)' % (mode, time.time() - t0, world.jobs))
    return len(trials), failures


def mode_kill_sweep(world):
    return sweep(world, 'kill-sweep', kill_faults, SWEEP_SCENARIOS)


def mode_io_errors(world):
    return sweep(world, 'io-errors', io_faults, SWEEP_SCENARIOS)


# ---------------------------------------------------------------------------
# enospc (T5): tmpfs

def in_private_ns():
    return os.environ.get('REPOZO_FAULTS_NS') == '1'


def reexec_unshared(world, mode):
    """Run this mode again inside `unshare -m` (a private mount namespace,
    so mounts vanish with it). Returns (trials, failures) or None when
    unshare is impossible, after printing why."""
    if in_private_ns():
        return 'inside'
    rc, _, err = run(['unshare', '-m', '--propagation', 'private', 'true'], timeout=30)
    if rc != 0:
        # no private namespace: mount right here (under the work dir) and
        # unmount after each trial
        world.log('  %s: no private mount namespace (%s); mounting in this one'
                  % (mode, err.decode(errors='replace').strip() or rc))
        return 'inside'
    env = dict(os.environ, REPOZO_FAULTS_NS='1')
    # inside: exactly this mode, same work dir (kept: we clean it up here)
    cmd = ['unshare', '-m', '--propagation', 'private', sys.executable, THIS, mode,
           '--workdir', os.path.join(world.work, mode), '--keep', '--bin', world.bin,
           '--python', world.py, '--timeout', str(world.timeout), '--txns', str(world.args.txns)]
    if world.args.short:
        cmd.append('--short')
    if world.keep:
        cmd.append('--keep-outer')
    if world.args.trials:
        cmd += ['--trials', str(world.args.trials)]
    if world.args.seed is not None:
        cmd += ['--seed', str(world.args.seed)]
    for flag in ('verbose', 'lenient'):
        if getattr(world.args, flag):
            cmd.append('--' + flag)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode(errors='replace')
    summary = None
    for line in text.splitlines():
        m = re.match(r'^%s: (\d+) trials, (\d+) failures$' % re.escape(mode), line)
        if m:
            summary = (int(m.group(1)), int(m.group(2)))
        elif line.startswith('%s: skipped' % mode):
            summary = ('skipped', line)
        elif line.startswith('work directory kept: ') and not world.keep:
            continue
        else:
            world.log(line)
    if summary is None:
        world.log('%s: the run in a private mount namespace failed (exit %s)' % (mode, proc.returncode))
        return (1, 1)
    return summary


def mount_tmpfs(path, opts):
    os.makedirs(path, exist_ok=True)
    rc, _, err = run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', path], timeout=30)
    if rc != 0:
        raise OSError(err.decode(errors='replace').strip() or 'mount failed')


def umount(path):
    run(['umount', '-l', path], timeout=30)


def mode_enospc(world):
    r = reexec_unshared(world, 'enospc')
    if r != 'inside':
        return r
    # probe
    probe = os.path.join(world.work, 'probe')
    try:
        mount_tmpfs(probe, 'size=64k')
        umount(probe)
    except OSError as e:
        world.log('enospc: skipped (cannot mount tmpfs: %s)' % str(e).splitlines()[0])
        return ('skipped', None)
    fx = world.build_fixture()
    page = os.sysconf('SC_PAGE_SIZE')
    trials = failures = 0

    def fail(label, cmd_dir, msg):
        nonlocal failures
        failures += 1
        world.log('FAIL enospc %s: %s\n  repro: scripts/faults.sh enospc --keep%s'
                  % (label, msg, '\n  dir: ' + cmd_dir if world.args.keep_outer else ''))

    def pages(n):
        return (n + page - 1) // page

    def tree_pages(*paths):
        """Pages the files at or below PATHS take on a tmpfs."""
        total = 0
        for path in paths:
            if os.path.isfile(path) and not os.path.islink(path):
                total += pages(os.path.getsize(path))
            elif os.path.isdir(path) and not os.path.islink(path):
                for root, _, names in os.walk(path):
                    total += sum(pages(os.path.getsize(os.path.join(root, n))) for n in names
                                 if not os.path.islink(os.path.join(root, n)))
        return total

    # backups: full into an empty repository, an increment into the chain;
    # with blobs the repository's blob store (blobs/ below it) is on the
    # tmpfs too, so the new blob revisions need the room
    short = world.args.short
    for scen in (['full', 'quick', 'blob-quick'] if short else
                 ['full', 'full-gz', 'quick', 'quick-gz', 'blob-full', 'blob-incr', 'blob-quick',
                  'prune']):
        blob = is_blob(scen)
        clean = world.clean_run(scen)
        base = os.path.join(world.state_dir(scen), 'repo')
        base_pages = tree_pages(base)
        cd = clean['dir'] + '-plain'
        need = tree_pages(os.path.join(cd, 'repo'))
        # what the run removes at its end (--prune-index) takes room until then
        need += sum(pages(os.path.getsize(os.path.join(base, n))) for n in os.listdir(base)
                    if os.path.isfile(os.path.join(base, n))
                    and not os.path.exists(os.path.join(cd, 'repo', n)))
        extra = need - base_pages
        fracs = (0, 0.5) if short and blob else (0, 0.25, 0.5, 0.75, 0.9)
        steps = sorted(set([max(1, base_pages + int(extra * f)) for f in fracs]
                           + [need - 1, need, need + 8]))
        for npages in steps:
            trials += 1
            label = '%s size=%d pages (need %d)' % (scen, npages, need)
            d = world.new_dir('enospc', '%s-%d' % (scen, npages))
            world.copy_state(scen, d)
            mnt = os.path.join(d, 'repo')
            shutil.move(mnt, mnt + '.orig')
            try:
                mount_tmpfs(mnt, 'size=%d' % (npages * page))
            except OSError as e:
                fail(label, d, 'mount: %s' % e)
                continue
            t = Trial(world, 'enospc', scen, Fault('ENOSPC', 'disk', npages, label))
            t.dir = d
            try:
                shutil.copytree(mnt + '.orig', mnt, symlinks=True, dirs_exist_ok=True)
                start = snapshot(mnt)
                rc, _, err = world.repozo(d, SCENARIOS[scen][1], T_RUN)
                lines = errlines(err)
                if rc == 0:
                    # the sums are a cache: a run whose backup fits but
                    # whose sums do not succeeds with a warning
                    must(npages >= need or (len(lines) == 1 and 'warning: could not update'
                                            in lines[0] and SUMS_NAME in lines[0]),
                         'succeeded below the need? %r' % lines)
                    must(snapshot(mnt) == clean['end']['repo'],
                         'success but the repository differs from a run on a roomy disk')
                else:
                    must(npages < need, 'failed at or above the need: %s' % ' | '.join(lines))
                    must(rc == 1 and len(lines) == 1 and lines[0].startswith('repozo: '),
                         'not a clean failure: exit %s, %r' % (rc, lines))
                    must('No space left' in lines[0], 'the message does not say the disk is full: ' + lines[0])
                    left = leftovers(mnt)
                    must(not left, 'temporary files left: ' + ' '.join(left))
                    judge_failed_backup(t, start)
                    # with room again, the same backup succeeds
                    run(['mount', '-o', 'remount,size=%d' % (3 * need * page), mnt], timeout=30)
                    rc2, _, err2 = world.repozo(d, SCENARIOS[scen][1], T_RUN)
                    must(rc2 == 0, 'rerun with room failed: %s' % ' | '.join(errlines(err2)))
                    # what the failed run stored (blob revisions) is reused
                    now = snapshot(mnt)
                    must(now == clean['end']['repo'], 'rerun with room: the repository differs '
                         'from a run on a roomy disk: ' + explain_diff(clean['end']['repo'], now))
                    must(not leftovers(mnt), 'rerun with room left ' + ' '.join(leftovers(mnt)))
                v, _, verr = world.repozo(d, ['-V', '-r', 'repo'])
                must(v == 0, '-V failed after a successful run: %s' % ' | '.join(errlines(verr)))
                check_recovers_new(t, 'post')
                if blob:
                    check_earlier(t, 'after the run', 'new')
                if is_prune(scen):
                    check_pruned(t, 'after the run')
                    check_prune_dates(t, 'after the run', 'new')
            except Failure as e:
                fail(label, d, str(e))
            finally:
                umount(mnt)
            if world.args.verbose and (t.notes or blob):
                world.log('  enospc %s: exit %s%s' % (label, rc, ''.join('; ' + n for n in t.notes)))
            if not world.keep:
                shutil.rmtree(d, ignore_errors=True)

    # inodes: a full backup into a tmpfs with few inodes
    for inodes in ([2, 4, 6] if world.args.short else range(1, 9)):
        scen = 'full'
        clean = world.clean_run(scen)
        trials += 1
        label = 'full nr_inodes=%d' % inodes
        d = world.new_dir('enospc', 'inodes-%d' % inodes)
        world.copy_state(scen, d)
        mnt = os.path.join(d, 'repo')
        try:
            mount_tmpfs(mnt, 'size=16m,nr_inodes=%d' % inodes)
        except OSError as e:
            fail(label, d, 'mount: %s' % e)
            continue
        try:
            rc, _, err = world.repozo(d, SCENARIOS[scen][1], T_RUN)
            lines = errlines(err)
            if rc == 0:
                if snapshot(mnt) != clean['end']['repo']:
                    fail(label, d, 'success but the repository differs from a clean run')
                world.log('  enospc: a full backup fits in nr_inodes=%d' % inodes) if world.args.verbose else None
            else:
                if rc != 1 or len(lines) != 1 or not lines[0].startswith('repozo: '):
                    fail(label, d, 'not a clean failure: exit %s, %r' % (rc, lines))
                left = leftovers(mnt)
                if left:
                    fail(label, d, 'temporary files left: %s' % ' '.join(left))
                names = [n for n in os.listdir(mnt) if n not in (LOCK_NAME, SUMS_NAME)]
                if names:
                    # whatever is published must still verify or be an
                    # orphan the next backup sets aside
                    v, _, verr = world.repozo(d, ['-V', '-r', 'repo'])
                    bad = [l for l in errlines(verr) if not is_acceptable_verify_line(l, True)]
                    if v != 0 and bad:
                        fail(label, d, 'failed run left a repository -V rejects: %s' % ' | '.join(bad))
        finally:
            umount(mnt)
        if not world.keep:
            shutil.rmtree(d, ignore_errors=True)

    # recovery into a too-small tmpfs: the old output must survive (a full
    # recovery through out.fs.part checks the free space first; one that
    # extends out.fs in place needs room for the missing files only)
    for scen in (['recover-full', 'recover'] if world.args.short
                 else ['recover-full', 'recover-foreign', 'recover', 'prune-recover-full',
                       'prune-recover']):
        e = world.rec_expect(scen)
        old, old_index, new, new_index = e['old'], e['old_index'], e['new'], e['new_index']
        idx_pages = pages(len(new_index))
        old_pages = pages(len(old)) + pages(len(old_index))
        in_place = appends_in_place(scen)
        if in_place:
            # the new index is written first; the old one goes before the
            # append
            need = max(idx_pages, pages(len(new)) - pages(len(old)) + idx_pages - pages(len(old_index)))
            frees = sorted(set([0, need // 2, need - 1, need, need + 4]))
        else:
            need = pages(len(new))
            frees = sorted(set([0, need // 2, need - 1, need, need + idx_pages, need + idx_pages + 4]))
        roomy = need + idx_pages + 4
        for free in frees:
            trials += 1
            label = '%s free=%d pages (needs %d%s)' % (
                scen, free, need, '' if in_place else ' + %d for the index' % idx_pages)
            d = world.new_dir('enospc', '%s-%d' % (scen, free))
            world.copy_state(scen, d)
            mnt = os.path.join(d, 'outdir')
            try:
                mount_tmpfs(mnt, 'size=%d' % ((old_pages + free) * page))
            except OSError as e:
                fail(label, d, 'mount: %s' % e)
                continue
            t = Trial(world, 'enospc', scen, Fault('ENOSPC', 'disk', free, label))
            t.dir = mnt
            try:
                shutil.copy2(os.path.join(d, 'out.fs'), os.path.join(mnt, 'out.fs'))
                shutil.copy2(os.path.join(d, 'out.fs.index'), os.path.join(mnt, 'out.fs.index'))
                args = SCENARIOS[scen][1][:-1] + ['outdir/out.fs']
                rc, _, err = world.repozo(d, args)
                lines = errlines(err)
                left = leftovers(mnt)
                state = check_output_consistent(t)
                if rc == 0:
                    must(free >= need, 'succeeded without room?')
                    must(state == 'new' and read_or_none(os.path.join(mnt, 'out.fs.index')) == new_index,
                         'success but the output is not the new state with its index')
                else:
                    must(rc == 1 and len(lines) == 1 and lines[0].startswith('repozo: '),
                         'not a clean failure: exit %s, %r' % (rc, lines))
                    must(free < roomy, 'failed with room for data and index: %r' % lines)
                    if not in_place and free < need:
                        must('not enough free space' in lines[0],
                             'no "not enough free space" message: %r' % lines)
                    else:
                        must('space' in lines[0], 'the message does not say the disk is full: %r' % lines)
                    must(state != 'new' or in_place, 'the old output was replaced by a failed run')
                    must(not left, 'left behind: %s' % ' '.join(left))
                    # with room, the same recovery completes
                    run(['mount', '-o', 'remount,size=%d' % ((old_pages + roomy + need) * page), mnt],
                        timeout=30)
                    rc2, _, err2 = world.repozo(d, args)
                    must(rc2 == 0 and read_or_none(os.path.join(mnt, 'out.fs')) == new
                         and read_or_none(os.path.join(mnt, 'out.fs.index')) == new_index,
                         'rerun with room did not give the new state: %s' % ' | '.join(errlines(err2)))
                if world.args.verbose:
                    world.log('  enospc %s: exit %s, out.fs %s' % (label, rc, state))
            except Failure as e:
                fail(label, d, str(e))
            finally:
                umount(mnt)
            if not world.keep:
                shutil.rmtree(d, ignore_errors=True)

    # blob recovery: out.fs, its index and the blob directory on one tmpfs
    # (the repository stays outside: outdir/repo is a symlink to it), from
    # no room for anything new to room for the whole new state beside the
    # old one. A failure leaves the old pair (or, in place, a prefix), never
    # an out.fs without its blobs, and the rerun with room completes.
    for scen in (['blob-standby'] if short else
                 ['blob-recover', 'blob-standby', 'blob-standby-inplace']):
        e = world.rec_expect(scen)
        sdir = world.state_dir(scen)
        old_pages = tree_pages(*[os.path.join(sdir, n) for n in ('out.fs', 'out.fs.index', OUT_BLOBS)])
        new_pages = tree_pages(os.path.join(world.build_blob_fixture()['dir'], 'new-' + scen))
        roomy = new_pages + pages(len(e['new'])) + 8
        fracs = (0, 0.5, 1) if short else (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)
        frees = sorted(set([int(new_pages * f) for f in fracs] + [roomy]))
        in_place = appends_in_place(scen)
        for free in frees:
            trials += 1
            label = '%s free=%d pages (the new state takes %d)' % (scen, free, new_pages)
            d = world.new_dir('enospc', '%s-%d' % (scen, free))
            world.copy_state(scen, d)
            mnt = os.path.join(d, 'outdir')
            try:
                # (size=0 would be a tmpfs without a limit)
                mount_tmpfs(mnt, 'size=%d' % (max(1, old_pages + free) * page))
            except OSError as ex:
                fail(label, d, 'mount: %s' % ex)
                continue
            t = Trial(world, 'enospc', scen, Fault('ENOSPC', 'disk', free, label))
            t.dir = mnt
            try:
                for n in ('out.fs', 'out.fs.index'):
                    if os.path.exists(os.path.join(d, n)):
                        shutil.copy2(os.path.join(d, n), os.path.join(mnt, n))
                if os.path.isdir(os.path.join(d, OUT_BLOBS)):
                    shutil.copytree(os.path.join(d, OUT_BLOBS), os.path.join(mnt, OUT_BLOBS), symlinks=True)
                os.symlink(os.path.join('..', 'repo'), os.path.join(mnt, 'repo'))
                repo_before = snapshot(os.path.join(d, 'repo'))
                rc, _, err = world.repozo(mnt, SCENARIOS[scen][1])
                lines = errlines(err)
                left = leftovers(mnt)
                state = check_output_consistent(t)
                must(snapshot(os.path.join(d, 'repo')) == repo_before, 'the recovery changed the repository')
                if rc == 0:
                    must(state == 'new' and read_or_none(os.path.join(mnt, 'out.fs.index')) == e['new_index'],
                         'success but the output is not the new state with its index')
                    must(not left, 'success but left behind: %s' % ' '.join(left))
                    now = snapshot(os.path.join(mnt, OUT_BLOBS))
                    must(now == e['new_tree'], 'success but out.blobs is not a roomy run\'s: %s'
                         % snap_diff(e['new_tree'], now))
                else:
                    must(rc == 1 and len(lines) == 1 and lines[0].startswith('repozo: '),
                         'not a clean failure: exit %s, %r' % (rc, lines))
                    must(free < roomy, 'failed with room for the old and the new state: %r' % lines)
                    must('space' in lines[0], 'the message does not say the disk is full: %r' % lines)
                    must(state != 'new' or in_place, 'the old output was replaced by a failed run')
                    must(not left, 'left behind: %s' % ' '.join(left))
                    if state == 'prefix':
                        # partly extended in place: its blobs were added first
                        dump = world.blob_dump(os.path.join(mnt, 'out.fs'), os.path.join(mnt, OUT_BLOBS))
                        must(not dump.startswith('FAILED') and 'missing' not in dump,
                             'out.fs partly extended without its blobs: %s' % dump[:200])
                    run(['mount', '-o', 'remount,size=%d' % ((old_pages + roomy + new_pages) * page), mnt],
                        timeout=30)
                    rerun_recover(t)
                if world.args.verbose:
                    world.log('  enospc %s: exit %s, out.fs %s%s' % (
                        label, rc, state, '' if rc == 0 else ': ' + lines[0][:100]))
            except Failure as ex:
                fail(label, d, str(ex))
            finally:
                umount(mnt)
            if not world.keep:
                shutil.rmtree(d, ignore_errors=True)
    return trials, failures


# ---------------------------------------------------------------------------
# power cuts (T3): ext4 on loop, shutdown ioctl

POWER_SCENARIOS = ['p-quick', 'p-quick-gz', 'p-full-k', 'recover', 'recover-full']


def mode_power_cuts(world):
    if os.geteuid() != 0:
        world.log('power-cuts: skipped (needs root for loop mounts and the shutdown ioctl)')
        return ('skipped', None)
    if not shutil.which('xfs_io'):
        world.log('power-cuts: installing xfsprogs for xfs_io')
        run(['apt-get', 'install', '-y', 'xfsprogs'], timeout=600)
        if not shutil.which('xfs_io'):
            world.log('power-cuts: skipped (xfs_io not available: apt-get install -y xfsprogs)')
            return ('skipped', None)
    r = reexec_unshared(world, 'power-cuts')
    if r != 'inside':
        return r
    seed = world.args.seed if world.args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    img = os.path.join(world.work, 'ext4.img')
    mnt = os.path.join(world.work, 'mnt')
    os.makedirs(mnt)
    with open(img, 'wb') as f:
        f.truncate(64 << 20)
    rc, _, err = run(['mkfs.ext4', '-q', '-F', img], timeout=120)
    if rc != 0:
        world.log('power-cuts: skipped (mkfs.ext4: %s)' % err.decode(errors='replace').strip().replace('\n', ' '))
        return ('skipped', None)

    def mount():
        rc, _, err = run(['mount', '-o', 'loop,noauto_da_alloc', img, mnt], timeout=60)
        if rc != 0:
            raise RuntimeError('mount: %s' % err.decode(errors='replace').strip())

    try:
        mount()
    except RuntimeError as e:
        world.log('power-cuts: skipped (%s)' % str(e).replace('\n', ' '))
        return ('skipped', None)
    world.build_fixture()
    # does the shutdown ioctl drop what was not fsynced? (else the cuts
    # prove little)
    probe = os.path.join(mnt, 'probe')
    with open(probe, 'wb') as f:
        f.write(b'x' * 65536)
    run(['xfs_io', '-x', '-c', 'shutdown', mnt], timeout=60)
    umount_retry(mnt)
    mount()
    survived = read_or_none(probe)
    os.unlink(probe) if survived is not None else None
    umount_retry(mnt)
    if survived == b'x' * 65536:
        world.log('  power-cuts: warning: unsynced data survived the shutdown ioctl; the cuts are weak')
    trials = failures = 0
    n = world.args.trials or (10 if world.args.short else 50)
    tally = {}
    world.pc_times = {}
    order = list(POWER_SCENARIOS)  # first one clean run each, to time them
    for i in range(n):
        scen = order.pop(0) if order else rng.choice(POWER_SCENARIOS)
        pts = [p for p in world.clean_run(scen)['points'] if p['mut']]
        how = rng.random()
        if scen not in world.pc_times:
            point = ('done',)
        elif how < 0.6 and pts:
            p = rng.choice(pts)
            point = ('cut', p['name'], p['k'], p['desc'])
        elif how < 0.9:
            point = ('sleep', round(rng.uniform(0, world.pc_times[scen]), 4))
        else:
            point = ('done',)
        trials += 1
        label = 'trial %d %s %s' % (i, scen, ' '.join(str(x) for x in point))
        try:
            problem, outcome = power_trial(world, scen, point, img, mnt, mount)
        except Exception as e:
            problem, outcome = 'harness error: %r' % (e,), None
            umount_retry(mnt)
        tally[outcome] = tally.get(outcome, 0) + 1
        if problem:
            failures += 1
            world.log('FAIL power-cuts %s: %s\n  repro: scripts/faults.sh power-cuts --trials %d --seed %d'
                      % (label, problem, n, seed))
        elif world.args.verbose:
            world.log('  ok %s: %s' % (label, outcome))
    world.log('  power-cuts: seed %d; run times %s; outcomes: %s' % (
        seed, ', '.join('%s %.3fs' % kv for kv in sorted(world.pc_times.items())),
        ', '.join('%s %d' % (k, v) for k, v in sorted(tally.items(), key=str))))
    return trials, failures


def umount_retry(mnt):
    for _ in range(50):
        rc, _, _ = run(['umount', mnt], timeout=60)
        if rc == 0 or not os.path.ismount(mnt):
            return
        time.sleep(0.1)
    run(['umount', '-l', mnt], timeout=60)


def power_trial(world, scen, point, img, mnt, mount):
    """One cut. Returns (problem or None, outcome)."""
    fx = world.build_fixture()
    args = SCENARIOS[scen][1]
    mount()
    exited0 = False
    try:
        d = os.path.join(mnt, 't')
        shutil.rmtree(d, ignore_errors=True)
        if SCENARIOS[scen][2] == 'recover':
            shutil.copytree(world.state_dir(scen), d, symlinks=True)
            os.sync()
        else:
            # an acknowledged backup first (s3, exit 0, made here by the
            # tool itself), then the source grows to s4 and is made durable
            shutil.copytree(world.state_dir('quick'), d, symlinks=True)
            os.sync()
            rc, _, err = world.repozo(d, ['-BQ'] + BACKUP_ARGS, T2)
            if rc != 0:
                return 'the first backup failed: %s' % err.decode(errors='replace'), 'error'
            pw = world.state_dir(scen)
            for n in ('src.fs', 'src.fs.index'):
                shutil.copy2(os.path.join(pw, n), os.path.join(d, n))
                fd = os.open(os.path.join(d, n), os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            dfd = os.open(d, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        shutdown = 'xfs_io -x -c shutdown %s' % shlex.quote(mnt)
        if point[0] == 'cut':
            cmd = world.inject_cmd(os.path.join(world.work, 'pc'), args,
                                   fault='cut:%s:%d' % (point[1], point[2]), at_point=shutdown)
            # the injector's scope is the trial folder on the image
            cmd[cmd.index('--scope') + 1] = d
            cmd[cmd.index('--report') + 1] = os.path.join(world.work, 'pc.report')
        else:
            cmd = [world.bin] + args
        proc = subprocess.Popen(cmd, cwd=d, env=world.env(T_RUN), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if point[0] == 'cut':
            try:
                proc.wait(timeout=world.timeout)
            except subprocess.TimeoutExpired:
                pass
            exited0 = proc.returncode == 0  # the cut point was never reached
        elif point[0] == 'sleep':
            time.sleep(point[1])
            try:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze it where it is
            except ProcessLookupError:
                pass
        else:
            t0 = time.time()
            proc.wait(timeout=world.timeout)
            world.pc_times[scen] = max(world.pc_times.get(scen, 0), time.time() - t0)
        if proc.poll() is not None and proc.returncode == 0:
            exited0 = True
        # the power cut: nothing more reaches the disk
        run(['xfs_io', '-x', '-c', 'shutdown', mnt], timeout=60)
        kill_group(proc)
        proc.wait()
        if proc.returncode == 0:
            exited0 = True
    finally:
        umount_retry(mnt)
    mount()
    try:
        return power_check(world, scen, fx, os.path.join(mnt, 't'), exited0)
    finally:
        umount_retry(mnt)


def power_check(world, scen, fx, d, exited0):
    acked = 'acknowledged' if exited0 else 'cut'
    if SCENARIOS[scen][2] == 'recover':
        t = Trial(world, 'power-cuts', scen, Fault('cut', 'power', 0))
        t.dir = d
        try:
            state = check_output_consistent(t)
        except Failure as e:
            return str(e), acked
        if exited0 and (state != 'new' or read_or_none(os.path.join(d, 'out.fs.index')) is None):
            return 'recovery exited 0 before the cut but out.fs or its index is not the new state', acked
        rc, _, err = world.repozo(d, SCENARIOS[scen][1])
        if (rc != 0 or read_or_none(os.path.join(d, 'out.fs')) != fx['s3']
                or read_or_none(os.path.join(d, 'out.fs.index')) != fx['new_index']):
            return 'recovery after the cut failed: %s' % err.decode(errors='replace'), acked
        return None, '%s %s' % (acked, state)
    # backups: s3 (acknowledged before) must be there; s4 if this run exited 0
    chk = os.path.join(world.work, 'pc-chk')
    shutil.rmtree(chk, ignore_errors=True)
    os.makedirs(chk)
    rc, _, err = world.repozo(d, ['-V', '-r', 'repo'])
    if rc != 0:
        bad = [l for l in errlines(err) if not is_acceptable_verify_line(l, False)]
        if bad:
            return '-V after the cut: %s' % ' | '.join(bad), acked
    out = os.path.join(chk, 'pre.fs')
    rc, _, err = world.repozo(d, ['-R', '-r', 'repo', '-o', out])
    if rc != 0:
        return '-R after the cut failed: %s' % ' | '.join(errlines(err)), acked
    data = read_or_none(out)
    if data == fx['s3']:
        if exited0:
            return 'the backup exited 0 before the cut but is lost (recovers the older state)', acked
        state = 'old'
    elif data == fx['s4']:
        state = 'new'
    else:
        return '-R after the cut gave %d bytes: neither the acknowledged (%d) nor the new (%d) state' % (
            len(data), len(fx['s3']), len(fx['s4'])), acked
    rc, _, err = world.repozo(d, ['-BQ'] + BACKUP_ARGS, T_FIX)
    if rc != 0:
        return 'repair -BQ after the cut failed: %s' % ' | '.join(errlines(err)), acked
    rc, _, err = world.repozo(d, ['-V', '-r', 'repo'])
    if rc != 0:
        return '-V after the repair: %s' % ' | '.join(errlines(err)), acked
    out = os.path.join(chk, 'post.fs')
    rc, _, err = world.repozo(d, ['-R', '-r', 'repo', '-o', out])
    if rc != 0 or read_or_none(out) != fx['s4']:
        return '-R after the repair is not the source: %s' % ' | '.join(errlines(err)), acked
    problem = world.open_check(out)
    if problem:
        return 'ZODB cannot open the recovery: %s' % problem, acked
    return None, '%s %s' % (acked, state)


# ---------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '_inject':
        return inject_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('mode', choices=['kill-sweep', 'io-errors', 'enospc', 'power-cuts', 'all'])
    p.add_argument('--short', action='store_true', help='a subset for CI (every 3rd point of 4 scenarios, fewer enospc steps and power cuts)')
    p.add_argument('--power', action='store_true', help='all: also run power-cuts')
    p.add_argument('--scenario', action='append', help='only these scenarios (comma list): ' + ', '.join(SCENARIOS))
    p.add_argument('--only', action='append', help='only these fault ids, e.g. kill:fsync:3, EIO+:write:2, short:write:1')
    p.add_argument('--trials', type=int, help='power-cuts: number of cuts (default 50, 10 with --short)')
    p.add_argument('--seed', type=int, help='power-cuts: random seed')
    p.add_argument('--txns', type=int, default=30, help='transactions in the fixture database (default 30)')
    p.add_argument('--jobs', type=int, help='parallel trials (default: CPU count)')
    p.add_argument('--timeout', type=float, default=60, help='seconds per command (default 60)')
    p.add_argument('--workdir', help='work directory (default: a new one under $TMPDIR)')
    p.add_argument('--keep', action='store_true', help='keep the work directory and every trial directory')
    p.add_argument('--bin', default=os.path.join(ROOT, 'target', 'release', 'repozo'),
                   help='the binary under test (copied into the work dir first)')
    p.add_argument('--python', help='the venv python with ZODB (default: this interpreter)')
    p.add_argument('--verbose', action='store_true', help='print a tally of every kind of note')
    p.add_argument('--keep-outer', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--lenient', action='store_true',
                   help='io-errors: accept an orphan or a committed backup left by a failed run (as the kill-sweep does)')
    args = p.parse_args(argv)
    if os.uname().machine != 'x86_64':
        sys.exit('faults.py: the ptrace injector knows only x86_64 system calls')
    if os.geteuid() != 0 and args.mode in ('enospc', 'power-cuts', 'all'):
        print('note: not root; enospc and power-cuts will probably be skipped', file=sys.stderr)
    world = World(args)
    modes = {'kill-sweep': mode_kill_sweep, 'io-errors': mode_io_errors,
             'enospc': mode_enospc, 'power-cuts': mode_power_cuts}
    todo = [args.mode] if args.mode != 'all' else (
        ['kill-sweep', 'io-errors', 'enospc'] + (['power-cuts'] if args.power else []))
    any_fail = False
    try:
        for mode in todo:
            t0 = time.time()
            res = modes[mode](world)
            if res[0] == 'skipped':
                if res[1]:
                    print(res[1], flush=True)
                elif not in_private_ns():
                    pass
                continue
            n, f = res
            if mode in ('enospc', 'power-cuts') and not in_private_ns():
                world.log('  (%s took %.1fs)' % (mode, time.time() - t0))
            print('%s: %d trials, %d failures' % (mode, n, f), flush=True)
            any_fail |= f > 0
    finally:
        if not args.keep:
            shutil.rmtree(world.work, ignore_errors=True)
        else:
            print('work directory kept: %s' % world.work, file=sys.stderr)
    return 1 if any_fail else 0


if __name__ == '__main__':
    sys.exit(main())
