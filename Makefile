# elearn: one Makefile for the module, the daemons, the stack and the tests.
#
#   make run     the whole platform on loopback with demo data
#   make stop    stops it
#   make test    the full test suite (unit + integration, own stack)
#
# Every target installs what it lacks first (tools/deps.sh).

SHELL        := /bin/bash
TOP          := $(CURDIR)
BUILD        ?= $(TOP)/build
NGX_SRC      := /usr/share/nginx/src
NGX_BUILD    := $(BUILD)/nginx
MODULE_SO    := $(NGX_BUILD)/objs/ngx_http_elearn_module.so
MODULE_SRCS  := $(wildcard ngx_elearn_module/src/*.[ch]) ngx_elearn_module/config
PY           := /usr/bin/python3

# nginx's own flags for the stock binary (compat ABI), plus ours
WARN         := -Wall -Wextra -Werror -Wno-unused-parameter
NGX_CC_OPT   := -g -O2 -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
                $(WARN) $(EXTRA_CFLAGS)
# -Bsymbolic: nginx loads modules RTLD_GLOBAL, so after a reload onto a
# rebuilt .so the module's calls between its own files would otherwise
# bind to the copy loaded first
NGX_LD_OPT   := -Wl,-z,relro -Wl,-z,now -Wl,-Bsymbolic -fPIC $(EXTRA_LDFLAGS)

CFLAGS       ?= -g -O2
CFLAGS       += -std=gnu11 -fPIC -D_GNU_SOURCE $(WARN) $(EXTRA_CFLAGS) \
                -I$(TOP)/workers/lib -I/usr/include/postgresql
LDFLAGS      += $(EXTRA_LDFLAGS)

WORKER_LIB_SRCS := $(wildcard workers/lib/*.c)
WORKER_LIB_OBJS := $(WORKER_LIB_SRCS:workers/lib/%.c=$(BUILD)/workers/%.o)
WORKER_LIB      := $(BUILD)/workers/libelearn.a
WORKER_LIBS     := -lrdkafka -lpq -ljansson -lpthread -lm
DAEMONS         := $(patsubst workers/%/main.c,%,$(wildcard workers/*/main.c))
DAEMON_BINS     := $(DAEMONS:%=$(BUILD)/bin/elearn-%)

UNIT_SRCS    := $(wildcard tests/unit/test_*.c)
UNIT_BINS    := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps module workers run stop status test test-unit \
        test-integration bench asan format format-check clean migrate \
        demo-data sql-header

all: deps module workers

# NO_DEPS=1 skips the package check (images install their own packages)
deps:
	@[ -n "$(NO_DEPS)" ] || $(TOP)/tools/deps.sh

# --- the module -----------------------------------------------------------

# nginx-dev's sources are copied to the build directory and configured there
# with the stock binary's flags; only the module is compiled.
$(NGX_BUILD)/.configured: ngx_elearn_module/config | deps
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGX_SRC) $(NGX_BUILD)
	. $(NGX_SRC)/conf_flags && cd $(NGX_BUILD) && ./configure \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	    --add-dynamic-module=$(TOP)/ngx_elearn_module > configure.log
	touch $@

# the module's SQL lives in sql/api*.sql; the header is generated and kept in
# git so that a static build (--add-module) needs no extra step
SQL_HEADER   := ngx_elearn_module/src/ngx_http_elearn_sql.h

API_SQL      := $(sort $(wildcard sql/api.sql sql/api-*.sql))

$(SQL_HEADER): $(API_SQL) tools/sql2h.py
	$(PY) tools/sql2h.py $@ $(API_SQL)

sql-header: $(SQL_HEADER)

$(MODULE_SO): $(NGX_BUILD)/.configured $(MODULE_SRCS) $(SQL_HEADER)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules

module: $(MODULE_SO)

# --- the daemons ----------------------------------------------------------

$(BUILD)/workers/%.o: workers/lib/%.c $(wildcard workers/lib/*.h) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(WORKER_LIB): $(WORKER_LIB_OBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/bin/elearn-%: workers/%/*.c $(WORKER_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.c,$^) $(WORKER_LIB) $(LDFLAGS) \
	    $(WORKER_LIBS)

# the password hasher of tools/elearnctl
$(BUILD)/bin/elearn-hash: tools/elearn-hash.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -largon2

workers: $(if $(WORKER_LIB_SRCS),$(WORKER_LIB)) $(DAEMON_BINS) \
         $(BUILD)/bin/elearn-hash

# --- the stack ------------------------------------------------------------

run: all
	@$(TOP)/tools/run.sh

stop:
	@$(TOP)/tools/stack.sh stop

status:
	@$(TOP)/tools/stack.sh status

migrate:
	@$(TOP)/sql/migrate.sh

# --- tests ----------------------------------------------------------------

$(BUILD)/tests/%: tests/unit/%.c $(WORKER_LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(TOP)/tests/unit -o $@ $< $(WORKER_LIB) \
	    $(LDFLAGS) $(WORKER_LIBS) -lcmocka

# test_jwt links the module's JWT code, which is plain C over OpenSSL and
# jansson (no nginx types), instead of the daemons' library
JWT_SRC      := ngx_elearn_module/src/ngx_http_elearn_jwt.c

$(BUILD)/tests/test_jwt: tests/unit/test_jwt.c $(JWT_SRC) \
                         $(JWT_SRC:.c=.h) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ingx_elearn_module/src -o $@ $< $(JWT_SRC) \
	    $(LDFLAGS) -lcrypto -ljansson -lcmocka

# test_progress_report links the progress daemon's parser and merge
PROGRESS_REPORT_SRC := workers/progress/progress_report.c

$(BUILD)/tests/test_progress_report: tests/unit/test_progress_report.c \
                                     $(PROGRESS_REPORT_SRC) \
                                     workers/progress/progress.h \
                                     $(WORKER_LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iworkers/progress -o $@ $< $(PROGRESS_REPORT_SRC) \
	    $(WORKER_LIB) $(LDFLAGS) $(WORKER_LIBS) -lcmocka

test-unit: $(UNIT_BINS)
	@$(TOP)/tools/run-unit.sh $(UNIT_BINS)

test-integration: all
	@$(TOP)/tools/run-integration.sh

test: format-check all
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-integration

bench: all
	@$(TOP)/tools/bench.sh

# AddressSanitizer + UBSan build of module and daemons, and the integration
# tests against it (nginx preloads libasan for the module).
asan:
	$(MAKE) BUILD=$(TOP)/build/asan \
	    EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" all
	ELEARN_ASAN=1 ELEARN_BUILD=$(TOP)/build/asan \
	    $(TOP)/tools/run-integration.sh

# --- style ----------------------------------------------------------------

FORMAT_FILES = $(wildcard workers/lib/*.[ch] workers/*/*.[ch] tests/unit/*.[ch]) \
               tools/elearn-hash.c

format:
	clang-format -i $(FORMAT_FILES)

format-check: deps
	@$(TOP)/tools/format-check.sh $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)
