# perfcgi: `make` builds bin/perfcgi, `make up` serves the whole stack, `make test` proves it.

CC      ?= cc
PKGS    := fcgi hiredis libpq inih jansson
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

.PHONY: all test unit integration unit-bins asan asan-unit-bins up down clean
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

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
