// Package upsasl authenticates a fresh upstream connection with SASL, as
// one principal: SaslHandshake v1 then SaslAuthenticate (KIP-152) with
// PLAIN, SCRAM-SHA-256/512 (github.com/xdg-go/scram client) or OAUTHBEARER
// (RFC 7628, a static token). Every message is a kmsg message sent through
// interceptor.Upstream.RoundTrip.
package upsasl

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/xdg-go/scram"

	"github.com/strait-proxy/strait/interceptor"
)

// Error is a failed upstream authentication. Reason is a metric label:
// "unsupported_mechanism", "handshake", "rejected" (the broker refused the
// credentials: it answered an error or closed the connection), "protocol".
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "upstream SASL: " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Result is what the broker said about the session.
type Result struct {
	// SessionLifetimeMs is the broker's KIP-368 session lifetime (0: none).
	SessionLifetimeMs int64
}

// Credentials to present. Secrets are never put into errors.
type Credentials struct {
	Mechanism, Username, Password, Token string
}

// Authenticate runs the SASL exchange on up, which no client request has
// used yet.
func Authenticate(ctx context.Context, up interceptor.Upstream, c Credentials) (Result, error) {
	steps, err := start(c)
	if err != nil {
		return Result{}, &Error{Reason: "unsupported_mechanism", Err: err}
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = c.Mechanism
	r, err := up.RoundTrip(ctx, hs)
	if err != nil {
		return Result{}, &Error{Reason: "handshake", Err: fmt.Errorf("SaslHandshake: %w", err)}
	}
	hr := r.(*kmsg.SASLHandshakeResponse)
	if hr.ErrorCode != 0 {
		return Result{}, &Error{Reason: "unsupported_mechanism", Err: fmt.Errorf("broker refused mechanism %s: %v (it offers %v)", c.Mechanism, kerr.ErrorForCode(hr.ErrorCode), hr.SupportedMechanisms)}
	}
	var res Result
	var in []byte
	for i := 0; ; i++ {
		out, last, err := steps(in)
		if err != nil {
			return Result{}, &Error{Reason: "protocol", Err: fmt.Errorf("%s step %d: %w", c.Mechanism, i+1, err)}
		}
		if out == nil { // the mechanism checked the final server message
			return res, nil
		}
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.SetVersion(1)
		req.SASLAuthBytes = out
		r, err := up.RoundTrip(ctx, req)
		if err != nil {
			// kfake and brokers close the connection on bad credentials.
			return Result{}, &Error{Reason: "rejected", Err: fmt.Errorf("SaslAuthenticate (%s as %q): %w", c.Mechanism, c.Username, err)}
		}
		ar := r.(*kmsg.SASLAuthenticateResponse)
		if ar.ErrorCode != 0 {
			msg := ""
			if ar.ErrorMessage != nil {
				msg = ": " + *ar.ErrorMessage
			}
			return Result{}, &Error{Reason: "rejected", Err: fmt.Errorf("broker refused %s as %q: %v%s", c.Mechanism, c.Username, kerr.ErrorForCode(ar.ErrorCode), msg)}
		}
		res.SessionLifetimeMs = ar.SessionLifetimeMillis
		in = ar.SASLAuthBytes
		if last {
			return res, nil
		}
	}
}

// start returns the client side of the mechanism: each call takes the
// server's last token and returns the next client token; last says no
// server token follows that needs checking; out == nil ends the exchange.
func start(c Credentials) (func(in []byte) (out []byte, last bool, err error), error) {
	switch c.Mechanism {
	case "PLAIN":
		if c.Username == "" || c.Password == "" {
			return nil, errors.New("PLAIN needs a username and a password")
		}
		return func([]byte) ([]byte, bool, error) {
			return []byte("\x00" + c.Username + "\x00" + c.Password), true, nil
		}, nil
	case "OAUTHBEARER":
		if c.Token == "" {
			return nil, errors.New("OAUTHBEARER needs a token")
		}
		return func([]byte) ([]byte, bool, error) {
			return []byte("n,,\x01auth=Bearer " + c.Token + "\x01\x01"), true, nil
		}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		var h scram.HashGeneratorFcn = func() hash.Hash { return sha256.New() }
		if c.Mechanism == "SCRAM-SHA-512" {
			h = func() hash.Hash { return sha512.New() }
		}
		cl, err := h.NewClient(c.Username, c.Password, "")
		if err != nil {
			return nil, fmt.Errorf("%s: %v", c.Mechanism, errors.New("username or password is not valid SASLprep"))
		}
		conv := cl.NewConversation()
		step := 0
		return func(in []byte) ([]byte, bool, error) {
			step++
			out, err := conv.Step(string(in))
			if err != nil {
				return nil, false, errors.New("the broker's SCRAM message is invalid or its signature does not verify")
			}
			if conv.Done() {
				if !conv.Valid() {
					return nil, false, errors.New("the broker's SCRAM signature does not verify")
				}
				return nil, false, nil
			}
			return []byte(out), false, nil
		}, nil
	}
	return nil, fmt.Errorf("unknown mechanism %q", c.Mechanism)
}
