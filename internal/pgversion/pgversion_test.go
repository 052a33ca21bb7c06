package pgversion

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for m := MinMajor; m <= MaxMajor; m++ {
		if err := Check(m, "x"); err != nil || !Supported(m) {
			t.Errorf("PostgreSQL %d: %v", m, err)
		}
	}
	if got := Majors(); len(got) != 7 || got[0] != 12 || got[6] != 18 {
		t.Errorf("Majors() = %v", got)
	}
	if Range() != "12 to 18" {
		t.Errorf("Range() = %q", Range())
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{Check(19, ""), "PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep"},
		{Check(11, "the server"), "the server: PostgreSQL 11 is too old for pgkeep (supported: 12 to 18)"},
		{Check(0, "PG_VERSION"), "PG_VERSION: a PostgreSQL older than 12 is too old for pgkeep (supported: 12 to 18)"},
		{&UnsupportedError{Newer: true}, "a PostgreSQL newer than 18 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep"},
	} {
		var ue *UnsupportedError
		if c.err == nil || c.err.Error() != c.want || !errors.Is(c.err, ErrUnsupported) || !errors.As(c.err, &ue) {
			t.Errorf("%v, want %q", c.err, c.want)
		}
	}
	if MajorOf(180004) != 18 || MajorOf(120022) != 12 || MajorOf(90624) != 9 {
		t.Error("MajorOf")
	}
}
