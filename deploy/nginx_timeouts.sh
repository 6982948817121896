#!/usr/bin/env bash
# nginx_timeouts.sh: Nginx's timeouts in a rendered nginx/perfcgi.conf.template against
# perfcgi's own, for every renderer of the template (stack.sh, make install, the tests).
#
#   nginx_timeouts.sh keepalive KEEPALIVE_TIMEOUT
#       the NGINX_UPSTREAM_KEEPALIVE line for event workers: Nginx drops an idle
#       connection 1 s (below 2 s: half the time) before perfcgi would close it, so it
#       never reuses a connection perfcgi is closing
#   nginx_timeouts.sh check CONF TIMEOUT KEEPALIVE_TIMEOUT
#       one warning line per relation CONF breaks (exit 1), nothing when all hold:
#       fastcgi_read_timeout above `timeout` (or Nginx answers 504 for a request perfcgi
#       still serves), fastcgi_send_timeout not below it, and the upstream's
#       keepalive_timeout below `keepalive_timeout`
set -euo pipefail

# A decimal number of seconds, or an Nginx time (500ms, 30s, 1m), in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = u == "ms" ? 1 : u == "m" ? 60000 : u == "h" ? 3600000 : 1000; printf "%d", n * f }'
}

keepalive_line() {
    local ka idle
    ka=$(to_ms "$1")
    if ((ka >= 2000)); then idle=$((ka - 1000)); else idle=$((ka / 2)); fi
    ((idle > 0)) || { echo "# no keepalive: perfcgi's keepalive_timeout $1 keeps no idle connection"; return; }
    if ((idle % 1000)); then idle=${idle}ms; else idle=$((idle / 1000))s; fi
    echo "keepalive 1024; keepalive_timeout $idle; keepalive_time 10s;"
}

check() {
    local conf=$1 timeout_ms keep_ms bad=0 v
    timeout_ms=$(to_ms "$2")
    keep_ms=$(to_ms "$3")
    while read -r v; do
        (($(to_ms "$v") > timeout_ms)) && continue
        echo "nginx: fastcgi_read_timeout $v in $conf is not above perfcgi's timeout $2 s: Nginx would answer 504 while perfcgi still serves the request; raise it or lower timeout"
        bad=1
    done < <(sed -nE 's/^[[:space:]]*fastcgi_read_timeout[[:space:]]+([^;]+);.*/\1/p' "$conf")
    while read -r v; do
        (($(to_ms "$v") >= timeout_ms)) && continue
        echo "nginx: fastcgi_send_timeout $v in $conf is below perfcgi's timeout $2 s; raise it or lower timeout"
        bad=1
    done < <(sed -nE 's/^[[:space:]]*fastcgi_send_timeout[[:space:]]+([^;]+);.*/\1/p' "$conf")
    # Only the upstream's keepalive_timeout: the server block's is the clients'.
    while read -r v; do
        (($(to_ms "$v") < keep_ms)) && continue
        echo "nginx: the upstream's keepalive_timeout $v in $conf is not below perfcgi's keepalive_timeout $3 s: Nginx would reuse connections perfcgi is closing; lower it or raise keepalive_timeout"
        bad=1
    done < <(sed -n '/^upstream perfcgi_app {/,/^}/p' "$conf" | grep -oE 'keepalive_timeout[[:space:]]+[^;]+' |
        awk '{ print $2 }')
    return $bad
}

case ${1:-} in
keepalive) keepalive_line "$2" ;;
check) check "$2" "$3" "$4" ;;
*)
    echo "usage: $0 keepalive KEEPALIVE_TIMEOUT | check CONF TIMEOUT KEEPALIVE_TIMEOUT" >&2
    exit 2
    ;;
esac
