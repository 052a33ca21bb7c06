#!/bin/sh
# Prints pgkeep's version as a Debian package version, from git:
#   at a tag v1.2.3                 1.2.3  (a '-' in the tag becomes '~': 1.2.3~rc1)
#   5 commits after it              1.2.3+git5.abc1234
#   no tag                          0.0.0~git123.abc1234 (123: commits so far, so later builds sort later)
#   uncommitted changes             .dirty appended
# `git describe` output such as abc1234-dirty is not a valid Debian version
# (it must start with a digit).
set -eu
cd "$(dirname "$0")/.."
if ! sha=$(git rev-parse --short=7 HEAD 2>/dev/null); then
	echo 0.0.0~unknown
	exit 0
fi
dirty=
if ! git diff --quiet HEAD -- 2>/dev/null; then dirty=.dirty; fi
if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	base=$(echo "${tag#v}" | tr - '~')
	n=$(git rev-list --count "$tag..HEAD")
	if [ "$n" = 0 ]; then
		v=$base
		[ -z "$dirty" ] || v="$base+dirty"
		echo "$v"
	else
		echo "$base+git$n.$sha$dirty"
	fi
else
	echo "0.0.0~git$(git rev-list --count HEAD).$sha$dirty"
fi
