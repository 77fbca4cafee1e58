// Package testpki makes throwaway certificate authorities and leaf
// certificates for tests. Everything is generated at test time (ECDSA P-256)
// and written as PEM files into t.TempDir(), so no key material is ever
// committed and every test run gets fresh keys.
//
//	ca := testpki.New(t)
//	cert, key := ca.Leaf(t, "127.0.0.1", "localhost", "*.strait.test")
//	srv := ca.ServerTLSConfig(t, "127.0.0.1")        // for an in-process server
//	cli := ca.ClientTLSConfig()                       // trusts ca
//
// Names that parse as IP addresses become IP SANs, everything else a DNS SAN.
// Leaf certificates are valid for both server and client authentication, so
// one helper serves TLS servers, TLS clients and mTLS.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// CA is a self-signed certificate authority whose certificate is on disk.
type CA struct {
	// CertFile is the CA certificate (PEM), for ssl.ca.location, --upstream-ca,
	// --tls-client-ca and the like.
	CertFile string
	// Cert is the parsed CA certificate; Pool holds just that certificate.
	Cert *x509.Certificate
	Pool *x509.CertPool

	key *ecdsa.PrivateKey
	dir string

	mu sync.Mutex
	n  int
}

// New creates a CA named after the test and writes its certificate to a
// temporary directory that is removed when the test ends.
func New(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "strait test CA " + t.Name(), Organization: []string{"Strait tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	dir := t.TempDir()
	ca := &CA{Cert: cert, Pool: x509.NewCertPool(), key: key, dir: dir}
	ca.Pool.AddCert(cert)
	ca.CertFile = filepath.Join(dir, "ca.pem")
	writePEM(t, ca.CertFile, "CERTIFICATE", der, 0o644)
	return ca
}

// Dir is the directory holding the CA's files.
func (ca *CA) Dir() string { return ca.dir }

// Leaf issues a certificate for names (DNS names, wildcards or IP addresses;
// the first one is also the subject common name) and returns the paths of its
// PEM certificate and its PEM (PKCS#8) private key.
func (ca *CA) Leaf(t testing.TB, names ...string) (certFile, keyFile string) {
	t.Helper()
	certDER, key := ca.issue(t, names)
	ca.mu.Lock()
	ca.n++
	n := ca.n
	ca.mu.Unlock()
	base := filepath.Join(ca.dir, "leaf"+strconv.Itoa(n))
	certFile, keyFile = base+".pem", base+"-key.pem"
	writePEM(t, certFile, "CERTIFICATE", certDER, 0o644)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", keyDER, 0o600)
	return certFile, keyFile
}

// Certificate issues a leaf for names and returns it ready for a tls.Config,
// without writing files.
func (ca *CA) Certificate(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	der, key := ca.issue(t, names)
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse leaf: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerTLSConfig is a server configuration presenting a leaf for names.
func (ca *CA) ServerTLSConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Certificate(t, names...)},
		MinVersion:   tls.VersionTLS12,
	}
}

// MTLSServerConfig is ServerTLSConfig that also requires client certificates
// issued by this CA.
func (ca *CA) MTLSServerConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	cfg := ca.ServerTLSConfig(t, names...)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = ca.Pool
	return cfg
}

// ClientTLSConfig trusts this CA. Set ServerName when dialing by IP with a
// certificate for a host name.
func (ca *CA) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
}

// MTLSClientConfig trusts this CA and presents a client certificate for names.
func (ca *CA) MTLSClientConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	cfg := ca.ClientTLSConfig()
	cfg.Certificates = []tls.Certificate{ca.Certificate(t, names...)}
	return cfg
}

func (ca *CA) issue(t testing.TB, names []string) ([]byte, crypto.Signer) {
	t.Helper()
	if len(names) == 0 {
		t.Fatalf("testpki: a leaf needs at least one name")
	}
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Strait tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("testpki: issue %v: %v", names, err)
	}
	return der, key
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatalf("testpki: write %s: %v", path, err)
	}
}
