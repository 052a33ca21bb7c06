// Package agent is the long-running pgkeep process for the database host
// (docs/design.md §17): it streams WAL into the repository as the server
// writes it, over a physical replication slot it creates if missing,
// reconnects with backoff when the server or the network goes away,
// follows promotions to new timelines, resumes from what the repository
// holds, and stops with an error that names the WAL that is missing when
// the server can no longer provide what the repository lacks.
//
// Other work the agent does beside streaming (the slot's retention check;
// later schedules, metrics, a status page) are Components: each runs for
// as long as the agent does and reads the agent's State.
package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/stream"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

// ApplicationName is the application_name of the agent's replication
// connection: the name to put in synchronous_standby_names.
const ApplicationName = "pgkeep"

// Logger receives the agent's log lines, one per event that matters.
type Logger interface {
	Logf(format string, args ...any)
}

// Component is work that runs beside streaming for the life of the agent.
// Run returns when ctx ends; an error it returns is logged and does not
// stop the agent.
type Component interface {
	Name() string
	Run(ctx context.Context, a *Agent) error
}

// Config configures an Agent.
type Config struct {
	Repo *repo.Repo
	// ConnString is the server to stream from; "" means the libpq
	// environment (PGHOST, PGPORT, PGUSER, ...).
	ConnString string
	// Slot is the physical replication slot (created if missing).
	Slot string
	// Interval: received WAL is stored at least this often.
	Interval time.Duration
	// Synchronous stores WAL as soon as it arrives.
	Synchronous bool
	// Log receives the log lines (nil: none).
	Log Logger
	// Components run beside streaming.
	Components []Component
	// MaxBackoff caps the wait between reconnection attempts (default 30s).
	MaxBackoff time.Duration
	// AcceptGap: when the server no longer has the WAL the repository
	// needs next, stream from the oldest WAL the server has instead of
	// stopping, leaving a gap in the archive (restore and verify report
	// it) after the operator took a new base backup.
	AcceptGap bool
}

// Agent streams WAL into the repository. Create it with New; Run it once.
type Agent struct {
	cfg Config

	mu    sync.Mutex
	state State
	// skipTo is where streaming resumes when AcceptGap skipped WAL the
	// server no longer had.
	skipTo wal.LSN
}

// State is what the agent has done, for components and status.
type State struct {
	Connected bool
	Timeline  wal.TimeLineID
	// Durable is the end of the WAL durably in the repository (what the
	// server was told is flushed), and DurableAt when it last advanced.
	Durable   wal.LSN
	DurableAt time.Time
	// Segments counts the segments stored whole by this process.
	Segments int
	// LastError is the last failure that made the agent reconnect.
	LastError string
}

