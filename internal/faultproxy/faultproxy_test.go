package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend is a tiny object store: PUT stores a body, GET and HEAD return
// it; it records the Host header of every request.
type backend struct {
	*httptest.Server
	mu      sync.Mutex
	objects map[string][]byte
	hosts   []string
	puts    int
}

func newBackend(t *testing.T) *backend {
	b := &backend{objects: map[string][]byte{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hosts = append(b.hosts, r.Host)
		b.mu.Unlock()
		switch r.Method {
		case http.MethodPut:
			data, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			b.mu.Lock()
			b.objects[r.URL.Path] = data
			b.puts++
			b.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		case http.MethodGet, http.MethodHead:
			b.mu.Lock()
			data, ok := b.objects[r.URL.Path]
			b.mu.Unlock()
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Header().Set("ETag", `"etag"`)
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				w.Write(data)
			}
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) put(path string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[path] = data
}

func (b *backend) lastHost() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.hosts) == 0 {
		return ""
	}
	return b.hosts[len(b.hosts)-1]
}

func (b *backend) putCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.puts
}

func newProxy(t *testing.T, target string, rules ...Rule) *Proxy {
	p := New(target, rules...)
	t.Cleanup(p.Close)
	return p
}

// client never reuses connections, so a fault on one request cannot leak
// into the next.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}

type answer struct {
	status int
	body   []byte
	err    error // from the request or from reading the body
	header http.Header
}

func do(t *testing.T, method, url string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: data, err: err, header: resp.Header}
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestPassThroughKeepsHostAndBytes(t *testing.T) {
	b := newBackend(t)
	p := newProxy(t, b.URL)
	data := payload(300_000)
	if a := do(t, "PUT", p.URL()+"/bucket/key", data); a.err != nil || a.status != 200 {
		t.Fatalf("PUT through the proxy: %d %v", a.status, a.err)
	}
	// The store sees the Host the client used (and signed): the proxy's.
	if got, want := b.lastHost(), strings.TrimPrefix(p.URL(), "http://"); got != want {
		t.Fatalf("backend saw Host %q, want the client's %q", got, want)
	}
	a := do(t, "GET", p.URL()+"/bucket/key", nil)
	if a.err != nil || a.status != 200 || !bytes.Equal(a.body, data) {
		t.Fatalf("GET through the proxy: %d, %d bytes, %v", a.status, len(a.body), a.err)
	}
	if a := do(t, "GET", p.URL()+"/bucket/nothing", nil); a.status != 404 {
		t.Fatalf("missing key: %d, want 404 passed through", a.status)
	}
	if s := p.Stats(); s.Requests != 3 || s.Total() != 0 {
		t.Fatalf("stats %v", s)
	}
}

func TestErrorAnswers(t *testing.T) {
	b := newBackend(t)
	b.put("/bucket/key", payload(1000))
	for _, tc := range []struct {
		fault  Fault
		status int
		code   string
	}{
		{InternalError, 500, "<Code>InternalError</Code>"},
		{SlowDown, 503, "<Code>SlowDown</Code>"},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			p := newProxy(t, b.URL, Rule{Fault: tc.fault, Every: 2})
			for i := 1; i <= 6; i++ {
				a := do(t, "GET", p.URL()+"/bucket/key", nil)
				if a.err != nil {
					t.Fatal(a.err)
				}
				if i%2 == 1 {
					if a.status != 200 || len(a.body) != 1000 {
						t.Fatalf("request %d: %d, want a normal answer", i, a.status)
					}
					continue
				}
				if a.status != tc.status || !strings.Contains(string(a.body), tc.code) ||
					!strings.Contains(string(a.body), "<Resource>/bucket/key</Resource>") ||
					a.header.Get("Content-Type") != "application/xml" {
					t.Fatalf("request %d: %d %s, want %d with %s", i, a.status, a.body, tc.status, tc.code)
				}
			}
			if got := p.Injected(tc.fault); got != 3 {
				t.Fatalf("%d injected, want 3", got)
			}
			// HEAD gets the status without a body.
			p.SetRules(Rule{Fault: tc.fault, Every: 1})
			if a := do(t, "HEAD", p.URL()+"/bucket/key", nil); a.status != tc.status || len(a.body) != 0 {
				t.Fatalf("HEAD: %d %q", a.status, a.body)
			}
		})
	}
}

