# perfcgi: `make` builds bin/perfcgi, `make up` serves the whole stack, `make test` proves it.

CC      ?= cc
PKGS    := fcgi hiredis libpq inih jansson libuv
OPT     ?= -O2 -g
# Sanitizers for the asan build; empty otherwise.
SAN     ?=
CFLAGS  += $(OPT) $(SAN) -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude -pthread -MMD -MP \
           $(shell pkg-config --cflags $(PKGS))
LDFLAGS += $(SAN)
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread

BUILD   ?= build
APP_SRC := $(wildcard app/*.c)
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

up:
	deploy/install-deps.sh stack
	$(MAKE) all
	deploy/stack.sh up

down:
	deploy/stack.sh down

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

$(FUZZ_DIR)/fuzz_fcgi_codec: tests/fuzz/fuzz_fcgi_codec.c $(FUZZ_DIR)/app/fcgi_codec.o
	$(FUZZ_LINK)

$(FUZZ_DIR)/fuzz_query: tests/fuzz/fuzz_query.c $(FUZZ_DIR)/app/query.o
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
	    -o $(FUZZ_DIR)/gen_corpus tests/fuzz/gen_corpus.c app/fcgi_codec.c
	$(FUZZ_DIR)/gen_corpus tests/fuzz/corpus

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
