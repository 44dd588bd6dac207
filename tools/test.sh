#!/usr/bin/env bash
# The README's test command: installs what is needed (idempotently) and runs the whole suite,
# against SQLite and, through a local PostgreSQL it installs and starts, against PostgreSQL too.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --with-postgres --with-browser
# Build the sandbox image once up front (debootstrap is cached under /var/cache/openhosting), so the
# tests' own installations import it in seconds.
export OPENHOSTING_STATE_DIR="$PWD/var/test-images"
.venv/bin/openhosting-admin db upgrade >/dev/null
.venv/bin/openhosting-admin image build base >/dev/null
# The pads tests run every language (tests/test_pads_run.py): each language image is a layer on base
# (its own packages installed into a copy of base's tree), seconds once cached; README "Pads" has the
# time and disk of each on a fresh machine.
for image in gcc java node typescript ruby php go rust; do
    .venv/bin/openhosting-admin image build "$image" >/dev/null
done
unset OPENHOSTING_STATE_DIR
export OPENHOSTING_TEST_POSTGRES_URL="${OPENHOSTING_TEST_POSTGRES_URL:-postgresql+psycopg://openhosting:openhosting@127.0.0.1/openhosting_test}"
exec .venv/bin/python -m pytest "$@"
