#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver with apt when they are missing: the web page's tests
# drive a real headless Chromium (tests/web/test_browser.py runs this when it needs them).
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    echo "chromium is already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ready install-chromium "Install Chromium and its matching chromedriver at /usr/bin/chromium and /usr/bin/chromedriver." \
    chromium chromium-driver
apt_install chromium chromium-driver
echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
