#!/usr/bin/env bash
# Installs the seeds' stacks from npm and PyPI (pinned versions) for
# bench/run.sh: bench/peers/express/node_modules and bench/peers/flask/.venv.
# Idempotent; needs node + npm and python3 (with venv).
set -euo pipefail
cd "$(dirname "$0")"
(cd express && npm install --silent --no-audit --no-fund --no-package-lock >/dev/null)
if [ ! -x flask/.venv/bin/gunicorn ]; then
  python3 -m venv flask/.venv
  flask/.venv/bin/pip install --quiet --disable-pip-version-check -r flask/requirements.txt
fi
echo "peers: express $(node -p "require('./express/node_modules/express/package.json').version"), jsonwebtoken $(node -p "require('./express/node_modules/jsonwebtoken/package.json').version"); flask $(flask/.venv/bin/python -c 'import flask, importlib.metadata as m; print(m.version("flask"))'), pyjwt $(flask/.venv/bin/python -c 'import jwt; print(jwt.__version__)')"
