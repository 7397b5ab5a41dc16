#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian/Ubuntu machine, idempotently:
#   - the Debian packages Xvfb and Qt need for the headless napari tests (when run as root),
#   - a virtual environment in .venv with torch, the project (editable) and its test extras.
# Re-running is cheap: pip is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PACKAGES="xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 \
libxcb-xfixes0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libgl1 libegl1 libglib2.0-0"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "bootstrap: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
elif ! command -v Xvfb >/dev/null 2>&1; then
  echo "bootstrap: Xvfb is missing and this is not root; install: $APT_PACKAGES" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.clipseg-bootstrap
want="$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "bootstrap: .venv is up to date"
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip wheel
# torch first, pinned to the release this project is tested with (torchvision comes along
# because open_clip imports it). Where these wheels are cached locally pip takes them from disk.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[testing]"
echo "$want" > "$stamp"
echo "bootstrap: done ($(.venv/bin/python -c 'import torch, open_clip, napari; print("torch", torch.__version__, "open_clip", open_clip.__version__, "napari", napari.__version__)'))"
