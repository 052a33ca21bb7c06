package faultinject

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFaults(t *testing.T) {
	body := strings.Repeat("x", 200000)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" {
			t.Error("no Host header")
		}
		io.WriteString(w, body)
	}))
	defer backend.Close()
	p, err := New(backend.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	get := func() (int, string, error) {
		resp, err := http.Get(p.URL())
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, b, err := get(); err != nil || code != 200 || b != body {
		t.Fatalf("pass-through: %d %d %v", code, len(b), err)
	}
	for _, f := range []Fault{InternalError, SlowDown, Reset, Truncate, Delay} {
		p.SetFaults(1, f)
		code, b, err := get()
		switch f {
		case InternalError:
			if code != 500 || !strings.Contains(b, "InternalError") {
				t.Errorf("500: %d %q", code, b)
			}
		case SlowDown:
			if code != 503 || !strings.Contains(b, "SlowDown") {
				t.Errorf("503: %d %q", code, b)
			}
		case Reset, Truncate:
			if err == nil && len(b) == len(body) {
				t.Errorf("%s: the full body arrived", f)
			}
		case Delay:
			if err != nil || b != body {
				t.Errorf("delay: %v", err)
			}
		}
		if p.Counts[f].Load() != 1 {
			t.Errorf("%s not counted", f)
		}
	}
	p.SetFaults(0)
	if _, b, err := get(); err != nil || b != body {
		t.Fatalf("after faults: %v", err)
	}
}
