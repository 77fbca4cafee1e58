package kmsdouble

import (
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
	"time"
)

// TLSBundle is a throw-away PKI for a double served over TLS: a CA, a server
// certificate for 127.0.0.1/localhost and a client certificate, all signed by
// the CA.
type TLSBundle struct {
	CAPEM         []byte
	ClientCertPEM []byte
	ClientKeyPEM  []byte
	server        tls.Certificate
	pool          *x509.CertPool
}

// NewTLSBundle creates a fresh CA, server and client certificate.
func NewTLSBundle() (*TLSBundle, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kmsdouble test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, server bool) ([]byte, []byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		t := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			t.DNSNames = []string{"localhost"}
		} else {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, caCert, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kd, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), nil
	}
	sc, sk, err := issue(2, "127.0.0.1", true)
	if err != nil {
		return nil, err
	}
	cc, ck, err := issue(3, "strait client", false)
	if err != nil {
		return nil, err
	}
	srv, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &TLSBundle{
		CAPEM:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		ClientCertPEM: cc,
		ClientKeyPEM:  ck,
		server:        srv,
		pool:          pool,
	}, nil
}

// serverConfig is the server side; requireClientCert demands a client
// certificate signed by the bundle's CA.
func (b *TLSBundle) serverConfig(requireClientCert bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{b.server}, MinVersion: tls.VersionTLS12}
	if requireClientCert {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = b.pool
	}
	return c
}

// WriteFiles writes ca.pem, client.pem and client-key.pem into dir and
// returns their paths.
func (b *TLSBundle) WriteFiles(dir string) (ca, cert, key string, err error) {
	ca = filepath.Join(dir, "ca.pem")
	cert = filepath.Join(dir, "client.pem")
	key = filepath.Join(dir, "client-key.pem")
	for p, data := range map[string][]byte{ca: b.CAPEM, cert: b.ClientCertPEM, key: b.ClientKeyPEM} {
		if err = os.WriteFile(p, data, 0o600); err != nil {
			return
		}
	}
	return
}
