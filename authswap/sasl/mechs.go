package sasl

import (
	"bytes"
	"context"
	"errors"
	"strconv"

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
	s := &scramSession{mech: m.name}
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
		return c.stored()
	}
	srv, _ := m.hash.NewServer(lookup) // fails only for a nil lookup
	s.conv = srv.NewConversation()
	return s
}

type scramSession struct {
	mech      string
	conv      *scram.ServerConversation
	user      string
	unknown   bool
	principal string
}

func (s *scramSession) Principal() string { return s.principal }

func (s *scramSession) Next(_ context.Context, in []byte) ([]byte, bool, error) {
	if s.conv.Done() {
		return nil, false, errors.New(s.mech + ": token after the exchange completed")
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
		return nil, false, &AuthError{Message: msgScramBad(s.mech), Reason: reason, User: s.user}
	}
	if !s.conv.Done() {
		return []byte(out), false, nil
	}
	if !s.conv.Valid() {
		return nil, false, &AuthError{Message: msgScramBad(s.mech), Reason: ReasonBadPassword, User: s.user}
	}
	if z := s.conv.AuthzID(); z != "" && z != s.conv.Username() {
		return nil, false, &AuthError{Message: msgAuthzID, Reason: ReasonAuthzID, User: s.user}
	}
	s.principal = s.conv.Username()
	return []byte(out), true, nil
}
