#!/usr/bin/env bash
# Install Debian's nginx (nginx-core: it has the gRPC proxy module) with apt when it is missing: the
# balancer that docker-compose.yml runs in a container (deploy/lb/nginx.conf), run here as a plain
# process by tests/test_replicas.py and bench/capacity.py. The packaged service is not started.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
    echo "nginx is already installed: $( (nginx -v || /usr/sbin/nginx -v) 2>&1 | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-nginx: nginx is missing and there is no apt-get here." >&2
    echo "  Install nginx 1.22 or newer (with its gRPC module) so that 'nginx' is on PATH." >&2
    exit 1
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo)
    else
        echo "install-nginx: installing nginx needs root. Run as root, or:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y nginx-core" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-nginx: installing nginx-core with apt-get..."
# policy-rc.d: Debian's maintainer scripts must not start the packaged service (it would hold port 80).
policy=/usr/sbin/policy-rc.d made=
if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee $policy >/dev/null && "${SUDO[@]}" chmod +x $policy && made=1; fi
trap 'if [[ -n $made ]]; then "${SUDO[@]}" rm -f $policy; fi' EXIT
# One apt at a time: the test modules that install what they need may run side by side.
"${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get update -qq
"${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get install -y -qq --no-install-recommends nginx-core >/dev/null
echo "install-nginx: $(/usr/sbin/nginx -v 2>&1)"
