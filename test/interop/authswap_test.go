package interop

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/internal/krbtest"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/testpki"
)

const (
	interopAlicePw   = "alice-interop-pw-4c1b"
	interopAliceUpPw = "alice-up-interop-pw-93fe"
	interopWrongPw   = "not-alices-pw-2d7a"
)

// authswapStrait runs the strait binary with SASL termination (PLAIN,
// SCRAM-SHA-256/512 for alice) in front of kfake with SASL and ACLs, where
// alice is alice-up (SCRAM-SHA-512) upstream and Strait's own connections
// log in with upstream.sasl.
func authswapStrait(t *testing.T, topics ...string) *proxy {
	return authswapStraitWith(t, nil, nil, topics...)
}

// authswapStraitWith replaces the authswap config (when cfg is set: users
// and creds are the files' paths) and adds strait flags.
func authswapStraitWith(t *testing.T, mk func(users, creds string) map[string]any, args []string, topics ...string) *proxy {
	t.Helper()
	acls := []kfake.ACL{
		{Resource: kmsg.ACLResourceTypeTopic, Name: "authswap-", Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: kmsg.ACLOperationAll, Allow: true},
		{Resource: kmsg.ACLResourceTypeGroup, Name: "interop", Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: kmsg.ACLOperationAll, Allow: true},
	}
	_, upstream := sasltest.Cluster(t, kfake.EnableACLs(), kfake.SeedTopics(3, topics...),
		kfake.User("SCRAM-SHA-512", "alice-up", interopAliceUpPw, acls...))
	dir := t.TempDir()
	h, err := bcrypt.GenerateFromPassword([]byte(interopAlicePw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u := sasl.User{Plain: string(h)}
	if u.ScramSHA256, err = sasl.NewScramCred("SCRAM-SHA-256", "alice", interopAlicePw, 4096); err != nil {
		t.Fatal(err)
	}
	if u.ScramSHA512, err = sasl.NewScramCred("SCRAM-SHA-512", "alice", interopAlicePw, 4096); err != nil {
		t.Fatal(err)
	}
	write := func(name string, v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	users := write("users.yaml", map[string]any{"users": map[string]sasl.User{"alice": u}})
	creds := write("upstream.yaml", map[string]any{"principals": map[string]any{
		"alice":  map[string]string{"username": "alice-up", "password": interopAliceUpPw},
		"client": map[string]string{"username": "alice-up", "password": interopAliceUpPw}}})
	ac := map[string]any{
		"sasl":        map[string]any{"mechanisms": []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}, "users_file": users},
		"credentials": map[string]any{"file": creds},
		"upstream":    map[string]any{"mechanism": "SCRAM-SHA-512"},
	}
	if mk != nil {
		ac = mk(users, creds)
	}
	// kfake has only SASL listeners: Strait's own connections (broker list,
	// topic ids) log in with upstream.sasl; client sessions as their principal.
	cfg := write("strait.yaml", map[string]any{
		"upstream":     map[string]any{"sasl": sasltest.UpstreamSASL(t)},
		"interceptors": []any{map[string]any{"name": "authswap", "config": ac}},
	})
	p := startStrait(t, straitConfig{Upstream: upstream, Args: append([]string{"--config", cfg, "--log-level", "debug"}, args...), NoDirect: true})
	t.Cleanup(func() {
		for _, s := range []string{interopAlicePw, interopAliceUpPw, interopWrongPw, sasltest.SuperPass} {
			if strings.Contains(p.Output(), s) {
				t.Errorf("secret %q in strait's output", s)
			}
		}
	})
	return p
}

// kcat (librdkafka 2.0.2) with SASL PLAIN and SCRAM through Strait.
func TestAuthswapKcat(t *testing.T) {
	need(t, "kcat")
	p := authswapStrait(t, "authswap-kcat-PLAIN", "authswap-kcat-SCRAM-SHA-256", "authswap-kcat-SCRAM-SHA-512")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			args := append(append([]string(nil), p.KcatArgs...), "-X", "security.protocol=SASL_PLAINTEXT",
				"-X", "sasl.mechanisms="+mech, "-X", "sasl.username=alice")
			kcatRoundTrip(t, []string{"kcat"}, append(args, "-X", "sasl.password="+interopAlicePw), "authswap-kcat-"+mech, 30)
			r := run(t, defaultTimeout, "", nil, "kcat", append(args, "-X", "sasl.password="+interopWrongPw, "-L", "-m", "10")...)
			if r.Err == nil {
				t.Fatalf("kcat with a wrong password listed metadata:\n%s", r.Stdout)
			}
			if !strings.Contains(r.Stderr, "Authentication failed") {
				t.Errorf("kcat's error does not say authentication failed:\n%s", tail(r.Stderr, 2000))
			}
		})
	}
	p.assertThrough(t, "Produce", "Fetch")
}

