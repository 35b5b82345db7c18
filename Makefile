# Navarch: a Kubernetes-compatible container orchestrator in one Go binary.
# Targets say what they do; `make run` and `make test` are the README's two commands.

GO      ?= go
BIN     := bin/navarch
DATADIR ?= /var/lib/navarch

# The OCI runtime built into navarch (node/runtime/libct, runc's
# libcontainer) compiles seccomp profiles with libseccomp (cgo, from deps):
# every build and test here has the seccomp tag, and so has the binary the
# end-to-end tests build. Without it, containers with a seccomp profile fail
# with "seccomp: config provided but seccomp not supported".
export GOFLAGS := $(GOFLAGS) -tags=seccomp

.PHONY: build run deps test test-unit e2e bench bench-convergence bench-node images clean

## build: compile the navarch binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/navarch

## run: install the node's packages (deps), build, and start a single-node
## cluster: the control plane (API on https://127.0.0.1:6443, kubeconfig
## written to $(DATADIR)/admin.kubeconfig) and this machine's node agent;
## needs root. Ctrl-C stops it (the pods' containers keep running: the next
## run re-adopts them).
run: deps build
	./$(BIN) server --data-dir $(DATADIR)

## deps: the Debian packages a node runs and the node tests use (real
## containers and pod networks): runc (--oci-runtime runc, and the tests of
## that mode), busybox-static, containernetworking-plugins, containerd (the
## kubelet's test against containerd's CRI), libseccomp-dev and pkg-config
## (building the seccomp support in); needs root.
NODE_PKGS := runc busybox-static containernetworking-plugins containerd libseccomp-dev pkg-config
deps:
	@if ! command -v runc >/dev/null || ! command -v containerd >/dev/null || [ ! -x /bin/busybox ] || [ ! -x /usr/lib/cni/bridge ] || [ ! -e /usr/include/seccomp.h ] || ! command -v pkg-config >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NODE_PKGS); \
	fi

## test: every test: unit, API server integration, and end-to-end with real kubectl
test: deps
	$(GO) test -count=1 -timeout 30m ./...

## test-unit: the tests that need no built binary
test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)

## e2e: only the end-to-end suite (real binary, real kubectl)
e2e:
	$(GO) test -count=1 -timeout 20m ./test/...

## bench: API server benchmarks; paste the table into bench/RESULTS.md
bench: build
	$(GO) run ./bench/apiserver -navarch ./$(BIN)

## bench-convergence: a Deployment of 3,000 and 10,000 replicas on 100 hollow nodes
bench-convergence: build
	$(GO) run ./bench/convergence -navarch ./$(BIN)

## bench-node: pod start-up latency (100 pods one at a time and 20 at a
## time) and the agent's memory idle and with 50 pods, on one real
## `navarch agent` beside a server; needs root and runc
bench-node: build images
	$(GO) run ./bench/node -navarch ./$(BIN)

## images: the test images as OCI tarballs for `navarch image import`:
## bin/images/testserver.tar (navarch.io/testserver:1, the static test server)
## and bin/images/busybox.tar (navarch.io/busybox:1, from /bin/busybox of busybox-static)
images:
	CGO_ENABLED=0 $(GO) build -o bin/images/testserver ./test/images/testserver
	$(GO) run ./test/images/pack -out bin/images -testserver bin/images/testserver -busybox /bin/busybox

clean:
	rm -rf bin