// New returns an agent for cfg.
func New(cfg Config) *Agent {
	if cfg.Slot == "" {
		cfg.Slot = "pgkeep"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	return &Agent{cfg: cfg}
}

// Config returns the agent's configuration.
func (a *Agent) Config() Config { return a.cfg }

// State returns a copy of the agent's state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

func (a *Agent) logf(format string, args ...any) {
	if a.cfg.Log != nil {
		a.cfg.Log.Logf(format, args...)
	}
}

// Errors that stop the agent: retrying cannot help.
var (
	// ErrMissingWAL: the server cannot provide WAL the repository lacks.
	ErrMissingWAL = errors.New("WAL is missing that the server can no longer provide")
	// ErrSlot: the replication slot cannot be used.
	ErrSlot = errors.New("the replication slot cannot be used")
)

// fatal reports whether err stops the agent instead of a reconnection.
func fatal(err error) bool {
	return errors.Is(err, ErrMissingWAL) || errors.Is(err, ErrSlot) || errors.Is(err, repo.ErrConflict) ||
		errors.Is(err, repo.ErrForeignCluster) || errors.Is(err, repo.ErrUnknownCluster) || errors.Is(err, repo.ErrKeys) ||
		errors.Is(err, pgversion.ErrUnsupported) || errors.Is(err, envelope.ErrCorrupt)
}

// Run streams until ctx ends (SIGTERM, SIGINT: it finishes the upload in
// flight and stores what it received first, then returns nil) or a fatal
// error. Every other failure (the server restarting, the network, the
// store) is logged and retried with backoff and jitter.
func (a *Agent) Run(ctx context.Context) error {
	compCtx, stopComponents := context.WithCancel(ctx)
	cg, cctx := errgroup.WithContext(compCtx)
	for _, c := range a.cfg.Components {
		cg.Go(func() error {
			if err := c.Run(cctx, a); err != nil && cctx.Err() == nil {
				a.logf("%s stopped: %v", c.Name(), err)
			}
			return nil
		})
	}
	defer func() {
		stopComponents()
		cg.Wait()
	}()

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	b.MaxInterval = a.cfg.MaxBackoff
	b.RandomizationFactor = 0.5
	for {
		began := time.Now()
		err := a.stream(ctx)
		a.setConnected(false)
		if ctx.Err() != nil {
			st := a.State()
			a.logf("stopped; the repository holds the WAL up to %s on timeline %d", st.Durable, st.Timeline)
			return nil
		}
		if err == nil {
			b.Reset() // the timeline ended: follow the next one at once
			continue
		}
		if fatal(err) {
			return err
		}
		if time.Since(began) > time.Minute {
			b.Reset()
		}
		wait := b.NextBackOff()
		a.mu.Lock()
		a.state.LastError = err.Error()
		a.mu.Unlock()
		a.logf("%v; retrying in %s", err, wait.Round(100*time.Millisecond))
		select {
		case <-ctx.Done():
			st := a.State()
			a.logf("stopped; the repository holds the WAL up to %s on timeline %d", st.Durable, st.Timeline)
			return nil
		case <-time.After(wait):
		}
	}
}

func (a *Agent) setConnected(v bool) {
	a.mu.Lock()
	a.state.Connected = v
	a.mu.Unlock()
}

// server is what the agent learns about the server on each connection.
type server struct {
	sysID   uint64
	major   int
	segSize uint64
	tli     wal.TimeLineID
	xlogPos wal.LSN
	hist    []wal.HistoryEntry
	slot    slotInfo
}

type slotInfo struct {
	exists     bool
	restartLSN wal.LSN // 0 if none
}

// stream runs one connection: it checks the server against the
// repository, makes sure of the slot, works out where the repository ends
// and streams from there until ctx ends, the timeline ends (nil) or
// something fails.
func (a *Agent) stream(ctx context.Context) error {
	sqlConn, err := a.connectSQL(ctx)
	if err != nil {
		return err
	}
	defer sqlConn.Close(context.WithoutCancel(ctx))
	repl, err := a.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))

	srv, err := a.inspect(ctx, sqlConn, repl)
	if err != nil {
		return err
	}
	id, err := a.cfg.Repo.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: srv.sysID, PGMajor: srv.major, WalSegSize: srv.segSize})
	if err != nil {
		if errors.Is(err, repo.ErrForeignCluster) {
			return fmt.Errorf("refusing to stream the server's WAL into %s (cluster identified by IDENTIFY_SYSTEM): %w", a.cfg.Repo.Location(), err)
		}
		return fmt.Errorf("checking repository %s: %w", a.cfg.Repo.Location(), err)
	}
	if err := a.storeHistories(ctx, repl, srv); err != nil {
		return err
	}
	if err := a.ensureSlot(ctx, sqlConn, srv); err != nil {
		return err
	}

	ix, _, err := catalog.LoadWAL(ctx, a.cfg.Repo, id.WalSegSize)
	if err != nil {
		return fmt.Errorf("reading where the repository's WAL ends: %w", err)
	}
	res := stream.ResumePoint(ix, srv.tli, srv.hist)
	how := "resuming after the WAL the repository holds"
	if res.Empty {
		start := srv.slot.restartLSN
		if start == 0 || start > srv.xlogPos {
			start = srv.xlogPos
		}
		res = stream.Resume{SegNo: wal.SegmentOf(start, srv.segSize), TLI: wal.TimelineOfLSN(srv.hist, srv.tli, start)}
		how = "the repository holds no WAL of this server's history yet: starting at the slot's restart_lsn"
	}
	if skip := a.skipTo; skip > wal.SegmentStartLSN(res.SegNo, srv.segSize)+wal.LSN(res.Stored) {
		res = stream.Resume{SegNo: wal.SegmentOf(skip, srv.segSize), TLI: wal.TimelineOfLSN(srv.hist, srv.tli, skip)}
		how = "skipping the WAL the server no longer has (--accept-gap): the repository has a gap before it"
	}
	startLSN := wal.SegmentStartLSN(res.SegNo, srv.segSize)
	resumeLSN := startLSN + wal.LSN(res.Stored)
	if resumeLSN > srv.xlogPos && res.TLI == srv.tli {
		return fmt.Errorf("the repository holds WAL up to %s on timeline %d, beyond the server's %s: is this server behind the one whose WAL is in %s (a standby catching up, or a restored copy)? waiting",
			resumeLSN, res.TLI, srv.xlogPos, a.cfg.Repo.Location())
	}

	ev := &events{a: a}
	w := stream.NewWriter(a.cfg.Repo, id, res.TLI, res.SegNo, res.Stored, ev)
	a.mu.Lock()
	if resumeLSN > a.state.Durable || a.state.Timeline != res.TLI {
		// On a new timeline the position may be lower (a branch off an
		// earlier point of the old one).
		a.state.Durable = resumeLSN
	}
	a.state.Connected, a.state.Timeline = true, res.TLI
	a.mu.Unlock()
	mode := "every " + a.cfg.Interval.String()
	if a.cfg.Synchronous {
		mode = "synchronously"
	}
	a.logf("connected to PostgreSQL %d (cluster %d, timeline %d, WAL at %s); %s; streaming timeline %d from %s (segment %s, %d bytes already stored) through slot %s, storing %s",
		srv.major, srv.sysID, srv.tli, srv.xlogPos, how, res.TLI, startLSN, wal.SegmentName(res.TLI, res.SegNo, srv.segSize), res.Stored, a.cfg.Slot, mode)

	sess := stream.NewSession(repl, w, stream.Options{Slot: a.cfg.Slot, Interval: a.cfg.Interval, Synchronous: a.cfg.Synchronous,
		ServerEnd: a.serverEnd})
	end, err := sess.Run(ctx)
	if err != nil {
		if errors.Is(err, stream.ErrWALRemoved) {
			if a.cfg.AcceptGap {
				if oldest := a.oldestOnServer(ctx, srv.segSize); oldest > resumeLSN {
					a.skipTo = oldest
					return fmt.Errorf("the server no longer has the WAL from %s on; --accept-gap: streaming from its oldest, %s, leaving a gap", resumeLSN, oldest)
				}
			}
			return a.missing(ctx, resumeLSN, res, srv, err)
		}
		return err
	}
	if end != nil {
		a.logf("the server ended timeline %d at %s (a promotion): following the next timeline", end.TLI, end.EndLSN)
	}
	return nil
}

