package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pgkeep/pgkeep/internal/faultproxy"
	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

// testPartSize is S3's minimum, so the suite's large objects go up in
// several parts.
const testPartSize = 5 << 20

// newStore returns a store on MinIO's bucket and prefix, reached at
// endpoint (MinIO's own, or a fault proxy's).
func newStore(t *testing.T, mc *pgtest.MinIO, endpoint, bucket, prefix string) *Store {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	s, err := New(context.Background(), Config{Bucket: bucket, Prefix: prefix, Region: mc.Region, Endpoint: endpoint,
		PathStyle: true, PartSize: testPartSize, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	n := 0
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		n++
		// Alternate between a bucket root and a prefix.
		if n%2 == 0 {
			return newStore(t, mc, mc.Endpoint, mc.NewBucket(t), "")
		}
		return newStore(t, mc, mc.Endpoint, mc.NewBucket(t), "some/prefix")
	})
}

// uploadsLeft lists the incomplete multipart uploads in bucket.
func uploadsLeft(t *testing.T, mc *pgtest.MinIO, bucket string) []string {
	t.Helper()
	out, err := mc.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// TestFailedMultipartIsAborted: whatever makes a multipart Put fail, no
// incomplete upload (storage that is billed but never listed) is left.
func TestFailedMultipartIsAborted(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	bucket := mc.NewBucket(t)
	s := newStore(t, mc, mc.Endpoint, bucket, "p")
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*testPartSize/16+1000)
	size := int64(len(data))

	if err := s.Put(ctx, "short", bytes.NewReader(data[:size-1]), size); err == nil {
		t.Fatal("a short body was accepted")
	}
	if err := s.Put(ctx, "long", struct{ io.Reader }{bytes.NewReader(data)}, size-1); err == nil {
		t.Fatal("a long body was accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	slow := &slowReader{r: bytes.NewReader(data), delay: 10 * time.Millisecond}
	if err := s.Put(cctx, "cancelled", slow, size); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Put: %v", err)
	}
	// A part refused by the store (a 500 on the second part).
	p := faultproxy.New(mc.Endpoint, faultproxy.Rule{Fault: faultproxy.InternalError, Every: 2, Methods: []string{"PUT"}, Path: "/failing", Times: 1})
	defer p.Close()
	ps := newStore(t, mc, p.URL(), bucket, "p")
	if err := ps.Put(ctx, "failing", bytes.NewReader(data), size); err == nil || storage.IsPermanent(err) {
		t.Fatalf("a 500 on a part: want a transient error, got %v", err)
	}
	if left := uploadsLeft(t, mc, bucket); len(left) > 0 {
		t.Fatalf("incomplete uploads left: %v", left)
	}
	s.List(ctx, "", func(oi storage.ObjectInfo) error {
		t.Errorf("object %s stored by a failed Put", oi.Key)
		return nil
	})
}

type slowReader struct {
	r     io.Reader
	delay time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

func TestErrors(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	ctx := context.Background()
	type op struct {
		name string
		do   func(s *Store) error
	}
	ops := []op{
		{"put", func(s *Store) error { return s.Put(ctx, "k", bytes.NewReader([]byte("v")), 1) }},
		// Large bodies: the store may reset the connection before it has
		// read them.
		{"put-4MiB", func(s *Store) error { return s.Put(ctx, "k", bytes.NewReader(make([]byte, 4<<20)), 4<<20) }},
		{"put-multipart", func(s *Store) error {
			return s.Put(ctx, "k", bytes.NewReader(make([]byte, testPartSize+1)), testPartSize+1)
		}},
		{"get", func(s *Store) error { return s.Get(ctx, "k", func(io.Reader) error { return nil }) }},
		{"stat", func(s *Store) error { _, err := s.Stat(ctx, "k"); return err }},
		{"list", func(s *Store) error { return s.List(ctx, "", func(storage.ObjectInfo) error { return nil }) }},
		{"delete", func(s *Store) error { return s.Delete(ctx, "k") }},
	}

	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrongwrongwrong")
		s, err := New(ctx, Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true, PartSize: testPartSize})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ops {
			err := o.do(s)
			if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "credentials") || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s: want a permanent error about credentials, got %v", o.name, err)
			} else if strings.Contains(err.Error(), "wrongwrongwrong") {
				t.Errorf("%s: the error leaks the secret key: %v", o.name, err)
			}
		}
		t.Setenv("AWS_ACCESS_KEY_ID", "unknownkey")
		s, _ = New(ctx, Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true})
		if err := ops[0].do(s); !storage.IsPermanent(err) || !strings.Contains(err.Error(), "access key") {
			t.Errorf("unknown access key: %v", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		s := newStore(t, mc, mc.Endpoint, "no-such-bucket-pgkeep", "")
		for _, o := range ops {
			err := o.do(s)
			if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), `bucket "no-such-bucket-pgkeep" does not exist`) {
				t.Errorf("%s: want a permanent 'does not exist', got %v", o.name, err)
			}
			if errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s: a missing bucket must not read as 'object not found'", o.name)
			}
		}
	})
	t.Run("unreachable endpoint is transient", func(t *testing.T) {
		s := newStore(t, mc, "http://127.0.0.1:1", "b", "")
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := s.Get(cctx, "k", nil)
		if err == nil || storage.IsPermanent(err) || errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("want a transient error, got %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("the error does not say where: %v", err)
		}
	})
	t.Run("location has no secrets", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
		s, err := New(ctx, Config{Bucket: mc.Bucket, Prefix: "/p/", Endpoint: "http://user:hunter2@127.0.0.1:9/path?X-Amz-Security-Token=tok"})
		if err != nil {
			t.Fatal(err)
		}
		loc := s.Location()
		if strings.Contains(loc, "hunter2") || strings.Contains(loc, "tok") || strings.Contains(loc, mc.SecretKey) {
			t.Fatalf("Location() = %q leaks secrets", loc)
		}
		if want := "s3://" + mc.Bucket + "/p (endpoint http://127.0.0.1:9)"; loc != want {
			t.Fatalf("Location() = %q, want %q", loc, want)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		for _, cfg := range []Config{{}, {Bucket: "b", PartSize: 1 << 20}, {Bucket: "b", Prefix: "a/../b"}} {
			if _, err := New(ctx, cfg); err == nil {
				t.Errorf("New(%+v) accepted", cfg)
			}
		}
	})
}

