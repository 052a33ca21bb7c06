package pgtest

import (
	"testing"

	"github.com/pgkeep/pgkeep/internal/miniosrv"
)

// MinIOVersion is the MinIO release the tests build and run.
const MinIOVersion = miniosrv.Version

// MinIO is a MinIO server started for a test.
type MinIO struct {
	*miniosrv.Server
}

// MinIOBinary finds the MinIO server (see miniosrv.Binary) and Require()s it.
func MinIOBinary(t testing.TB) string {
	t.Helper()
	skipShort(t, "MinIO")
	bin, err := miniosrv.Binary()
	Require(t, "MinIO", err == nil, "run scripts/test-deps.sh (make test-deps) to build it")
	return bin
}

// StartMinIO starts MinIO on free loopback ports with its own data
// directory and a fresh bucket; cleanup kills it and removes the data.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, false)
}

// StartMinIOTLS starts MinIO serving HTTPS with a self-signed certificate
// for 127.0.0.1; CAFile is the PEM to trust.
func StartMinIOTLS(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, true)
}

func startMinIO(t testing.TB, useTLS bool) *MinIO {
	t.Helper()
	s, err := miniosrv.Start(MinIOBinary(t), useTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &MinIO{s}
}

// NewBucket creates another empty bucket and returns its name.
func (m *MinIO) NewBucket(t testing.TB) string {
	t.Helper()
	name, err := m.Server.NewBucket()
	if err != nil {
		t.Fatal(err)
	}
	return name
}
