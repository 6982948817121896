# perfcgi: `make` builds bin/perfcgi, `make up` serves the whole stack, `make test` proves it.

CC      ?= cc
PKGS    := fcgi hiredis libpq inih jansson libuv libmicrohttpd libcurl
OPT     ?= -O2 -g
# Sanitizers for the asan build; empty otherwise.
SAN     ?=
CFLAGS  += $(OPT) $(SAN) -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude -pthread -MMD -MP \
           $(shell pkg-config --cflags $(PKGS))
LDFLAGS += $(SAN)
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread

BUILD   ?= build
# app/<layer>/*.c, and app/main.c on top (see README: the layers).
APP_SRC := $(wildcard app/*.c app/*/*.c)
# Everything but main.c is linked into the unit tests too.
LIB_OBJ := $(patsubst app/%.c,$(BUILD)/app/%.o,$(filter-out app/main.c,$(APP_SRC)))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all test unit integration unit-bins asan asan-unit-bins up down clean fuzz fuzz-build fuzz-corpus
all: bin/perfcgi

bin/perfcgi: $(BUILD)/app/main.o $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/app/%.o: app/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

# The corpus replay #includes the fuzzers' entry code (tests/fuzz/*_one.c), which
# its dependency file then lists: compile the test alone, link the app objects.
$(BUILD)/tests/test_fuzz_corpus: tests/unit/test_fuzz_corpus.c $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS) $(shell pkg-config --libs cmocka)

ASAN_FLAGS := BUILD=build/asan OPT="-O1 -g" SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"

# The whole suite: unit tests (also under ASan/UBSan), docs, the real stack through Nginx.
test:
	deploy/install-deps.sh test
	$(MAKE) all
	tests/run.sh

unit: all
	tests/run.sh unit asan

integration: all
	tests/run.sh integration

unit-bins: $(UNIT_BIN)

# AddressSanitizer + UBSan build: build/asan/perfcgi and the unit tests.
asan:
	$(MAKE) $(ASAN_FLAGS) build/asan/perfcgi asan-unit-bins
asan-unit-bins:
	$(MAKE) $(ASAN_FLAGS) unit-bins

