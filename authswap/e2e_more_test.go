package authswap_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	xscram "github.com/xdg-go/scram"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/kmsdouble"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

const (
	aliceUpPw2 = "alice-upstream-rotated-pw-19be"
	vaultBobPw = "bob-vault-upstream-pw-77aa"
)

// Credentials from Vault KV v2 (the in-process test double of its HTTP API,
// internal/kmsdouble): a secret rotated mid-run, and Vault down.
func TestVaultCredentialsEndToEnd(t *testing.T) {
	_, upstream := sasltest.Cluster(t, kfake.EnableACLs(), kfake.SeedTopics(1, "orders"),
		kfake.User("SCRAM-SHA-256", "alice-up", aliceUpPw, ordersACL),
		kfake.User("PLAIN", "bob-up", vaultBobPw))
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.PutKV("", "secret", "kafka/alice", map[string]any{"username": "alice-up", "password": aliceUpPw})
	v.PutKV("", "secret", "kafka/bob", map[string]any{"username": "bob-up", "password": vaultBobPw, "mechanism": "PLAIN"})
	dir := t.TempDir()
	tok := filepath.Join(dir, "vault-token")
	vaultToken := v.IssueToken("")
	straittest.Must(t, os.WriteFile(tok, []byte(vaultToken), 0o600), "token file")
	ttl := config.Duration(time.Hour)
	s := startStrait(t, upstream, authswap.Config{
		SASL: &authswap.SASLConfig{Mechanisms: []string{"PLAIN"}, UsersFile: usersFile(t, dir)},
		Credentials: &authswap.CredentialsConfig{CacheTTL: &ttl, Vault: &creds.VaultConfig{
			Address: v.URL(), Path: "kafka/{principal}", Auth: creds.VaultAuth{TokenFile: tok}, MaxAttempts: 1,
			Timeout: config.Duration(2 * time.Second)}},
		Upstream: authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, nil)
	alice := func() *kgo.Client { return client(t, s.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism()) }

	a1 := alice()
	if err := produce(a1, "one"); err != nil {
		t.Fatalf("alice via Vault credentials: %v", err)
	}
	reads := v.Calls("secret/data")

	// Rotate alice-up's password on the broker and in Vault.
	admin := kadm.NewClient(client(t, upstream[0], plain.Auth{User: sasltest.SuperUser, Pass: sasltest.SuperPass}.AsMechanism()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := admin.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: "alice-up", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: aliceUpPw2}})
	straittest.Must(t, err, "alter SCRAM")
	straittest.Must(t, res.Error(), "alter SCRAM result")
	v.PutKV("", "secret", "kafka/alice", map[string]any{"username": "alice-up", "password": aliceUpPw2})

	// The authenticated connection is unaffected.
	if err := produce(a1, "two"); err != nil {
		t.Fatalf("existing connection after rotation: %v", err)
	}
	// A new client: the cached (old) password is refused upstream, the
	// entry dropped, and the retried connection reads the new version.
	if err := produce(alice(), "three"); err != nil {
		t.Fatalf("new connection after rotation: %v", err)
	}
	if n := s.counter(t, "strait_authswap_upstream_authentications_total", "mechanism", "SCRAM-SHA-256", "result", "failure", "reason", "rejected"); n < 1 {
		t.Errorf("no upstream refusal counted for the stale password (%v)", n)
	}
	if v.Calls("secret/data") <= reads {
		t.Error("Vault was not asked again after the upstream refused the cached password")
	}

	// Vault down: a principal with nothing cached is refused with a clear
	// error; cached alice and her open connection carry on.
	v.SetFault(kmsdouble.FaultDown)
	err = metadataReq(client(t, s.addr, plain.Auth{User: "bob", Pass: bobPw}.AsMechanism()))
	if !isSaslFailed(err) || !strings.Contains(err.Error(), "no upstream credentials are available") {
		t.Fatalf("bob while Vault is down: %v", err)
	}
	if n := s.counter(t, "strait_authswap_credential_lookups_total", "store", "vault", "result", "unavailable"); n < 1 {
		t.Errorf("unavailable lookups: %v", n)
	}
	if err := produce(a1, "four"); err != nil {
		t.Fatalf("alice's connection while Vault is down: %v", err)
	}
	v.SetFault(kmsdouble.FaultNone)
	if err := metadataReq(client(t, s.addr, plain.Auth{User: "bob", Pass: bobPw}.AsMechanism())); err != nil {
		t.Fatalf("bob after Vault is back: %v", err)
	}
	if got := consumeAll(t, s.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism(), 4); strings.Join(got, ",") != "one,two,three,four" {
		t.Fatalf("consumed %q", got)
	}
	s.checkNoSecrets(t, alicePw, bobPw, aliceUpPw, aliceUpPw2, vaultBobPw, vaultToken, sasltest.SuperPass)
}

