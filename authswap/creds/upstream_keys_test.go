package creds

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/internal/kmsdouble"
)

func TestOAuthAndAWSEntries(t *testing.T) {
	ok := []string{
		"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ}",
		"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: 'https://idp.example.com/token', scope: 'kafka read', audience: kafka}",
		"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: 'http://127.0.0.1:8080/token'}",
		"{mechanism: OAUTHBEARER, token: t-XYZ}",
		"{mechanism: AWS_MSK_IAM, aws_access_key_id: AKIA1, aws_secret_access_key: s-XYZ}",
		"{mechanism: AWS_MSK_IAM, aws_access_key_id: AKIA1, aws_secret_access_key: s-XYZ, aws_session_token: t-XYZ}",
	}
	for _, e := range ok {
		if _, err := ParseFile([]byte("principals: {alice: "+e+"}"), "PLAIN"); err != nil {
			t.Errorf("%s: %v", e, err)
		}
	}
	for _, tc := range []struct{ entry, want string }{
		{"{mechanism: OAUTHBEARER, token: t-XYZ, client_id: c, client_secret: s-XYZ}", "exclusive"},
		{"{mechanism: OAUTHBEARER, client_id: c}", "need client_id and client_secret"},
		{"{mechanism: OAUTHBEARER, client_secret: s-XYZ}", "need client_id and client_secret"},
		{"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, username: u}", "takes no username"},
		{"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: 'http://idp.example.com/token'}", "http is allowed only to a loopback"},
		{"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: 'https://c:s-XYZ@idp.example.com/token'}", "user information"},
		{"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: 'ftp://idp/token'}", "not an http(s) URL"},
		{"{mechanism: OAUTHBEARER, client_id: c, client_secret: s-XYZ, token_url: '/token'}", "not an absolute"},
		{"{mechanism: PLAIN, username: u, password: p-XYZ, client_id: c}", "are for OAUTHBEARER, not PLAIN"},
		{"{mechanism: SCRAM-SHA-512, username: u, password: p-XYZ, aws_access_key_id: a}", "are for AWS_MSK_IAM, not SCRAM-SHA-512"},
		{"{mechanism: AWS_MSK_IAM, aws_access_key_id: AKIA1}", "AWS_MSK_IAM needs aws_access_key_id and aws_secret_access_key"},
		{"{mechanism: AWS_MSK_IAM, aws_access_key_id: AKIA1, aws_secret_access_key: s-XYZ, password: p-XYZ}", "takes no username, password or token"},
		{"{mechanism: AWS_MSK_IAM, aws_access_key_id: AKIA1, aws_secret_access_key: s-XYZ, scope: x}", "are for OAUTHBEARER"},
	} {
		_, err := ParseFile([]byte("principals: {alice: "+tc.entry+"}"), "PLAIN")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.entry, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "XYZ") {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	c := Credentials{Mechanism: "OAUTHBEARER", ClientID: "cid", ClientSecret: "cs-123", AWSAccessKeyID: "AKIA1", AWSSecretAccessKey: "as-456", AWSSessionToken: "st-789"}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "cs-123") || strings.Contains(s, "as-456") || strings.Contains(s, "st-789") || !strings.Contains(s, "client_id:cid") || !strings.Contains(s, "aws_access_key_id:AKIA1") {
			t.Errorf("printed %q", s)
		}
	}
}

func TestVaultOAuthAndAWSKeys(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.PutKV("", "secret", "strait/principals/etl", map[string]any{"mechanism": "OAUTHBEARER", "client_id": "etl-client", "client_secret": "cs-1",
		"token_url": "https://idp.example.com/token", "scope": "kafka", "audience": "aud"})
	v.PutKV("", "secret", "strait/principals/msk", map[string]any{"mechanism": "AWS_MSK_IAM", "aws_access_key_id": "AKIA1", "aws_secret_access_key": "as-1", "aws_session_token": "st-1"})
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, v.IssueToken(""), 0o600)
	st, err := NewVault(VaultConfig{Address: v.URL(), Auth: VaultAuth{TokenFile: tokFile}, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Lookup(context.Background(), "etl")
	if err != nil || c.ClientID != "etl-client" || c.ClientSecret != "cs-1" || c.TokenURL != "https://idp.example.com/token" || c.Scope != "kafka" || c.Audience != "aud" || c.Validate("PLAIN") != nil {
		t.Fatalf("etl: %v %v", c, err)
	}
	c, err = st.Lookup(context.Background(), "msk")
	if err != nil || c.AWSAccessKeyID != "AKIA1" || c.AWSSecretAccessKey != "as-1" || c.AWSSessionToken != "st-1" || c.Validate("PLAIN") != nil {
		t.Fatalf("msk: %v %v", c, err)
	}
}
