package s3

import (
	"crypto/md5"
	"encoding/base64"
	"io"
)

// md5Base64 is the Content-MD5 header value of b: the store refuses a body
// that changed in transit (BadDigest).
func md5Base64(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// md5Base64Seeker is md5Base64 over what r holds from its current
// position; r is rewound there afterwards.
func md5Base64Seeker(r io.ReadSeeker) (string, error) {
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return "", err
	}
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}
