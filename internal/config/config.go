// Package config turns flags, environment variables and a config file into
// one validated, typed Config. It is parsed once, in cmd, and passed down;
// nothing else reads the environment for pgkeep settings.
//
// Every setting has one name, used three ways:
//
//	flag         --s3-region eu-west-1
//	environment  PGKEEP_S3_REGION=eu-west-1
//	config file  s3-region = eu-west-1
//
// A flag beats the environment, which beats the file.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
)

// DefaultFile is read when neither --config nor PGKEEP_CONFIG names a file
// and it exists.
const DefaultFile = "/etc/pgkeep/pgkeep.conf"

// Setting describes one configuration key.
type Setting struct {
	Name    string // flag and file key; the environment variable is EnvName(Name)
	Default string
	Help    string
}

// Settings lists every key Load understands, in the order --help shows them.
func Settings() []Setting {
	return []Setting{
		{"repo", "", "repository URL: file:///path or s3://bucket/prefix"},
		{"s3-region", "", "S3 region (default: from the AWS config chain, else us-east-1)"},
		{"s3-endpoint", "", "S3 endpoint URL for S3-compatible stores (default: AWS_ENDPOINT_URL_S3)"},
		{"s3-path-style", "false", "use path-style S3 addressing (most S3-compatible stores need it)"},
		{"s3-ca-bundle", "", "PEM file with CA certificates to trust for the S3 endpoint"},
		{"s3-profile", "", "AWS shared config profile (default: AWS_PROFILE)"},
		{"compression", "zstd", "compression for new objects: zstd, lz4, s2 or none, optionally :level"},
		{"wal-compression", "", "compression of archived and streamed WAL (default: s2, the fastest; or what compression says when that is set)"},
		{"workers", "0", "parallel workers for backup, restore and WAL upload (0 = number of CPUs)"},
		{"retry-timeout", "2m", "how long to retry a failing storage operation before giving up"},
		{"age-recipients", "", "file of age recipients (age1... public keys, or passphrase:...): encrypts a new repository; writers of an encrypted one are checked against it"},
		{"age-identity", "", "file of age identities (AGE-SECRET-KEY-1... keys, or passphrase:...) to read an encrypted repository"},
	}
}

// AgentSettings are the settings only pgkeep agent reads (as its own flags,
// from the environment or from the config file; it reads them again on
// SIGHUP). Load accepts them in the file for every command and keeps their
// raw values in Config.Agent: the agent's command parses them.
func AgentSettings() []Setting {
	return []Setting{
		{"backup-schedule", "", "take a base backup on this schedule: an interval (24h, 7d) or a cron expression (\"0 3 * * *\", @daily); empty: none"},
		{"keep", "0", "after each scheduled backup, apply retention keeping the newest N complete backups (as pgkeep expire --keep)"},
		{"keep-within", "", "after each scheduled backup, apply retention keeping every moment of this span restorable (as pgkeep expire --keep-within, e.g. 14d)"},
		{"verify-schedule", "", "re-verify the backups and the WAL chain on this schedule (as pgkeep verify); empty: never"},
		{"listen", DefaultListen, "address for the metrics (/metrics) and the status page (/); off: none"},
	}
}

// DefaultListen is where the agent serves metrics and its status page:
// loopback only, on a port outside the range Prometheus' exporters have
// taken (9100 to 9999).
const DefaultListen = "127.0.0.1:7841"

