#!/usr/bin/env bash
# Debian's Chromium for tests/test_browser.py: Playwright (a dev dependency) drives
# /usr/bin/chromium. Never `playwright install`. Idempotent; needs root or sudo to install.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  echo "browser deps: /usr/bin/chromium present"
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q chromium
echo "browser deps: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
