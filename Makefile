# Backhaul build, test and demo entry points. Everything a fresh machine
# needs is installed or built here: Debian packages via apt-get, Go modules
# via the module proxy, kube-apiserver and kubectl from k8s.io/kubernetes,
# staticcheck from honnef.co/go/tools.

SHELL       := /bin/bash
OUT         := $(CURDIR)/_output
BIN         := $(OUT)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X backhaul.io/backhaul/pkg/version.Version=$(VERSION)
KUBE_VERSION := v1.36.3
KUBE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=36
UNIT_PKGS    = $(shell go list ./... | grep -v '/test/')
GOTEST_FLAGS ?=

export GONOSUMDB := k8s.io


.PHONY: all build image node-images docs generate test unit e2e bench bench-peers demo lint fuzz fuzz-short deps kube-bins clean monitoring monitoring-update

all: build

## build: backhaul-hub and backhaul-agent into _output/bin
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./hub/cmd/backhaul-hub ./agent/cmd/backhaul-agent ./hub/cmd/backhaulctl

## image: backhaul-hub and backhaul-agent images (deploy/Dockerfile), tagged $(VERSION) and latest
# The binaries are built here, static and version-stamped, into
# _output/bin/linux_$(IMAGE_ARCH); docker only copies them. The context sent
# to the daemon is a tar of exactly the files the Dockerfile uses (paths as
# from the repository root), so no .dockerignore is needed and .git and the
# kube binaries in _output stay home. IMAGE_BASE defaults to scratch because
# no container registry is reachable from where this project is built;
# release images use IMAGE_BASE=gcr.io/distroless/static-debian12:nonroot
# (CA roots included). BuildKit is used when docker has it, else the legacy
# builder.
IMAGE_BASE  ?= scratch
IMAGE_ARCH  ?= amd64
IMAGE_REPO  ?=
IMAGE_BIN   := _output/bin/linux_$(IMAGE_ARCH)
image:
	@mkdir -p $(IMAGE_BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build -trimpath -ldflags '$(LDFLAGS)' \
		-o $(IMAGE_BIN)/ ./hub/cmd/backhaul-hub ./agent/cmd/backhaul-agent
	@set -e; rev=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	for t in hub agent; do \
		echo ">> $(IMAGE_REPO)backhaul-$$t:$(VERSION) from $(IMAGE_BASE)"; \
		tar -c deploy/Dockerfile $(IMAGE_BIN)/backhaul-hub $(IMAGE_BIN)/backhaul-agent | docker build -q -f deploy/Dockerfile \
			--target $$t --platform linux/$(IMAGE_ARCH) \
			--build-arg BASE=$(IMAGE_BASE) --build-arg VERSION=$(VERSION) --build-arg REVISION=$$rev \
			-t $(IMAGE_REPO)backhaul-$$t:$(VERSION) -t $(IMAGE_REPO)backhaul-$$t:latest - >/dev/null; \
	done
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^$(IMAGE_REPO)backhaul-(hub|agent):$(VERSION) '

## generate: deepcopy functions and CRD manifests from pkg/apis (controller-gen)
generate: $(BIN)/controller-gen
	$(BIN)/controller-gen object paths=./pkg/apis/backhaul/v1alpha1/... \
		crd paths=./pkg/apis/backhaul/v1alpha1/... output:crd:artifacts:config=deploy/hub/crds

$(BIN)/controller-gen: test/tools/controller-gen/go.mod test/tools/controller-gen/go.sum
	@mkdir -p $(BIN)
	cd test/tools/controller-gen && go build -trimpath -o $(BIN)/controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
	@touch $(BIN)/controller-gen

## docs: regenerate docs/configuration.md from the flag definitions
docs:
	go run ./pkg/flagdoc/cmd/gendocs -o docs/configuration.md

## deps: Debian packages the end-to-end suite and demo use (etcd, ip, nft, wget, shellcheck, chromium,
## and for the real nodes containerd, runc, CNI plugins, conntrack, busybox-static and a static libc)
deps:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v conntrack >/dev/null || missing="$$missing conntrack"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing="$$missing libc6-dev"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v ip   >/dev/null || missing="$$missing iproute2"; \
	command -v nft  >/dev/null || missing="$$missing nftables"; \
	command -v wget >/dev/null || missing="$$missing wget"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
		echo ">> installing$$missing with apt-get"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## kube-bins: kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler and
## kube-proxy $(KUBE_VERSION), built once and cached
KUBE_CMDS := kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy
kube-bins: $(addprefix $(BIN)/,$(KUBE_CMDS))

$(addprefix $(BIN)/,$(KUBE_CMDS)) &: test/tools/kube/go.mod test/tools/kube/go.sum
	@mkdir -p $(BIN)
	@echo ">> building $(KUBE_CMDS) $(KUBE_VERSION) from the module proxy (first run: ~10 min)"
	cd test/tools/kube && go build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/ \
		$(addprefix k8s.io/kubernetes/cmd/,$(KUBE_CMDS))
	@touch $(addprefix $(BIN)/,$(KUBE_CMDS))

## node-images: the pause and busybox images real test nodes run (test/tools/nodeimages),
## built FROM scratch: pause from upstream's pause.c, busybox from Debian's busybox-static
NODE_IMG := $(OUT)/node-images
node-images: deps
	@mkdir -p $(NODE_IMG)
	@src=$$(cd test/tools/kube && go list -m -f '{{.Dir}}' k8s.io/kubernetes) && \
		gcc -Os -static -DVERSION=3.10.2 -o $(NODE_IMG)/pause $$src/build/pause/linux/pause.c
	@cp /bin/busybox $(NODE_IMG)/busybox && cp test/tools/nodeimages/Dockerfile $(NODE_IMG)/Dockerfile
	tar -C $(NODE_IMG) -c Dockerfile pause busybox | docker build -q --target pause -t registry.k8s.io/pause:3.10.2 - >/dev/null
	tar -C $(NODE_IMG) -c Dockerfile pause busybox | docker build -q --target busybox -t backhaul-e2e/busybox:1.35 - >/dev/null
	@echo ">> node images: registry.k8s.io/pause:3.10.2 backhaul-e2e/busybox:1.35"

## test: unit tests (race detector), the alerts and dashboard, and the end-to-end suite
test: unit monitoring fuzz-short e2e

unit:
	go test -race -count=1 $(GOTEST_FLAGS) $(UNIT_PKGS)

## e2e: real kube-apiservers in network namespaces, reached only through the hub
# testsummary prints, after each package's result, how many tests ran,
# passed, skipped and failed (and what a skipped test said).
e2e: deps kube-bins build image node-images
	go run ./test/testsummary go test -json -count=1 -p 1 -timeout 25m $(GOTEST_FLAGS) ./test/...

## bench: tunnel and gateway figures side by side with direct connections,
## and Propagation at fleet size (1,000 x 20 members through real tunnels;
## BACKHAUL_BENCH_STEADY sets its steady-state window, default 2m)
bench: deps kube-bins build
	go run ./test/bench
	BACKHAUL_BENCH=1 go test -count=1 -v -timeout 30m -run 'TestConverge1000' ./test/e2e/propagation/
	go test -tags bench -count=1 -v -timeout 60m -run 'TestPropagationScale' ./test/e2e/scale/

## bench-peers: Backhaul beside rancher/remotedialer and konnectivity, each as separate server and
## agent processes, in one run under one load tool (test/peers, its own Go module): request latency,
## new-connection latency, 64-way req/s, bulk MB/s and server memory per idle agent at 1,000 and
## 10,000 sessions (~5 min, and ~2 more the first time to build konnectivity; PEERS_FLAGS=-quick for ~1.5 min)
bench-peers: build
	cd test/peers && go run . -bin $(BIN) $(PEERS_FLAGS)

## demo: a hub and two member clusters on this machine; Ctrl-C stops all.
## REAL_NODES=1 gives each member a real node (containerd + kubelet) with a container to exec into
demo: deps kube-bins build $(if $(REAL_NODES),node-images)
	go run ./test/demo $(if $(REAL_NODES),-real-nodes)

## fuzz: each fuzz target for FUZZTIME (default 1,000,000 inputs)
# Every decoder of bytes from the network has a fuzz target, as
# package:Target. `make test` runs each for FUZZTIME_SHORT; `make fuzz`
# for FUZZTIME. Budgets are counts of inputs, not durations: with a
# duration, Go 1.26's fuzz coordinator can report "context deadline
# exceeded" as a failure when its deadline races a busy worker
# (go.dev/issue/75804, fixed in Go 1.27), which failed CI once.
FUZZ_TARGETS := \
	./tunnel/:FuzzReadRequest ./tunnel/:FuzzReadReply \
	./hub/session/:FuzzParseNodeAddresses ./hub/session/:FuzzParseFeatures ./hub/session/:FuzzParseAgentTime ./agent/:FuzzCallerIdentityRoundTrip ./hub/frontend/:FuzzCredentialHeaders ./hub/frontend/:FuzzWebsocketFrames ./hub/frontend/:FuzzParseTarget \
	./hub/propagation/:FuzzPropagationKey ./hub/enrollment/:FuzzParseCSR ./pkg/identity/:FuzzParseToken ./pkg/denylist/:FuzzCheck \
	./hub/recording/:FuzzWebsocketTap ./hub/recording/:FuzzSPDYTap \
	./hub/audit/:FuzzGatewayEvent
FUZZTIME ?= 1000000x
FUZZTIME_SHORT ?= 60000x
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo ">> $${t##*:} for $(FUZZTIME)"; \
		go test -run='^$$' -fuzz="^$${t##*:}$$" -fuzztime=$(FUZZTIME) "$${t%%:*}"; \
	done

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_SHORT)