// TestStoreFaults: behind a proxy that injects 500s, SlowDowns, resets and
// truncations, errors are transient (never "not found"), a short body is
// an error, and the retrying wrapper gets every operation through.
func TestStoreFaults(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	p := faultproxy.New(mc.Endpoint)
	defer p.Close()
	s := newStore(t, mc, p.URL(), mc.Bucket, "faults")
	ctx := context.Background()
	data := bytes.Repeat([]byte("pgkeep"), 100000)
	if err := s.Put(ctx, "obj", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	read := func(st storage.Storage) ([]byte, error) {
		var got []byte
		err := st.Get(ctx, "obj", func(r io.Reader) error {
			var err error
			got, err = io.ReadAll(r)
			return err
		})
		return got, err
	}

	for _, f := range []faultproxy.Fault{faultproxy.InternalError, faultproxy.SlowDown, faultproxy.Reset, faultproxy.Truncate} {
		p.SetRules(faultproxy.Rule{Fault: f, Every: 1, Methods: []string{"GET", "HEAD"}, Keep: 1000})
		_, err := read(s)
		if err == nil || storage.IsPermanent(err) || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%v on Get: want a transient error, got %v", f, err)
		}
		if f == faultproxy.Truncate && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("a truncated body: want io.ErrUnexpectedEOF, got %v", err)
		}
		if _, err := s.Stat(ctx, "obj"); err == nil || storage.IsPermanent(err) {
			t.Errorf("%v on Stat: want a transient error, got %v", f, err)
		}

		// Twice in a row, then the store answers: the wrapper retries.
		p.SetRules(faultproxy.Rule{Fault: f, Every: 1, Methods: []string{"GET"}, Times: 2})
		policy := storage.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}
		got, err := read(storage.NewRetrying(s, policy))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%v twice, then retried: %d bytes, %v", f, len(got), err)
		}
	}
}

// TestAmbiguousPutRetried: the store applies a write but the answer is a
// 500; the retry gets ErrExists, and the object holds the content.
func TestAmbiguousPutRetried(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	p := faultproxy.New(mc.Endpoint, faultproxy.Rule{Fault: faultproxy.InternalError, Every: 1, Methods: []string{"PUT"}, Times: 1, AfterForward: true})
	defer p.Close()
	s := newStore(t, mc, p.URL(), mc.Bucket, "")
	policy := storage.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}
	err := storage.NewRetrying(s, policy).Put(context.Background(), "k", bytes.NewReader([]byte("value")), 5)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("want ErrExists after an ambiguous failure, got %v", err)
	}
	var got []byte
	s.Get(context.Background(), "k", func(r io.Reader) error { got, err = io.ReadAll(r); return err })
	if string(got) != "value" {
		t.Fatalf("stored %q", got)
	}
}