// EnvName returns the environment variable for a setting name.
func EnvName(name string) string {
	return "PGKEEP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// RepoURL is a parsed repository location.
type RepoURL struct {
	Scheme string // "file" or "s3"
	Path   string // file: absolute directory
	Bucket string // s3
	Prefix string // s3: key prefix without leading or trailing slash
}

// String returns the URL in canonical form. It never holds credentials:
// ParseRepoURL refuses URLs that carry them.
func (u RepoURL) String() string {
	// Built with net/url so that characters like '#' or '%' in a path are
	// escaped and the string parses back to the same location.
	switch u.Scheme {
	case "file":
		return (&url.URL{Scheme: "file", Path: u.Path}).String()
	case "s3":
		if u.Prefix == "" {
			return "s3://" + u.Bucket
		}
		return (&url.URL{Scheme: "s3", Host: u.Bucket, Path: "/" + u.Prefix}).String()
	}
	return ""
}

// ParseRepoURL parses file:///abs/path, an absolute path, or s3://bucket/prefix.
func ParseRepoURL(s string) (RepoURL, error) {
	if s == "" {
		return RepoURL{}, errors.New("no repository given: use --repo, PGKEEP_REPO or 'repo' in the config file")
	}
	if strings.HasPrefix(s, "/") {
		return RepoURL{Scheme: "file", Path: filepath.Clean(s)}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return RepoURL{}, fmt.Errorf("%q is not a URL (want file:///path or s3://bucket/prefix)", Redact(s))
	}
	if u.User != nil {
		return RepoURL{}, fmt.Errorf("%q carries credentials in the URL; give them through the AWS credential chain instead", Redact(s))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return RepoURL{}, fmt.Errorf("%q: query strings and fragments are not supported; use the s3-* settings", Redact(s))
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return RepoURL{}, fmt.Errorf("%q: a file URL has an empty host: file:///absolute/path", s)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return RepoURL{}, fmt.Errorf("%q: the path must be absolute: file:///absolute/path", s)
		}
		return RepoURL{Scheme: "file", Path: filepath.Clean(u.Path)}, nil
	case "s3":
		if u.Host == "" {
			return RepoURL{}, fmt.Errorf("%q: no bucket: s3://bucket/prefix", s)
		}
		prefix := strings.Trim(u.Path, "/")
		for _, el := range strings.Split(prefix, "/") {
			if prefix != "" && (el == "" || el == "." || el == "..") {
				return RepoURL{}, fmt.Errorf("%q: the prefix has an empty, \".\" or \"..\" element", s)
			}
		}
		return RepoURL{Scheme: "s3", Bucket: u.Host, Prefix: prefix}, nil
	}
	return RepoURL{}, fmt.Errorf("%q: unsupported scheme %q (want file:// or s3://)", Redact(s), u.Scheme)
}

// Redact removes a password or userinfo from a URL-like string.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// S3 holds the S3 settings.
type S3 struct {
	Region    string
	Endpoint  string
	PathStyle bool
	CABundle  string
	Profile   string
}

// Config is the validated configuration.
type Config struct {
	Repo        RepoURL
	S3          S3
	Compression envelope.Compression
	// WALCompression is the codec of WAL objects: wal-compression, else
	// compression when that was set, else s2 (docs/design.md §13).
	WALCompression envelope.Compression
	Workers        int
	// RetryTimeout bounds the retries of one storage operation.
	RetryTimeout time.Duration
	// AgeRecipients and AgeIdentity are paths to key files ("" if unset).
	AgeRecipients, AgeIdentity string
	// Sources records where each explicitly set value came from
	// ("flag", "env PGKEEP_X", "file /etc/..."), for messages.
	Sources map[string]string
	// File is the config file that was read, or "".
	File string
	// Agent holds the raw values of AgentSettings (defaults included).
	Agent map[string]string
}

// Sources of raw values for Load.
type Sources struct {
	Flags      map[string]string // settings given as flags (only those set)
	Getenv     func(string) (string, bool)
	ConfigFile string // --config; "" means PGKEEP_CONFIG, then DefaultFile if it exists
}

