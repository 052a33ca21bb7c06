package s3

import (
	"crypto/md5"
	"encoding/base64"
)

// md5Base64 is the Content-MD5 header value: the store rejects a body that
// changed in transit.
func md5Base64(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}
