#!/bin/sh
# As the official image's entrypoint: `redis-server [options]` without a config file gets
# --protected-mode no, and runs as user redis.
set -e
if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
    case "${2:-}" in *.conf) ;; *) shift; set -- redis-server "$@" --protected-mode no ;; esac
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data 2>/dev/null || true
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
