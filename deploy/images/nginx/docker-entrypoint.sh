#!/usr/bin/env bash
# Entrypoint of the offline nginx stand-in (see the Dockerfile beside it): renders the
# templates with envsubst, runs /docker-entrypoint.d/*.sh, then execs the command.
set -Eeuo pipefail

say() { printf 'docker-entrypoint: %s\n' "$*"; }

render_templates() {
    local dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
    local suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
    local out_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
    local filter=${NGINX_ENVSUBST_FILTER:-}
    local name vars="" template rel out
    [[ -d $dir ]] || return 0
    # The variables envsubst may replace, as "${NAME} ..."; any other $word (Nginx's
    # own $host, $request_uri, ...) is left alone.
    for name in $(compgen -e); do
        if [[ -z $filter || $name =~ $filter ]]; then
            vars+="\${$name} "
        fi
    done
    while IFS= read -r -d '' template; do
        rel=${template#"$dir"/}
        out=$out_dir/${rel%"$suffix"}
        mkdir -p "$(dirname "$out")"
        say "rendering $template to $out"
        envsubst "$vars" <"$template" >"$out"
    done < <(find -L "$dir" -type f -name "*$suffix" -print0 | sort -z)
}

if [[ ${1:-} == nginx || ${1:-} == nginx-debug ]]; then
    render_templates
    for f in /docker-entrypoint.d/*.sh; do
        if [[ -x $f ]]; then
            say "running $f"
            "$f"
        fi
    done
fi
exec "$@"