// Load merges flags, environment and file (in that precedence) and validates.
func Load(src Sources) (*Config, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	path, explicit := src.ConfigFile, src.ConfigFile != ""
	if !explicit {
		if p, ok := getenv("PGKEEP_CONFIG"); ok && p != "" {
			path, explicit = p, true
		} else {
			path = DefaultFile
		}
	}
	var fileVals map[string]string
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		fileVals, err = ParseFile(data)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	case explicit || !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("reading config file: %w", err)
	default:
		path = ""
	}

	known := map[string]Setting{}
	for _, s := range append(Settings(), AgentSettings()...) {
		known[s.Name] = s
	}
	for k := range fileVals {
		if _, ok := known[k]; !ok {
			return nil, fmt.Errorf("config file %s: unknown setting %q", path, k)
		}
	}
	raw := map[string]string{}
	sources := map[string]string{}
	for _, s := range append(Settings(), AgentSettings()...) {
		raw[s.Name] = s.Default
		if v, ok := src.Flags[s.Name]; ok {
			raw[s.Name], sources[s.Name] = v, "flag --"+s.Name
		} else if v, ok := getenv(EnvName(s.Name)); ok {
			raw[s.Name], sources[s.Name] = v, "environment "+EnvName(s.Name)
		} else if v, ok := fileVals[s.Name]; ok {
			raw[s.Name], sources[s.Name] = v, "config file "+path
		}
	}
	fieldErr := func(name string, err error) error {
		from := sources[name]
		if from == "" {
			from = "default"
		}
		return fmt.Errorf("setting %s (from %s): %w", name, from, err)
	}

	cfg := &Config{Sources: sources, File: path, Agent: map[string]string{}}
	for _, s := range AgentSettings() {
		cfg.Agent[s.Name] = raw[s.Name]
	}
	if cfg.Repo, err = ParseRepoURL(raw["repo"]); err != nil {
		return nil, fieldErr("repo", err)
	}
	cfg.S3 = S3{Region: raw["s3-region"], Endpoint: raw["s3-endpoint"], CABundle: raw["s3-ca-bundle"], Profile: raw["s3-profile"]}
	if cfg.S3.PathStyle, err = strconv.ParseBool(raw["s3-path-style"]); err != nil {
		return nil, fieldErr("s3-path-style", fmt.Errorf("%q is not true or false", raw["s3-path-style"]))
	}
	if e := cfg.S3.Endpoint; e != "" {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fieldErr("s3-endpoint", fmt.Errorf("%q is not an http:// or https:// URL", Redact(e)))
		}
	}
	if p := cfg.S3.CABundle; p != "" {
		if _, err := os.Stat(p); err != nil {
			return nil, fieldErr("s3-ca-bundle", err)
		}
	}
	if cfg.Compression, err = envelope.ParseCompression(raw["compression"]); err != nil {
		return nil, fieldErr("compression", err)
	}
	switch w := raw["wal-compression"]; {
	case w != "":
		if cfg.WALCompression, err = envelope.ParseCompression(w); err != nil {
			return nil, fieldErr("wal-compression", err)
		}
	case sources["compression"] != "":
		cfg.WALCompression = cfg.Compression
	default:
		cfg.WALCompression = envelope.Compression{Codec: envelope.S2}
	}
	if cfg.Workers, err = strconv.Atoi(raw["workers"]); err != nil || cfg.Workers < 0 || cfg.Workers > 256 {
		return nil, fieldErr("workers", fmt.Errorf("%q is not a number from 0 to 256", raw["workers"]))
	}
	if cfg.RetryTimeout, err = time.ParseDuration(raw["retry-timeout"]); err != nil || cfg.RetryTimeout < 0 {
		return nil, fieldErr("retry-timeout", fmt.Errorf("%q is not a duration like 30s or 2m", raw["retry-timeout"]))
	}
	cfg.AgeRecipients, cfg.AgeIdentity = raw["age-recipients"], raw["age-identity"]
	for _, name := range []string{"age-recipients", "age-identity"} {
		if p := raw[name]; p != "" {
			if !filepath.IsAbs(p) {
				return nil, fieldErr(name, fmt.Errorf("%q must be an absolute path", p))
			}
			if _, err := os.Stat(p); err != nil {
				return nil, fieldErr(name, err)
			}
		}
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.NumCPU()
	}
	return cfg, nil
}

// ParseFile parses "key = value" lines. Blank lines and lines starting with
// '#' are ignored; values may be quoted with double quotes.
func ParseFile(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key = value", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "" {
			return nil, fmt.Errorf("line %d: empty key", n)
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad quoted value: %w", n, err)
			}
			v = uq
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("line %d: %s set twice", n, k)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// Args returns the flags that reproduce the repository settings of cfg for
// another pgkeep process (for restore_command). Only settings that were set
// explicitly are included; no credential is ever part of them.
func (c *Config) Args() []string {
	args := []string{"--repo=" + c.Repo.String()}
	add := func(name, val string) {
		if _, set := c.Sources[name]; set {
			args = append(args, "--"+name+"="+val)
		}
	}
	add("s3-region", c.S3.Region)
	add("s3-endpoint", c.S3.Endpoint)
	add("s3-path-style", strconv.FormatBool(c.S3.PathStyle))
	add("s3-ca-bundle", c.S3.CABundle)
	add("s3-profile", c.S3.Profile)
	add("retry-timeout", c.RetryTimeout.String())
	add("age-identity", c.AgeIdentity)
	return args
}
