#!/usr/bin/env bash
# Coverage per package, end-to-end included: the unit tests' own coverage,
# plus what the pgkeep binary the end-to-end tests run (built with -cover)
# executed in every process they start (wal-push from PostgreSQL's
# archiver, wal-fetch from its recovery, backups, restores...).
# Usage: scripts/coverage.sh [go test flags]; output in cover/.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf cover
mkdir -p cover/unit cover/e2e
chmod 1777 cover/e2e            # the binary also runs as the postgres user
export GOCOVERDIR="$PWD/cover/e2e"
go test -count=1 -timeout 30m -cover -coverpkg=github.com/pgkeep/pgkeep/... "$@" ./... -args -test.gocoverdir="$PWD/cover/unit" \
	| tee cover/test.log
go tool covdata percent -i=cover/unit,cover/e2e | sed 's/coverage: //' | sort > cover/percent.txt
go tool covdata textfmt -i=cover/unit,cover/e2e -o cover/profile.txt
go tool cover -func=cover/profile.txt | tail -1
cat cover/percent.txt
