package authswap

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// crlSource is a CRL file, re-read when it changes.
type crlSource struct {
	path    string
	onError func(error)

	mu    sync.Mutex
	crl   *x509.RevocationList
	mtime time.Time
	size  int64
	bad   time.Time
}

func newCRLSource(path string, onError func(error)) (*crlSource, error) {
	s := &crlSource{path: path, onError: onError}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	crl, err := loadCRL(path)
	if err != nil {
		return nil, err
	}
	s.crl, s.mtime, s.size = crl, st.ModTime(), st.Size()
	return s, nil
}

func loadCRL(path string) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if p, _ := pem.Decode(b); p != nil {
		if p.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block %q, want \"X509 CRL\"", path, p.Type)
		}
		b = p.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return crl, nil
}

func (s *crlSource) get() *x509.RevocationList {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.path)
	if err != nil || (st.ModTime().Equal(s.mtime) && st.Size() == s.size) || st.ModTime().Equal(s.bad) {
		return s.crl
	}
	crl, err := loadCRL(s.path)
	if err != nil {
		s.bad = st.ModTime()
		s.onError(fmt.Errorf("kept the previous CRL: %w", err))
		return s.crl
	}
	s.crl, s.mtime, s.size = crl, st.ModTime(), st.Size()
	return s.crl
}

// check refuses a revoked leaf, and every leaf while the CRL is not signed
// by the leaf's issuer or is past its next update (fail closed).
func (s *crlSource) check(leaf *x509.Certificate, chain []*x509.Certificate) (reason string, err error) {
	crl := s.get()
	if len(chain) < 2 {
		return "crl_issuer", errors.New("the client certificate's chain has no issuer to check the CRL against")
	}
	if err := crl.CheckSignatureFrom(chain[1]); err != nil {
		return "crl_issuer", fmt.Errorf("the CRL is not signed by the client certificate's issuer %q: %v", chain[1].Subject.String(), err)
	}
	if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
		return "crl_expired", fmt.Errorf("the CRL's next update (%s) has passed", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			return "revoked", fmt.Errorf("certificate %q (serial %x) was revoked on %s", leaf.Subject.String(), leaf.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339))
		}
	}
	return "", nil
}
