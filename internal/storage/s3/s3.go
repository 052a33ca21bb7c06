// Package s3 is the s3:// storage backend: Amazon S3 or any S3-compatible
// store (MinIO, Ceph, R2, ...), through aws-sdk-go-v2.
package s3

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// Config locates a bucket and says how to reach it. Credentials are not
// part of it: they come from the standard AWS chain.
type Config struct {
	Bucket, Prefix string
	Region         string // "" : from the AWS config chain, else us-east-1
	Endpoint       string // "" : AWS, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
	PathStyle      bool
	CABundle       string // PEM file of extra CAs to trust
	Profile        string // shared config profile; "" : AWS_PROFILE or default
	PartSize       int64  // multipart part size; default 16 MiB
}

// Store is a bucket prefix.
type Store struct {
	cfg    Config
	client *s3.Client
	where  string
}

var _ storage.Storage = (*Store)(nil)

// New builds a client. It does not contact the store.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("no S3 bucket given")
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = 16 << 20
	}
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("S3 part size %d is below the 5 MiB minimum", cfg.PartSize)
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	opts := []func(*config.LoadOptions) error{
		// The SDK's own log lines (e.g. on a dropped connection) would
		// reach stderr, which wal-fetch keeps silent; pgkeep reports errors.
		config.WithLogger(logging.Nop{}),
		config.WithClientLogMode(0),
		// One retry policy for all of pgkeep: storage.NewRetrying.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(0).WithTransportOptions(func(tr *http.Transport) {
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
			return nil, fmt.Errorf("reading the S3 CA bundle: %w", err)
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, storage.Permanent(fmt.Errorf("loading AWS configuration: %w", err))
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// Checksums only where the operation needs them: S3-compatible
		// stores differ in what they accept; content is checksummed by
		// pgkeep itself and MD5 is sent on every upload.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	where := "s3://" + cfg.Bucket
	if cfg.Prefix != "" {
		where += "/" + cfg.Prefix
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if endpoint != "" {
		where += " (endpoint " + redactURL(endpoint) + ")"
	}
	return &Store{cfg: cfg, client: client, where: where}, nil
}

// Location returns s3://bucket/prefix and the endpoint, never credentials.
func (s *Store) Location() string { return s.where }

func (s *Store) key(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", storage.Permanent(err)
	}
	if s.cfg.Prefix == "" {
		return key, nil
	}
	return s.cfg.Prefix + "/" + key, nil
}

// Put uploads with If-None-Match: * so an existing object is never
// replaced; larger objects go up in parts, aborted on any failure.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if size > s.cfg.PartSize {
		return s.putMultipart(ctx, key, k, body, size)
	}
	var payload io.ReadSeeker
	var sum string
	if br, ok := body.(*bytes.Reader); ok && int64(br.Len()) == size {
		// The common case (repo always hands over a *bytes.Reader): send
		// it as it is, without a copy.
		start, _ := br.Seek(0, io.SeekCurrent)
		sec := io.NewSectionReader(br, start, size)
		if sum, err = md5Base64Reader(sec); err != nil {
			return storage.Permanent(fmt.Errorf("storing %s: %w", key, err))
		}
		payload = sec
	} else {
		data, err := readExactly(body, size)
		if err != nil {
			return storage.Permanent(fmt.Errorf("storing %s: %w", key, err))
		}
		payload, sum = bytes.NewReader(data), md5Base64(data)
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(k),
		Body:          payload,
		ContentLength: aws.Int64(size),
		ContentMD5:    aws.String(sum),
		IfNoneMatch:   aws.String("*"),
	})
	if err != nil {
		return s.classify("storing", key, err)
	}
	return nil
}

func (s *Store) putMultipart(ctx context.Context, key, k string, body io.Reader, size int64) (err error) {
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		return s.classify("starting upload of", key, err)
	}
	defer func() {
		if err != nil {
			s.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{
				Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: up.UploadId})
		}
	}()
	var parts []types.CompletedPart
	buf := make([]byte, s.cfg.PartSize)
	for n, left := int32(1), size; left > 0; n++ {
		chunk := buf[:min(left, s.cfg.PartSize)]
		if _, err := io.ReadFull(body, chunk); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return storage.Permanent(fmt.Errorf("storing %s: body shorter than %d bytes: %w", key, size, err))
		}
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: up.UploadId, PartNumber: aws.Int32(n),
			Body: bytes.NewReader(chunk), ContentLength: aws.Int64(int64(len(chunk))), ContentMD5: aws.String(md5Base64(chunk)),
		})
		if err != nil {
			return s.classify("uploading a part of", key, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
		left -= int64(len(chunk))
	}
	var extra [1]byte
	if m, _ := body.Read(extra[:]); m > 0 {
		return storage.Permanent(fmt.Errorf("storing %s: body longer than %d bytes", key, size))
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		return s.classify("completing upload of", key, err)
	}
	return nil
}

