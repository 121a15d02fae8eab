#!/usr/bin/env bash
# Install redis-server (and redis-tools) with apt when it is missing. `make install` runs this.
# The local stack starts redis-server itself (deploy/local/stack.sh): the Debian service that the
# package enables is stopped and disabled again, so that it does not hold port 6379.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is already installed: $(redis-server --version | head -n 1)"
    exit 0
fi
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ready install-redis "Install Redis 6.2 or newer so that 'redis-server' is on PATH, or point REDIS_URL at a Redis you run." \
    redis-server
apt_install redis-server
# Debian starts the packaged service where systemd runs; the local stack runs its own instance.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/redis-server ]]; then
    "${SUDO[@]}" /etc/init.d/redis-server stop >/dev/null 2>&1 || true
    "${SUDO[@]}" update-rc.d redis-server disable >/dev/null 2>&1 || true
fi
echo "install-redis: the packaged redis-server service is left stopped; 'make up' runs its own."
echo "install-redis: $(redis-server --version | head -n 1)"
