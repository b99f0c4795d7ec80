#!/usr/bin/env bash
# Set up (or reuse) the virtual environment, then run the demo or the tests.
#   bash run.sh demo   - the main job, offline, on an embedded default
#   bash run.sh test   - the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MIXER_ZOO_VENV:-.venv}"

setup() {
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    local want have
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    have=$(cat "$VENV/.mixer-zoo-installed" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        echo "run.sh: installing mixer-zoo and its pinned dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,mmpretrain]"
        echo "$want" > "$VENV/.mixer-zoo-installed"
    fi
}

case "${1:-}" in
    demo) setup; shift; exec "$VENV/bin/mixer-zoo" demo "$@" ;;
    test) setup; shift; exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: bash run.sh demo|test [args...]" >&2; exit 2 ;;
esac
