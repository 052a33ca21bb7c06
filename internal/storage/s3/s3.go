// Package s3 is the s3:// storage backend: Amazon S3 or any S3-compatible
// store (MinIO, Ceph, R2, ...), through aws-sdk-go-v2.
//
// Writes are conditional (If-None-Match: *), so an existing object is
// never replaced, and carry a checksum of the body (a CRC32C, or a
// Content-MD5 where the store does not check that: checksum.go), so a body
// damaged in transit is refused by the store. Objects larger than one part go up as a multipart
// upload, several parts at a time, completed with the same condition and
// aborted on any failure; S3 never lists an incomplete upload. The SDK's
// own retries are off: retrying is storage.NewRetrying's job, and this
// package only classifies errors.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// Defaults and limits of Config.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	minPartSize        = 5 << 20 // S3's minimum for all parts but the last
	maxPartSize        = 5 << 30
	maxParts           = 10000
	abortTimeout       = 30 * time.Second
)

// Config locates a bucket and says how to reach it. Credentials are not
// part of it: they come from the standard AWS chain (environment, shared
// config profile, web identity, ECS and EC2 instance roles).
type Config struct {
	Bucket string
	Prefix string // keys are stored as Prefix + "/" + key; "" for the bucket root
	// Region: "" takes it from the AWS config chain (AWS_REGION, the
	// profile), else us-east-1.
	Region string
	// Endpoint is a custom endpoint URL, for S3-compatible stores; ""
	// lets the SDK choose (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
	// profile's endpoint_url, else AWS).
	Endpoint  string
	PathStyle bool   // address buckets as https://host/bucket, not https://bucket.host
	CABundle  string // path of a PEM file of extra CAs to trust (self-signed TLS)
	Profile   string // shared config profile; "" : AWS_PROFILE, else "default"
	// PartSize is the multipart part size (default DefaultPartSize, at
	// least 5 MiB); objects larger than one part use a multipart upload.
	PartSize int64
	// Concurrency is the number of parts of one object uploaded at once
	// (default DefaultConcurrency). Unless the body is a *bytes.Reader, a
	// Put holds up to Concurrency parts in memory.
	Concurrency int
}

// Store is a bucket, or a prefix in one.
type Store struct {
	cfg    Config
	client *s3.Client
	where  string
	// upload are the options of uploads (PutObject, UploadPart).
	upload []func(*s3.Options)
	// md5Only: the store answered an upload without echoing its CRC32C,
	// so uploads carry a Content-MD5 instead (checksum.go).
	md5Only atomic.Bool
}

var _ storage.Storage = (*Store)(nil)

// New builds a client from cfg and the AWS configuration chain. It does not
// contact the store: a missing bucket or bad credentials show up, as
// permanent errors, on the first operation.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, storage.Permanent(errors.New("no S3 bucket given"))
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Prefix != "" {
		if err := storage.ValidateKey(cfg.Prefix); err != nil {
			return nil, storage.Permanent(fmt.Errorf("S3 prefix: %w", err))
		}
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize || cfg.PartSize > maxPartSize {
		return nil, storage.Permanent(fmt.Errorf("S3 part size %d is outside S3's limits (5 MiB to 5 GiB)", cfg.PartSize))
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	opts := []func(*config.LoadOptions) error{
		// The SDK's own log lines (e.g. on a dropped connection) would
		// reach stderr, which wal-fetch keeps silent; pgkeep reports errors.
		config.WithLogger(logging.Nop{}),
		config.WithClientLogMode(0),
		// One retry policy for all of pgkeep: storage.NewRetrying.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(0).WithTransportOptions(func(tr *http.Transport) {
			// No overall timeout (a large object takes its time), but a
			// store that accepts a request and never answers is a failure.
			tr.ResponseHeaderTimeout = 60 * time.Second
			tr.MaxIdleConnsPerHost = 64
		})),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.CABundle != "" {
		pem, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, storage.Permanent(fmt.Errorf("reading the S3 CA bundle: %w", err))
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, storage.Permanent(fmt.Errorf("loading the AWS configuration: %w", err))
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = credentialsProvider{awsCfg.Credentials}
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// No checksums computed by the SDK: S3-compatible stores differ
		// in what trailing checksums they accept. Every upload carries a
		// checksum pgkeep computes (checksum.go), and pgkeep checksums
		// content itself (checked on read).
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	st := &Store{cfg: cfg, client: client, where: location(cfg, awsCfg)}
	if ep := endpointOf(cfg, awsCfg); ep == "" || strings.HasPrefix(strings.ToLower(ep), "https://") {
		// Over TLS, uploads are signed with UNSIGNED-PAYLOAD instead of
		// the body's SHA-256, which the client would compute and the store
		// verify, each a pass over every byte: TLS already protects the
		// body in transit, its Content-MD5 is still checked by the store,
		// and pgkeep checks its own checksums on every read. Over plain
		// HTTP the signature keeps covering the body.
		st.upload = []func(*s3.Options){s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)}
	}
	return st, nil
}

