#!/bin/sh
# timm's own model tests on sknet's models: tests/test_models.py of the installed timm release,
# taken from its source distribution on PyPI (cached after the first run), run over the models
# `import sknet.timm` registers (scripts/timm_models_plugin.py selects them; TorchScript tests excluded).
# Usage: sh scripts/test_timm.sh [pytest arguments, e.g. -k forward_fx]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
VERSION=$("$PY" -c 'import timm; print(timm.__version__)')
CACHE=${SKNET_TIMM_TESTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sknet/timm-tests}
DIR=$CACHE/timm-$VERSION

if [ ! -f "$DIR/tests/test_models.py" ]; then
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        --dest "$TMP" "timm==$VERSION" >"$TMP/pip.log" 2>&1; then
        echo "test-timm: cannot fetch timm $VERSION's source distribution from PyPI (no network?); see 'pip download timm==$VERSION --no-binary :all: --no-deps'" >&2
        exit 1
    fi
    tar -xzf "$TMP/timm-$VERSION.tar.gz" -C "$TMP" "timm-$VERSION/tests/test_models.py" "timm-$VERSION/tests/conftest.py" \
        "timm-$VERSION/tests/__init__.py"
    mkdir -p "$CACHE"
    rm -rf "$DIR"
    mv "$TMP/timm-$VERSION" "$DIR"
    rm -rf "$TMP"  # exec below replaces this shell, so the EXIT trap would not run
    trap - EXIT
fi

cd "$DIR"
PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m pytest tests/test_models.py \
    -p timm_models_plugin -p no:cacheprovider --rootdir "$DIR" -W ignore::pytest.PytestUnknownMarkWarning -q "$@"
