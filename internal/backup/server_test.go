package backup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

// fakeServer speaks just enough of PostgreSQL's protocol (simple queries)
// to say it is server_version_num version; any other query fails. It
// returns the port and the queries it was sent.
func fakeServer(t *testing.T, version string) (int, func() []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	queries := make(chan string, 100)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				be := pgproto3.NewBackend(conn, conn)
				if _, err := be.ReceiveStartupMessage(); err != nil {
					return
				}
				be.Send(&pgproto3.AuthenticationOk{})
				be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: version})
				be.Send(&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"})
				be.Send(&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				be.Flush()
				for {
					msg, err := be.Receive()
					if err != nil {
						return
					}
					q, ok := msg.(*pgproto3.Query)
					if !ok {
						return
					}
					queries <- q.String
					if strings.Contains(q.String, "server_version_num") && !strings.Contains(q.String, "data_checksums") {
						be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("v"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}})
						be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(version)}})
						be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
					} else {
						be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42883", Message: "the fake server knows no other query"})
					}
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
					be.Flush()
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, func() []string {
		var out []string
		for {
			select {
			case q := <-queries:
				out = append(out, q)
			default:
				return out
			}
		}
	}
}

// A backup of a server outside 12 to 18 is refused, named as unsupported
// with the range, before anything is written to the repository and before
// the server is asked anything else.
func TestBackupRefusesUnsupportedServer(t *testing.T) {
	for version, want := range map[string]string{
		"190000": "refusing to back up: the server (server_version_num 190000): PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep",
		"110022": "refusing to back up: the server (server_version_num 110022): PostgreSQL 11 is too old for pgkeep (supported: 12 to 18)",
	} {
		t.Run(version, func(t *testing.T) {
			port, queries := fakeServer(t, version)
			st, err := local.New(filepath.Join(t.TempDir(), "repo"))
			if err != nil {
				t.Fatal(err)
			}
			comp, _ := envelope.ParseCompression("zstd")
			r := repo.New(st, repo.Options{Compression: comp, WALCompression: comp})
			_, err = Run(context.Background(), r, Options{
				ConnString: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable default_query_exec_mode=simple_protocol", port),
				PGData:     t.TempDir(),
			})
			var ue *pgversion.UnsupportedError
			if !errors.As(err, &ue) || err.Error() != want {
				t.Fatalf("got %v\nwant %s", err, want)
			}
			if q := queries(); len(q) != 1 {
				t.Errorf("the server was asked %q; only its version should be", q)
			}
			var keys []string
			if err := st.List(context.Background(), "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(keys) != 0 {
				t.Errorf("the repository holds %v", keys)
			}
		})
	}
}

func TestBackupFunctionsPerMajor(t *testing.T) {
	for _, major := range pgversion.Majors() {
		fns := backupFunctionsFor(major)
		old := major <= 14
		if old != strings.Contains(fns.start, "pg_start_backup($1, true, false)") || old != strings.Contains(fns.stop, "pg_stop_backup(false, false)") ||
			old == strings.Contains(fns.start, "pg_backup_start($1, true)") || old == strings.Contains(fns.stop, "pg_backup_stop(false)") {
			t.Errorf("PostgreSQL %d: %+v", major, fns)
		}
	}
}
