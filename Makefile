# Backhaul build, test and demo entry points. Everything a fresh machine
# needs is installed or built here: Debian packages via apt-get, Go modules
# via the module proxy, kube-apiserver and kubectl from k8s.io/kubernetes.

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


.PHONY: all build test unit e2e bench demo lint fuzz deps kube-bins clean

all: build

## build: backhaul-hub and backhaul-agent into _output/bin
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./hub/cmd/backhaul-hub ./agent/cmd/backhaul-agent ./hub/cmd/backhaulctl

## deps: Debian packages the end-to-end suite and demo use (etcd, ip, nft)
deps:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v ip   >/dev/null || missing="$$missing iproute2"; \
	command -v nft  >/dev/null || missing="$$missing nftables"; \
	if [ -n "$$missing" ]; then \
		echo ">> installing$$missing with apt-get"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## kube-bins: kube-apiserver and kubectl $(KUBE_VERSION), built once and cached
kube-bins: $(BIN)/kube-apiserver $(BIN)/kubectl

$(BIN)/kube-apiserver $(BIN)/kubectl &: test/tools/kube/go.mod test/tools/kube/go.sum
	@mkdir -p $(BIN)
	@echo ">> building kube-apiserver and kubectl $(KUBE_VERSION) from the module proxy (first run: ~5 min)"
	cd test/tools/kube && go build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	@touch $(BIN)/kube-apiserver $(BIN)/kubectl

## test: unit tests (race detector) and the end-to-end suite
test: unit e2e

unit:
	go test -race -count=1 $(GOTEST_FLAGS) $(UNIT_PKGS)

## e2e: real kube-apiservers in network namespaces, reached only through the hub
e2e: deps kube-bins build
	go test -count=1 -p 1 -timeout 25m $(GOTEST_FLAGS) ./test/...

## bench: tunnel and gateway figures side by side with direct connections
bench: deps kube-bins build
	go run ./test/bench

## demo: a hub and two member clusters on this machine; Ctrl-C stops all
demo: deps kube-bins build
	go run ./test/demo

## fuzz: each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	go test -run='^$$' -fuzz=FuzzReadRequest -fuzztime=$(FUZZTIME) ./tunnel/
	go test -run='^$$' -fuzz=FuzzReadReply -fuzztime=$(FUZZTIME) ./tunnel/
	go test -run='^$$' -fuzz=FuzzParseNodeAddresses -fuzztime=$(FUZZTIME) ./hub/
	go test -run='^$$' -fuzz=FuzzCredentialHeaders -fuzztime=$(FUZZTIME) ./hub/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	go vet ./...

clean:
	rm -rf $(OUT)