// readExactly reads size bytes and checks that body ends there.
func readExactly(body io.Reader, size int64) ([]byte, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(body, data); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("body shorter than %d bytes: %w", size, err)
	}
	var extra [1]byte
	if n, _ := body.Read(extra[:]); n > 0 {
		return nil, fmt.Errorf("body longer than %d bytes", size)
	}
	return data, nil
}

// Get streams the object to fn; a body cut short is an error, never a
// short successful read.
func (s *Store) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		return s.classify("reading", key, err)
	}
	defer out.Body.Close()
	want := int64(-1)
	if out.ContentLength != nil {
		want = *out.ContentLength
	}
	return fn(&lengthChecked{r: out.Body, want: want, key: key})
}

// lengthChecked turns an early EOF into io.ErrUnexpectedEOF.
type lengthChecked struct {
	r    io.Reader
	want int64
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
		// connection (a bare io.ErrUnexpectedEOF) for a short object.
		return n, fmt.Errorf("reading %s after %d bytes: %w", l.key, l.got, err)
	}
	return n, err
}

// Stat returns the object's size and time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	k, err := s.key(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		err = s.classify("stat", key, err)
		if errors.Is(err, storage.ErrNotFound) {
			// A HEAD answer has no body, so a missing bucket also looks
			// like 404: make sure "not found" is about the object.
			if _, berr := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)}); berr != nil {
				if berr = s.classify("checking bucket for", key, berr); errors.Is(berr, storage.ErrNotFound) {
					return storage.ObjectInfo{}, storage.Permanent(fmt.Errorf("bucket %q does not exist (at %s): create it, or fix the repository URL", s.cfg.Bucket, s.where))
				}
				return storage.ObjectInfo{}, berr
			}
		}
		return storage.ObjectInfo{}, err
	}
	info := storage.ObjectInfo{Key: key}
	if out.ContentLength != nil {
		info.Size = *out.ContentLength
	}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

// List pages through ListObjectsV2; S3 returns keys in lexical order.
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
		if errors.Is(s.classify("deleting", key, err), storage.ErrNotFound) {
			return nil
		}
		return s.classify("deleting", key, err)
	}
	return nil
}

// classify maps an SDK error to pgkeep's error kinds, with advice.
func (s *Store) classify(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchBucket":
		return storage.Permanent(fmt.Errorf("bucket %q does not exist (at %s): create it, or fix the repository URL", s.cfg.Bucket, s.where))
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %w", key, storage.ErrExists)
	case code == "NoSuchKey" || (status == http.StatusNotFound && code != "NoSuchUpload"):
		return fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		return storage.Permanent(fmt.Errorf("%s %s: the store rejected the credentials (%s): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or the instance role", op, key, code))
	case code == "AccessDenied" || status == http.StatusForbidden:
		return storage.Permanent(fmt.Errorf("%s %s: access denied to %s: check the credentials and the bucket policy", op, key, s.where))
	case status == http.StatusBadRequest || status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented:
		return storage.Permanent(fmt.Errorf("%s %s: %w", op, key, err))
	}
	if strings.Contains(err.Error(), "failed to retrieve credentials") || strings.Contains(err.Error(), "no EC2 IMDS role found") {
		return storage.Permanent(fmt.Errorf("%s %s: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), or run with an instance role", op, key))
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) {
		return storage.Permanent(fmt.Errorf("%s %s: the S3 endpoint's TLS certificate is not trusted (%v): for a self-signed certificate set s3-ca-bundle to its PEM file", op, key, err))
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return storage.Permanent(fmt.Errorf("%s %s: cannot resolve the S3 endpoint host %q: check s3-endpoint and the bucket name", op, key, dnsErr.Name))
	}
	// 5xx, throttling, resets, timeouts: worth retrying.
	return fmt.Errorf("%s %s at %s: %w", op, key, s.where, err)
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "REDACTED" + u[i:]
		}
	}
	return u
}
