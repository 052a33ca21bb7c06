package backup

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// server is what a backup learns about the cluster it copies.
type server struct {
	versionNum    int // e.g. 150018
	major         int
	fns           backupFunctions
	dataDirectory string
	dataChecksums bool
	walSegSize    uint64
	systemID      uint64
	timeline      uint32
}

// backupFunctions are the statements that start and stop a non-exclusive
// base backup in one session: start takes the label and returns the start
// LSN; stop returns the stop LSN, the backup_label text and the
// tablespace_map text, and does not wait for archiving (pgkeep checks the
// repository itself, which also covers WAL streamed by the agent).
type backupFunctions struct {
	name        string
	start, stop string
}

// The backup functions of each major (xlogfuncs.c; the SQL signatures in
// the "Backup Control Functions" table of each release's manual).
var (
	// PostgreSQL 12 to 14: pg_start_backup(label, fast, exclusive) and
	// pg_stop_backup(exclusive, wait_for_archive), called with
	// exclusive = false.
	backupFunctions12 = backupFunctions{
		name:  "pg_start_backup/pg_stop_backup",
		start: `SELECT pg_start_backup($1, true, false)::text`,
		stop:  `SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, false)`,
	}
	// PostgreSQL 15 and later: exclusive backups are gone and the
	// functions renamed, pg_backup_start(label, fast) and
	// pg_backup_stop(wait_for_archive).
	backupFunctions15 = backupFunctions{
		name:  "pg_backup_start/pg_backup_stop",
		start: `SELECT pg_backup_start($1, true)::text`,
		stop:  `SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)`,
	}
)

// backupFunctionsFor returns the backup functions of a supported major.
func backupFunctionsFor(major int) backupFunctions {
	if major < 15 {
		return backupFunctions12
	}
	return backupFunctions15
}

// inspectServer learns what the backup needs about the server, and refuses
// a PostgreSQL pgkeep does not support, a standby, and a server that does
// not archive, before anything is written to the repository.
func inspectServer(ctx context.Context, conn *pgx.Conn) (*server, error) {
	s := &server{}
	var version string
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')`).Scan(&version); err != nil {
		return nil, fmt.Errorf("reading the server's version: %w", err)
	}
	var err error
	if s.versionNum, err = strconv.Atoi(version); err != nil {
		return nil, fmt.Errorf("bad server_version_num %q", version)
	}
	s.major = pgversion.MajorOf(s.versionNum)
	if err := pgversion.Check(s.major, "the server (server_version_num "+version+")"); err != nil {
		return nil, fmt.Errorf("refusing to back up: %w", err)
	}
	s.fns = backupFunctionsFor(s.major)
	var checksums, segSize, sysID, archiveMode string
	var inRecovery bool
	err = conn.QueryRow(ctx, `SELECT current_setting('data_checksums'),
		(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
		(SELECT system_identifier::text FROM pg_control_system()),
		(SELECT timeline_id FROM pg_control_checkpoint()),
		current_setting('archive_mode'),
		pg_is_in_recovery()`).Scan(&checksums, &segSize, &sysID, &s.timeline, &archiveMode, &inRecovery)
	if err != nil {
		return nil, fmt.Errorf("inspecting the server (does the user have pg_read_all_settings or superuser?): %w", err)
	}
	if inRecovery {
		return nil, fmt.Errorf("the server is a standby; pgkeep takes backups from the primary")
	}
	if archiveMode == "off" {
		// The agent streams the WAL instead of archive_command.
		var agents int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgkeep' AND state IN ('startup', 'catchup', 'streaming')`).Scan(&agents); err != nil || agents == 0 {
			return nil, fmt.Errorf("%w: archive_mode is off and no pgkeep agent is streaming, so the WAL this backup needs would never reach the repository; run 'pgkeep agent', or set archive_mode = on and archive_command = 'pgkeep wal-push %%p' and restart PostgreSQL", ErrNotArchiving)
		}
	}
	s.dataChecksums = checksums == "on"
	if s.walSegSize, err = strconv.ParseUint(segSize, 10, 64); err != nil || !wal.ValidSegSize(s.walSegSize) {
		return nil, fmt.Errorf("bad wal_segment_size %q", segSize)
	}
	if s.systemID, err = strconv.ParseUint(sysID, 10, 64); err != nil {
		return nil, fmt.Errorf("bad system identifier %q", sysID)
	}
	if err := conn.QueryRow(ctx, `SELECT current_setting('data_directory')`).Scan(&s.dataDirectory); err != nil {
		s.dataDirectory = "" // not allowed for this role; rely on --pgdata
	}
	return s, nil
}

// startBackup begins a non-exclusive backup in this session, with an
// immediate checkpoint.
func (s *server) startBackup(ctx context.Context, conn *pgx.Conn, label string) (wal.LSN, error) {
	var lsn string
	if err := conn.QueryRow(ctx, s.fns.start, label).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("starting the backup on the server (%s): %w", s.fns.name, err)
	}
	return wal.ParseLSN(lsn)
}

// stopBackup ends the backup.
func (s *server) stopBackup(ctx context.Context, conn *pgx.Conn) (wal.LSN, string, string, error) {
	var lsn, labelFile, spcmap string
	if err := conn.QueryRow(ctx, s.fns.stop).Scan(&lsn, &labelFile, &spcmap); err != nil {
		return 0, "", "", fmt.Errorf("stopping the backup on the server (%s): %w", s.fns.name, err)
	}
	l, err := wal.ParseLSN(lsn)
	return l, labelFile, spcmap, err
}

// abortBackup ends a backup that failed, best effort.
func (s *server) abortBackup(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() {
		return
	}
	s.stopBackup(ctx, conn)
}
