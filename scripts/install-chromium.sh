#!/usr/bin/env bash
# Debian's chromium for tests/test_report_browser.py (the HTML report in a real headless
# browser), installed only if missing (needs root or sudo).
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
    command -v "$b" >/dev/null 2>&1 && exit 0
done
echo "installing chromium"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
