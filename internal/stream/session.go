package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// ErrWALRemoved means the server no longer has WAL the repository lacks:
// streaming cannot continue without leaving a gap.
var ErrWALRemoved = errors.New("the server no longer has the WAL the repository needs next")

// Options configures a Session.
type Options struct {
	// Slot is the physical replication slot to stream from.
	Slot string
	// Interval is how often received WAL is stored at the latest.
	Interval time.Duration
	// Synchronous stores WAL as soon as it arrives, so that a synchronous
	// commit waits about one upload.
	Synchronous bool
	// StatusInterval is how often the position is reported to the server
	// when nothing else causes a report (default 10s, as
	// wal_receiver_status_interval).
	StatusInterval time.Duration
	// ServerEnd, if set, tells the server's end of WAL now (its flush
	// position), from a connection of its own. At shutdown the receiver
	// goes on until it holds that much (or finishTimeout). Without it the
	// end is what the server's keepalive says, which is only what it has
	// sent: WAL flushed but not yet sent would be left to the next agent.
	ServerEnd func(ctx context.Context) (wal.LSN, error)
}

// End is why a session ended without an error: the server ended the
// timeline it streamed (a promotion) where the WAL received ends, EndLSN.
type End struct {
	TLI    wal.TimeLineID
	EndLSN wal.LSN
}

// Session streams one timeline over a replication connection into a
// Writer. Run it once.
type Session struct {
	conn *pgconn.PgConn
	w    *Writer
	opts Options

	sendMu sync.Mutex
	ended  bool // the server ended the stream: report nothing more

	// serverEnd is the server's end of WAL as its last keepalive said,
	// and endAt when that keepalive came (UnixNano): at shutdown the
	// receiver goes on until it holds what the server had (finishReceiving).
	serverEnd, endAt atomic.Int64
}

// finishTimeout bounds how long a shutdown waits for WAL the server had
// written when the shutdown began.
const finishTimeout = 3 * time.Second

// finishReceiving is the shutdown of the receiver: it learns the
// server's end of WAL (Options.ServerEnd, else a status update that
// requests a keepalive, whose end is what the server has sent), lets the
// receiver run until it has received up to there, or finishTimeout, then
// stops it. What was committed before SIGTERM is then stored, not left to
// the next agent. A server promoted meanwhile ends the stream (ended)
// before its end on the new timeline is reached.
func (s *Session) finishReceiving(stopRecv func()) {
	defer stopRecv()
	deadline := time.Now().Add(finishTimeout)
	reached, ok := s.flushedEnd(deadline)
	if !ok {
		asked := time.Now().UnixNano()
		if s.report(true) != nil {
			return
		}
		reached = func() bool { return s.endAt.Load() >= asked && int64(s.w.Received()) >= s.serverEnd.Load() }
	}
	for ; time.Now().Before(deadline) && !s.isEnded(); time.Sleep(5 * time.Millisecond) {
		if reached() {
			return
		}
	}
}

// flushedEnd asks Options.ServerEnd for the server's flush position and
// returns the test of having received it; ok is false without the option
// or when the server could not tell.
func (s *Session) flushedEnd(deadline time.Time) (reached func() bool, ok bool) {
	if s.opts.ServerEnd == nil {
		return nil, false
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	target, err := s.opts.ServerEnd(ctx)
	if err != nil {
		return nil, false
	}
	return func() bool { return s.w.Received() >= target }, true
}

func (s *Session) isEnded() bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.ended
}

// NewSession returns a session that streams into w over conn, a
// connection opened with replication=true.
func NewSession(conn *pgconn.PgConn, w *Writer, opts Options) *Session {
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = 10 * time.Second
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	return &Session{conn: conn, w: w, opts: opts}
}

