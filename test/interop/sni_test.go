package interop

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/testpki"
)

// hostsNamespace returns a command prefix that runs a program in its own
// mount namespace where /etc/hosts is a private file resolving names to
// 127.0.0.1 (the machine's /etc/hosts is never touched). Needs root.
func hostsNamespace(t testing.TB, names ...string) []string {
	t.Helper()
	need(t, "unshare")
	if os.Geteuid() != 0 {
		missing(t, "root, for unshare --mount with a private /etc/hosts")
	}
	content := "127.0.0.1 localhost\n127.0.0.1"
	for _, n := range names {
		content += " " + n
	}
	content += "\n"
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// sh -c SCRIPT $0 $@: $0 is the hosts file, "$@" the program and args.
	return []string{"unshare", "--mount", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, path}
}

// TestSNIListener: one TLS port; metadata advertises bN.strait.test:<port>
// and each connection is routed to its broker by SNI. kcat resolves the
// names through a private hosts file.
func TestSNIListener(t *testing.T) {
	need(t, "kcat")
	ns := hostsNamespace(t, "bootstrap.strait.test", "b0.strait.test", "b1.strait.test", "b2.strait.test")
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "*.strait.test", "bootstrap.strait.test")
	c := kfakeCluster(t, []string{"sni"})
	sniPort := freePort(t)
	sniAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sniPort))
	// SNI mode alone: with the port listeners configured as well, Strait
	// advertises those (one metadata mapping per process).
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true, SNIOnly: true, Args: []string{
		"--tls-cert", cert, "--tls-key", key,
		"--sni-listen", sniAddr,
		"--sni-host-template", "b{node}.strait.test"}})
	args := []string{"-b", "bootstrap.strait.test:" + strconv.Itoa(sniPort),
		"-X", "security.protocol=SSL", "-X", "ssl.ca.location=" + ca.CertFile}

	kcat := append(append([]string(nil), ns...), "kcat")
	r := mustRun(t, defaultTimeout, "", nil, kcat[0], append(append(kcat[1:], args...), "-L", "-J", "-m", "15")...)
	md, raw := parseKcatMetadata(t, r.Stdout)
	assertOnlyStraitAddrs(t, md, raw, func(id int32) string {
		return "b" + strconv.Itoa(int(id)) + ".strait.test:" + strconv.Itoa(sniPort)
	}, c.ListenAddrs())
	if t.Failed() {
		t.FailNow() // clients would chase the wrong addresses until they time out
	}
	kcatRoundTrip(t, kcat, args, "sni", 90)
	p.assertThrough(t, "Produce", "Fetch")

	// A TLS client whose SNI matches no route (another domain) gets no
	// Kafka answer and a closed connection, promptly. (A name that fits the
	// template for a node not in metadata yet, say b7, may legitimately be
	// accepted: that node can appear later.)
	for _, name := range []string{"kafka.example.com", "strait.test"} {
		cfg := ca.ClientTLSConfig()
		cfg.ServerName = name
		cfg.InsecureSkipVerify = true // the certificate does not cover kafka.example.com
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", sniAddr, cfg)
		if err != nil {
			t.Logf("SNI %s refused at handshake: %v", name, err)
			continue
		}
		conn.Write(apiVersionsRequest(5))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hdr [8]byte
		_, err = io.ReadFull(conn, hdr[:])
		conn.Close()
		var ne net.Error
		switch {
		case err == nil:
			t.Errorf("SNI %s: Strait answered a request on a connection that names no broker", name)
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("SNI %s: connection neither answered nor closed within 5s", name)
		default:
			t.Logf("SNI %s: connection closed (%v)", name, err)
		}
	}
}
