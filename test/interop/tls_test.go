package interop

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/testpki"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestTLS: upstream brokers on TLS (Strait verifies them against a CA),
// client-side TLS, client-side mTLS, and a Strait that must not trust an
// upstream signed by a CA it was not given.
func TestTLS(t *testing.T) {
	need(t, "kcat")
	ca := testpki.New(t)
	topics := []string{"tls-upstream", "tls-client", "tls-mtls"}
	c := kfakeCluster(t, topics, kfake.TLS(ca.ServerTLSConfig(t, "127.0.0.1", "localhost")))
	upstreamTLS := []string{"--upstream-tls", "--upstream-ca", ca.CertFile}
	sslArgs := []string{"-X", "security.protocol=SSL", "-X", "ssl.ca.location=" + ca.CertFile}
	srvCert, srvKey := ca.Leaf(t, "127.0.0.1", "localhost")
	cliCert, cliKey := ca.Leaf(t, "client.strait.test")
	clientCertArgs := []string{"-X", "ssl.certificate.location=" + cliCert, "-X", "ssl.key.location=" + cliKey}

	t.Run("upstream", func(t *testing.T) {
		p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), Args: upstreamTLS, DirectKcatArgs: sslArgs})
		if !p.Direct {
			md, raw := kcatList(t, nil, p.KcatArgs...)
			assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
		}
		kcatRoundTrip(t, []string{"kcat"}, p.KcatArgs, "tls-upstream", 60)
		p.assertThrough(t, "Produce", "Fetch")
	})

	t.Run("upstream-untrusted", func(t *testing.T) {
		// Verification is on by default: with the wrong CA Strait must
		// never fetch metadata, so it never becomes ready.
		other := testpki.New(t)
		p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true, NoWaitReady: true,
			Args: []string{"--upstream-tls", "--upstream-ca", other.CertFile}})
		if err := p.waitReady(6 * time.Second); err == nil {
			t.Fatal("strait became ready against an upstream whose certificate it cannot verify")
		}
	})

	t.Run("client", func(t *testing.T) {
		p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true,
			Args:     append(append([]string(nil), upstreamTLS...), "--tls-cert", srvCert, "--tls-key", srvKey),
			KcatArgs: sslArgs})
		md, raw := kcatList(t, nil, p.KcatArgs...)
		assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
		kcatRoundTrip(t, []string{"kcat"}, p.KcatArgs, "tls-client", 60)
		p.assertThrough(t, "Produce", "Fetch")

		// The port really speaks TLS with our certificate.
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.Bootstrap, ca.ClientTLSConfig())
		if err != nil {
			t.Fatalf("TLS dial of Strait's bootstrap port: %v", err)
		}
		conn.Close()
	})

	t.Run("mtls", func(t *testing.T) {
		p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true,
			Args: append(append([]string(nil), upstreamTLS...),
				"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", ca.CertFile),
			KcatArgs: append(append([]string(nil), sslArgs...), clientCertArgs...)})
		md, raw := kcatList(t, nil, p.KcatArgs...)
		assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
		kcatRoundTrip(t, []string{"kcat"}, p.KcatArgs, "tls-mtls", 60)
		p.assertThrough(t, "Produce", "Fetch")

		// kcat without a client certificate gets nothing.
		r := run(t, 30*time.Second, "", nil, "kcat", append(append([]string{"-b", p.Bootstrap}, sslArgs...), "-L", "-m", "5")...)
		if r.Err == nil {
			t.Errorf("kcat without a client certificate listed metadata through mTLS Strait:\n%s", r.Stdout)
		}
		// Nor does a Go client: the handshake (or, with TLS 1.3, the
		// first read) fails with a certificate error, promptly.
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.Bootstrap, ca.ClientTLSConfig())
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Write(apiVersionsRequest(1))
			if err == nil {
				_, err = io.ReadFull(conn, make([]byte, 4))
			}
			conn.Close()
		}
		var ne net.Error
		switch {
		case err == nil:
			t.Error("a client without a certificate got an answer through mTLS Strait")
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("a client without a certificate was left hanging instead of refused: %v", err)
		default:
			t.Logf("client without certificate refused: %v", err)
			if !strings.Contains(err.Error(), "certificate") && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Logf("(unexpected error kind, still a refusal)")
			}
		}
		// A certificate from another CA is refused as well.
		other := testpki.New(t)
		bad := other.MTLSClientConfig(t, "intruder.strait.test")
		bad.RootCAs = ca.Pool
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.Bootstrap, bad)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Write(apiVersionsRequest(1))
			if err == nil {
				_, err = io.ReadFull(conn, make([]byte, 4))
			}
			conn.Close()
		}
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("a client certificate from an unknown CA was not refused: %v", err)
		}
	})
}
