#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine (Python >= 3.11) to a running subtitled:
#   ./bootstrap.sh demo    system packages, venv, install, then `subtitled demo`
#   ./bootstrap.sh test    the same with test tools, then ruff, mypy and the whole test suite
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-demo}"
case "$mode" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

# libportaudio2: sounddevice's capture library; gcc and libc6-dev: the install builds
# subtitled's native expert kernel (subtitled/translate/sparse_experts.c). The tests also
# play audio into a PulseAudio null sink, which needs the daemon and its command-line tools.
packages=(libportaudio2 gcc libc6-dev)
[ "$mode" = test ] && packages+=(pulseaudio pulseaudio-utils libasound2-plugins systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "bootstrap: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: please install ${missing[*]} with your package manager" >&2
    exit 1
  fi
fi

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: subtitled needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
extra=""; [ "$mode" = test ] && extra="[test,export]"
echo "bootstrap: installing subtitled$extra into .venv" >&2
.venv/bin/python -m pip install -q --upgrade pip
# The export tooling (tests only; the runtime never imports torch) needs torch: the
# pinned CPU build first, or a bare requirement would pull a multi-GB CUDA build.
[ "$mode" = test ] && .venv/bin/python -m pip install -q torch==2.13.0
# setuptools cautions on every editable install of this layout ("Please be careful with
# folders in your working directory with the same name as your package"): that is the
# checkout itself, and nothing to act on. Other warnings still show.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".$extra"

if [ "$mode" = demo ]; then
  exec .venv/bin/subtitled demo
fi
./.ci/browser-deps.sh   # Debian's chromium + playwright, for the overlay's browser tests
.venv/bin/ruff check subtitled export tests
.venv/bin/mypy --strict subtitled export
exec .venv/bin/pytest -q -ra