// endpointOf is the endpoint URL the client uses, "" for AWS's own.
func endpointOf(cfg Config, awsCfg aws.Config) string {
	endpoint := cfg.Endpoint
	for _, e := range []string{os.Getenv("AWS_ENDPOINT_URL_S3"), aws.ToString(awsCfg.BaseEndpoint)} {
		if endpoint == "" {
			endpoint = e
		}
	}
	return endpoint
}

// credentialsProvider marks the failures of the standard credential chain
// (noCredentialsError), so that classify can tell "no credentials" from
// other failures by type instead of by message.
type credentialsProvider struct{ aws.CredentialsProvider }

func (p credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return c, &noCredentialsError{err}
	}
	return c, err
}

// noCredentialsError is a failure to find AWS credentials.
type noCredentialsError struct{ err error }

func (e *noCredentialsError) Error() string { return e.err.Error() }
func (e *noCredentialsError) Unwrap() error { return e.err }

// location is s3://bucket/prefix and the endpoint's scheme and host.
func location(cfg Config, awsCfg aws.Config) string {
	where := "s3://" + cfg.Bucket
	if cfg.Prefix != "" {
		where += "/" + cfg.Prefix
	}
	if endpoint := endpointOf(cfg, awsCfg); endpoint != "" {
		where += " (endpoint " + endpointHost(endpoint) + ")"
	}
	return where
}

// endpointHost returns scheme://host[:port] of an endpoint URL, dropping any
// user information, path and query.
func endpointHost(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "(unparsable endpoint URL)"
	}
	return u.Scheme + "://" + u.Host
}

// Location returns s3://bucket/prefix and the endpoint, never credentials.
func (s *Store) Location() string { return s.where }

// key returns the object name of key in the bucket.
func (s *Store) key(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", storage.Permanent(err)
	}
	if s.cfg.Prefix == "" {
		return key, nil
	}
	return s.cfg.Prefix + "/" + key, nil
}

// Put uploads the object with If-None-Match: *, so an existing object is
// never replaced, and a checksum of the body for each request (CRC32C,
// else Content-MD5: checksum.go). Objects larger than
// PartSize go up in parts, Concurrency at a time; the multipart upload is
// aborted on any failure, including a cancelled ctx.
//
// A *bytes.Reader body holding exactly size bytes is sent without a copy;
// other bodies are read into memory, one part at a time.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if size < 0 {
		return storage.Permanent(fmt.Errorf("storing %s: negative size %d", key, size))
	}
	if size > s.cfg.PartSize {
		return s.putMultipart(ctx, key, k, body, size)
	}
	var payload io.ReadSeeker
	if br, start, ok := wholeReader(body, size); ok {
		payload = io.NewSectionReader(br, start, size)
	} else {
		data, err := readExactly(ctx, body, size)
		if err != nil {
			return fmt.Errorf("storing %s: %w", key, err)
		}
		payload = bytes.NewReader(data)
	}
	useMD5 := s.md5Only.Load()
	out, sum, err := s.putObject(ctx, k, payload, size, useMD5)
	if err != nil && !useMD5 && refusesChecksum(err) {
		// A store that refuses the CRC32C header itself: this upload
		// and the next ones carry a Content-MD5 (checksum.go).
		s.md5Only.Store(true)
		useMD5 = true
		out, sum, err = s.putObject(ctx, k, payload, size, true)
	}
	if err != nil {
		return s.explainDrop(ctx, key, k, s.putError(ctx, "storing", key, k, err))
	}
	if !useMD5 && aws.ToString(out.ChecksumCRC32C) != sum {
		if err := s.unchecked(key, payload, aws.ToString(out.ETag)); err != nil {
			return err
		}
	}
	consume(body)
	return nil
}