// TestConcurrentMultipartRace: many large writers of one key; exactly one
// wins and no upload is left behind.
func TestConcurrentMultipartRace(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	bucket := mc.NewBucket(t)
	s := newStore(t, mc, mc.Endpoint, bucket, "")
	const writers = 4
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(i)}, 2*testPartSize+1)
			errs[i] = s.Put(context.Background(), "race", bytes.NewReader(data), int64(len(data)))
		}()
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, storage.ErrExists) {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won", wins)
	}
	if left := uploadsLeft(t, mc, bucket); len(left) > 0 {
		t.Fatalf("incomplete uploads left: %v", left)
	}
}

// TestSelfSignedTLS: a store with a self-signed certificate works with
// the CA bundle setting and is refused without it.
func TestSelfSignedTLS(t *testing.T) {
	mc := pgtest.StartMinIOTLS(t)
	ctx := context.Background()
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	cfg := Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true, CABundle: mc.CAFile}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "tls/k", bytes.NewReader([]byte("v")), 1); err != nil {
		t.Fatalf("with the CA bundle: %v", err)
	}
	cfg.CABundle = ""
	s, _ = New(ctx, cfg)
	err = s.Put(ctx, "tls/k2", bytes.NewReader([]byte("v")), 1)
	if !storage.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "s3-ca-bundle") {
		t.Fatalf("without the CA bundle: want a permanent error suggesting s3-ca-bundle, got %v", err)
	}
}

// TestClassify checks the mapping of store answers that MinIO does not
// readily produce.
func TestClassify(t *testing.T) {
	s := &Store{cfg: Config{Bucket: "bkt"}, where: "s3://bkt"}
	answer := func(status int, code string, header http.Header) error {
		var err error = &smithy.GenericAPIError{Code: code, Message: "msg"}
		if code == "" {
			err = errors.New("deserialization failed")
		}
		return fmt.Errorf("operation error S3: GetObject: %w", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status, Header: header}}, Err: err}})
	}
	const transient, permanent, notFound, exists = "transient", "permanent", "not found", "exists"
	for _, c := range []struct {
		err  error
		kind string
		says string
	}{
		{answer(500, "InternalError", nil), transient, ""},
		{answer(503, "SlowDown", nil), transient, ""},
		{answer(502, "", nil), transient, ""},
		{answer(400, "RequestTimeout", nil), transient, ""},
		{answer(400, "BadDigest", nil), transient, ""},
		{answer(400, "IncompleteBody", nil), transient, ""},
		{answer(409, "OperationAborted", nil), transient, ""},
		{errors.New("read tcp 127.0.0.1:1: connection reset by peer"), transient, ""},
		{answer(404, "NoSuchKey", nil), notFound, ""},
		{answer(404, "NotFound", nil), notFound, ""},
		{answer(404, "", nil), permanent, ""}, // a 404 that does not say the object is absent
		// A 404 whose body the connection lost: only a retry can tell.
		{fmt.Errorf("operation error S3: GetObject: %w", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 404}},
			Err: &smithy.DeserializationError{Err: fmt.Errorf("failed to copy error response body, %w",
				&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})}}}), transient, ""},
		// No answer at all: a network error on the way to the credentials
		// or to an unknown host keeps its own verdict.
		{fmt.Errorf("failed to retrieve credentials: %w", &noCredentialsError{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}), permanent, "no AWS credentials"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "s3.nowhere", IsNotFound: true}}, permanent, "cannot resolve"},
		{answer(412, "PreconditionFailed", nil), exists, ""},
		{answer(403, "AccessDenied", nil), permanent, "s3:ListBucket"},
		{answer(403, "Forbidden", nil), permanent, "credentials"},
		{answer(403, "InvalidAccessKeyId", nil), permanent, "access key"},
		{answer(403, "SignatureDoesNotMatch", nil), permanent, "credentials"},
		{answer(400, "ExpiredToken", nil), permanent, "expired"},
		{answer(403, "RequestTimeTooSkewed", nil), permanent, "clock"},
		{answer(404, "NoSuchBucket", nil), permanent, `bucket "bkt" does not exist`},
		{answer(301, "PermanentRedirect", http.Header{"X-Amz-Bucket-Region": {"eu-west-1"}}), permanent, "eu-west-1"},
		{answer(400, "BadRequest", http.Header{"X-Amz-Bucket-Region": {"eu-west-2"}}), permanent, "s3-region"},
		{answer(501, "NotImplemented", nil), permanent, ""},
		{fmt.Errorf("wrapped: %w", context.Canceled), permanent, ""},
	} {
		err := s.classify("reading", "wal/x", c.err)
		kind := transient
		switch {
		case errors.Is(err, storage.ErrNotFound):
			kind = notFound
		case errors.Is(err, storage.ErrExists):
			kind = exists
		case storage.IsPermanent(err):
			kind = permanent
		}
		if kind != c.kind || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "wal/x") && kind != permanent {
			t.Errorf("%v:\n  got %s %q, want %s saying %q", c.err, kind, err, c.kind, c.says)
		}
	}
}
