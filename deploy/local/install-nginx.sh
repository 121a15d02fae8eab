#!/usr/bin/env bash
# Install Debian's nginx (nginx-core: it has the gRPC proxy module) with apt when it is missing: the
# balancer that docker-compose.yml runs in a container (deploy/lb/nginx.conf), run here as a plain
# process by tests/test_replicas.py and bench/capacity.py. The packaged service is not started.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
    echo "nginx is already installed: $( (nginx -v || /usr/sbin/nginx -v) 2>&1 | head -n 1)"
    exit 0
fi
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_ready install-nginx "Install nginx 1.22 or newer (with its gRPC module) so that 'nginx' is on PATH." nginx-core
# policy-rc.d: Debian's maintainer scripts must not start the packaged service (it would hold port 80).
policy=/usr/sbin/policy-rc.d made=
if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee $policy >/dev/null && "${SUDO[@]}" chmod +x $policy && made=1; fi
trap 'if [[ -n $made ]]; then "${SUDO[@]}" rm -f $policy; fi' EXIT
apt_install nginx-core
echo "install-nginx: $(/usr/sbin/nginx -v 2>&1)"