// putObject sends payload (from its start) with If-None-Match: * and the
// checksum of its body that the store checks: a CRC32C, or with useMD5 a
// Content-MD5. It returns the answer and the checksum sent.
func (s *Store) putObject(ctx context.Context, k string, payload io.ReadSeeker, size int64, useMD5 bool) (*s3.PutObjectOutput, string, error) {
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	sumOf := crc32cBase64Seeker
	if useMD5 {
		sumOf = md5Base64Seeker
	}
	sum, err := sumOf(payload)
	if err != nil {
		return nil, "", err
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(k),
		Body:          payload,
		ContentLength: aws.Int64(size),
		IfNoneMatch:   aws.String("*"),
	}
	if useMD5 {
		in.ContentMD5 = aws.String(sum)
	} else {
		in.ChecksumCRC32C = aws.String(sum)
	}
	out, err := s.client.PutObject(ctx, in, s.upload...)
	return out, sum, err
}

// refusesChecksum reports whether err is what a store that does not know
// the x-amz-checksum-crc32c header may answer: a refusal of the request as
// such (400 or 501 with one of these codes, or none), not of its
// credentials, its bucket or a body damaged on the way.
func refusesChecksum(err error) bool {
	code, status, _ := details(err)
	if status != http.StatusBadRequest && status != http.StatusNotImplemented {
		return false
	}
	switch code {
	case "", "InvalidArgument", "InvalidRequest", "NotImplemented", "InvalidDigest", "UnsupportedHeader":
		return true
	}
	return false
}

// unchecked handles an upload whose answer did not echo the CRC32C sent
// with it: the store did not check it. Later uploads carry a Content-MD5
// instead; this one is checked by its ETag where that is the body's MD5.
// A mismatch is a transient error: the retry finds the object there and
// compares its content (repo.PutEncodedAt), so a damaged copy is reported,
// never taken for the file.
func (s *Store) unchecked(key string, payload io.ReadSeeker, etag string) error {
	s.md5Only.Store(true)
	want, ok := plainETag(etag)
	if !ok {
		return nil
	}
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	sum, err := sumSeeker(payload, md5.New())
	if err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	if got := hex.EncodeToString(sum); got != want {
		return fmt.Errorf("storing %s: the store at %s did not check the body's CRC32C, and its ETag %s is not the MD5 of what was sent (%s): the stored copy may be damaged", key, s.where, want, got)
	}
	return nil
}

// explainDrop returns err, or a better explanation of it. A store may
// reject a request as soon as it has read the headers (bad credentials, no
// such bucket) and close the connection while the body is still being
// sent: the client then sees only a reset connection, which is transient,
// and retries in vain. So when a transfer fails without an answer, a
// cheap request without a body asks again; if its answer is one of those
// rejections, that is the error. Any other answer (including AccessDenied,
// which may only mean that listing is not allowed) leaves err as it is.
func (s *Store) explainDrop(ctx context.Context, key, k string, err error) error {
	if storage.IsPermanent(err) {
		return err
	}
	if _, status, _ := details(err); status != 0 {
		return err
	}
	_, perr := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(k), MaxKeys: aws.Int32(1)})
	if perr == nil {
		return err
	}
	switch code, _, _ := details(perr); code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "NoSuchBucket",
		"RequestTimeTooSkewed", "AuthorizationHeaderMalformed", "PermanentRedirect":
		return s.classify("storing", key, perr)
	}
	return err
}

// wholeReader returns body as a ReaderAt and the offset of its current
// position, if it is a *bytes.Reader with exactly size bytes left: parts of
// it can then be sent, concurrently and again, without a copy.
func wholeReader(body io.Reader, size int64) (io.ReaderAt, int64, bool) {
	switch br := body.(type) {
	case *bytes.Reader:
		if int64(br.Len()) == size {
			return br, br.Size() - int64(br.Len()), true
		}
	case *io.SectionReader:
		if pos, err := br.Seek(0, io.SeekCurrent); err == nil && br.Size()-pos == size {
			return br, pos, true
		}
	}
	return nil, 0, false
}

// consume moves a *bytes.Reader sent through wholeReader to its end, as if
// it had been read.
func consume(body io.Reader) {
	if br, ok := body.(io.Seeker); ok {
		br.Seek(0, io.SeekEnd)
	}
}

// readExactly reads size bytes and checks that body ends there.
func readExactly(ctx context.Context, body io.Reader, size int64) ([]byte, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(body, data); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, storage.Permanent(fmt.Errorf("the body holds fewer bytes than the %d declared", size))
		}
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if err := checkEnd(body, size); err != nil {
		return nil, err
	}
	return data, ctx.Err()
}

