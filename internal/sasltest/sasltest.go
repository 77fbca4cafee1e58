// Package sasltest starts a kfake cluster with only SASL listeners for tests
// of Strait's authentication swapping, and gives Strait the upstream.sasl
// block its own connections (broker list, topic ids) need to log in to it.
package sasltest

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/straittest"
)

// The cluster's superuser (PLAIN): Strait's own identity towards the
// cluster in these tests (upstream.sasl), and the one the shipped examples'
// strait.yaml names. Client sessions authenticate as their principal's
// cluster user through authswap, never as this one.
const (
	SuperMechanism = "PLAIN"
	SuperUser      = "strait"
	SuperPass      = "strait-upstream-pw-7f3a"
)

// Cluster starts kfake (3 brokers) with SASL (superuser SuperUser over
// PLAIN) and returns it with its listen addresses. Every request other than
// ApiVersions and SASL needs an authenticated connection, so Strait needs
// upstream.sasl (UpstreamSASL) to become ready.
func Cluster(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, []string) {
	t.Helper()
	c := straittest.Cluster(t, append([]kfake.Opt{kfake.EnableSASL(),
		kfake.Superuser(SuperMechanism, SuperUser, SuperPass)}, opts...)...)
	return c, c.ListenAddrs()
}

// UpstreamSASL writes SuperPass to a 0600 file in t.TempDir() and returns
// the upstream.sasl block that logs Strait's own connections in as
// SuperUser. Its JSON tags are the configuration keys, so it also marshals
// (sigs.k8s.io/yaml) into a strait.yaml for the binary:
// {"upstream": {"sasl": UpstreamSASL(t)}}.
func UpstreamSASL(t testing.TB) *config.UpstreamSASL {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upstream-password")
	WritePasswordFile(t, p)
	return &config.UpstreamSASL{Mechanism: SuperMechanism, Username: SuperUser, PasswordFile: p}
}

// WritePasswordFile writes SuperPass (and a newline, as `echo` would) to
// path with mode 0600: the password_file of an upstream.sasl block, e.g.
// the one a shipped example's strait.yaml names.
func WritePasswordFile(t testing.TB, path string) {
	t.Helper()
	straittest.Must(t, os.WriteFile(path, []byte(SuperPass+"\n"), 0o600), "write the upstream.sasl password file")
}

// ReadFrame reads one size-prefixed Kafka frame, prefix included.
func ReadFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 1<<20 {
		return nil, errors.New("frame too large")
	}
	b := make([]byte, 4+n)
	copy(b, size[:])
	_, err := io.ReadFull(r, b[4:])
	return b, err
}
