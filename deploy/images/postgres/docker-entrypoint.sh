#!/usr/bin/env bash
# Entrypoint of the offline postgres stand-in (see the Dockerfile beside it for the
# contract). Started as root it prepares PGDATA and the socket directory, then runs
# itself again as postgres; as postgres it initialises an empty PGDATA once (user,
# password, database, /docker-entrypoint-initdb.d/) and execs the server.
set -Eeuo pipefail

say() { printf 'docker-entrypoint: %s\n' "$*"; }
die() {
    printf 'docker-entrypoint: error: %s\n' "$*" >&2
    exit 1
}

# VAR or VAR_FILE (the content of that file), not both; exported as VAR.
from_env_or_file() { # VAR [DEFAULT]
    local var=$1 file_var="${1}_FILE" value=${2-}
    if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
        die "both $var and $file_var are set; use one"
    fi
    if [[ -n ${!var:-} ]]; then
        value=${!var}
    elif [[ -n ${!file_var:-} ]]; then
        value=$(<"${!file_var}")
    fi
    export "$var=$value"
    unset "$file_var"
}

# `docker run IMAGE -c x=y` means postgres with those options, as with the official image.
if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi
[[ ${1:-} == postgres ]] || exec "$@"

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGPORT=${PGPORT:-5432}
SOCKET_DIR=/var/run/postgresql

if ((EUID == 0)); then
    mkdir -p "$PGDATA" "$SOCKET_DIR"
    chmod 700 "$PGDATA"
    chmod 3777 "$SOCKET_DIR"
    # Only what is not postgres's already: a large existing cluster is not walked twice.
    find "$PGDATA" "$SOCKET_DIR" \! -user postgres -exec chown postgres:postgres {} +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

init_cluster() { # POSTGRES ARGS...: a fresh cluster in PGDATA, then the init files
    local auth pid i f
    from_env_or_file POSTGRES_PASSWORD
    from_env_or_file POSTGRES_USER postgres
    from_env_or_file POSTGRES_DB "$POSTGRES_USER"
    from_env_or_file POSTGRES_INITDB_ARGS
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [[ -z $POSTGRES_PASSWORD && $auth != trust ]]; then
        die "the database is not initialised and POSTGRES_PASSWORD is empty: set it (or" \
            "POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one)"
    fi

    say "initialising the cluster in $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    local -a initdb_args=()
    read -ra initdb_args <<<"$POSTGRES_INITDB_ARGS"
    # Connections over the socket (inside the container only) are trusted. TCP ones,
    # loopback included, need the password: with host networking, this container's
    # loopback is the whole machine's.
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host="$auth" "${initdb_args[@]}" >/dev/null
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    # A first server on the unix socket only, so that nothing sees the database before
    # it is ready (a TCP health check stays red until the real server below starts).
    say "starting a temporary server (unix socket only) for the init files"
    "$@" -c listen_addresses='' -p "$PGPORT" &
    pid=$!
    for ((i = 0; i < 600; i++)); do
        pg_isready -q -h "$SOCKET_DIR" -p "$PGPORT" -U "$POSTGRES_USER" -d postgres && break
        kill -0 "$pid" 2>/dev/null || die "the temporary server exited during initialisation"
        sleep 0.1
    done
    pg_isready -q -h "$SOCKET_DIR" -p "$PGPORT" -U "$POSTGRES_USER" -d postgres || die "the temporary server did not start within 60 s"

    export PGHOST=$SOCKET_DIR PGUSER=$POSTGRES_USER
    local -a psql=(psql -X -v ON_ERROR_STOP=1 --no-password --no-psqlrc)
    if [[ $POSTGRES_DB != postgres ]]; then
        "${psql[@]}" --dbname=postgres --set=db="$POSTGRES_DB" -q <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e $f ]] || continue
        case $f in
        *.sh)
            if [[ -x $f ]]; then
                say "running $f"
                "$f"
            else
                say "sourcing $f"
                # shellcheck disable=SC1090 # the init script is the user's
                . "$f"
            fi
            ;;
        *.sql) say "running $f" && "${psql[@]}" --dbname="$POSTGRES_DB" -f "$f" ;;
        *.sql.gz) say "running $f" && gzip -dc "$f" | "${psql[@]}" --dbname="$POSTGRES_DB" ;;
        *.sql.xz) say "running $f" && xz -dc "$f" | "${psql[@]}" --dbname="$POSTGRES_DB" ;;
        *) say "ignoring $f" ;;
        esac
    done
    unset PGHOST PGUSER

    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    wait "$pid" || true
    say "initialisation complete; starting the server"
}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    init_cluster "$@"
fi
exec "$@"
