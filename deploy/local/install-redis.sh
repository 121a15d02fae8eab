#!/usr/bin/env bash
# Install redis-server (and redis-tools) with apt when it is missing. `make install` runs this.
# The local stack starts redis-server itself (deploy/local/stack.sh): the Debian service that the
# package enables is stopped and disabled again, so that it does not hold port 6379.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is already installed: $(redis-server --version | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: redis-server is missing and there is no apt-get here." >&2
    echo "  Install Redis 6.2 or newer with your package manager so that 'redis-server' is on PATH," >&2
    echo "  or point REDIS_URL at a Redis you already run." >&2
    exit 1
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo)
    else
        echo "install-redis: installing redis-server needs root. Run as root, or:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y redis-server" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-redis: installing redis-server with apt-get..."
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian starts the packaged service where systemd runs; the local stack runs its own instance.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/redis-server ]]; then
    "${SUDO[@]}" /etc/init.d/redis-server stop >/dev/null 2>&1 || true
    "${SUDO[@]}" update-rc.d redis-server disable >/dev/null 2>&1 || true
fi
echo "install-redis: the packaged redis-server service is left stopped; 'make up' runs its own."
echo "install-redis: $(redis-server --version | head -n 1)"
