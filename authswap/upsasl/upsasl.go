// Package upsasl authenticates a fresh upstream connection with SASL, as
// one principal: SaslHandshake v1 then SaslAuthenticate (KIP-152) with
// PLAIN, SCRAM-SHA-256/512 (github.com/xdg-go/scram client), OAUTHBEARER
// (RFC 7628, franz-go's pkg/sasl/oauth client; a static token or one from an
// OAuth 2.0 client-credentials token endpoint, see OAuthTokens) or
// AWS_MSK_IAM (franz-go's pkg/sasl/aws client: a SigV4-signed JSON message).
// Every message is a kmsg message sent through interceptor.Upstream.RoundTrip.
package upsasl

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"net"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	ksasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/xdg-go/scram"

	"github.com/strait-proxy/strait/interceptor"
)

// Error is a failed upstream authentication. Reason is a metric label:
// "unsupported_mechanism", "handshake", "rejected" (the broker refused the
// credentials: it answered an error or closed the connection), "protocol",
// "token_refused" (the OAuth token endpoint refused the client),
// "token_unavailable" (the token endpoint could not be reached or answered
// garbage).
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
	Mechanism, Username, Password string
	// Token is a static OAUTHBEARER token; without it, TokenSource gives one
	// per connection.
	Token       string
	TokenSource TokenSource
	// AWS signs AWS_MSK_IAM.
	AWS AWSCredentials
}

// TokenSource gives an OAUTHBEARER token; its errors are *Error.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// invalidator is a TokenSource that can drop a token the broker refused.
type invalidator interface{ Invalidate() }

// Authenticate runs the SASL exchange on up, which no client request has
// used yet.
func Authenticate(ctx context.Context, up interceptor.Upstream, c Credentials) (Result, error) {
	if c.Mechanism == "OAUTHBEARER" && c.Token == "" && c.TokenSource != nil {
		tok, err := c.TokenSource.Token(ctx)
		if err != nil {
			var ue *Error
			if !errors.As(err, &ue) {
				err = &Error{Reason: "token_unavailable", Err: err}
			}
			return Result{}, err
		}
		c.Token = tok
		res, err := authenticate(ctx, up, c)
		var ue *Error
		if inv, ok := c.TokenSource.(invalidator); ok && errors.As(err, &ue) && ue.Reason == "rejected" {
			inv.Invalidate() // the next connection gets a fresh token
		}
		return res, err
	}
	return authenticate(ctx, up, c)
}

func authenticate(ctx context.Context, up interceptor.Upstream, c Credentials) (Result, error) {
	steps, err := start(c, up.ServerName())
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
func start(c Credentials, host string) (func(in []byte) (out []byte, last bool, err error), error) {
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
		return franzSteps(oauth.Auth{Token: c.Token}.AsMechanism(), host)
	case "AWS_MSK_IAM":
		if c.AWS.AccessKeyID == "" || c.AWS.SecretAccessKey == "" {
			return nil, errors.New("AWS_MSK_IAM needs an access key id and a secret access key")
		}
		return franzSteps(c.AWS.mechanism(), host)
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

// franzSteps adapts a franz-go client mechanism (sasl.Mechanism and its
// Session) to start's step function: the first call returns the client's
// first message, each later one hands the server's answer to
// Session.Challenge.
func franzSteps(m ksasl.Mechanism, host string) (func(in []byte) ([]byte, bool, error), error) {
	var sess ksasl.Session
	return func(in []byte) ([]byte, bool, error) {
		if sess == nil {
			s, first, err := m.Authenticate(context.Background(), net.JoinHostPort(host, "0"))
			if err != nil {
				return nil, false, err
			}
			sess = s
			return first, false, nil
		}
		done, out, err := sess.Challenge(in)
		if err != nil {
			return nil, false, err
		}
		if done {
			return nil, false, nil
		}
		return out, false, nil
	}, nil
}
