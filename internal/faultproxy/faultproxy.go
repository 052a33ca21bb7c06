// Package faultproxy is a fault-injecting HTTP reverse proxy for tests. It
// sits between pgkeep and an S3-compatible server (MinIO) and, following
// rules, answers 500 InternalError or 503 SlowDown with S3 error bodies,
// resets the connection in the middle of a response, truncates a response
// body (fewer bytes than its Content-Length), or delays a response.
//
// Requests are forwarded unchanged, Host header included: S3 signatures
// cover the Host header, so the store must see the host the client signed
// (the proxy's own address). Only the address dialled changes.
//
// Faults are chosen by rules, either every Nth matching request or with a
// probability drawn from a seeded generator (math/rand/v2 PCG), so a run
// can be repeated: the same sequence of requests meets the same faults.
package faultproxy

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a kind of injected failure.
type Fault int

const (
	// None: the request is forwarded and answered normally.
	None Fault = iota
	// InternalError answers 500 with an S3 InternalError XML body.
	InternalError
	// SlowDown answers 503 with an S3 SlowDown XML body.
	SlowDown
	// Reset forwards the request (the store applies it), sends part of the
	// answer and resets the connection (RST): part of the body if it has
	// one, else part of the header.
	Reset
	// Truncate forwards the request, sends the answer with its full
	// Content-Length but fewer body bytes (part of the header if the answer
	// has no body), then closes the connection normally (FIN).
	Truncate
	// Delay waits Rule.Delay, then forwards normally.
	Delay
	numFaults
)

// Faults lists every fault kind.
var Faults = []Fault{InternalError, SlowDown, Reset, Truncate, Delay}

