#!/bin/sh
# pgkeep postinst. PostgreSQL runs the restore_command a restore writes as
# its own user, and that command reads /etc/pgkeep/pgkeep.conf: give the
# file to the postgres group (0640), unless the administrator chose
# otherwise with dpkg-statoverride. Reload systemd's units if it runs;
# nothing is enabled or started (see the README).
set -e
if [ "$1" = configure ]; then
	conf=/etc/pgkeep/pgkeep.conf
	if [ -e "$conf" ] && getent group postgres >/dev/null &&
		! dpkg-statoverride --list "$conf" >/dev/null 2>&1; then
		chown root:postgres "$conf"
		chmod 0640 "$conf"
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
fi
exit 0
