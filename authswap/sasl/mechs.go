package sasl

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
	"golang.org/x/crypto/bcrypt"
)

// Mechanism names as Kafka spells them.
const (
	PLAIN       = "PLAIN"
	SCRAMSHA256 = "SCRAM-SHA-256"
	SCRAMSHA512 = "SCRAM-SHA-512"
)

// Kafka's messages (PlainServerCallbackHandler, SaslServerAuthenticator).
const (
	msgPlainBad = "Authentication failed: Invalid username or password"
	msgAuthzID  = "Authentication failed: Client requested an authorization id that is different from username"
)

func msgScramBad(mech string) string {
	return "Authentication failed during authentication due to invalid credentials with SASL mechanism " + mech
}

// dummyHash is compared against when the user is unknown, so that an
// unknown user costs as much as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("strait-not-a-user"), bcrypt.DefaultCost)

// NewPlain is SASL PLAIN (RFC 4616) against the bcrypt hashes of users.
func NewPlain(users UserSource) Mechanism { return plainMech{users} }

type plainMech struct{ users UserSource }

func (plainMech) Name() string { return PLAIN }
func (m plainMech) Start() Session {
	return &plainSession{users: m.users}
}

type plainSession struct {
	users     UserSource
	principal string
	used      bool
}

func (s *plainSession) Principal() string { return s.principal }

func (s *plainSession) Next(_ context.Context, in []byte) ([]byte, bool, error) {
	if s.used {
		return nil, false, errors.New("PLAIN: token after the exchange completed")
	}
	s.used = true
	parts := bytes.Split(in, []byte{0})
	if len(parts) != 3 {
		return nil, false, &AuthError{Message: "Authentication failed: Invalid SASL/PLAIN response: expected 3 tokens, got " + strconv.Itoa(len(parts)), Reason: ReasonMalformed}
	}
	authzid, user, pass := string(parts[0]), string(parts[1]), parts[2]
	switch {
	case user == "":
		return nil, false, &AuthError{Message: "Authentication failed: username not specified", Reason: ReasonMalformed}
	case len(pass) == 0:
		return nil, false, &AuthError{Message: "Authentication failed: password not specified", Reason: ReasonMalformed, User: user}
	case authzid != "" && authzid != user:
		return nil, false, &AuthError{Message: msgAuthzID, Reason: ReasonAuthzID, User: user}
	}
	u, ok := s.users().Lookup(user)
	if !ok || u.Plain == "" {
		_ = bcrypt.CompareHashAndPassword(dummyHash, pass)
		return nil, false, &AuthError{Message: msgPlainBad, Reason: ReasonUnknownUser, User: user}
	}
	if bcrypt.CompareHashAndPassword([]byte(u.Plain), pass) != nil {
		return nil, false, &AuthError{Message: msgPlainBad, Reason: ReasonBadPassword, User: user}
	}
	s.principal = user
	return []byte{}, true, nil
}

// NewScram is SCRAM-SHA-256 or SCRAM-SHA-512 against the stored salted
// credentials of users. Channel binding is not offered (Kafka has none).
func NewScram(mech string, users UserSource) (Mechanism, error) {
	h, err := scramHash(mech)
	if err != nil {
		return nil, err
	}
	return scramMech{name: mech, hash: h, users: users}, nil
}

type scramMech struct {
	name  string
	hash  scram.HashGeneratorFcn
	users UserSource
}

func (m scramMech) Name() string { return m.name }

func (m scramMech) Start() Session {
	s := &scramSession{mech: m.name, hash: m.hash}
	lookup := func(name string) (scram.StoredCredentials, error) {
		s.user = name
		u, ok := m.users().Lookup(name)
		var c *ScramCred
		if ok {
			c = u.ScramSHA256
			if m.name == SCRAMSHA512 {
				c = u.ScramSHA512
			}
		}
		if c == nil {
			s.unknown = true
			return scram.StoredCredentials{}, errors.New("unknown user")
		}
		sc, err := c.stored()
		s.cred = sc
		return sc, err
	}
	srv, _ := m.hash.NewServer(lookup) // fails only for a nil lookup
	s.conv = srv.NewConversation()
	return s
}

type scramSession struct {
	mech      string
	hash      scram.HashGeneratorFcn
	conv      *scram.ServerConversation
	user      string
	unknown   bool
	principal string
	finished  bool

	// For clients that repeat their nonce in the client-final message.
	c1, s1 string
	cred   scram.StoredCredentials
}

func (s *scramSession) Principal() string { return s.principal }