// checkEnd checks that body has nothing left after size bytes.
func checkEnd(body io.Reader, size int64) error {
	var extra [1]byte
	n, err := io.ReadFull(body, extra[:])
	switch {
	case n > 0:
		return storage.Permanent(fmt.Errorf("the body holds more bytes than the %d declared", size))
	case errors.Is(err, io.EOF):
		return nil
	}
	return fmt.Errorf("reading the body: %w", err)
}

// putMultipart uploads an object larger than one part.
func (s *Store) putMultipart(ctx context.Context, key, k string, body io.Reader, size int64) (err error) {
	nparts := (size + s.cfg.PartSize - 1) / s.cfg.PartSize
	if nparts > maxParts {
		return storage.Permanent(fmt.Errorf("storing %s: %d bytes need %d parts of %d bytes, more than S3's %d: raise the part size", key, size, nparts, s.cfg.PartSize, maxParts))
	}
	// Learning only at the end that the object exists would waste the
	// upload; the conditional completion below still decides races.
	if _, herr := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)}); herr == nil {
		return fmt.Errorf("storing %s: %w", key, storage.ErrExists)
	}
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		return s.classify("starting the upload of", key, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Also after a cancellation; if this fails too, the parts stay
		// (invisible) until a lifecycle rule for incomplete multipart
		// uploads removes them.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: up.UploadId})
	}()
	parts, err := s.uploadParts(ctx, key, k, aws.ToString(up.UploadId), body, size, nparts)
	if err != nil {
		return err
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		return s.putError(ctx, "completing the upload of", key, k, err)
	}
	consume(body)
	return nil
}

// uploadParts sends the nparts parts of body, Concurrency at a time, and
// returns them in order. It stops at the first failure.
func (s *Store) uploadParts(ctx context.Context, key, k, uploadID string, body io.Reader, size, nparts int64) ([]types.CompletedPart, error) {
	parent := ctx
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	// A buffer per part in flight, when the body must be copied
	// (allocated on first use).
	bufs := make(chan []byte, s.cfg.Concurrency)
	for range s.cfg.Concurrency {
		bufs <- nil
	}
	ra, start, direct := wholeReader(body, size)
	parts := make([]types.CompletedPart, nparts)
	var readErr error
	for i := range nparts {
		if ctx.Err() != nil {
			break
		}
		buf := <-bufs
		off := i * s.cfg.PartSize
		n := min(s.cfg.PartSize, size-off)
		var part io.ReadSeeker
		if direct {
			part = io.NewSectionReader(ra, start+off, n)
		} else {
			if buf == nil {
				buf = make([]byte, s.cfg.PartSize)
			}
			if _, err := io.ReadFull(body, buf[:n]); err != nil {
				switch {
				case parent.Err() != nil:
				case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
					readErr = storage.Permanent(fmt.Errorf("storing %s: the body holds fewer bytes than the %d declared", key, size))
				default:
					readErr = fmt.Errorf("storing %s: reading the body: %w", key, err)
				}
				break
			}
			part = bytes.NewReader(buf[:n])
		}
		g.Go(func() error {
			defer func() { bufs <- buf }()
			sum, err := md5Base64Seeker(part)
			if err != nil {
				return fmt.Errorf("storing %s: %w", key, err)
			}
			out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
				Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: aws.String(uploadID),
				PartNumber: aws.Int32(int32(i + 1)), Body: part, ContentLength: aws.Int64(n),
				ContentMD5: aws.String(sum),
			}, s.upload...)
			if err != nil {
				return s.classify(fmt.Sprintf("uploading part %d of %d of", i+1, nparts), key, err)
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	firstErr := g.Wait()
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("storing %s: %w", key, err)
	}
	if readErr != nil {
		return nil, readErr
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if !direct {
		if err := checkEnd(body, size); err != nil {
			return nil, fmt.Errorf("storing %s: %w", key, err)
		}
	}
	return parts, nil
}

// putError classifies the failure of a conditional write.
func (s *Store) putError(ctx context.Context, op, key, k string, err error) error {
	code, status, _ := details(err)
	switch {
	case code == "ConditionalRequestConflict" || (status == http.StatusConflict && code == "OperationAborted"):
		// Another write of the same key was in progress. If it has
		// completed, the object exists; else a retry settles it.
		if _, herr := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)}); herr == nil {
			return fmt.Errorf("%s %s: %w", op, key, storage.ErrExists)
		}
		return fmt.Errorf("%s %s: a concurrent write of the same object conflicted; retrying settles it: %w", op, key, err)
	case code == "NotImplemented" || status == http.StatusNotImplemented:
		return storage.Permanent(fmt.Errorf("%s %s: the store at %s does not implement something pgkeep needs, probably conditional writes (If-None-Match), which keep it from overwriting objects: %w", op, key, s.where, err))
	}
	return s.classify(op, key, err)
}