func (f Fault) String() string {
	switch f {
	case None:
		return "none"
	case InternalError:
		return "500 InternalError"
	case SlowDown:
		return "503 SlowDown"
	case Reset:
		return "reset"
	case Truncate:
		return "truncate"
	case Delay:
		return "delay"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// DefaultDelay is the pause of a Delay rule that sets none.
const DefaultDelay = 500 * time.Millisecond

// Rule says when to inject a fault. A request is matched against the
// rules in order; every rule whose filters match counts it (and draws from
// the generator if it is a probability rule), and the first that fires
// decides the fault. A rule with neither Every nor Probability never fires.
type Rule struct {
	Fault Fault
	// Every > 0 fires on every Nth request this rule matches (the Nth,
	// 2Nth, ...). It takes precedence over Probability.
	Every int
	// Probability in [0, 1] fires on each matching request with this
	// probability.
	Probability float64
	// Methods restricts the rule to these HTTP methods (GET, PUT, HEAD,
	// POST, DELETE); empty: all.
	Methods []string
	// Path restricts the rule to requests whose URL path contains it
	// (for example "/wal/" or "backup.json"); empty: all.
	Path string
	// Times > 0 lets the rule fire at most that many times.
	Times int
	// Delay is the pause of a Delay fault (default DefaultDelay).
	Delay time.Duration
	// Keep is how many body bytes a Reset or Truncate lets through:
	// 0 a random count in [0, size) drawn from the generator; > 0 that
	// many, at most size-1; < 0 none (the header only).
	Keep int64
	// AfterForward makes InternalError and SlowDown forward the request
	// first, so the store applies it, and then answer the error: the
	// client cannot tell whether its write happened.
	AfterForward bool
}

func (r Rule) matches(req *http.Request) bool {
	if len(r.Methods) > 0 && !slices.ContainsFunc(r.Methods, func(m string) bool { return strings.EqualFold(m, req.Method) }) {
		return false
	}
	return r.Path == "" || strings.Contains(req.URL.Path, r.Path)
}

// Flaky returns rules that together fault about rate of all requests,
// spread evenly over 500 InternalError, 503 SlowDown, resets and
// truncations (at random points).
func Flaky(rate float64) []Rule {
	kinds := []Fault{InternalError, SlowDown, Reset, Truncate}
	// 1 - (1-p)^n = rate
	p := 1 - math.Pow(1-rate, 1/float64(len(kinds)))
	var rules []Rule
	for _, k := range kinds {
		rules = append(rules, Rule{Fault: k, Probability: p})
	}
	return rules
}

// Event is one injected fault.
type Event struct {
	Fault  Fault
	Method string
	Path   string
	Query  string
}

func (e Event) String() string {
	s := e.Method + " " + e.Path
	if e.Query != "" {
		s += "?" + e.Query
	}
	return s + ": " + e.Fault.String()
}

// maxEvents bounds the event log.
const maxEvents = 10000

// Stats counts what the proxy did.
type Stats struct {
	Requests int64           // requests received
	Injected map[Fault]int64 // faults injected, by kind (Delay included)
}

// Total is the number of faults injected.
func (s Stats) Total() int64 {
	var n int64
	for _, v := range s.Injected {
		n += v
	}
	return n
}

func (s Stats) String() string {
	var parts []string
	for _, f := range Faults {
		if s.Injected[f] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", f, s.Injected[f]))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "no faults")
	}
	return fmt.Sprintf("%d requests, %s", s.Requests, strings.Join(parts, ", "))
}

type ruleState struct {
	Rule
	seen  int
	fired int
}

// Proxy is a running fault-injecting reverse proxy.
type Proxy struct {
	srv    *httptest.Server
	target *url.URL
	tr     *http.Transport
	rp     *httputil.ReverseProxy

	mu       sync.Mutex
	rules    []ruleState
	rng      *rand.Rand
	injected [numFaults]int64
	events   []Event
	requests atomic.Int64
	reqID    atomic.Int64
}

// DefaultSeed seeds the generator of a new Proxy.
const DefaultSeed = 1

// New starts a proxy on 127.0.0.1 that forwards to target (for example
// MinIO's http://127.0.0.1:PORT) and injects faults by rules. It panics
// if target is not an absolute http(s) URL, like httptest.NewServer panics
// when it cannot listen.
func New(target string, rules ...Rule) *Proxy {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		panic(fmt.Sprintf("faultproxy: bad target %q: want http://host:port", target))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true // pass bodies through byte for byte
	tr.MaxIdleConnsPerHost = 64
	p := &Proxy{
		target: u,
		tr:     tr,
		rng:    newRand(DefaultSeed),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Dial the target but keep the Host header the client signed.
			pr.Out.URL.Scheme = u.Scheme
			pr.Out.URL.Host = u.Host
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.SetRules(rules...)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	return p
}

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// URL is the proxy's address, http://127.0.0.1:PORT: use it as the S3
// endpoint.
func (p *Proxy) URL() string { return p.srv.URL }

// Target is the address the proxy forwards to, as given to New.
func (p *Proxy) Target() string { return p.target.String() }

// Close stops the proxy; it waits for requests in progress.
func (p *Proxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
	p.tr.CloseIdleConnections()
}

// SetRules replaces the rules (and restarts their counts); with none, the
// proxy forwards everything unchanged.
func (p *Proxy) SetRules(rules ...Rule) {
	for _, r := range rules {
		if r.Fault <= None || r.Fault >= numFaults {
			panic(fmt.Sprintf("faultproxy: rule with unknown fault %d", r.Fault))
		}
		if r.Probability < 0 || r.Probability > 1 || r.Every < 0 {
			panic(fmt.Sprintf("faultproxy: rule %+v: probability must be in [0, 1] and Every >= 0", r))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = p.rules[:0]
	for _, r := range rules {
		p.rules = append(p.rules, ruleState{Rule: r})
	}
}

// Seed restarts the generator with seed.
func (p *Proxy) Seed(seed uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rng = newRand(seed)
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Requests: p.requests.Load(), Injected: map[Fault]int64{}}
	for f := None + 1; f < numFaults; f++ {
		if p.injected[f] > 0 {
			s.Injected[f] = p.injected[f]
		}
	}
	return s
}

// Injected returns how many faults of kind f were injected; with None,
// how many of every kind.
func (p *Proxy) Injected(f Fault) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f == None {
		var n int64
		for _, v := range p.injected {
			n += v
		}
		return n
	}
	return p.injected[f]
}

// Events returns the injected faults in order (the first 10000).
func (p *Proxy) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// decide picks the rule that fires for req, if any, and records it.
func (p *Proxy) decide(req *http.Request) (Rule, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var chosen *ruleState
	for i := range p.rules {
		r := &p.rules[i]
		if !r.matches(req) {
			continue
		}
		r.seen++
		fires := false
		switch {
		case r.Every > 0:
			fires = r.seen%r.Every == 0
		case r.Probability > 0:
			fires = p.rng.Float64() < r.Probability
		}
		if fires && (r.Times == 0 || r.fired < r.Times) && chosen == nil {
			chosen = r
		}
	}
	if chosen == nil {
		return Rule{}, false
	}
	chosen.fired++
	p.injected[chosen.Fault]++
	if len(p.events) < maxEvents {
		p.events = append(p.events, Event{Fault: chosen.Fault, Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery})
	}
	return chosen.Rule, true
}

// keepCount resolves Rule.Keep for a body of size bytes.
func (p *Proxy) keepCount(r Rule, size int64) int64 {
	switch {
	case size <= 0 || r.Keep < 0:
		return 0
	case r.Keep > 0:
		return min(r.Keep, size-1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Int64N(size)
}

func (p *Proxy) serve(w http.ResponseWriter, req *http.Request) {
	p.requests.Add(1)
	rule, ok := p.decide(req)
	if !ok {
		p.rp.ServeHTTP(w, req)
		return
	}
	switch rule.Fault {
	case Delay:
		d := rule.Delay
		if d <= 0 {
			d = DefaultDelay
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return
		}
		p.rp.ServeHTTP(w, req)
	case InternalError, SlowDown:
		if rule.AfterForward {
			resp, err := p.forward(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		} else {
			// Take the whole request, as a store that failed late would.
			io.Copy(io.Discard, req.Body)
		}
		if rule.Fault == InternalError {
			p.s3Error(w, req, http.StatusInternalServerError, "InternalError", "We encountered an internal error, please try again.")
		} else {
			p.s3Error(w, req, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		}
	case Reset, Truncate:
		p.cut(w, req, rule)
	}
}

// forward sends req to the target as it is (Host header included) and
// returns the answer.
func (p *Proxy) forward(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.RequestURI = ""
	out.URL.Scheme = p.target.Scheme
	out.URL.Host = p.target.Host
	out.Host = req.Host
	if req.ContentLength == 0 {
		out.Body = nil
	}
	for _, h := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		out.Header.Del(h)
	}
	return p.tr.RoundTrip(out)
}

// cut forwards req, then writes part of the answer on the raw connection
// and closes it: with Reset by RST, with Truncate by FIN.
func (p *Proxy) cut(w http.ResponseWriter, req *http.Request, rule Rule) {
	resp, err := p.forward(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("faultproxy: the server cannot hijack connections")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()

	var head bytes.Buffer
	fmt.Fprintf(&head, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	h := resp.Header.Clone()
	h.Del("Transfer-Encoding")
	h.Del("Connection")
	if req.Method != http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	h.Write(&head)
	head.WriteString("\r\n")

	var out []byte
	if req.Method != http.MethodHead && len(body) > 0 {
		out = append(head.Bytes(), body[:p.keepCount(rule, int64(len(body)))]...)
	} else {
		// No body to cut: cut the header instead.
		out = head.Bytes()[:p.keepCount(Rule{Keep: rule.Keep}, int64(head.Len()))]
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	conn.Write(out)
	if rule.Fault == Reset {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // Close sends RST
		}
	}
}

// s3Error answers with an S3 error document.
func (p *Proxy) s3Error(w http.ResponseWriter, req *http.Request, status int, code, msg string) {
	id := "faultproxy-" + strconv.FormatInt(p.reqID.Add(1), 10)
	var res bytes.Buffer
	xml.EscapeText(&res, []byte(req.URL.Path))
	body := xml.Header + "<Error><Code>" + code + "</Code><Message>" + msg + "</Message><Resource>" +
		res.String() + "</Resource><RequestId>" + id + "</RequestId></Error>"
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", id)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}
