#!/usr/bin/env bash
# Prints the path of nfpm (github.com/goreleaser/nfpm, the .deb packager
# `make package` uses), building the pinned version from the Go module
# proxy into pgkeep's tool cache first if it is not there (once, about a
# minute). The same cache as MinIO's: $PGKEEP_CACHE, else
# $XDG_CACHE_HOME/pgkeep, else ~/.cache/pgkeep.
set -euo pipefail

NFPM_VERSION=v2.45.2
CACHE="${PGKEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgkeep}"
NFPM_DIR="$CACHE/tools/nfpm-$NFPM_VERSION"

if [ ! -x "$NFPM_DIR/nfpm" ]; then
	echo "nfpm.sh: building nfpm $NFPM_VERSION into $NFPM_DIR (once)" >&2
	mkdir -p "$NFPM_DIR"
	tmp=$(mktemp -d)
	# Outside any module, so the project's go.mod is not touched.
	(cd "$tmp" && GOBIN="$NFPM_DIR.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION") >&2
	mv "$NFPM_DIR.tmp/nfpm" "$NFPM_DIR/nfpm"
	rm -rf "$NFPM_DIR.tmp" "$tmp"
fi
echo "$NFPM_DIR/nfpm"
