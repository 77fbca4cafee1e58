package authswap_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/plugins"
)

// The authswap block as strait.yaml spells it: strictly decoded, errors
// with their full path, and no secret in any error.
func TestRegistryConfig(t *testing.T) {
	dir := t.TempDir()
	users := usersFile(t, dir)
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodCreds := write("creds.yaml", "principals: {alice: {username: alice-up, password: "+aliceUpPw+"}}", 0o600)
	build := func(body string) error {
		cfg, err := config.Parse([]byte("upstream: {bootstrap: ['127.0.0.1:9092']}\nlisten: {bootstrap: '127.0.0.1:19092', broker_port_base: 19000}\ninterceptors:\n- name: authswap\n  config:\n" + body))
		if err != nil {
			return err
		}
		set, err := plugins.Build(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err == nil {
			set.Close()
		}
		return err
	}
	ok := "    sasl: {mechanisms: [PLAIN, SCRAM-SHA-512], users_file: " + users + ", session_lifetime: 1h}\n    credentials: {file: " + goodCreds + ", cache_ttl: 30s}\n    upstream: {mechanism: SCRAM-SHA-256}\n"
	if err := build(ok); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, tc := range []struct{ body, want, secret string }{
		{"    sasl: {mechanism: [PLAIN], users_file: " + users + "}\n", "interceptors[0].config.sasl.mechanism: unknown key", ""},
		{"    credentials: {file: " + goodCreds + ", vault: {address: x, token: abc}}\n", "interceptors[0].config.credentials.vault.token: unknown key", ""},
		{"    sasl: {mechanisms: [PLAIN], users_file: /nonexistent/users.yaml}\n", "interceptors[0].config.sasl.users_file: stat /nonexistent/users.yaml", ""},
		{"    credentials: {file: " + write("open.yaml", "principals: {}", 0o644) + "}\n", "interceptors[0].config.credentials.file: insecure permissions on a secret file: " + dir + "/open.yaml has mode 0644", ""},
		{"    credentials: {file: " + write("bad.yaml", "principals: {alice: {username: u, pasword: leaked-pw-9d}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-pw-9d"},
		{"    credentials: {file: " + write("bad2.yaml", "principals: {alice: {username: u, password: [leaked-pw-9e]}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-pw-9e"},
		{"    sasl: {mechanisms: [PLAIN], users_file: " + write("u.yaml", "users: {alice: {plain: leaked-pw-9f}}", 0o600) + "}\n", "interceptors[0].config.sasl.users_file: " + dir + "/u.yaml: users.alice.plain: not a bcrypt hash", "leaked-pw-9f"},
		{"    mtls: {principal_mapping_rules: 'RULE:^CN=(.*$/$1/'}\n", "interceptors[0].config.mtls.principal_mapping_rules: rule 1: pattern", ""},
		{"    credentials: {file: " + write("oauth1.yaml", "principals: {etl: {mechanism: OAUTHBEARER, client_secret: leaked-cs-9g}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-cs-9g"},
		{"    credentials: {file: " + write("oauth2.yaml", "principals: {etl: {mechanism: OAUTHBEARER, client_id: c, client_secret: [leaked-cs-9h]}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-cs-9h"},
		{"    credentials: {file: " + write("oauth3.yaml", "principals: {etl: {mechanism: OAUTHBEARER, client_id: c, client_secret: leaked-cs-9i, token_url: 'https://c:leaked-cs-9i@idp/t'}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-cs-9i"},
		{"    credentials: {file: " + write("aws1.yaml", "principals: {etl: {mechanism: PLAIN, username: u, password: p, aws_secret_access_key: leaked-aws-9j}}", 0o600) + "}\n", "interceptors[0].config.credentials.file:", "leaked-aws-9j"},
		{"    credentials: {file: " + goodCreds + "}\n    upstream: {oauth: {client_auth: jwt, token_url: 'http://idp.example.com/t'}}\n", "interceptors[0].config.upstream.oauth.client_auth: unknown", ""},
	} {
		err := build(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
			continue
		}
		if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("the error shows the secret: %v", err)
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "interceptors[0]") {
				t.Errorf("error line without its path: %q", line)
			}
		}
	}
}
