// Package miniosrv starts a real MinIO server on loopback, for the tests
// (through internal/pgtest) and the benchmark.
package miniosrv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Version is the MinIO release the tests and the benchmark build and run.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Server is a running MinIO server.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Bucket    string // created at start
	DataDir   string
	CAFile    string // with TLS: the certificate to trust
	buckets   atomic.Int64
	stop      func()
}

// Stop kills the server and removes its data.
func (m *Server) Stop() { m.stop() }

func (m *Server) httpClient() *http.Client {
	if m.CAFile == "" {
		return http.DefaultClient
	}
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(m.CAFile)
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Binary finds the MinIO server: $PGKEEP_MINIO, the build cache of
// scripts/test-deps.sh, or minio in PATH.
func Binary() (string, error) {
	candidates := []string{os.Getenv("PGKEEP_MINIO")}
	cache := os.Getenv("PGKEEP_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "pgkeep")
	}
	candidates = append(candidates, filepath.Join(cache, "tools", "minio-"+Version, "minio"))
	if p, err := exec.LookPath("minio"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("MinIO not found: run scripts/test-deps.sh (make test-deps) to build it")
}

// Start starts MinIO from bin on free loopback ports with its own data
// directory and a fresh bucket; with useTLS it serves HTTPS with a
// self-signed certificate for 127.0.0.1 (CAFile is the PEM to trust).
func Start(bin string, useTLS bool) (*Server, error) {
	dir, err := os.MkdirTemp("", "pgk-minio-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "pgkeep" + randomHex(4),
		SecretKey: randomHex(16),
		Region:    "us-east-1",
		DataDir:   filepath.Join(dir, "data"),
	}
	logPath := filepath.Join(dir, "minio.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"server", "--quiet", "--address", "127.0.0.1:" + strconv.Itoa(port),
		"--console-address", "127.0.0.1:" + strconv.Itoa(console)}
	if useTLS {
		certs := filepath.Join(dir, "certs")
		m.CAFile = filepath.Join(certs, "public.crt")
		if err := selfSigned(certs); err != nil {
			return nil, err
		}
		args = append(args, "--certs-dir", certs)
		m.Endpoint = "https://127.0.0.1:" + strconv.Itoa(port)
	}
	cmd := exec.Command(bin, append(args, m.DataDir)...)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_REGION="+m.Region)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting MinIO: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	m.stop = func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
		os.RemoveAll(dir)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// ready, not live: a live MinIO may still answer "Server not
		// initialized yet" to the first requests.
		resp, err := m.httpClient().Get(m.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			m.stop()
			return nil, fmt.Errorf("MinIO exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			m.stop()
			return nil, fmt.Errorf("MinIO did not become ready:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m.Bucket, err = m.NewBucket(); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// Client returns an S3 client for the server.
func (m *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		HTTPClient:   m.httpClient(),
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
	})
}

// NewBucket creates another empty bucket and returns its name.
func (m *Server) NewBucket() (string, error) {
	name := fmt.Sprintf("pgkeep-test-%d-%s", m.buckets.Add(1), randomHex(3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := m.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return name, nil
		}
		// A MinIO that says it is ready may still be initialising.
		if !strings.Contains(err.Error(), "XMinioServerNotInitialized") || ctx.Err() != nil {
			return "", fmt.Errorf("creating bucket %s: %w", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Env returns the environment that points the AWS SDK at this server.
func (m *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"AWS_REGION=" + m.Region, "AWS_ENDPOINT_URL_S3=" + m.Endpoint}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// selfSigned writes public.crt and private.key for 127.0.0.1 into dir.
func selfSigned(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgkeep test MinIO"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost", "127.0.0.1"}, // pgBackRest matches names, not IP addresses
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}
