// Package sasl is the server side of the SASL mechanisms Strait terminates
// for Kafka clients: PLAIN against bcrypt hashes and SCRAM-SHA-256/512
// (RFC 5802, RFC 7677, with github.com/xdg-go/scram) against stored salted
// credentials. Every mechanism is a Mechanism that starts a Session per
// authentication; a Session is stepped with the client's tokens until done.
// Kerberos (GSSAPI) plugs in as one more Mechanism with the same step
// interface.
package sasl

import (
	"context"
	"errors"
)

// Session is one server-side SASL exchange.
type Session interface {
	// Next takes the client's next token and returns the token to send
	// back. done reports that the exchange is over and Principal is set. An
	// error ends the exchange; an *AuthError says the client failed to
	// authenticate (and what to tell it), any other error is a malformed
	// exchange.
	Next(ctx context.Context, in []byte) (out []byte, done bool, err error)
	// Principal is the authenticated name, once Next reported done.
	Principal() string
}

// Mechanism starts sessions of one SASL mechanism.
type Mechanism interface {
	Name() string
	Start() Session
}

// AttrSession is a Session that also reports facts about the client
// (Kerberos realm, ...) for interceptor.Principal.Attrs. Never secrets.
type AttrSession interface {
	Session
	Attrs() map[string]string
}

// Func adapts a start function to Mechanism, for acceptors whose Start
// returns a concrete session type (the GSSAPI acceptor):
//
//	sasl.Func("GSSAPI", func() sasl.Session { return acceptor.Start() })
func Func(name string, start func() Session) Mechanism { return funcMech{name, start} }

type funcMech struct {
	name  string
	start func() Session
}

func (f funcMech) Name() string   { return f.name }
func (f funcMech) Start() Session { return f.start() }

// AuthError is a failed authentication: Message goes to the client in the
// SaslAuthenticate error_message (KIP-152), Reason is a metric label.
type AuthError struct {
	Message string
	Reason  string // unknown_user, bad_password, authzid, malformed
	User    string // the name the client claimed, for the log line; may be empty
	// Cause is the mechanism's own error, for the log line (never
	// secrets); nil for the built-in mechanisms.
	Cause error
}

func (e *AuthError) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

// Failure reasons.
const (
	ReasonUnknownUser = "unknown_user"
	ReasonBadPassword = "bad_password"
	ReasonAuthzID     = "authzid"
	ReasonMalformed   = "malformed"
)

// AsAuthError returns err as an *AuthError; other errors become a
// "malformed" AuthError with a generic message (their text may carry
// client input, so it stays in the log, not on the wire).
func AsAuthError(mech string, err error) *AuthError {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae
	}
	return &AuthError{Message: "Authentication failed during authentication due to invalid credentials with SASL mechanism " + mech, Reason: ReasonMalformed}
}
