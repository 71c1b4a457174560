# memstress: a Kubernetes operator and worker that fill memory in a
# controlled way and report how pods, limits and nodes behave.
#
# `make help` lists the targets.  Objects go to build/<variant>/, binaries
# to bin/ (the sanitizer variant keeps its own under build/sanitize/bin/).

VERSION ?= $(shell cat VERSION)

CC ?= cc
PKGS := libcurl json-c yaml-0.1 libmicrohttpd
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

VARIANT ?= release
ifeq ($(VARIANT),sanitize)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
       -fno-sanitize-recover=all
BINDIR := build/sanitize/bin
else
OPT := -O2 -g
BINDIR := bin
endif
BUILDDIR := build/$(VARIANT)

CFLAGS ?= $(OPT)
ALL_CFLAGS = -std=c17 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -I. \
             -DMEMSTRESS_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(OPT) -pthread $(LDFLAGS)

KUBE_SRCS := $(sort $(wildcard kube/*.c))
WORKER_SRCS := $(sort $(wildcard worker/*.c))
CONTROLLER_SRCS := $(sort $(wildcard controller/*.c))
UNIT_SRCS := $(sort $(wildcard test/unit/test_*.c))

KUBE_OBJS := $(KUBE_SRCS:%.c=$(BUILDDIR)/%.o)
WORKER_OBJS := $(WORKER_SRCS:%.c=$(BUILDDIR)/%.o)
WORKER_LIB_OBJS := $(filter-out $(BUILDDIR)/worker/main.o,$(WORKER_OBJS))
CONTROLLER_OBJS := $(CONTROLLER_SRCS:%.c=$(BUILDDIR)/%.o)
CONTROLLER_LIB_OBJS := $(filter-out $(BUILDDIR)/controller/main.o,$(CONTROLLER_OBJS))
UNIT_BINS := $(UNIT_SRCS:test/unit/%.c=$(BUILDDIR)/test/%)

PROGRAMS := $(BINDIR)/memstress-worker
ifneq ($(CONTROLLER_SRCS),)
PROGRAMS += $(BINDIR)/memstress-controller
endif

.DEFAULT_GOAL := all
.PHONY: all help deps demo demo-worker test test-build test-unit test-sanitize bench format \
        lint clean

all: $(PROGRAMS) ## Build bin/memstress-worker (and the controller when present)

help: ## List the targets with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	    awk -F':.*## ' '{ printf "  %-16s %s\n", $$1, $$2 }'

deps: ## Install the Debian packages the build and the tests need
	@hack/deps.sh

$(BUILDDIR)/%.o: %.c VERSION
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILDDIR)/libkube.a: $(KUBE_OBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BINDIR)/memstress-worker: $(WORKER_OBJS) $(BUILDDIR)/libkube.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BINDIR)/memstress-controller: $(CONTROLLER_OBJS) $(BUILDDIR)/libkube.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# Each unit test links the module objects of both binaries except main().
$(BUILDDIR)/test/%: test/unit/%.c $(WORKER_LIB_OBJS) $(CONTROLLER_LIB_OBJS) \
                    $(BUILDDIR)/libkube.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka -lm

demo: ## Install, build, start the local cluster and run a 2-worker test
	@hack/demo.sh

demo-worker: ## Install, build, and run the worker alone on 127.0.0.1
	@hack/demo-worker.sh

test-build: $(PROGRAMS) $(UNIT_BINS)

test: deps ## Install dependencies, build, and run every suite (also under ASan/UBSan)
	@$(MAKE) --no-print-directory test-build
	@$(MAKE) --no-print-directory VARIANT=sanitize test-build
	@$(MAKE) --no-print-directory image
	@test/run.sh

test-unit: test-build ## Run only the cmocka unit tests
	@test/run.sh unit

BENCH_TOOLS := $(BUILDDIR)/bench/probe $(BUILDDIR)/bench/rsswait

$(BUILDDIR)/bench/%: test/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -Wall -Wextra -Werror -D_GNU_SOURCE -O2 -o $@ $<

bench: deps ## Print the benchmark figures, with stress-ng as the peer
	@$(MAKE) --no-print-directory all $(BENCH_TOOLS)
	@test/bench/run.sh

format: ## Rewrite the C sources with clang-format
	clang-format -i $(KUBE_SRCS) $(WORKER_SRCS) $(CONTROLLER_SRCS) \
	    $(UNIT_SRCS) $(wildcard */*.h test/bench/*.c)

lint: ## Check formatting and run clang-tidy on the C sources
	clang-format --dry-run --Werror $(KUBE_SRCS) $(WORKER_SRCS) \
	    $(CONTROLLER_SRCS) $(UNIT_SRCS) $(wildcard */*.h test/bench/*.c)
	clang-tidy --quiet $(KUBE_SRCS) $(WORKER_SRCS) $(CONTROLLER_SRCS) -- \
	    -std=c17 -D_GNU_SOURCE -I. -DMEMSTRESS_VERSION='"$(VERSION)"' \
	    $(PKG_CFLAGS)

clean: ## Remove build/ and bin/
	rm -rf build bin

# Local Kubernetes control plane for the cluster tests, all on 127.0.0.1.
.PHONY: kube-bins local-up local-down

kube-bins: ## Build etcd and the Kubernetes binaries into ~/.cache/memstress (cached)
	@hack/build-kube.sh

local-up: ## Start etcd, kube-apiserver, controller-manager, scheduler; see .local/
	@hack/local-up.sh

local-down: ## Stop the processes that local-up started
	@hack/local-down.sh

# --- kube/ client library: integration test driver ---------------------
# test/kube/run.sh drives libkube through this program against a real
# kube-apiserver; it is built with the unit tests.
KUBECTL_LITE := $(BUILDDIR)/test/kube/kubectl-lite

$(KUBECTL_LITE): test/kube/kubectl-lite.c $(BUILDDIR)/libkube.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

test-build: $(KUBECTL_LITE)
# --- end of the kube/ block ----------------------------------------------

# --- container image -------------------------------------------------------
# The image builds with --network host because hack/docker.sh starts dockerd
# without a bridge, so build containers have no network of their own.
# hack/base-image.sh makes the default BASE_IMAGE from Debian's packages. Any
# other BASE_IMAGE must be a bookworm image that the engine has or can pull.
IMAGE ?= memstress:dev
DEFAULT_BASE_IMAGE := memstress/debian:bookworm
BASE_IMAGE ?= $(DEFAULT_BASE_IMAGE)

.PHONY: image image-test

image: ## Build the container image (tag memstress:dev, or set IMAGE); starts dockerd if needed
	@hack/docker.sh
ifeq ($(BASE_IMAGE),$(DEFAULT_BASE_IMAGE))
	@hack/base-image.sh $(BASE_IMAGE)
endif
	docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

image-test: image ## Build the image, then run both binaries and a 32 MiB worker test in it
	@IMAGE=$(IMAGE) test/image/run.sh
# --- end of the container image block ---------------------------------------

# --- node agent: the kubelet stand-in of the local cluster ------------------
# hack/node-agent/ is a development harness in Go, built into ~/.cache/memstress.
.PHONY: agent-up agent-down

agent-up: ## Start the node agent (2 Ready nodes that run pods as local processes); needs local-up
	@hack/agent-up.sh

agent-down: ## Stop the node agent, its pods' processes and their cgroups
	@hack/agent-down.sh
# --- end of the node agent block ---------------------------------------------

-include $(shell find build -name '*.d' 2>/dev/null)
