#!/usr/bin/env bash
# deploy/install-deps.sh [stack|bench|test|fuzz]: makes sure the Debian packages perfcgi
# needs are installed. As root it installs what is missing; otherwise it prints the exact
# apt-get line to run and fails. `stack` is what `make up` needs; `bench` adds the
# benchmark's tools (wrk, Node.js with npm's loadtest for the open loop, matplotlib for
# the charts, Chromium to check the HTML report) and installs bench/package-lock.json's
# packages into bench/node_modules; `test` adds those and the test
# tools (the Docker engine, docker-compose and debootstrap for `make compose-test`; the
# FastCGI front ends that tests/integration/test_frontends.py puts before each class;
# iproute2 for the network-namespace client and the scale test's hosts, systemd for
# `systemd-analyze verify`, pgbouncer for tests/integration/test_pgbouncer.py; kubectl,
# whose kustomize renders deploy/k8s, and tests/k8s/package-lock.json's packages that
# validate it, installed into tests/k8s/node_modules);
# `fuzz` adds clang for the libFuzzer targets.
set -euo pipefail

build=(build-essential pkg-config libfcgi-dev libhiredis-dev libpq-dev libinih-dev libjansson-dev libuv1-dev libmicrohttpd-dev
       libcurl4-openssl-dev libsystemd-dev libunwind-dev)
stack=(nginx libnginx-mod-http-echo redis-server redis-tools postgresql postgresql-client gettext-base curl)
test=(libcmocka-dev libfcgi-bin python3 prometheus docker.io docker-compose debootstrap
      lighttpd apache2 haproxy h2o caddy iproute2 systemd pgbouncer)

# kubectl: Debian's (kubernetes-client), unless one is installed already.
command -v kubectl >/dev/null || test+=(kubernetes-client)

bench=(wrk python3-matplotlib chromium fonts-dejavu-core)
# Node.js and npm: Debian's, unless a node with its own npm is installed already.
command -v node >/dev/null && command -v npm >/dev/null || bench+=(nodejs npm)

packages=("${build[@]}" "${stack[@]}")
case ${1:-stack} in
bench) packages+=("${bench[@]}") ;;
test) packages+=("${bench[@]}" "${test[@]}") ;;
fuzz) packages+=(clang) ;;
esac

# npm packages of DIR (bench: the open-loop tool; tests/k8s: the Kubernetes schemas),
# from the npm registry at the versions its lock file pins.
npm_packages() { # DIR, relative to the repository
    local dir
    dir=$(cd "$(dirname "$0")/../$1" && pwd)
    [[ $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]] && return 0
    echo "installing $1/package-lock.json's npm packages into $1/node_modules"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}
finish() {
    case ${1:-stack} in
    bench) npm_packages bench ;;
    test) npm_packages bench && npm_packages tests/k8s ;;
    esac
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    finish "${1:-}"
    exit 0
fi

line="apt-get install -y --no-install-recommends ${missing[*]}"
if ((EUID != 0)); then
    echo "perfcgi needs these Debian packages; as root, run:" >&2
    echo "  apt-get update && $line" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# perfcgi and its tests run private servers on ports of their own: the packages'
# own services (Nginx, Apache, lighttpd, Redis, PostgreSQL ... all on their default
# ports) are not started by the install, where a policy does not already say so.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
finish "${1:-}"
