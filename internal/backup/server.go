package backup

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// server is what a backup learns about the cluster it copies.
type server struct {
	versionNum    int // e.g. 150018
	major         int
	dataDirectory string
	dataChecksums bool
	walSegSize    uint64
	systemID      uint64
	timeline      uint32
}

func inspectServer(ctx context.Context, conn *pgx.Conn) (*server, error) {
	s := &server{}
	var version, checksums, segSize, sysID, archiveMode string
	var inRecovery bool
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num'),
		current_setting('data_checksums'),
		(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
		(SELECT system_identifier::text FROM pg_control_system()),
		(SELECT timeline_id FROM pg_control_checkpoint()),
		current_setting('archive_mode'),
		pg_is_in_recovery()`).Scan(&version, &checksums, &segSize, &sysID, &s.timeline, &archiveMode, &inRecovery)
	if err != nil {
		return nil, fmt.Errorf("inspecting the server (does the user have pg_read_all_settings or superuser?): %w", err)
	}
	if s.versionNum, err = strconv.Atoi(version); err != nil {
		return nil, fmt.Errorf("bad server_version_num %q", version)
	}
	s.major = s.versionNum / 10000
	if s.major < 12 {
		return nil, fmt.Errorf("PostgreSQL %d is not supported (12 or newer)", s.major)
	}
	if inRecovery {
		return nil, fmt.Errorf("the server is a standby; pgkeep takes backups from the primary")
	}
	if archiveMode == "off" {
		return nil, fmt.Errorf("%w: archive_mode is off, so the WAL this backup needs would never reach the repository; set archive_mode = on and archive_command = 'pgkeep wal-push %%p', then restart PostgreSQL", ErrNotArchiving)
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
// immediate checkpoint. PostgreSQL 15 renamed the functions.
func (s *server) startBackup(ctx context.Context, conn *pgx.Conn, label string) (wal.LSN, error) {
	q := `SELECT pg_backup_start($1, true)::text` // PostgreSQL 15+
	if s.major < 15 {
		q = `SELECT pg_start_backup($1, true, false)::text`
	}
	var lsn string
	if err := conn.QueryRow(ctx, q, label).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("starting the backup on the server: %w", err)
	}
	return wal.ParseLSN(lsn)
}

// stopBackup ends the backup. It does not wait for archiving: pgkeep
// checks the repository itself, which also covers WAL streamed by the agent.
func (s *server) stopBackup(ctx context.Context, conn *pgx.Conn) (wal.LSN, string, string, error) {
	q := `SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)` // PostgreSQL 15+
	if s.major < 15 {
		q = `SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, false)`
	}
	var lsn, labelFile, spcmap string
	if err := conn.QueryRow(ctx, q).Scan(&lsn, &labelFile, &spcmap); err != nil {
		return 0, "", "", fmt.Errorf("stopping the backup on the server: %w", err)
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
