#!/usr/bin/env bash
# One entry point for set-up, demo and tests (used by the README, the Makefile and CI).
#   bash scripts/cellama.sh demo   install everything, then open napari with the demo loaded
#                                  (without a display: run the CLI transfer on the demo data)
#   bash scripts/cellama.sh test   install everything, then run the whole test suite under Xvfb
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CELLAMA_VENV:-.venv}
PY="$VENV/bin/python"

apt_deps() {
  # Xvfb + Mesa (napari needs OpenGL to draw) and the xcb libraries Qt's xcb platform loads.
  local pkgs="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxcb-xkb1"
  local missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages:$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: missing system packages ($missing); install them with apt-get as root" >&2
  fi
}

py_deps() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >/dev/null
  # This machine's CPU wheel first: any other torch requirement pulls gigabytes of CUDA packages.
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[all,testing]"
}

case "${1:-}" in
  demo)
    apt_deps
    py_deps
    if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
      exec "$VENV/bin/napari-cellama" gui --demo
    else
      echo "no display: running the transfer on the built-in demo instead of opening napari" >&2
      exec "$VENV/bin/napari-cellama" demo
    fi
    ;;
  test)
    apt_deps
    py_deps
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    set +e
    xvfb-run -a -s "-screen 0 1600x1000x24" "$PY" -m pytest -p no:cacheprovider -ra "${@:2}"
    rc=$?
    set -e
    [ "$rc" = 5 ] && { echo "no tests were collected" >&2; exit 1; }
    exit "$rc"
    ;;
  *)
    echo "usage: bash scripts/cellama.sh demo|test [pytest args]" >&2
    exit 2
    ;;
esac
