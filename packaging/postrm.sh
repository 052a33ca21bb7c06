#!/bin/sh
# pgkeep postrm: reload systemd's units if it runs. dpkg itself removes the
# conffiles on purge; the repository is never touched.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
