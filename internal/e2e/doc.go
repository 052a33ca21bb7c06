// Package e2e holds pgkeep's end-to-end tests: the real binary against real
// PostgreSQL clusters and a real MinIO, started by internal/pgtest. It has
// no non-test code.
package e2e
