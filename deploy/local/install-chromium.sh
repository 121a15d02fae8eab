#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver with apt when they are missing: the web page's tests
# drive a real headless Chromium (tests/web/test_browser.py runs this when it needs them).
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    echo "chromium is already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: chromium is missing and there is no apt-get here." >&2
    echo "  Install Chromium and its matching chromedriver at /usr/bin/chromium and /usr/bin/chromedriver." >&2
    exit 1
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo)
    else
        echo "install-chromium: installing chromium needs root. Run as root, or:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-chromium: installing chromium and chromium-driver with apt-get..."
"${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get update -qq
"${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
