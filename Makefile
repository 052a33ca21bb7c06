# pgkeep build, test and benchmark entry points.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: build test test-deps unit cover demo bench bench-incremental rpo-bench fuzz package clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/pgkeep ./cmd/pgkeep

# Installs what the tests need (PostgreSQL 15 from Debian, server builds
# of 12 to 18, MinIO built into a cache directory), then runs every test:
# S3 ones against a real MinIO, TestVersions on every major.
test: test-deps build
	$(GO) test -count=1 -timeout 30m ./...

test-deps:
	scripts/test-deps.sh

# Unit tests only: -short skips every test that needs PostgreSQL or MinIO
# (no server is started); about 20 seconds.
unit:
	$(GO) test -short -count=1 ./...

# Coverage per package, end-to-end tests included (the binary they run is
# built with -cover); the table goes to cover/percent.txt.
cover: test-deps
	CI=true scripts/coverage.sh

# pgkeep beside pgBackRest on one cluster; prints ratios (medians of RUNS
# runs), writes JSON to bench/results. SCALE sets the pgbench scale factor.
SCALE ?= 20
RUNS  ?= 3
bench: build
	@command -v pgbackrest >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest)
	scripts/test-deps.sh
	$(GO) run ./bench -pgkeep bin/pgkeep -scale $(SCALE) -runs $(RUNS) -skip incremental

# Incremental backups and delta restore beside pgBackRest --type=incr, on
# pgbench scale 100 alone (about 1.5 GB), on a local-directory repository.
bench-incremental: build
	@command -v pgbackrest >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest)
	scripts/test-deps.sh
	$(GO) run ./bench -pgkeep bin/pgkeep -only incremental -scale 100 -noise=false -storage file -runs $(RUNS)

# The agent's RPO measured by killing the machine: KILLS kills (SIGKILL of
# PostgreSQL and the agent while a client commits every 100 ms) per
# configuration (defaults on a file repository and on MinIO, --synchronous
# on both), then the requests to the store per hour, idle and busy.
# About 16 minutes with KILLS=20.
KILLS ?= 20
rpo-bench: test-deps
	@mkdir -p bench/results
	CI=true PGKEEP_RPO_KILLS=$(KILLS) PGKEEP_AGENT_COST_SECONDS=60 $(GO) test -count=1 -timeout 60m -v \
		-run 'TestAgentRPO|TestAgentCost' ./internal/e2e > bench/results/rpo.txt 2>&1; s=$$?; \
		grep -a -E 'kills|requests to the store|^(--- |ok|FAIL|PASS)' bench/results/rpo.txt; exit $$s

demo: build
	bin/pgkeep demo

fuzz:
	scripts/fuzz.sh 20s

# The .deb: pgkeep at /usr/bin, its systemd units (contrib/systemd), a
# commented /etc/pgkeep/pgkeep.conf and pgkeep.env; built with nfpm
# (packaging/nfpm.yaml; scripts/nfpm.sh builds the pinned nfpm into the
# tool cache once). The binary carries the package's version.
GOARCH      ?= $(shell $(GO) env GOARCH)
DEB_VERSION ?= $(shell scripts/deb-version.sh)
DIST        ?= dist
NFPM        ?= $(shell scripts/nfpm.sh)
package:
	$(GO) build -trimpath -ldflags '-s -w -X main.version=$(DEB_VERSION)' -o bin/package/pgkeep ./cmd/pgkeep
	mkdir -p '$(DIST)'
	GOARCH='$(GOARCH)' PGKEEP_DEB_VERSION='$(DEB_VERSION)' '$(NFPM)' package --config packaging/nfpm.yaml \
		--packager deb --target '$(DIST)/pgkeep_$(DEB_VERSION)_$(GOARCH).deb'

clean:
	rm -rf bin dist
