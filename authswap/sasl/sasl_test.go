package sasl

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

// testUsers: alice has every credential for password "alice-pw"; bob only
// SCRAM-SHA-512 for "bob-pw".
func testUsers(t testing.TB) Users {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(mech, u, p string) *ScramCred {
		c, err := NewScramCred(mech, u, p, 4096)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	f := usersFile{Users: map[string]User{
		"alice": {Plain: string(h), ScramSHA256: mk(SCRAMSHA256, "alice", "alice-pw"), ScramSHA512: mk(SCRAMSHA512, "alice", "alice-pw")},
		"bob":   {ScramSHA512: mk(SCRAMSHA512, "bob", "bob-pw")},
	}}
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUsers(b)
	if err != nil {
		t.Fatalf("ParseUsers of a generated file: %v\n%s", err, b)
	}
	return u
}

func TestPlain(t *testing.T) {
	m := NewPlain(Static(testUsers(t)))
	for _, tc := range []struct {
		name, token, principal, reason, msg string
	}{
		{"ok", "\x00alice\x00alice-pw", "alice", "", ""},
		{"ok with same authzid", "alice\x00alice\x00alice-pw", "alice", "", ""},
		{"wrong password", "\x00alice\x00nope", "", ReasonBadPassword, msgPlainBad},
		{"unknown user", "\x00carol\x00alice-pw", "", ReasonUnknownUser, msgPlainBad},
		{"user without a PLAIN hash", "\x00bob\x00bob-pw", "", ReasonUnknownUser, msgPlainBad},
		{"other authzid", "admin\x00alice\x00alice-pw", "", ReasonAuthzID, msgAuthzID},
		{"two fields", "alice\x00alice-pw", "", ReasonMalformed, "expected 3 tokens, got 2"},
		{"empty user", "\x00\x00pw", "", ReasonMalformed, "username not specified"},
		{"empty password", "\x00alice\x00", "", ReasonMalformed, "password not specified"},
		{"empty token", "", "", ReasonMalformed, "expected 3 tokens, got 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := m.Start()
			out, done, err := s.Next(context.Background(), []byte(tc.token))
			if tc.reason == "" {
				if err != nil || !done || len(out) != 0 || s.Principal() != tc.principal {
					t.Fatalf("got %q, %v, %v, principal %q; want done as %q", out, done, err, s.Principal(), tc.principal)
				}
				if _, _, err := s.Next(context.Background(), []byte(tc.token)); err == nil {
					t.Fatal("a second token on a finished PLAIN exchange was accepted")
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Reason != tc.reason || !strings.Contains(ae.Message, tc.msg) || done || s.Principal() != "" {
				t.Fatalf("got %v (%+v), done %v, principal %q; want reason %s, message containing %q", err, ae, done, s.Principal(), tc.reason, tc.msg)
			}
			if strings.Contains(ae.Message, "alice-pw") || strings.Contains(ae.Message, "nope") {
				t.Fatalf("the error message carries the password: %q", ae.Message)
			}
		})
	}
}

// runScram drives a server session with xdg-go/scram's client.
func runScram(t *testing.T, m Mechanism, user, pass, authz string) (Session, error) {
	t.Helper()
	h, _ := scramHash(m.Name())
	cl, err := h.NewClient(user, pass, authz)
	if err != nil {
		t.Fatal(err)
	}
	conv := cl.NewConversation()
	s := m.Start()
	in := ""
	for i := 0; i < 3; i++ {
		msg, err := conv.Step(in)
		if err != nil {
			t.Fatalf("client step %d: %v", i, err)
		}
		if conv.Done() {
			return s, nil
		}
		out, done, err := s.Next(context.Background(), []byte(msg))
		if err != nil {
			return s, err
		}
		in = string(out)
		if done {
			if _, err := conv.Step(in); err != nil {
				t.Fatalf("client does not accept the server's final message: %v", err)
			}
			if !conv.Valid() {
				t.Fatal("client finds the server signature invalid")
			}
			return s, nil
		}
	}
	t.Fatal("exchange did not end")
	return nil, nil
}

func TestScram(t *testing.T) {
	users := Static(testUsers(t))
	for _, tc := range []struct {
		mech, user, pass, authz, reason string
	}{
		{SCRAMSHA256, "alice", "alice-pw", "", ""},
		{SCRAMSHA512, "alice", "alice-pw", "", ""},
		{SCRAMSHA512, "bob", "bob-pw", "", ""},
		{SCRAMSHA256, "bob", "bob-pw", "", ReasonUnknownUser}, // bob has no SHA-256 credential
		{SCRAMSHA256, "alice", "wrong", "", ReasonBadPassword},
		{SCRAMSHA512, "alice", "bob-pw", "", ReasonBadPassword},
		{SCRAMSHA256, "carol", "x", "", ReasonUnknownUser},
		{SCRAMSHA256, "alice", "alice-pw", "admin", ReasonAuthzID},
	} {
		t.Run(tc.mech+"/"+tc.user+"/"+tc.pass+"/"+tc.authz, func(t *testing.T) {
			m, err := NewScram(tc.mech, users)
			if err != nil {
				t.Fatal(err)
			}
			s, err := runScram(t, m, tc.user, tc.pass, tc.authz)
			if tc.reason == "" {
				if err != nil || s.Principal() != tc.user {
					t.Fatalf("got %v, principal %q; want %q", err, s.Principal(), tc.user)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Reason != tc.reason || s.Principal() != "" {
				t.Fatalf("got %v, principal %q; want reason %s", err, s.Principal(), tc.reason)
			}
			if !strings.HasPrefix(ae.Message, "Authentication failed") {
				t.Fatalf("message %q is not Kafka's", ae.Message)
			}
		})
	}
}

func TestScramMalformed(t *testing.T) {
	m, _ := NewScram(SCRAMSHA256, Static(testUsers(t)))
	for _, tok := range []string{"", "garbage", "n,,n=alice", "p=tls-unique,,n=alice,r=abc"} {
		s := m.Start()
		_, done, err := s.Next(context.Background(), []byte(tok))
		if err == nil || done {
			t.Errorf("client-first %q accepted", tok)
		}
	}
	// A client-final that is not one.
	s := m.Start()
	if _, _, err := s.Next(context.Background(), []byte("n,,n=alice,r=abcdefgh")); err != nil {
		t.Fatal(err)
	}
	if _, done, err := s.Next(context.Background(), []byte("c=biws,r=wrong,p=AAAA")); err == nil || done {
		t.Error("a client-final with another nonce was accepted")
	}
}

func TestParseUsersErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"users: {alice: {plain: notahash}}", "users.alice.plain: not a bcrypt hash"},
		{"users: {alice: {}}", "users.alice: no credentials"},
		{"users: {alice: {scram-sha-256: {salt: 'c2FsdA==', iterations: 10, stored_key: 'AA==', server_key: 'AA=='}}}", "iterations 10"},
		{"users: {alice: {scram-sha-256: {salt: '!!', iterations: 4096, stored_key: 'AA==', server_key: 'AA=='}}}", "standard base64"},
		{"users: {alice: {plian: x}}", "unknown field"},
		{"userz: {}", "unknown field"},
	} {
		_, err := ParseUsers([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseUsers(%s) = %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "users.yaml")
	h, _ := bcrypt.GenerateFromPassword([]byte("pw1"), bcrypt.MinCost)
	if err := os.WriteFile(p, []byte("users: {alice: {plain: '"+string(h)+"'}}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WatchUsersFile(p, nil); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Fatalf("a world-readable users file was accepted: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	var reloadErrs []error
	src, err := WatchUsersFile(p, func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	auth := func(pw string) bool {
		_, done, err := NewPlain(src).Start().Next(context.Background(), []byte("\x00alice\x00"+pw))
		return done && err == nil
	}
	if !auth("pw1") {
		t.Fatal("pw1 refused")
	}
	// A broken rewrite keeps the old users, reported once.
	if err := os.WriteFile(p, []byte("users: [broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // twice: the broken version is reported once
		if !auth("pw1") {
			t.Fatal("after a broken rewrite, the previous users are gone")
		}
	}
	if len(reloadErrs) != 1 {
		t.Fatalf("reload errors %v, want exactly one", reloadErrs)
	}
	// A good rewrite (new password) takes effect.
	h2, _ := bcrypt.GenerateFromPassword([]byte("pw2"), bcrypt.MinCost)
	if err := os.WriteFile(p, []byte("users: {alice: {plain: '"+string(h2)+"'}}\n# rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if auth("pw1") || !auth("pw2") {
		t.Fatal("the rotated password did not take effect")
	}
}

// FuzzSessions: no token sequence panics a server session or authenticates
// without the right password.
func FuzzSessions(f *testing.F) {
	users := Static(testUsers(f))
	s256, _ := NewScram(SCRAMSHA256, users)
	idp := newIdP(f, f.TempDir())
	ob, err := NewOAuthBearer(OAuthConfig{JWKSFile: idp.jwks, Issuer: "https://idp.test", Audience: "kafka"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	mechs := []Mechanism{NewPlain(users), s256, ob}
	f.Add(uint8(0), []byte("\x00alice\x00x"), []byte(""))
	f.Add(uint8(1), []byte("n,,n=alice,r=abcdefgh"), []byte("c=biws,r=abcdefgh,p=AAAA"))
	f.Add(uint8(1), []byte("n=alice,r=x"), []byte("c=,r=,p="))
	f.Add(uint8(2), []byte("n,,\x01auth=Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA\x01\x01"), []byte("\x01"))
	f.Add(uint8(2), []byte("n,a=x,\x01auth=Bearer a.b.c\x01host=h\x01\x01"), []byte(""))
	f.Fuzz(func(t *testing.T, which uint8, a, b []byte) {
		s := mechs[int(which)%len(mechs)].Start()
		for _, tok := range [][]byte{a, b} {
			_, done, err := s.Next(context.Background(), tok)
			if err != nil {
				return
			}
			if done {
				t.Fatalf("authenticated as %q with fuzzed tokens %q %q", s.Principal(), a, b)
			}
		}
	})
}

// librdkafka's client-final message repeats the client nonce before the
// server's (r=<cnonce><cnonce+snonce>); Kafka accepts it, so must Strait.
// The message is built here as rdkafka_sasl_scram.c builds it.
func TestScramRepeatedNonce(t *testing.T) {
	users := Static(testUsers(t))
	m, _ := NewScram(SCRAMSHA256, users)
	run := func(pw, prefix string) (Session, []byte, error) {
		s := m.Start()
		cnonce := "b|_kY2S_J>5|;1IwFOc=HQ58ZSR.t5\\7"
		c1bare := "n=alice,r=" + cnonce
		s1b, _, err := s.Next(context.Background(), []byte("n,,"+c1bare))
		if err != nil {
			t.Fatal(err)
		}
		s1 := string(s1b)
		snonce, _ := attr(s1, "r")
		saltB64, _ := attr(s1, "s")
		salt, _ := base64.StdEncoding.DecodeString(saltB64)
		salted, _ := pbkdf2.Key(sha256.New, pw, salt, 4096, 32)
		mac := func(k []byte, msg string) []byte {
			h := hmac.New(sha256.New, k)
			h.Write([]byte(msg))
			return h.Sum(nil)
		}
		clientKey := mac(salted, "Client Key")
		stored := sha256.Sum256(clientKey)
		wop := "c=biws,r=" + prefix + snonce
		sig := mac(stored[:], c1bare+","+s1+","+wop)
		proof := make([]byte, len(sig))
		for i := range sig {
			proof[i] = clientKey[i] ^ sig[i]
		}
		out, done, err := s.Next(context.Background(), []byte(wop+",p="+base64.StdEncoding.EncodeToString(proof)))
		if err == nil && !done {
			t.Fatal("not done")
		}
		if err == nil {
			want := "v=" + base64.StdEncoding.EncodeToString(mac(mac(salted, "Server Key"), c1bare+","+s1+","+wop))
			if string(out) != want {
				t.Fatalf("server signature %q, want %q", out, want)
			}
		}
		return s, out, err
	}
	if s, _, err := run("alice-pw", "b|_kY2S_J>5|;1IwFOc=HQ58ZSR.t5\\7"); err != nil || s.Principal() != "alice" {
		t.Fatalf("librdkafka's repeated nonce: %v", err)
	}
	if _, _, err := run("alice-pw", ""); err != nil {
		t.Fatalf("the standard nonce: %v", err)
	}
	if _, _, err := run("wrong", "b|_kY2S_J>5|;1IwFOc=HQ58ZSR.t5\\7"); err == nil {
		t.Fatal("a wrong password with the repeated nonce was accepted")
	}
	if _, _, err := run("alice-pw", "other"); err == nil {
		t.Fatal("a nonce with another prefix was accepted")
	}
}