// serverEnd is the server's end of WAL now: its flush position, or on a
// standby what it has received (stream.Options.ServerEnd).
func (a *Agent) serverEnd(ctx context.Context) (wal.LSN, error) {
	conn, err := a.connectSQL(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lsn *string
	if err := conn.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_flush_lsn() END)::text`).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("asking the server for its end of WAL: %w", err)
	}
	if lsn == nil {
		return 0, errors.New("the server does not know its end of WAL (a standby that has received nothing)")
	}
	return wal.ParseLSN(*lsn)
}

// connectSQL opens an ordinary connection, for the slot and the checks.
func (a *Agent) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(a.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: the connection settings: %w", ErrSlot, err)
	}
	cfg.RuntimeParams["application_name"] = ApplicationName + "-agent"
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database server: %w", err)
	}
	return conn, nil
}

// connectReplication opens the replication connection.
func (a *Agent) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(a.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: the connection settings: %w", ErrSlot, err)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = ApplicationName
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening a replication connection (the role needs REPLICATION, and pg_hba.conf a 'replication' line): %w", err)
	}
	return conn, nil
}

// inspect learns the server's identity, version, segment size, timeline
// and history, and the slot.
func (a *Agent) inspect(ctx context.Context, sqlConn *pgx.Conn, repl *pgconn.PgConn) (*server, error) {
	s := &server{}
	var version, segSize string
	if err := sqlConn.QueryRow(ctx, `SELECT current_setting('server_version_num'), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')`).Scan(&version, &segSize); err != nil {
		return nil, fmt.Errorf("reading the server's version: %w", err)
	}
	n, err := strconv.Atoi(version)
	if err != nil {
		return nil, fmt.Errorf("bad server_version_num %q", version)
	}
	s.major = pgversion.MajorOf(n)
	if err := pgversion.Check(s.major, "the server (server_version_num "+version+")"); err != nil {
		return nil, fmt.Errorf("refusing to stream: %w", err)
	}
	if s.segSize, err = strconv.ParseUint(segSize, 10, 64); err != nil || !wal.ValidSegSize(s.segSize) {
		return nil, fmt.Errorf("bad wal_segment_size %q", segSize)
	}
	idr, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		return nil, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if s.sysID, err = strconv.ParseUint(idr.SystemID, 10, 64); err != nil {
		return nil, fmt.Errorf("IDENTIFY_SYSTEM: bad system identifier %q", idr.SystemID)
	}
	s.tli, s.xlogPos = wal.TimeLineID(idr.Timeline), wal.LSN(idr.XLogPos)
	if s.tli > 1 {
		h, err := pglogrepl.TimelineHistory(ctx, repl, int32(s.tli))
		if err != nil {
			return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", s.tli, err)
		}
		if s.hist, err = wal.ParseHistory(h.Content); err != nil {
			return nil, fmt.Errorf("the server's history of timeline %d: %w", s.tli, err)
		}
	}
	var restart *string
	err = sqlConn.QueryRow(ctx, `SELECT slot_type, restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, a.cfg.Slot).Scan(new(string), &restart)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("reading replication slot %s: %w", a.cfg.Slot, err)
	default:
		s.slot.exists = true
		if restart != nil {
			s.slot.restartLSN, _ = wal.ParseLSN(*restart)
		}
	}
	return s, nil
}

// storeHistories stores the history file of the server's timeline and of
// its ancestors, as the server has them, unless the repository has them.
func (a *Agent) storeHistories(ctx context.Context, repl *pgconn.PgConn, srv *server) error {
	if srv.tli <= 1 {
		return nil
	}
	tlis := []wal.TimeLineID{srv.tli}
	for _, e := range srv.hist {
		if e.TLI > 1 {
			tlis = append(tlis, e.TLI)
		}
	}
	for _, tli := range tlis {
		name := wal.HistoryName(tli)
		if ok, err := a.cfg.Repo.Exists(ctx, repo.WAL(name)); err != nil {
			return fmt.Errorf("checking %s: %w", name, err)
		} else if ok {
			continue
		}
		h, err := pglogrepl.TimelineHistory(ctx, repl, int32(tli))
		if err != nil {
			return fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
		}
		if _, err := walarchive.StoreHistory(ctx, a.cfg.Repo, name, h.Content); err != nil {
			return err
		}
		a.logf("stored timeline history file %s", name)
	}
	return nil
}

// ensureSlot creates the physical slot if it is missing, reserving WAL at
// once.
func (a *Agent) ensureSlot(ctx context.Context, conn *pgx.Conn, srv *server) error {
	if srv.slot.exists {
		var typ string
		var active bool
		var pid *int32
		if err := conn.QueryRow(ctx, `SELECT slot_type, active, active_pid FROM pg_replication_slots WHERE slot_name = $1`, a.cfg.Slot).Scan(&typ, &active, &pid); err != nil {
			return fmt.Errorf("reading replication slot %s: %w", a.cfg.Slot, err)
		}
		if typ != "physical" {
			return fmt.Errorf("%w: %s is a %s slot; the agent needs a physical one (give another --slot)", ErrSlot, a.cfg.Slot, typ)
		}
		if active && pid != nil {
			return fmt.Errorf("replication slot %s is in use by server process %d (another agent, or this one's previous connection, which the server drops after wal_sender_timeout)", a.cfg.Slot, *pid)
		}
		return nil
	}
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_physical_replication_slot($1, true)`, a.cfg.Slot).Scan(&lsn)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42710" {
			return fmt.Errorf("replication slot %s was created meanwhile: %w", a.cfg.Slot, err)
		}
		return fmt.Errorf("%w: creating physical replication slot %s (the role needs REPLICATION, and max_replication_slots room): %w", ErrSlot, a.cfg.Slot, err)
	}
	if lsn != nil {
		srv.slot.restartLSN, _ = wal.ParseLSN(*lsn)
	}
	srv.slot.exists = true
	a.logf("created physical replication slot %s (it keeps the WAL the repository does not hold yet, from %s)", a.cfg.Slot, srv.slot.restartLSN)
	return nil
}

