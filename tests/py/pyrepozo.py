#!/usr/bin/env python3
"""Run ZODB's own repozo (reference implementation) with a controllable clock.

Usage: pyrepozo.py <repozo arguments...>

All arguments are passed to ``ZODB.scripts.repozo.main``.  If the environment
variable REPOZO_TEST_NOW is set (``YYYY-MM-DD-HH-MM-SS``, UTC), repozo's
notion of "now" (``gen_filedate``) is that instant: it names new backup files
and bounds which files a recover without ``-D`` considers.  The exit status is
repozo's own (0 on success, 1 with a message on RepozoError/OSError, the
usage() code for bad arguments).
"""

import os
import re
import sys

from ZODB.scripts import repozo


def parse_now(value):
    m = re.fullmatch(r'(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)', value)
    if not m:
        sys.exit('REPOZO_TEST_NOW must look like YYYY-MM-DD-HH-MM-SS, got %r'
                 % value)
    return tuple(int(g) for g in m.groups())


def main():
    now = os.environ.get('REPOZO_TEST_NOW')
    if now:
        stamp = parse_now(now)
        repozo.gen_filedate = lambda options: stamp
    repozo.main(sys.argv[1:])


if __name__ == '__main__':
    main()
