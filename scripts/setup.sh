#!/usr/bin/env bash
# Set up a fresh machine for streamlmu: system packages (when missing and when
# we may install them), a virtual environment in .venv with pinned Python
# dependencies, and the package itself in editable mode.
# Idempotent; `make` calls it only when requirements.txt or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

system_packages=(espeak-ng sox festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
                 pulseaudio pulseaudio-utils libportaudio2 libgl1 chromium)
# libgl1: OpenCV (the vision extra); chromium: the browser test of the serve page
missing=()
for pkg in "${system_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
install_system_packages() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq && \
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null && \
    "${sudo[@]}" apt-get clean
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  if ! command -v apt-get >/dev/null || { [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; } \
      || ! install_system_packages "${missing[@]}"; then
    echo "setup: warning: could not install ${missing[*]} (needs apt-get and root);" \
         "speech synthesis and audio-device features will be unavailable" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing pinned Python dependencies (first run takes a few minutes)"
# About 6.7 GB installed, torch's CUDA libraries most of it. pip holds every
# downloaded wheel of one install until all are in place, so torch and its
# libraries go in a step of their own: the peak falls from 8.8 to 7.2 GB.
need_gb=8
free_gb=$(df -Pk "$VENV" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$free_gb" -lt "$need_gb" ] && [ ! -f "$VENV/.streamlmu-installed" ]; then
  echo "setup: warning: $free_gb GB free where $VENV lies; a first install needs about $need_gb GB" >&2
else
  echo "setup: $free_gb GB free where $VENV lies"
fi
# A pip configuration may list local package indexes that do not exist;
# pip's warnings about them are noise.
quiet_pip() {
  "$VENV/bin/pip" install -q --no-cache-dir "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
mapfile -t torch_pins < <(grep -oE '^torch(audio|vision)?==[^ #]+' requirements.txt)
quiet_pip "${torch_pins[@]}"
quiet_pip -r requirements.txt
quiet_pip --no-deps -e .
echo "setup: done"
