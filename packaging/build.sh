#!/usr/bin/env bash
# Build the onedir bundle with PyInstaller, then smoke-run the frozen app. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip install -q "pyinstaller>=6.10"
start=$(date +%s)
"$PY" -m PyInstaller packaging/neurolens.spec --noconfirm --clean \
    --distpath build/dist --workpath build/work >build/pyinstaller.log 2>&1 || {
    echo "PyInstaller failed; see build/pyinstaller.log" >&2; tail -30 build/pyinstaller.log >&2
    exit 1; }
echo "built in $(( $(date +%s) - start ))s: $(du -sh build/dist/neurolens | cut -f1)"
# the xcb libraries a fresh desktop may lack must load from the bundle (Linux)
"$PY" packaging/check_bundle_xcb.py build/dist/neurolens || { echo "xcb check failed" >&2; exit 1; }
APP=build/dist/neurolens/neurolens
# SMOKE_MODEL: a model folder for the smoke run (default: the bundled demo model)
M=()
if [ -n "${SMOKE_MODEL:-}" ]; then M=(-m "$SMOKE_MODEL"); fi
"$APP" info "${M[@]}" >build/smoke-info.txt || { echo "smoke: 'neurolens info' failed" >&2; exit 1; }
head -3 build/smoke-info.txt
QT_QPA_PLATFORM=offscreen "$APP" gui "${M[@]}" --screenshot build/smoke.png --prompt "Compute: 47+38=" \
    || { echo "smoke: screenshot run failed" >&2; exit 1; }
test -s build/smoke.png || { echo "smoke: no screenshot written" >&2; exit 1; }
echo "smoke OK: build/smoke.png"
