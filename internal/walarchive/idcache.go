package walarchive

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
)

// PostgreSQL runs one wal-push per segment, each a new process: without a
// cache every push would fetch the identity record (one more request, one
// more round trip, per segment). The record is write-once, so a copy kept
// in pg_wal/pgkeep/ serves for identityCacheTTL; after that it is fetched
// again, so that a repository replaced under the same URL (a bucket
// emptied and reused by another cluster) is noticed within that time. The
// cache file names the repository (RepoTag), so a push to another
// repository never uses it.

// identityCacheTTL is how long a cached identity record is used.
const identityCacheTTL = 5 * time.Minute

// forgetIdentity removes the cache file path.
func forgetIdentity(path string) {
	if path != "" {
		os.Remove(path)
	}
}

// IdentityCachePath is the cache file of the repository tag names, in the
// pg_wal directory walDir.
func IdentityCachePath(walDir, tag string) string {
	return filepath.Join(walDir, "pgkeep", "identity-"+tag+".json")
}

type cachedRecord struct {
	Fetched time.Time       `json:"fetched"`
	Record  json.RawMessage `json:"record"`
}

// cachedIdentity returns the repository's identity record, configured on
// r: from the cache file path when it is fresh, else from the repository
// (refreshing the cache). path "" means no cache. Errors are
// r.Identity's (repo.ErrNoRepository when there is none yet). fromCache
// says where the record came from: a push refused by a cached record
// checks again with the repository's own (see Push).
func cachedIdentity(ctx context.Context, r *repo.Repo, path string) (id *repo.Identity, fromCache bool, err error) {
	if path != "" {
		if data, err := os.ReadFile(path); err == nil {
			var c cachedRecord
			if json.Unmarshal(data, &c) == nil && time.Since(c.Fetched) < identityCacheTTL && time.Since(c.Fetched) > -time.Minute {
				if id, err := r.Adopt(ctx, c.Record); err == nil {
					return id, true, nil
				}
			}
		}
	}
	id, err = r.Identity(ctx)
	if err != nil {
		return id, false, err
	}
	cacheIdentity(path, id)
	return id, false, nil
}

// cacheIdentity keeps id in the cache file path ("" : no cache). Best
// effort: a cache that cannot be written costs a fetch.
func cacheIdentity(path string, id *repo.Identity) {
	if path == "" || id.Incomplete() != nil {
		return // an incomplete record is to be repaired, not kept
	}
	if rec, merr := json.Marshal(id); merr == nil {
		if data, merr := json.Marshal(cachedRecord{Fetched: time.Now().UTC(), Record: rec}); merr == nil {
			if os.MkdirAll(filepath.Dir(path), 0o700) == nil {
				tmp := path + ".tmp"
				if os.WriteFile(tmp, data, 0o600) == nil && os.Rename(tmp, path) != nil {
					os.Remove(tmp)
				}
			}
		}
	}
}
