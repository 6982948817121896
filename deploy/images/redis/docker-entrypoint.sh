#!/usr/bin/env bash
# Entrypoint of the offline redis stand-in (see the Dockerfile beside it): started as
# root it hands /data to redis and runs the server as redis.
set -Eeuo pipefail

if [[ ${1:-} == -* || ${1:-} == *.conf ]]; then
    set -- redis-server "$@"
fi
[[ ${1:-} == redis-server ]] || exec "$@"

if ((EUID == 0)); then
    find /data \! -user redis -exec chown redis:redis {} +
    exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# Protected mode off by default, as in the official image (where it is off when built):
# a configuration file or a later --protected-mode argument still decides.
shift
if [[ ${1:-} == *.conf ]]; then
    exec redis-server "$@"
fi
exec redis-server --protected-mode no "$@"
