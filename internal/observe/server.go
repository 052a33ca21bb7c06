package observe

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/agent"
)

// Server is the agent component that serves /metrics and / on a listener
// that cmd opened (so that a bad address or a port in use stops the agent
// at its start). Listen moves it to another listener (SIGHUP).
type Server struct {
	Source *Source
	Meter  *Meter

	mu      sync.Mutex
	ln      net.Listener
	swapped chan struct{}
}

// NewServer returns a server that will serve on ln (nil: nowhere yet).
func NewServer(src *Source, m *Meter, ln net.Listener) *Server {
	return &Server{Source: src, Meter: m, ln: ln, swapped: make(chan struct{}, 1)}
}

// Name names the component in log lines.
func (s *Server) Name() string { return "metrics and status page" }

// Addr returns the address served ("" : none).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Listen serves on ln from now on (nil: stop serving), closing the
// listener served before.
func (s *Server) Listen(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	select {
	case s.swapped <- struct{}{}:
	default:
	}
}

// Handler returns the HTTP handler: /metrics and the page at /.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		if err := WriteMetrics(&b, s.Source, s.Meter); err != nil {
			http.Error(w, "writing the metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Write(b.Bytes())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		if err := writePage(&b, s.Source.Get(r.Context())); err != nil {
			http.Error(w, "rendering the status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b.Bytes())
	})
	return mux
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context, a *agent.Agent) error {
	s.Source.agent = a
	h := s.Handler()
	for {
		s.mu.Lock()
		ln := s.ln
		s.mu.Unlock()
		var srv *http.Server
		done := make(chan error, 1)
		if ln != nil {
			srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
			go func() { done <- srv.Serve(ln) }()
		}
		select {
		case <-ctx.Done():
		case <-s.swapped:
		case err := <-done:
			if !errors.Is(err, http.ErrServerClosed) {
				return err
			}
		}
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			srv.Shutdown(sctx) // closes ln
			cancel()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
