// Package faultinject is an HTTP reverse proxy that injects storage faults
// between pgkeep and an S3-compatible server, for tests: 500 errors, 503
// SlowDown, connections reset in the middle of a body, delays, and bodies
// cut short. Faults are drawn from a seeded generator, so a failing run
// can be repeated.
package faultinject

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is one kind of injected failure.
type Fault int

const (
	InternalError Fault = iota // 500 with an S3 error body
	SlowDown                   // 503 SlowDown
	Reset                      // connection closed midway through the response body
	Truncate                   // response body shorter than its Content-Length
	Delay                      // a pause before the answer (then forwarded)
	numFaults
)

func (f Fault) String() string {
	return [...]string{"500", "503 SlowDown", "reset", "truncate", "delay"}[f]
}

// Proxy forwards to a target and injects faults with a probability.
type Proxy struct {
	srv    *http.Server
	ln     net.Listener
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	rng    *rand.Rand
	prob   float64
	faults []Fault
	Counts [numFaults]atomic.Int64
	Passed atomic.Int64
}

// New starts a proxy on 127.0.0.1 in front of target (http://host:port),
// injecting no faults until SetFaults.
func New(target string, seed uint64) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, rng: rand.New(rand.NewPCG(seed, 99))}
	p.rp = &httputil.ReverseProxy{
		// S3 signatures cover the Host header: forward it as the client
		// sent it, only dial the target.
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = u.Scheme, u.Host
			r.Out.Host = r.In.Host
		},
		FlushInterval: -1,
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve)}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's endpoint.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy.
func (p *Proxy) Close() { p.srv.Close() }

// SetFaults injects one of faults into a request with probability prob.
func (p *Proxy) SetFaults(prob float64, faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prob, p.faults = prob, faults
}

// Injected is the number of faults injected so far.
func (p *Proxy) Injected() int64 {
	var n int64
	for i := range p.Counts {
		n += p.Counts[i].Load()
	}
	return n
}

func (p *Proxy) pick() (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.faults) == 0 || p.rng.Float64() >= p.prob {
		return 0, false
	}
	return p.faults[p.rng.IntN(len(p.faults))], true
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := p.pick()
	if !ok {
		p.Passed.Add(1)
		p.rp.ServeHTTP(w, r)
		return
	}
	p.Counts[f].Add(1)
	switch f {
	case InternalError:
		io.Copy(io.Discard, r.Body)
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case SlowDown:
		io.Copy(io.Discard, r.Body)
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Delay:
		time.Sleep(time.Duration(50+p.rng.IntN(200)) * time.Millisecond)
		p.rp.ServeHTTP(w, r)
	case Reset, Truncate:
		// Forward, then cut the answer: keep the headers (with the full
		// Content-Length), send part of the body, and drop the connection.
		rec := &cutWriter{ResponseWriter: w, limit: 1 + p.rng.Int64N(64<<10), reset: f == Reset}
		p.rp.ServeHTTP(rec, r)
		rec.cut()
	}
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}

// cutWriter passes a response through until limit body bytes, then stops
// writing; cut drops the connection so the client sees a short body.
type cutWriter struct {
	http.ResponseWriter
	limit   int64
	written int64
	reset   bool
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if c.written >= c.limit {
		return len(b), nil // swallow the rest
	}
	if rest := c.limit - c.written; int64(len(b)) > rest {
		b = b[:rest]
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	return n, err
}

func (c *cutWriter) cut() {
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok && c.reset {
		tc.SetLinger(0) // RST instead of FIN
	}
	conn.Close()
}