// mTLS in front: the principal comes from the certificate through Kafka's
// mapping rules; the upstream identity is the mapped user's.
func TestMTLSEndToEnd(t *testing.T) {
	upstream := aclCluster(t)
	dir := t.TempDir()
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"username": "alice-up", "password": aliceUpPw},
		"bob":   map[string]string{"mechanism": "PLAIN", "username": "bob-up", "password": bobUpPw},
	}})
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1")
	s := startStrait(t, upstream, authswap.Config{
		MTLS:        &authswap.MTLSConfig{Required: true, PrincipalMappingRules: `RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
		Upstream:    authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, func(c *config.Config) {
		c.Listen.TLS = config.ServerTLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile}
	})
	tlsClient := func(cn string, opts ...kgo.Opt) *kgo.Client {
		return client(t, s.addr, nil, append([]kgo.Opt{kgo.DialTLSConfig(ca.MTLSClientConfig(t, cn))}, opts...)...)
	}
	if err := produce(tlsClient("Alice"), "from alice's certificate"); err != nil {
		t.Fatalf("CN=Alice: %v", err)
	}
	cons := tlsClient("Alice", kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}}))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	fs := cons.PollFetches(ctx)
	if err := fs.Err(); err != nil || fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "from alice's certificate" {
		t.Fatalf("consume as CN=Alice: %v, %d records", err, fs.NumRecords())
	}
	// CN=Bob is bob, whose upstream user has no ACL on orders.
	if err := produce(tlsClient("Bob"), "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("CN=Bob: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	// CN=Mallory has no upstream mapping: the connection is refused.
	if err := metadataReq(tlsClient("Mallory")); err == nil {
		t.Fatal("CN=Mallory (no mapping) was served")
	}
	if n := s.counter(t, "strait_authswap_authentications_total", "mechanism", "mtls", "result", "failure", "reason", "credentials"); n < 1 {
		t.Errorf("mtls credentials failures: %v", n)
	}
	// No certificate, or one from another CA: the TLS handshake fails.
	noCert := ca.ClientTLSConfig()
	if err := metadataReq(client(t, s.addr, nil, kgo.DialTLSConfig(noCert))); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	other := testpki.New(t)
	foreign := other.MTLSClientConfig(t, "Alice")
	foreign.RootCAs = ca.Pool
	if err := metadataReq(client(t, s.addr, nil, kgo.DialTLSConfig(foreign))); err == nil {
		t.Fatal("a certificate from an unknown CA was served")
	}
	if n := s.counter(t, "strait_authswap_authentications_total", "mechanism", "mtls", "result", "success"); n < 2 {
		t.Errorf("mtls successes: %v", n)
	}
	s.checkNoSecrets(t, aliceUpPw, bobUpPw, sasltest.SuperPass)
}

// SaslHandshake v0 (kafka-python, librdkafka's path): raw tokens after the
// handshake, through the proxy's raw-token mode.
func TestSaslHandshakeV0(t *testing.T) {
	upstream := aclCluster(t)
	dir := t.TempDir()
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"username": "alice-up", "password": aliceUpPw},
	}})
	s := startStrait(t, upstream, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"PLAIN", "SCRAM-SHA-256"}, UsersFile: usersFile(t, dir)},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
		Upstream:    authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, nil)
	dial := func() *rawConn {
		c, err := net.Dial("tcp", s.addr)
		straittest.Must(t, err, "dial")
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		return &rawConn{c: c}
	}
	handshake := func(rc *rawConn, mech string) {
		t.Helper()
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.SetVersion(0)
		hs.Mechanism = mech
		resp, err := rc.request(hs)
		straittest.Must(t, err, "SaslHandshake v0")
		if r := resp.(*kmsg.SASLHandshakeResponse); r.ErrorCode != 0 || len(r.SupportedMechanisms) != 2 {
			t.Fatalf("SaslHandshake v0: %+v", r)
		}
	}
	metadataWorks := func(rc *rawConn) error {
		m := kmsg.NewPtrMetadataRequest()
		m.SetVersion(1)
		r, err := rc.request(m)
		if err != nil {
			return err
		}
		if len(r.(*kmsg.MetadataResponse).Brokers) != 3 {
			return errors.New("unexpected metadata")
		}
		return nil
	}

	t.Run("PLAIN", func(t *testing.T) {
		rc := dial()
		handshake(rc, "PLAIN")
		reply, err := rc.token([]byte("\x00alice\x00" + alicePw))
		if err != nil || len(reply) != 0 {
			t.Fatalf("PLAIN token: %q, %v (want an empty reply frame)", reply, err)
		}
		if err := metadataWorks(rc); err != nil {
			t.Fatalf("metadata after v0 PLAIN: %v", err)
		}
	})
	t.Run("SCRAM-SHA-256", func(t *testing.T) {
		rc := dial()
		handshake(rc, "SCRAM-SHA-256")
		cl, _ := xscram.HashGeneratorFcn(func() hash.Hash { return sha256.New() }).NewClient("alice", alicePw, "")
		conv := cl.NewConversation()
		in := ""
		for !conv.Done() {
			out, err := conv.Step(in)
			straittest.Must(t, err, "client step")
			if conv.Done() {
				break
			}
			reply, err := rc.token([]byte(out))
			straittest.Must(t, err, "token")
			in = string(reply)
		}
		if !conv.Valid() {
			t.Fatal("server signature did not verify")
		}
		if err := metadataWorks(rc); err != nil {
			t.Fatalf("metadata after v0 SCRAM: %v", err)
		}
	})
	t.Run("wrong password closes the connection", func(t *testing.T) {
		rc := dial()
		handshake(rc, "PLAIN")
		if _, err := rc.token([]byte("\x00alice\x00" + wrongPw)); err == nil {
			t.Fatal("a wrong password over v0 got a reply")
		}
	})
	s.checkNoSecrets(t, alicePw, aliceUpPw, wrongPw, sasltest.SuperPass)
}

type rawConn struct {
	c    net.Conn
	corr int32
}

func (r *rawConn) request(req kmsg.Request) (kmsg.Response, error) {
	r.corr++
	if _, err := r.c.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, r.corr)); err != nil {
		return nil, err
	}
	f, err := sasltest.ReadFrame(r.c)
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	off := 8
	if resp.IsFlexible() {
		off++ // empty tag buffer
	}
	return resp, resp.ReadFrom(f[off:])
}

func (r *rawConn) token(tok []byte) ([]byte, error) {
	if _, err := r.c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(tok)))); err != nil {
		return nil, err
	}
	if _, err := r.c.Write(tok); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(r.c, size[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err := io.ReadFull(r.c, b)
	return b, err
}

// KIP-368: with a session lifetime, franz-go re-authenticates on its
// connections and keeps working; a connection that does not re-authenticate
// is closed at its next request after the lifetime, as by a broker.
func TestSessionLifetimeEndToEnd(t *testing.T) {
	upstream := aclCluster(t)
	dir := t.TempDir()
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"username": "alice-up", "password": aliceUpPw},
	}})
	s := startStrait(t, upstream, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"PLAIN", "SCRAM-SHA-256"}, UsersFile: usersFile(t, dir), SessionLifetime: config.Duration(time.Second)},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
		Upstream:    authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, nil)
	successes := func() float64 {
		return s.counter(t, "strait_authswap_authentications_total", "mechanism", "SCRAM-SHA-256", "result", "success")
	}

	cl := client(t, s.addr, scram.Auth{User: "alice", Pass: alicePw}.AsSha256Mechanism())
	if err := produce(cl, "before"); err != nil {
		t.Fatal(err)
	}
	first := successes()
	// franz-go re-authenticates before each 1s lifetime ends; wait for two
	// re-authentications, producing meanwhile.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; successes() < first+2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no re-authentication seen (%v successes, %v at start)", successes(), first)
		}
		if err := produce(cl, "during "+strconv.Itoa(i)); err != nil {
			t.Fatalf("produce across re-authentications: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A raw client that never re-authenticates.
	c, err := net.Dial("tcp", s.addr)
	straittest.Must(t, err, "dial")
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawConn{c: c}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = "PLAIN"
	_, err = rc.request(hs)
	straittest.Must(t, err, "handshake")
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SetVersion(1)
	au.SASLAuthBytes = []byte("\x00alice\x00" + alicePw)
	r, err := rc.request(au)
	straittest.Must(t, err, "authenticate")
	if ar := r.(*kmsg.SASLAuthenticateResponse); ar.ErrorCode != 0 || ar.SessionLifetimeMillis != 1000 {
		t.Fatalf("SaslAuthenticate v1: %+v", ar)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(1)
	if _, err := rc.request(md); err != nil {
		t.Fatalf("metadata within the lifetime: %v", err)
	}
	// Wait for this connection's expiry (franz-go's connections log theirs too).
	for {
		expired := false
		for _, l := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(l, "session lifetime ended") && strings.Contains(l, `"principal":"alice"`) && strings.Contains(l, `"conn":`+strconv.FormatUint(lastConnID(t, s, c), 10)+",") {
				expired = true
			}
		}
		if expired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the raw connection's session lifetime never ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := rc.request(md); err == nil {
		t.Fatal("a Metadata request after the session lifetime was answered")
	}
}

// lastConnID finds Strait's id for the client connection c from the
// "connection opened" log line with c's local address.
func lastConnID(t *testing.T, s *strait, c net.Conn) uint64 {
	t.Helper()
	want := `"remote":"` + c.LocalAddr().String() + `"`
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "connection opened") && strings.Contains(l, want) {
			var v struct {
				Conn uint64 `json:"conn"`
			}
			if err := json.Unmarshal([]byte(l), &v); err == nil {
				return v.Conn
			}
		}
	}
	t.Fatalf("no connection opened line for %s", c.LocalAddr())
	return 0
}