## lint: gofmt, go vet and staticcheck over the whole module
lint: $(BIN)/staticcheck $(BIN)/controller-gen
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags bench ./test/e2e/scale/
	$(BIN)/staticcheck ./...
	$(BIN)/staticcheck -tags bench ./test/e2e/scale/
	cd test/tools/promtool && go vet ./... && $(BIN)/staticcheck ./...
	cd test/peers && go vet ./... && $(BIN)/staticcheck ./...
	@$(MAKE) --no-print-directory generate >/dev/null
	@git diff --quiet -- pkg/apis deploy/hub/crds && test -z "$$(git status --porcelain -- pkg/apis deploy/hub/crds)" \
		|| { echo "generated files are stale: run make generate and commit"; git status --short -- pkg/apis deploy/hub/crds; exit 1; }

## monitoring: deploy/monitoring's alerts and dashboard: promtool check
## rules and test rules, and every query checked against the series the
## code exports (test/tools/promtool/monitoring)
monitoring: $(BIN)/promtool
	$(BIN)/promtool check rules deploy/monitoring/rules/*.rules.yaml
	cd deploy/monitoring/tests && $(BIN)/promtool test rules *.yaml
	cd test/tools/promtool && go test -count=1 ./monitoring/

## monitoring-update: the PrometheusRule manifests from deploy/monitoring/rules
monitoring-update:
	cd test/tools/promtool && go test -count=1 -run TestPrometheusRuleManifests ./monitoring/ -update

# promtool, like staticcheck below, is pinned in its own module
# (test/tools/promtool, which also holds the dashboard and rule checks),
# so Prometheus and its dependencies stay out of Backhaul's go.mod.
$(BIN)/promtool: test/tools/promtool/go.mod test/tools/promtool/go.sum
	@mkdir -p $(BIN)
	@echo ">> building promtool from the module proxy (first run: ~10 min)"
	cd test/tools/promtool && go build -trimpath -o $(BIN)/promtool github.com/prometheus/prometheus/cmd/promtool
	@touch $(BIN)/promtool

# staticcheck is pinned in its own module (test/tools/staticcheck) like the
# kube binaries, so it stays out of Backhaul's go.mod and is rebuilt only
# when that pin changes.
$(BIN)/staticcheck: test/tools/staticcheck/go.mod test/tools/staticcheck/go.sum
	@mkdir -p $(BIN)
	cd test/tools/staticcheck && go build -trimpath -o $(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck
	@touch $(BIN)/staticcheck

clean:
	rm -rf $(OUT)
