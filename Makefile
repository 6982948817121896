# perfcgi: `make` builds bin/perfcgi, `make up` serves the whole stack, `make test` proves it.

CC      ?= cc
PKGS    := fcgi hiredis libpq inih jansson
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude -pthread -MMD -MP \
           $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread

BUILD   ?= build
APP_SRC := $(wildcard app/*.c)
# Everything but main.c is linked into the unit tests too.
LIB_OBJ := $(patsubst app/%.c,$(BUILD)/app/%.o,$(filter-out app/main.c,$(APP_SRC)))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all test unit integration compose-config asan up down clean
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

# The whole suite: unit tests, the compose file, the real stack through Nginx.
test: all $(UNIT_BIN)
	tests/run.sh

unit: $(UNIT_BIN)
	tests/run.sh unit

integration: all
	tests/run.sh integration

# AddressSanitizer + UBSan build of everything, then the same suite on it.
asan:
	$(MAKE) BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	    LDFLAGS="-fsanitize=address,undefined" bin/perfcgi

up: all
	deploy/stack.sh up

down:
	deploy/stack.sh down

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