func TestErrorBeforeOrAfterForward(t *testing.T) {
	b := newBackend(t)
	p := newProxy(t, b.URL, Rule{Fault: InternalError, Every: 1, Methods: []string{"PUT"}})
	if a := do(t, "PUT", p.URL()+"/bucket/a", payload(5000)); a.status != 500 {
		t.Fatalf("PUT: %d %v", a.status, a.err)
	}
	if n := b.putCount(); n != 0 {
		t.Fatalf("a plain 500 reached the store (%d puts)", n)
	}
	// The method filter leaves GETs alone.
	if a := do(t, "GET", p.URL()+"/bucket/a", nil); a.status != 404 {
		t.Fatalf("GET: %d", a.status)
	}
	p.SetRules(Rule{Fault: SlowDown, Every: 1, Methods: []string{"put"}, AfterForward: true})
	if a := do(t, "PUT", p.URL()+"/bucket/a", payload(5000)); a.status != 503 {
		t.Fatalf("PUT: %d %v", a.status, a.err)
	}
	if n := b.putCount(); n != 1 {
		t.Fatalf("AfterForward: the store saw %d puts, want 1 (applied, answer lost)", n)
	}
	if a := do(t, "GET", p.URL()+"/bucket/a", nil); a.status != 200 || !bytes.Equal(a.body, payload(5000)) {
		t.Fatalf("GET after an applied PUT: %d", a.status)
	}
}

func TestResetAndTruncate(t *testing.T) {
	b := newBackend(t)
	data := payload(200_000)
	b.put("/bucket/big", data)
	for _, f := range []Fault{Reset, Truncate} {
		for _, keep := range []int64{0, -1, 1, 100_000, 1 << 30} {
			t.Run(f.String()+"/keep="+strconv.FormatInt(keep, 10), func(t *testing.T) {
				p := newProxy(t, b.URL, Rule{Fault: f, Every: 1, Keep: keep})
				a := do(t, "GET", p.URL()+"/bucket/big", nil)
				if a.err == nil {
					t.Fatalf("a cut answer read without error: %d, %d bytes", a.status, len(a.body))
				}
				if len(a.body) >= len(data) || !bytes.Equal(a.body, data[:len(a.body)]) {
					t.Fatalf("got %d bytes, want a proper prefix of %d", len(a.body), len(data))
				}
				if keep > 0 && keep < int64(len(data)) && f == Truncate && int64(len(a.body)) != keep {
					t.Fatalf("truncate kept %d bytes, want %d", len(a.body), keep)
				}
				if f == Truncate && a.status == 200 && !errors.Is(a.err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncation should read as an unexpected EOF, got %v", a.err)
				}
				if p.Injected(f) != 1 {
					t.Fatalf("injected %v", p.Stats())
				}
			})
		}
	}
	t.Run("answers without a body", func(t *testing.T) {
		for _, f := range []Fault{Reset, Truncate} {
			p := newProxy(t, b.URL, Rule{Fault: f, Every: 1})
			if a := do(t, "HEAD", p.URL()+"/bucket/big", nil); a.err == nil {
				t.Fatalf("%s HEAD: %d without error", f, a.status)
			}
			before := b.putCount()
			if a := do(t, "PUT", p.URL()+"/bucket/new", payload(10)); a.err == nil {
				t.Fatalf("%s PUT: %d without error", f, a.status)
			}
			if b.putCount() != before+1 {
				t.Fatalf("%s PUT did not reach the store", f)
			}
		}
	})
}