// kafkajs 2.2.4 with SASL PLAIN and SCRAM through Strait (it needs the
// mechanisms listed in the SaslHandshake answer, which kfake does not do).
func TestAuthswapKafkaJS(t *testing.T) {
	need(t, "kafkajs")
	p := authswapStrait(t, "authswap-js-plain", "authswap-js-scram-sha-256", "authswap-js-scram-sha-512")
	script := filepath.Join(interopDir, "js", "sasl_roundtrip.js")
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			env := []string{"SASL_MECHANISM=" + mech, "SASL_USERNAME=alice", "SASL_PASSWORD=" + interopAlicePw}
			prefix, topic := "js-"+mech, "authswap-js-"+mech
			r := mustRun(t, defaultTimeout, "", env, "node", script, p.Bootstrap, topic, "20", prefix, "interop-"+mech)
			got := lines(r.Stdout)
			if len(got) != 20 {
				t.Fatalf("kafkajs consumed %d records, want 20\n%s", len(got), tail(r.Stderr, 2000))
			}
			bad := run(t, defaultTimeout, "", []string{"SASL_MECHANISM=" + mech, "SASL_USERNAME=alice", "SASL_PASSWORD=" + interopWrongPw},
				"node", script, p.Bootstrap, topic, "1", "x", "interop-bad")
			if bad.Err == nil || !strings.Contains(bad.Stderr, "SASL") {
				t.Fatalf("kafkajs with a wrong password: %v\n%s", bad.Err, tail(bad.Stderr, 2000))
			}
		})
	}
}

// kcat with a client certificate: the principal is the certificate's CN,
// mapped with Kafka's rules; upstream it is alice-up.
func TestAuthswapKcatMTLS(t *testing.T) {
	need(t, "kcat")
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1")
	p := authswapStraitWith(t, func(_, creds string) map[string]any {
		return map[string]any{
			"mtls":        map[string]any{"required": true, "principal_mapping_rules": `RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`},
			"credentials": map[string]any{"file": creds},
			"upstream":    map[string]any{"mechanism": "SCRAM-SHA-512"},
		}
	}, []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca.CertFile}, "authswap-mtls")
	tlsArgs := func(cn string) []string {
		c, k := ca.Leaf(t, cn)
		return append(append([]string(nil), p.KcatArgs...), "-X", "security.protocol=SSL", "-X", "ssl.ca.location="+ca.CertFile,
			"-X", "ssl.certificate.location="+c, "-X", "ssl.key.location="+k)
	}
	kcatRoundTrip(t, []string{"kcat"}, tlsArgs("Alice"), "authswap-mtls", 30)
	// CN=Mallory maps to mallory, who has no upstream credentials.
	r := run(t, defaultTimeout, "", nil, "kcat", append(tlsArgs("Mallory"), "-L", "-m", "5")...)
	if r.Err == nil {
		t.Fatalf("kcat as CN=Mallory listed metadata:\n%s", r.Stdout)
	}
	if !strings.Contains(p.Output(), `"reason":"credentials"`) {
		t.Error("Mallory's refusal is not in strait's log")
	}
	p.assertThrough(t, "Produce", "Fetch")
}

// kcat and confluent-kafka-python (librdkafka, Cyrus SASL, MIT krb5, mutual
// authentication) with Kerberos through Strait, against a real MIT KDC;
// upstream the principal is alice-up.
func TestAuthswapKerberosLibrdkafka(t *testing.T) {
	need(t, "kcat")
	kdc := krbtest.Start(t)
	kdc.AddPrincipal(t, "kafka/localhost")
	kdc.AddPrincipal(t, "client")
	svc := kdc.Keytab(t, "kafka.keytab", "kafka/localhost")
	clientKT := kdc.Keytab(t, "client.keytab", "client")
	p := authswapStraitWith(t, func(_, creds string) map[string]any {
		return map[string]any{
			"sasl": map[string]any{"mechanisms": []string{"GSSAPI"},
				"gssapi": map[string]any{"keytab_file": svc, "service_principal": "kafka/localhost", "strip_realm": true}},
			"credentials": map[string]any{"file": creds},
			"upstream":    map[string]any{"mechanism": "SCRAM-SHA-512"},
		}
	}, []string{"--advertise-host", "localhost"}, "authswap-krb")
	bootstrap := "localhost:" + p.Bootstrap[strings.LastIndexByte(p.Bootstrap, ':')+1:]
	args := []string{"-b", bootstrap, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=GSSAPI",
		"-X", "sasl.kerberos.service.name=kafka", "-X", "sasl.kerberos.principal=client@" + krbtest.Realm,
		"-X", "sasl.kerberos.keytab=" + clientKT}
	env := kdc.Env()
	recs := records("krb", 10)
	var in strings.Builder
	for i, r := range recs {
		in.WriteString("k" + strconv.Itoa(i) + ":" + r + "\n")
	}
	mustRun(t, defaultTimeout, in.String(), env, "kcat", append(args, "-P", "-t", "authswap-krb", "-K", ":", "-X", "acks=all", "-X", "message.timeout.ms=30000")...)
	r := mustRun(t, defaultTimeout, "", env, "kcat", append(args, "-C", "-t", "authswap-krb", "-o", "beginning", "-e", "-q", "-f", `%s\n`)...)
	sameSet(t, "kcat GSSAPI round trip", recs, lines(r.Stdout))
	if !strings.Contains(p.Output(), `"principal":"client","mechanism":"GSSAPI"`) {
		t.Error("no GSSAPI authentication of principal client in strait's log")
	}

	t.Run("confluent-kafka-python", func(t *testing.T) {
		need(t, "confluent_kafka")
		script := `
import sys
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": sys.argv[1], "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "GSSAPI", "sasl.kerberos.service.name": "kafka",
    "sasl.kerberos.principal": "client@STRAIT.TEST", "sasl.kerberos.keytab": sys.argv[2]})
md = a.list_topics(timeout=30)
print("topics", sorted(md.topics))
`
		r := mustRun(t, defaultTimeout, "", env, pythonBin, "-c", script, bootstrap, clientKT)
		if !strings.Contains(r.Stdout, "authswap-krb") {
			t.Fatalf("confluent-kafka-python listed %q", r.Stdout)
		}
	})
}