// Run starts replication at the writer's start and streams until ctx ends
// (it then stores what was received, reports it, and returns nil), the
// server ends the timeline (it returns an End), or something fails. Every
// byte received is stored before Run returns nil; after an error, what was
// stored stays stored and a new session resumes from the repository.
func (s *Session) Run(ctx context.Context) (*End, error) {
	start := s.w.Start()
	err := pglogrepl.StartReplication(ctx, s.conn, s.opts.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Timeline: int32(s.w.tli), Mode: pglogrepl.PhysicalReplication,
	})
	if err != nil {
		return nil, s.classify(fmt.Errorf("starting replication at %s on timeline %d from slot %s: %w", start, s.w.tli, s.opts.Slot, err))
	}
	// The receiver stops on ctx (shutdown), at the end of the stream, or
	// when storing fails; the uploader then stores everything received
	// (not cancelled by the shutdown: the upload in flight, and the rest,
	// finish), and the whole-segment storer the segments handed to it.
	storeCtx := context.WithoutCancel(ctx)
	g, gctx := errgroup.WithContext(storeCtx)
	recvCtx, stopRecv := context.WithCancel(gctx)
	defer stopRecv()
	stop := context.AfterFunc(ctx, func() { s.finishReceiving(stopRecv) })
	defer stop()
	var end *End
	g.Go(func() error {
		defer stopRecv()
		e, err := s.receive(recvCtx)
		if err != nil && recvCtx.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil // shutting down, or another part failed (its error wins)
		}
		end = e
		return err
	})
	g.Go(func() error { return s.w.StoreWhole(storeCtx) })
	g.Go(func() error {
		defer s.w.Close()
		return s.upload(gctx, recvCtx)
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return end, nil
}

// receive reads the replication stream until the server ends it or ctx
// ends.
func (s *Session) receive(ctx context.Context) (*End, error) {
	for {
		msg, err := s.conn.ReceiveMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("receiving WAL: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return nil, fmt.Errorf("reading the replication stream: %w", err)
				}
				if err := s.w.Write(ctx, wal.LSN(x.WALStart), x.WALData); err != nil {
					return nil, err
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return nil, fmt.Errorf("reading the replication stream: %w", err)
				}
				s.serverEnd.Store(int64(k.ServerWALEnd))
				s.endAt.Store(time.Now().UnixNano())
				if k.ReplyRequested {
					if err := s.report(false); err != nil {
						return nil, err
					}
				}
			}
		case *pgproto3.CopyDone:
			// The server ended the timeline: it was promoted, or this was
			// a historic timeline, streamed to its switch point. The
			// caller closes the connection and follows the next timeline
			// on a new one; no more reports go out on this one.
			s.sendMu.Lock()
			s.ended = true
			s.sendMu.Unlock()
			return &End{TLI: s.w.tli, EndLSN: s.w.Received()}, nil
		case *pgproto3.ErrorResponse:
			return nil, s.classify(fmt.Errorf("streaming timeline %d: %w", s.w.tli, pgconn.ErrorResponseToPgError(m)))
		}
	}
}

// upload stores received WAL: at least every Interval while WAL arrives,
// or at once in synchronous mode, and reports each new durable end to the
// server. When the receiver has stopped (recvDone), it stores what is left
// and returns.
func (s *Session) upload(ctx, recvDone context.Context) error {
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	status := time.NewTicker(s.opts.StatusInterval)
	defer status.Stop()
	flush := func() error {
		if !s.w.Pending() {
			return nil
		}
		if _, err := s.w.Flush(ctx); err != nil {
			return err
		}
		return s.report(false)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-recvDone.Done():
			if err := flush(); err != nil {
				return err
			}
			return s.report(false)
		case <-s.w.Wake():
			if s.opts.Synchronous {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := flush(); err != nil {
				return err
			}
		case <-status.C:
			if err := s.report(false); err != nil {
				return err
			}
		}
	}
}

// report tells the server the durable end as written, flushed and
// applied position.
func (s *Session) report(reply bool) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.ended {
		return nil
	}
	d := s.w.Durable()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(d), WALFlushPosition: pglogrepl.LSN(d), WALApplyPosition: pglogrepl.LSN(d),
		ClientTime: time.Now(), ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("reporting position %s to the server: %w", d, err)
	}
	return nil
}

// classify marks the server's "WAL already removed" as ErrWALRemoved.
func (s *Session) classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "58P01" {
		return fmt.Errorf("%w: %w", ErrWALRemoved, err)
	}
	return err
}
