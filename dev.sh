#!/usr/bin/env bash
# Rankforge developer entry point.
#   ./dev.sh demo   set up everything and run the product on its embedded default (SQLite, ./var)
#   ./dev.sh test   set up everything and run the whole test suite (SQLite and PostgreSQL, Chromium)
#   ./dev.sh setup  only create/refresh the virtual environment in .venv
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
# The CPU build of torch: an unpinned torch pulls gigabytes of CUDA wheels. Set TORCH_INDEX_URL
# (e.g. https://download.pytorch.org/whl/cpu) where the default index only has CUDA builds.
TORCH_SPEC="torch==2.13.0"

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local stamp=".venv/.rankforge-installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      .venv/bin/pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
    else
      .venv/bin/pip install -q "$TORCH_SPEC"
    fi
    .venv/bin/pip install -q -e ".[train,dev,ray]"  # ray: ~80 MB download, 240 MB installed
    rm -f .venv/.rankforge-installed-*
    touch "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup)
    setup
    ;;
  demo)
    setup
    exec .venv/bin/rankforge demo "$@"
    ;;
  test)
    setup
    .venv/bin/ruff check .
    .venv/bin/lint-imports --no-cache  # the layering of DESIGN.md (contracts in pyproject.toml)
    # Two processes for everything but the browser flows (2 cores), then the browser flows one at a time: they
    # drive real Chromium against live servers and are timing-sensitive when two run beside each other.
    # Exit 5 means "no test selected" (a path with only one kind of test): not a failure of the other half.
    rest=0; browser=0
    .venv/bin/python -m pytest -n "${RANKFORGE_TEST_WORKERS:-2}" -m "not e2e" "$@" || rest=$?
    .venv/bin/python -m pytest -m e2e "$@" || browser=$?
    [ "$rest" -eq 5 ] && rest=0
    [ "$browser" -eq 5 ] && browser=0
    [ "$rest" -eq 0 ] && [ "$browser" -eq 0 ]
    ;;
  *)
    echo "usage: ./dev.sh demo|test|setup" >&2
    exit 2
    ;;
esac
