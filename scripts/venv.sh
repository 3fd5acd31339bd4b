# Sourced by the scripts in this folder (from the project root): makes sure
# .venv holds ZODB 6.4 (tests/py/requirements.txt, from PyPI).
PYTHON="${PYTHON:-python3}"
if ! .venv/bin/python -c 'import ZODB, prometheus_client, awscli, sys, os; from importlib.metadata import version; sys.exit(version("ZODB") != "6.4" or not os.path.exists(".venv/bin/rclone"))' 2>/dev/null; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