func (s *scramSession) fail(reason string, err error) ([]byte, bool, error) {
	s.finished = true
	return nil, false, &AuthError{Message: msgScramBad(s.mech), Reason: reason, User: s.user, Cause: scramCause(err)}
}

func (s *scramSession) Next(_ context.Context, in []byte) ([]byte, bool, error) {
	if s.finished || s.conv.Done() {
		return nil, false, errors.New(s.mech + ": token after the exchange completed")
	}
	if s.s1 != "" {
		if out, ok, err := s.repeatedNonceFinal(string(in)); ok {
			if err != nil {
				return s.fail(ReasonBadPassword, err)
			}
			return s.succeed(out, s.conv.Username(), s.conv.AuthzID())
		}
	}
	out, err := s.conv.Step(string(in))
	if err != nil {
		reason := ReasonBadPassword
		switch {
		case s.unknown:
			reason = ReasonUnknownUser
		case s.user == "":
			reason = ReasonMalformed
		}
		return s.fail(reason, err)
	}
	if !s.conv.Done() {
		s.c1, s.s1 = string(in), out
		return []byte(out), false, nil
	}
	if !s.conv.Valid() {
		return s.fail(ReasonBadPassword, errors.New("invalid proof"))
	}
	return s.succeed(out, s.conv.Username(), s.conv.AuthzID())
}

func (s *scramSession) succeed(out, user, authz string) ([]byte, bool, error) {
	s.finished = true
	if authz != "" && authz != user {
		return nil, false, &AuthError{Message: msgAuthzID, Reason: ReasonAuthzID, User: user}
	}
	s.principal = user
	return []byte(out), true, nil
}

// repeatedNonceFinal handles the client-final message of librdkafka (at
// least up to 2.x), which sends r=<client nonce><server nonce> although the
// server nonce already starts with the client nonce. Kafka's broker accepts
// it (ScramSaslServer checks that the nonce ends with the server's), so
// Strait must too; xdg-go/scram compares the nonce exactly. ok is false for
// any other message, which then goes to xdg-go/scram. The proof is checked
// as RFC 5802 says, over the message the client actually sent.
func (s *scramSession) repeatedNonceFinal(c2 string) (out string, ok bool, err error) {
	snonce, _ := attr(s.s1, "r")
	cnonce, _ := attr(s.c1[gs2Len(s.c1):], "r")
	r, _ := attr(c2, "r")
	if snonce == "" || cnonce == "" || r != cnonce+snonce {
		return "", false, nil
	}
	i := strings.LastIndex(c2, ",p=")
	if i < 0 {
		return "", true, errors.New("client-final-message without proof")
	}
	wop, proofB64 := c2[:i], c2[i+3:]
	cb, _ := attr(c2, "c")
	if cb != base64.StdEncoding.EncodeToString([]byte(s.c1[:gs2Len(s.c1)])) {
		return "", true, errors.New("channel binding mismatch")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil {
		return "", true, errors.New("proof is not base64")
	}
	authMsg := s.c1[gs2Len(s.c1):] + "," + s.s1 + "," + wop
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(s.hash, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	sig := mac(s.cred.StoredKey, authMsg)
	if len(proof) != len(sig) {
		return "", true, errors.New("challenge proof invalid")
	}
	clientKey := make([]byte, len(sig))
	for k := range sig {
		clientKey[k] = proof[k] ^ sig[k]
	}
	h := s.hash()
	h.Write(clientKey)
	if !hmac.Equal(h.Sum(nil), s.cred.StoredKey) {
		return "", true, errors.New("challenge proof invalid")
	}
	return "v=" + base64.StdEncoding.EncodeToString(mac(s.cred.ServerKey, authMsg)), true, nil
}

// gs2Len is the length of the GS2 header ("n,," or "n,a=authzid,") that
// starts a client-first message.
func gs2Len(c1 string) int {
	i := strings.IndexByte(c1, ',')
	if i < 0 {
		return 0
	}
	j := strings.IndexByte(c1[i+1:], ',')
	if j < 0 {
		return 0
	}
	return i + 1 + j + 1
}

// attr returns attribute k of a SCRAM message ("r=...,s=...").
func attr(msg, k string) (string, bool) {
	for _, f := range strings.Split(msg, ",") {
		if v, ok := strings.CutPrefix(f, k+"="); ok {
			return v, true
		}
	}
	return "", false
}

// scramCause keeps xdg-go/scram's reason for the log line ("challenge proof
// invalid", "nonce received did not match nonce sent", ...): it never holds
// key material, but may quote client input, so it is clipped.
func scramCause(err error) error {
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return errors.New(msg)
}