// missing builds the error for WAL the server no longer has: the range
// that is in neither the repository nor the server.
func (a *Agent) missing(ctx context.Context, from wal.LSN, res stream.Resume, srv *server, cause error) error {
	to := a.oldestOnServer(ctx, srv.segSize)
	slot := ""
	if conn, err := a.connectSQL(ctx); err == nil {
		var restart *string
		if conn.QueryRow(ctx, `SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, a.cfg.Slot).Scan(&restart) == nil && restart != nil {
			slot = fmt.Sprintf(" (slot %s: restart_lsn %s)", a.cfg.Slot, *restart)
		}
		conn.Close(ctx)
	}
	missing := fmt.Sprintf("the WAL of timeline %d from %s on (segment %s)", res.TLI, from, wal.SegmentName(res.TLI, wal.SegmentOf(from, srv.segSize), srv.segSize))
	if to > from {
		missing = fmt.Sprintf("the WAL of timeline %d from %s to %s (segments %s to %s)", res.TLI, from, to,
			wal.SegmentName(res.TLI, wal.SegmentOf(from, srv.segSize), srv.segSize), wal.SegmentName(res.TLI, wal.SegmentOf(to-1, srv.segSize), srv.segSize))
	}
	return fmt.Errorf("%w: %s is in neither the repository %s, whose WAL ends at %s, nor the server, whose oldest WAL starts at %s%s; "+
		"was the slot dropped, or created after that WAL was written? Nothing was stored past %s. "+
		"Start the agent with --accept-gap to stream from what the server has (restore and verify then report the gap), and take a new base backup (pgkeep backup) so that restores need none of the missing WAL (%v)",
		ErrMissingWAL, missing, a.cfg.Repo.Location(), from, to, slot, from, cause)
}

// oldestOnServer returns the start of the oldest segment in the server's
// pg_wal (0 if it cannot tell).
func (a *Agent) oldestOnServer(ctx context.Context, segSize uint64) wal.LSN {
	conn, err := a.connectSQL(ctx)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var name *string
	if conn.QueryRow(ctx, `SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'`).Scan(&name) != nil || name == nil {
		return 0
	}
	seg, err := wal.ParseSegmentName(*name, segSize)
	if err != nil {
		return 0
	}
	return wal.SegmentStartLSN(seg.No, segSize)
}

// events turns the writer's events into state and log lines.
type events struct{ a *Agent }

func (e *events) SegmentStored(name string, stored int64, existed bool) {
	e.a.mu.Lock()
	e.a.state.Segments++
	e.a.mu.Unlock()
	how := "stored whole"
	if existed {
		how = "already in the repository (identical, from archive_command)"
	}
	e.a.logf("segment %s complete: %s (%d bytes stored)", name, how, stored)
}

func (e *events) Durable(lsn wal.LSN) {
	e.a.mu.Lock()
	e.a.state.Durable, e.a.state.DurableAt = lsn, time.Now()
	e.a.mu.Unlock()
}

func (e *events) Warn(msg string) { e.a.logf("WARNING: %s", strings.TrimSpace(msg)) }