func TestDelay(t *testing.T) {
	b := newBackend(t)
	b.put("/bucket/k", payload(10))
	p := newProxy(t, b.URL, Rule{Fault: Delay, Every: 1, Delay: 300 * time.Millisecond})
	start := time.Now()
	a := do(t, "GET", p.URL()+"/bucket/k", nil)
	if a.err != nil || a.status != 200 || len(a.body) != 10 {
		t.Fatalf("delayed GET: %d %v", a.status, a.err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("answered after %v, want at least 300ms", el)
	}
	if p.Injected(Delay) != 1 {
		t.Fatal(p.Stats())
	}
}

func TestProbabilityIsSeededAndRated(t *testing.T) {
	b := newBackend(t)
	b.put("/bucket/k", payload(64))
	sequence := func(seed uint64) []int {
		p := newProxy(t, b.URL, Flaky(0.3)...)
		p.Seed(seed)
		var got []int
		for range 200 {
			a := do(t, "GET", p.URL()+"/bucket/k", nil)
			if a.err != nil {
				got = append(got, -1)
			} else {
				got = append(got, a.status)
			}
		}
		s := p.Stats()
		if s.Requests != 200 {
			t.Fatalf("stats %v", s)
		}
		// 30% of 200, with a generous margin.
		if n := s.Total(); n < 35 || n > 85 {
			t.Fatalf("%d faults in 200 requests at rate 0.3: %v", n, s)
		}
		for _, f := range []Fault{InternalError, SlowDown, Reset, Truncate} {
			if s.Injected[f] == 0 {
				t.Fatalf("no %s in %v", f, s)
			}
		}
		if len(p.Events()) != int(s.Total()) {
			t.Fatalf("%d events for %d faults", len(p.Events()), s.Total())
		}
		return got
	}
	a, b2, c := sequence(7), sequence(7), sequence(8)
	if !slicesEqual(a, b2) {
		t.Fatal("the same seed gave different fault sequences")
	}
	if slicesEqual(a, c) {
		t.Fatal("different seeds gave the same fault sequence")
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRuleFiltersAndLimits(t *testing.T) {
	b := newBackend(t)
	b.put("/bucket/wal/1", payload(10))
	b.put("/bucket/other", payload(10))
	p := newProxy(t, b.URL, Rule{Fault: InternalError, Every: 1, Path: "/wal/", Times: 2})
	codes := func(path string, n int) []int {
		var out []int
		for range n {
			out = append(out, do(t, "GET", p.URL()+path, nil).status)
		}
		return out
	}
	if got := codes("/bucket/other", 2); !slicesEqual(got, []int{200, 200}) {
		t.Fatalf("path filter: %v", got)
	}
	if got := codes("/bucket/wal/1", 4); !slicesEqual(got, []int{500, 500, 200, 200}) {
		t.Fatalf("Times 2: %v", got)
	}
	// Runtime change: no rules, no faults; new rules count from zero.
	p.SetRules()
	if got := codes("/bucket/wal/1", 2); !slicesEqual(got, []int{200, 200}) {
		t.Fatalf("after SetRules(): %v", got)
	}
	p.SetRules(Rule{Fault: SlowDown, Every: 3})
	if got := codes("/bucket/other", 6); !slicesEqual(got, []int{200, 200, 503, 200, 200, 503}) {
		t.Fatalf("every 3rd: %v", got)
	}
	if s := p.Stats(); s.Injected[InternalError] != 2 || s.Injected[SlowDown] != 2 || s.Total() != 4 {
		t.Fatalf("stats %v", s)
	}
	ev := p.Events()
	if len(ev) != 4 || ev[0].Path != "/bucket/wal/1" || ev[0].Fault != InternalError || ev[3].Fault != SlowDown {
		t.Fatalf("events %v", ev)
	}
}

func TestConcurrentUse(t *testing.T) {
	b := newBackend(t)
	data := payload(50_000)
	b.put("/bucket/k", data)
	p := newProxy(t, b.URL, Flaky(0.5)...)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if w == 0 && i == 10 {
					p.SetRules(Flaky(0.2)...)
				}
				a := do(t, "GET", p.URL()+"/bucket/k", nil)
				if a.err == nil && a.status == 200 && !bytes.Equal(a.body, data) {
					t.Errorf("a successful answer with wrong content (%d bytes)", len(a.body))
				}
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Requests != 160 || s.Total() == 0 {
		t.Fatalf("stats %v", s)
	}
}

func TestBadRulesPanic(t *testing.T) {
	b := newBackend(t)
	p := newProxy(t, b.URL)
	for _, r := range []Rule{{Fault: None, Every: 1}, {Fault: InternalError, Probability: 1.5}, {Fault: Reset, Every: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("rule %+v accepted", r)
				}
			}()
			p.SetRules(r)
		}()
	}
}
