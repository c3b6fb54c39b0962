#!/usr/bin/env bash
# What the overlay's browser tests (tests/publish/test_overlay_browser.py) need:
# Debian's chromium (and a font to draw the captions with) and the Python package
# playwright in .venv. Playwright drives /usr/bin/chromium through the driver its
# wheel bundles: no `playwright install`, no browser is ever downloaded.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "browser-deps: please install ${missing[*]} with your package manager" >&2
    exit 1
  fi
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "browser-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
[ -x /usr/bin/chromium ] || { echo "browser-deps: /usr/bin/chromium is missing" >&2; exit 1; }

python=.venv/bin/python
[ -x "$python" ] || { echo "browser-deps: no .venv here; run ./bootstrap.sh first" >&2; exit 1; }
if ! "$python" -c 'import playwright.sync_api' 2>/dev/null; then
  echo "browser-deps: installing playwright into .venv" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$python" -m pip install -q "playwright>=1.45"
fi
echo "browser-deps: $(/usr/bin/chromium --version 2>/dev/null), playwright $("$python" -c \
  'from importlib.metadata import version; print(version("playwright"))')" >&2
