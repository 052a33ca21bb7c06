#!/usr/bin/env bash
# Installs what pgkeep's tests need on a fresh Debian machine, idempotently:
# PostgreSQL 15 (server, contrib, pgbench) and MinIO, built once from the Go
# module proxy into a cache directory.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
CACHE="${PGKEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgkeep}"
MINIO_DIR="$CACHE/tools/minio-$MINIO_VERSION"

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		echo "test-deps: need root to run: $*" >&2; exit 1; fi
}

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || [ ! -x /usr/lib/postgresql/15/bin/pgbench ]; then
	echo "test-deps: installing PostgreSQL 15"
	as_root apt-get update -qq
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-15 postgresql-contrib >/dev/null
fi
# Debian's package starts a cluster of its own; the tests start theirs.

if [ ! -x "$MINIO_DIR/minio" ]; then
	echo "test-deps: building MinIO $MINIO_VERSION into $MINIO_DIR (5 to 10 minutes, once)"
	mkdir -p "$MINIO_DIR"
	tmp=$(mktemp -d)
	# Outside any module, so the project's go.mod is not touched.
	(cd "$tmp" && GOBIN="$MINIO_DIR.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION")
	mv "$MINIO_DIR.tmp/minio" "$MINIO_DIR/minio"
	rm -rf "$MINIO_DIR.tmp" "$tmp"
fi
echo "test-deps: PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'), MinIO at $MINIO_DIR/minio"
