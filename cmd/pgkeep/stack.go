package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/crypt"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/storage/s3"
)

// openStorage composes the storage stack for the repository cfg names: the
// backend, then (for the agent's metrics) a meter that hears of every
// upload attempt, then retries with backoff and full jitter (the one retry
// policy: backends never retry on their own). This is the only place the
// stack is put together. meter may be nil; each retry is reported on warn
// (nil: silently), so that a slow run says why.
func openStorage(ctx context.Context, cfg *config.Config, meter storage.Meter, warn io.Writer) (storage.Storage, error) {
	var backend storage.Storage
	switch cfg.Repo.Scheme {
	case "file":
		st, err := local.New(cfg.Repo.Path)
		if err != nil {
			return nil, fmt.Errorf("opening repository %s: %w", cfg.Repo, err)
		}
		backend = st
	case "s3":
		st, err := s3.New(ctx, s3.Config{
			Bucket:    cfg.Repo.Bucket,
			Prefix:    cfg.Repo.Prefix,
			Region:    cfg.S3.Region,
			Endpoint:  cfg.S3.Endpoint,
			PathStyle: cfg.S3.PathStyle,
			CABundle:  cfg.S3.CABundle,
			Profile:   cfg.S3.Profile,
		})
		if err != nil {
			return nil, fmt.Errorf("opening repository %s: %w", cfg.Repo, err)
		}
		backend = st
	default:
		return nil, fmt.Errorf("unsupported repository scheme %q", cfg.Repo.Scheme)
	}
	if meter != nil {
		backend = storage.NewMetered(backend, meter)
	}
	policy := storage.DefaultRetryPolicy()
	policy.MaxElapsed = cfg.RetryTimeout
	if warn != nil {
		policy.OnRetry = func(op, key string, attempt int, err error) {
			fmt.Fprintf(warn, "pgkeep: WARNING: %s %s failed (attempt %d), retrying: %v\n", op, key, attempt, err)
		}
	}
	return storage.NewRetrying(backend, policy), nil
}

// openRepository opens the repository cfg describes on its storage stack,
// with the operator's encryption keys. meter (nil: none) counts uploads;
// retries are reported on warn (see openStorage).
func openRepository(ctx context.Context, cfg *config.Config, meter storage.Meter, warn io.Writer) (*repo.Repo, error) {
	opts := repo.Options{Compression: cfg.Compression, WALCompression: cfg.WALCompression}
	var err error
	if cfg.AgeRecipients != "" {
		if opts.Recipients, err = crypt.LoadRecipients(cfg.AgeRecipients); err != nil {
			return nil, &usageError{err}
		}
	}
	if cfg.AgeIdentity != "" {
		if opts.Identities, err = crypt.LoadIdentities(cfg.AgeIdentity); err != nil {
			return nil, &usageError{err}
		}
	}
	st, err := openStorage(ctx, cfg, meter, warn)
	if err != nil {
		return nil, err
	}
	return repo.New(st, opts), nil
}