// Get streams the object to fn. A body cut short is an error wrapping
// io.ErrUnexpectedEOF, never a short successful read.
func (s *Store) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		if code, _, _ := details(err); code == "NoSuchKey" {
			return fmt.Errorf("reading %s: %w", key, storage.ErrNotFound)
		}
		// A 404 without S3's NoSuchKey (a bodiless answer, perhaps not from
		// S3 at all) is trusted only if the bucket is there.
		return s.confirmAbsent(ctx, "reading", key, s.classify("reading", key, err))
	}
	defer out.Body.Close()
	want := int64(-1)
	if out.ContentLength != nil {
		want = *out.ContentLength
	}
	return fn(&lengthChecked{r: out.Body, want: want, key: key})
}

// lengthChecked turns an early end of the body into io.ErrUnexpectedEOF
// and wraps read errors with the key.
type lengthChecked struct {
	r    io.Reader
	want int64 // -1: unknown
	got  int64
	key  string
}

func (l *lengthChecked) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.got += int64(n)
	switch {
	case err == nil:
	case err == io.EOF && l.want >= 0 && l.got != l.want:
		return n, fmt.Errorf("reading %s: got %d of %d bytes: %w", l.key, l.got, l.want, io.ErrUnexpectedEOF)
	case err != io.EOF:
		// Always wrapped, so no reader above mistakes a dropped
		// connection for the end of the object. Not permanent: a retry
		// reads it again.
		return n, fmt.Errorf("reading %s after %d bytes: %w", l.key, l.got, err)
	}
	return n, err
}

// Stat returns the object's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	k, err := s.key(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		// A HEAD answer has no body: a missing bucket looks like a
		// missing object.
		return storage.ObjectInfo{}, s.confirmAbsent(ctx, "stat", key, s.classify("stat", key, err))
	}
	info := storage.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

// confirmAbsent returns err, unless it is ErrNotFound and the bucket
// itself cannot be confirmed: "not found" must mean the object is absent
// (PostgreSQL takes a missing WAL file as the end of the archive).
func (s *Store) confirmAbsent(ctx context.Context, op, key string, err error) error {
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	_, berr := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	if berr == nil {
		return err
	}
	if code, _, _ := details(berr); code == "NotFound" || code == "NoSuchBucket" {
		return s.noBucket()
	}
	return s.classify(op+" (checking the bucket)", key, berr)
}

func (s *Store) noBucket() error {
	return storage.Permanent(fmt.Errorf("bucket %q does not exist (at %s): create it, or fix the repository URL", s.cfg.Bucket, s.where))
}

