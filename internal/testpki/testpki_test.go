package testpki_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/internal/testpki"
)

func TestLeafFilesVerify(t *testing.T) {
	ca := testpki.New(t)
	certFile, keyFile := ca.Leaf(t, "127.0.0.1", "localhost", "*.strait.test", "bootstrap.strait.test")

	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("load pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("private key %T", pair.PrivateKey)
	}

	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	for _, name := range []string{"127.0.0.1", "localhost", "b0.strait.test", "b12.strait.test", "bootstrap.strait.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify as %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify as client: %v", err)
	}
	for _, name := range []string{"127.0.0.2", "other.test", "a.b.strait.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err == nil {
			t.Errorf("verify as %s unexpectedly succeeded", name)
		}
	}

	// Another CA must not vouch for this leaf.
	other := testpki.New(t)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: other.Pool}); err == nil {
		t.Error("leaf verified against an unrelated CA")
	}

	keyPEM, _ := os.ReadFile(keyFile)
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM block")
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
	c2, k2 := ca.Leaf(t, "localhost")
	if c2 == certFile || k2 == keyFile {
		t.Error("second leaf overwrote the first")
	}
}

func TestMutualTLSHandshake(t *testing.T) {
	ca := testpki.New(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.MTLSServerConfig(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				done <- nil
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				io.Copy(c, c)
			}(c)
		}
	}()

	// With a client certificate: echo works.
	c, err := tls.Dial("tcp", ln.Addr().String(), ca.MTLSClientConfig(t, "client.strait.test"))
	if err != nil {
		t.Fatalf("mTLS dial: %v", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if got := c.ConnectionState().PeerCertificates[0].IPAddresses[0].String(); got != "127.0.0.1" {
		t.Errorf("server cert IP SAN %s", got)
	}
	c.Close()

	// Without one: the server refuses (TLS 1.3 reports it on first read).
	c, err = tls.Dial("tcp", ln.Addr().String(), ca.ClientTLSConfig())
	if err == nil {
		_, err = c.Read(buf)
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("dial without client cert: want a certificate error, got %v", err)
	}
	ln.Close()
	<-done
}
