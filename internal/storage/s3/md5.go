package s3

import (
	"crypto/md5"
	"encoding/base64"
	"io"
)

// md5Base64 is the Content-MD5 header value: the store rejects a body that
// changed in transit.
func md5Base64(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// md5Base64Reader is md5Base64 over a section, rewound afterwards.
func md5Base64Reader(r *io.SectionReader) (string, error) {
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}