build/asan/perfcgi: $(BUILD)/app/main.o $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The benchmark's calibration baselines (bench/baselines/): a bare libfcgi accept loop
# and a bare non-blocking FastCGI responder, the bounds of the sync and event classes.
BENCH_BIN     := $(BUILD)/bench
BENCH_SRC     := bench/baselines
BENCH_CFLAGS  := $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
# Each is built from its sources in one command: every header is a prerequisite of both.
BENCH_COMMON  := $(BENCH_SRC)/prefork.c $(wildcard $(BENCH_SRC)/*.h)

.PHONY: bench-bins
bench-bins: $(BENCH_BIN)/fcgi-loop $(BENCH_BIN)/fcgi-nonblocking

$(BENCH_BIN)/fcgi-loop: $(BENCH_SRC)/fcgi_loop.c $(BENCH_COMMON)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $(filter %.c,$^) $(shell pkg-config --libs fcgi)

$(BENCH_BIN)/fcgi-nonblocking: $(BENCH_SRC)/fcgi_nonblocking.c $(BENCH_SRC)/fcgi_records.c \
                               $(BENCH_SRC)/listen_socket.c $(BENCH_COMMON)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $(filter %.c,$^)

# The benchmark (bench/README.md): `make bench` runs the full matrix, sweeps and baselines
# (about 40 minutes), `make bench-quick` the same in brief (under 3 minutes), `make tune`
# the tuner for TUNE_MIX and TUNE_P99 (ms). BENCH_ARGS and TUNE_ARGS pass more options
# to bench/engine.py, e.g. BENCH_ARGS="--classes sync,event --out /tmp/run".
BENCH_ENGINE := /usr/bin/python3 bench/engine.py
TUNE_MIX     ?= /=0.4,/cached-data=0.3,/io-intensive=0.2,/cpu-intensive=0.1
TUNE_P99     ?= 250
.PHONY: bench bench-quick tune bench-deps
bench-deps:
	deploy/install-deps.sh bench
	$(MAKE) all bench-bins

bench: bench-deps
	$(BENCH_ENGINE) run --profile full $(BENCH_ARGS)

bench-quick: bench-deps
	$(BENCH_ENGINE) run --profile quick $(BENCH_ARGS)

tune: bench-deps
	$(BENCH_ENGINE) tune --mix '$(TUNE_MIX)' --p99 $(TUNE_P99) $(TUNE_ARGS)

up:
	deploy/install-deps.sh stack
	$(MAKE) all
	deploy/stack.sh up

down:
	deploy/stack.sh down

# The docker-compose stack, offline, on a private Docker engine: built from Debian
# packages, brought up healthy, tested through its Nginx, torn down (as root; see
# deploy/compose-test.sh). Part of `make test`, as the compose tier of tests/run.sh.
.PHONY: compose-test
compose-test:
	deploy/install-deps.sh test
	deploy/compose-test.sh

clean:
	rm -rf build bin

# libFuzzer targets, built with clang into build/fuzz/ from only the app objects
# they test. `make fuzz` runs each for FUZZ_SECONDS on a fresh copy of its
# checked-in corpus (new inputs and crash files stay under build/fuzz/).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_DIR     := build/fuzz
FUZZ_CFLAGS  := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
                -Iinclude -MMD -MP
FUZZ_TARGETS := fcgi_codec query
FUZZ_LINK     = $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(filter %.o,$^)

$(FUZZ_DIR)/app/%.o: app/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_DIR)/fuzz_fcgi_codec: tests/fuzz/fuzz_fcgi_codec.c $(FUZZ_DIR)/app/fastcgi/fcgi_codec.o
	$(FUZZ_LINK)

$(FUZZ_DIR)/fuzz_query: tests/fuzz/fuzz_query.c $(FUZZ_DIR)/app/base/query.o
	$(FUZZ_LINK)

fuzz-build:
	deploy/install-deps.sh fuzz
	$(MAKE) $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    rm -rf $(FUZZ_DIR)/corpus/$$t; mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts/$$t; \
	    cp tests/fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus/$$t/; \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	    $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t/ $(FUZZ_DIR)/corpus/$$t; \
	done

# Rewrites the checked-in corpus from tests/fuzz/gen_corpus.c (deterministic).
fuzz-corpus:
	@mkdir -p $(FUZZ_DIR)
	$(CC) -O1 -g -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude \
	    -o $(FUZZ_DIR)/gen_corpus tests/fuzz/gen_corpus.c app/fastcgi/fcgi_codec.c
	$(FUZZ_DIR)/gen_corpus tests/fuzz/corpus

# Host install. `make install` copies the binary to $(PREFIX)/bin (built first) and, at
# the system paths the unit and the site refer to, the configuration (an existing one is
# kept), the systemd unit (ExecStart under PREFIX) and the Nginx site: the shared
# nginx/perfcgi.conf.template rendered for the unit's sockets. DESTDIR stages it all in
# another root (packages, tests). It needs no network and changes nothing else: no user,
# no enabled unit or site; it prints those steps. `make uninstall` removes what it installs.
PREFIX  ?= /usr/local
DESTDIR ?=
INSTALL ?= install
# Where the site listens. Loopback by default: the endpoints spend CPU and memory on
# demand. NGINX_LISTEN_ADDR=0.0.0.0 serves other machines (the operations endpoints stay
# loopback-only).
NGINX_LISTEN_ADDR ?= 127.0.0.1
NGINX_PORT        ?= 8080

INSTALL_BIN   := $(DESTDIR)$(PREFIX)/bin/perfcgi
INSTALL_CONF  := $(DESTDIR)/etc/perfcgi/perfcgi.ini
INSTALL_UNIT  := $(DESTDIR)/lib/systemd/system/perfcgi.service
INSTALL_SITE  := $(DESTDIR)/etc/nginx/sites-available/perfcgi
INSTALL_LINK  := $(DESTDIR)/etc/nginx/sites-enabled/perfcgi
# Parent of the site's fastcgi_cache_path, which Nginx creates but Debian does not ship.
INSTALL_CACHE := $(DESTDIR)/var/cache/nginx
# The variables of nginx/perfcgi.conf.template. envsubst replaces these and nothing else
# (Nginx's own $host, $request_uri, ... stay). The upstreams are perfcgi.ini's bind and
# status_bind; sync workers get no upstream keepalive (one connection at a time per worker).
SITE_VARS := NGINX_LISTEN_ADDR NGINX_PORT NGINX_APP_SERVER NGINX_STATUS_SERVER NGINX_CACHE_DIR \
             NGINX_UPSTREAM_KEEPALIVE NGINX_FASTCGI_KEEP_CONN
SITE_ENV  := NGINX_LISTEN_ADDR='$(NGINX_LISTEN_ADDR)' NGINX_PORT='$(NGINX_PORT)' \
             NGINX_APP_SERVER=unix:/run/perfcgi/perfcgi.sock \
             NGINX_STATUS_SERVER=unix:/run/perfcgi/status.sock \
             NGINX_CACHE_DIR=/var/cache/nginx/perfcgi \
             NGINX_UPSTREAM_KEEPALIVE='\# no keepalive: a sync worker serves one connection at a time (event workers: see above)' \
             NGINX_FASTCGI_KEEP_CONN=off

.PHONY: install uninstall
install: bin/perfcgi
	@case '$(PREFIX)' in /*) ;; *) echo 'make install: PREFIX must be an absolute path' >&2; exit 1 ;; esac
	@case '$(NGINX_PORT)' in '' | *[!0-9]*) echo 'make install: NGINX_PORT must be a port number' >&2; exit 1 ;; esac
	@test -n '$(NGINX_LISTEN_ADDR)' || { echo 'make install: NGINX_LISTEN_ADDR is empty' >&2; exit 1; }
	@command -v envsubst >/dev/null || { echo 'make install: envsubst is missing (apt-get install -y gettext-base)' >&2; exit 1; }
	$(INSTALL) -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(patsubst %/,%,$(dir $(INSTALL_CONF) $(INSTALL_UNIT) $(INSTALL_SITE))) \
	    $(INSTALL_CACHE)
	$(INSTALL) -m 0755 bin/perfcgi $(INSTALL_BIN)
	@# The shipped configuration must load with this binary; an existing one is the user's.
	env -i bin/perfcgi -c deploy/perfcgi.ini --print-config >/dev/null
	@if [ ! -e $(INSTALL_CONF) ]; then \
	    echo '$(INSTALL) -m 0644 deploy/perfcgi.ini $(INSTALL_CONF)'; \
	    $(INSTALL) -m 0644 deploy/perfcgi.ini $(INSTALL_CONF); \
	elif ! cmp -s deploy/perfcgi.ini $(INSTALL_CONF); then \
	    echo 'kept $(INSTALL_CONF): it differs from deploy/perfcgi.ini (yours?)'; \
	    env -i $(INSTALL_BIN) -c $(INSTALL_CONF) --print-config >/dev/null || \
	        echo 'warning: this perfcgi does not accept $(INSTALL_CONF) (above); compare it with deploy/perfcgi.ini' >&2; \
	fi
	sed 's|@PREFIX@|$(PREFIX)|g' deploy/perfcgi.service >$(INSTALL_UNIT).tmp
	chmod 0644 $(INSTALL_UNIT).tmp && mv -f $(INSTALL_UNIT).tmp $(INSTALL_UNIT)
	@set -e; tmp=$(INSTALL_SITE).tmp; \
	{ printf '%s\n' \
	    '# perfcgi: the Nginx site of a host install, generated by `make install` from' \
	    '# nginx/perfcgi.conf.template (the configuration of the local stack and docker-compose' \
	    '# too) for the sockets of perfcgi.service. Edits are lost on the next install: re-run' \
	    '# it with NGINX_LISTEN_ADDR=... NGINX_PORT=... to move the site. Enable it with' \
	    '#   ln -sfn ../sites-available/perfcgi /etc/nginx/sites-enabled/perfcgi' ''; \
	  $(SITE_ENV) envsubst '$(foreach v,$(SITE_VARS),$$$(v))' <nginx/perfcgi.conf.template; } >$$tmp; \
	if grep -n '\$$[{]*NGINX_' $$tmp >&2; then \
	    rm -f $$tmp; echo 'make install: nginx/perfcgi.conf.template uses a variable not in SITE_VARS (above)' >&2; exit 1; \
	fi; \
	chmod 0644 $$tmp; mv -f $$tmp $(INSTALL_SITE); \
	echo 'rendered nginx/perfcgi.conf.template to $(INSTALL_SITE) (listen $(NGINX_LISTEN_ADDR):$(NGINX_PORT))'
	@printf '%s\n' '' 'perfcgi is installed. Still to do, as root (make install did none of it):' \
	    '  useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin perfcgi' \
	    '  usermod -aG perfcgi www-data      # Nginx may then use the 0660 sockets in /run/perfcgi' \
	    '  systemctl daemon-reload && systemctl enable --now perfcgi' \
	    '  ln -sfn ../sites-available/perfcgi /etc/nginx/sites-enabled/perfcgi' \
	    '  nginx -t && systemctl reload nginx' \
	    '  curl -s http://127.0.0.1:$(NGINX_PORT)/healthz' \
	    'Backends (for /readyz): Redis on 127.0.0.1:6379, and PostgreSQL with a role and database perfcgi:' \
	    '  runuser -u postgres -- createuser perfcgi && runuser -u postgres -- createdb -O perfcgi perfcgi' \
	    '  runuser -u perfcgi -- psql -X -q -v ON_ERROR_STOP=1 -d perfcgi <deploy/schema.sql'

uninstall:
	@for l in $(DESTDIR)/etc/systemd/system/*.wants/perfcgi.service; do \
	    if [ -L "$$l" ]; then echo "make uninstall: perfcgi is still enabled ($$l): systemctl disable --now perfcgi first" >&2; exit 1; fi; \
	done
	rm -f $(INSTALL_BIN) $(INSTALL_UNIT) $(INSTALL_SITE)
	@# The site link (made by the user): a dangling one would stop Nginx from loading.
	@if [ -L $(INSTALL_LINK) ]; then \
	    case $$(readlink $(INSTALL_LINK)) in */sites-available/perfcgi) echo 'rm -f $(INSTALL_LINK)'; rm -f $(INSTALL_LINK) ;; esac; \
	fi
	@if [ -e $(INSTALL_CONF) ] && ! cmp -s deploy/perfcgi.ini $(INSTALL_CONF); then \
	    echo 'kept $(INSTALL_CONF): it differs from deploy/perfcgi.ini (yours?); remove it yourself'; \
	else rm -f $(INSTALL_CONF); fi
	rm -rf $(INSTALL_CACHE)/perfcgi
	@for d in $(patsubst %/,%,$(dir $(INSTALL_CONF))) $(INSTALL_CACHE); do if [ -d $$d ]; then rmdir --ignore-fail-on-non-empty $$d; fi; done
	@printf '%s\n' '' 'perfcgi is uninstalled. Still to do, as root, if you wish:' \
	    '  systemctl daemon-reload && systemctl reload nginx' \
	    '  gpasswd -d www-data perfcgi && userdel perfcgi'

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