// List pages through ListObjectsV2, which returns keys in lexical (UTF-8
// binary) order and never shows incomplete multipart uploads.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	full := prefix
	if s.cfg.Prefix != "" {
		full = s.cfg.Prefix + "/" + prefix
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.classify("listing", prefix, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if s.cfg.Prefix != "" {
				key = strings.TrimPrefix(key, s.cfg.Prefix+"/")
			}
			info := storage.ObjectInfo{Key: key, Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				info.ModTime = *o.LastModified
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the object; S3 answers success for absent keys.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		if err = s.classify("deleting", key, err); errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// details returns the S3 error code, the HTTP status and the response
// header of err, as far as it has them.
func details(err error) (code string, status int, header http.Header) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		status, header = re.Response.StatusCode, re.Response.Header
	}
	return code, status, header
}

// transientCodes are S3 error codes worth retrying whatever their status:
// RequestTimeout, IncompleteBody, BadDigest and the checksum mismatches
// (400) come from a connection that stalled or damaged the body.
var transientCodes = map[string]bool{
	"RequestTimeout": true, "IncompleteBody": true, "BadDigest": true, "XAmzContentSHA256Mismatch": true,
	"XAmzContentChecksumMismatch": true,
	"InternalError":               true, "ServiceUnavailable": true, "SlowDown": true, "Throttling": true,
	"ThrottlingException": true, "RequestThrottled": true, "OperationAborted": true,
}

// cutShort reports whether the connection failed while an answer was
// read: reset, closed early, or ended inside the body.
func cutShort(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// classify maps an SDK error to pgkeep's error kinds, with advice: the
// store's "absent" answers become ErrNotFound, those that a retry cannot
// fix become Permanent, and the rest (5xx, throttling, resets, timeouts)
// stay transient.
func (s *Store) classify(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	code, status, header := details(err)
	switch code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrNotFound)
	case "NoSuchBucket":
		return s.noBucket()
	case "PreconditionFailed":
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrExists)
	case "InvalidAccessKeyId":
		return storage.Permanent(fmt.Errorf("%s %s: the store at %s does not know the access key (InvalidAccessKeyId): check the credentials (AWS_ACCESS_KEY_ID, the profile or the instance role)", op, key, s.where))
	case "SignatureDoesNotMatch":
		return storage.Permanent(fmt.Errorf("%s %s: the store at %s rejected the request signature (SignatureDoesNotMatch): check the credentials (AWS_SECRET_ACCESS_KEY must belong to AWS_ACCESS_KEY_ID)", op, key, s.where))
	case "ExpiredToken", "TokenRefreshRequired", "InvalidToken":
		return storage.Permanent(fmt.Errorf("%s %s: the session credentials are expired or invalid (%s): refresh them (AWS_SESSION_TOKEN, the profile or the instance role)", op, key, code))
	case "RequestTimeTooSkewed":
		return storage.Permanent(fmt.Errorf("%s %s: this machine's clock differs too much from the store's (RequestTimeTooSkewed): fix the clock (NTP)", op, key))
	case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
		return s.wrongRegion(op, key, code, header)
	case "AccessDenied", "AllAccessDisabled", "AccountProblem":
		return s.accessDenied(op, key, code)
	case "InvalidBucketName":
		return storage.Permanent(fmt.Errorf("%s %s: %q is not a valid bucket name: fix the repository URL", op, key, s.cfg.Bucket))
	}
	if transientCodes[code] || code == "" && status != 0 && cutShort(err) {
		// An answer whose body was cut short: the status came, the reason
		// did not (a 404 whose NoSuchKey body was lost may well be a real
		// one, but only the retry can say so). Errors with no answer at
		// all (no credentials, an unknown host) are judged below.
		return fmt.Errorf("%s %s at %s: %w", op, key, s.where, err)
	}
	switch {
	case status == http.StatusMovedPermanently,
		status == http.StatusBadRequest && header.Get("X-Amz-Bucket-Region") != "": // a bodiless HEAD answer
		return s.wrongRegion(op, key, code, header)
	case status == http.StatusForbidden:
		return s.accessDenied(op, key, code)
	case status == http.StatusPreconditionFailed:
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrExists)
	case status == http.StatusBadRequest || status == http.StatusNotFound || status == http.StatusMethodNotAllowed ||
		status == http.StatusLengthRequired || status == http.StatusRequestEntityTooLarge || status == http.StatusNotImplemented:
		// The store refuses the request itself, or answers 404 without
		// saying the object is absent (a wrong endpoint?).
		return storage.Permanent(fmt.Errorf("%s %s at %s: %w", op, key, s.where, err))
	}
	var noCreds *noCredentialsError
	if errors.As(err, &noCreds) {
		return storage.Permanent(fmt.Errorf("%s %s: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), or run with an instance role", op, key))
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid) {
		return storage.Permanent(fmt.Errorf("%s %s: the S3 endpoint's TLS certificate is not trusted (%v): for a self-signed certificate set s3-ca-bundle to its PEM file", op, key, err))
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return storage.Permanent(fmt.Errorf("%s %s: cannot resolve the S3 endpoint host %q: check s3-endpoint and the bucket name", op, key, dnsErr.Name))
	}
	// 5xx, throttling, resets, refused connections, timeouts: worth
	// retrying.
	return fmt.Errorf("%s %s at %s: %w", op, key, s.where, err)
}

func (s *Store) accessDenied(op, key, code string) error {
	if code == "" {
		code = "403"
	}
	return storage.Permanent(fmt.Errorf("%s %s: access denied to %s (%s): check the credentials and that their policy allows s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket (without s3:ListBucket, S3 answers a missing object with 403)", op, key, s.where, code))
}

func (s *Store) wrongRegion(op, key, code string, header http.Header) error {
	region := header.Get("X-Amz-Bucket-Region")
	if region == "" {
		region = "another region"
	}
	return storage.Permanent(fmt.Errorf("%s %s: bucket %q is in %s, not the one configured (%s): set s3-region (or AWS_REGION)", op, key, s.cfg.Bucket, region, code))
}
