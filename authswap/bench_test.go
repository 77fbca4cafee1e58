package authswap_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	ksasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

// BenchmarkAuthenticatedConnections: one op is a new client connection that
// authenticates and gets one Metadata answer from the cluster, directly
// (kfake with SASL) or through Strait (SASL terminated, credentials from a
// file, upstream SASL as the mapped user on a fresh upstream connection).
// The same mechanism is used on every hop. Compare ns/op of direct and
// strait sub-benchmarks of one run (connections/s = 1e9 / ns/op).
//
//	go test ./authswap -run '^$' -bench AuthenticatedConnections -benchtime 200x
func BenchmarkAuthenticatedConnections(b *testing.B) {
	const pw, upPw = "bench-downstream-pw", "bench-upstream-pw"
	_, upstream := sasltest.Cluster(b,
		kfake.User("SCRAM-SHA-256", "alice-up", upPw), kfake.User("PLAIN", "alice-up-plain", upPw),
		kfake.User("SCRAM-SHA-256", "alice", pw), kfake.User("PLAIN", "alice", pw))
	dir := b.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	sc, _ := sasl.NewScramCred("SCRAM-SHA-256", "alice", pw, 4096)
	write := func(name string, v any) string {
		y, _ := yaml.Marshal(v)
		p := dir + "/" + name
		straittest.Must(b, os.WriteFile(p, y, 0o600), "write")
		return p
	}
	users := write("users.yaml", map[string]any{"users": map[string]sasl.User{"alice": {Plain: string(h), ScramSHA256: sc}}})
	for _, tc := range []struct {
		mech   string
		client ksasl.Mechanism
		creds  map[string]string
	}{
		{"SCRAM-SHA-256", scram.Auth{User: "alice", Pass: pw}.AsSha256Mechanism(), map[string]string{"mechanism": "SCRAM-SHA-256", "username": "alice-up", "password": upPw}},
		{"PLAIN", plain.Auth{User: "alice", Pass: pw}.AsMechanism(), map[string]string{"mechanism": "PLAIN", "username": "alice-up-plain", "password": upPw}},
	} {
		creds := write("creds-"+tc.mech+".yaml", map[string]any{"principals": map[string]any{"alice": tc.creds}})
		ttl := config.Duration(time.Minute)
		s := startStrait(b, upstream, authswap.Config{
			SASL:        &authswap.SASLConfig{Mechanisms: []string{tc.mech}, UsersFile: users},
			Credentials: &authswap.CredentialsConfig{File: creds, CacheTTL: &ttl},
		}, nil)
		for _, target := range []struct{ name, addr string }{{"direct", upstream[0]}, {"strait", s.addr}} {
			b.Run(tc.mech+"/"+target.name, func(b *testing.B) {
				for b.Loop() {
					cl, err := kgo.NewClient(kgo.SeedBrokers(target.addr), kgo.SASL(tc.client))
					if err != nil {
						b.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
					cancel()
					cl.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
