package upsasl

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeBroker is an interceptor.Upstream that answers SaslHandshake and
// SaslAuthenticate in process, as a broker offering mechs would, handing
// every client message to auth. It stands in for MSK, which cannot run
// here; what is checked is the client side: the messages Strait sends.
type fakeBroker struct {
	host  string
	mechs []string
	auth  func(msg []byte) (reply []byte, code int16)
	seen  [][]byte
}

func (b *fakeBroker) ServerName() string { return b.host }

func (b *fakeBroker) RoundTrip(_ context.Context, req kmsg.Request) (kmsg.Response, error) {
	switch r := req.(type) {
	case *kmsg.SASLHandshakeRequest:
		resp := kmsg.NewPtrSASLHandshakeResponse()
		resp.SupportedMechanisms = b.mechs
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		for _, m := range b.mechs {
			if m == r.Mechanism {
				resp.ErrorCode = 0
			}
		}
		return resp, nil
	case *kmsg.SASLAuthenticateRequest:
		b.seen = append(b.seen, append([]byte(nil), r.SASLAuthBytes...))
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		resp.SASLAuthBytes, resp.ErrorCode = b.auth(r.SASLAuthBytes)
		if resp.ErrorCode != 0 {
			msg := "Authentication failed"
			resp.ErrorMessage = &msg
		}
		return resp, nil
	}
	return nil, errors.New("unexpected request")
}

const (
	mskHost   = "b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com"
	awsKeyID  = "AKIAIOSFODNN7EXAMPLE"
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	awsToken  = "FwoGZXIvYXdzEXAMPLE+session/token=="
)

// verifySigV4 checks an AWS_MSK_IAM client message against the format
// documented by aws-msk-iam-auth: the fields, and a signature that
// aws-sdk-go-v2's own SigV4 presigner computes over the same request
// (GET https://<host>/?Action=kafka-cluster:Connect, service kafka-cluster,
// 900 s) with secret.
func verifySigV4(t *testing.T, msg []byte, secret, sessionToken string) error {
	t.Helper()
	var p map[string]string
	if err := json.Unmarshal(msg, &p); err != nil {
		return err
	}
	want := map[string]string{"version": "2020_10_22", "host": mskHost, "action": "kafka-cluster:Connect",
		"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-expires": "900", "x-amz-signedheaders": "host"}
	for k, v := range want {
		if p[k] != v {
			return errors.New(k + " is " + p[k] + ", want " + v)
		}
	}
	ts, err := time.Parse("20060102T150405Z", p["x-amz-date"])
	if err != nil {
		return err
	}
	if cred := awsKeyID + "/" + ts.Format("20060102") + "/eu-west-1/kafka-cluster/aws4_request"; p["x-amz-credential"] != cred {
		return errors.New("credential scope " + p["x-amz-credential"] + ", want " + cred)
	}
	if p["x-amz-security-token"] != sessionToken {
		return errors.New("session token differs")
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+mskHost+"/?Action=kafka-cluster%3AConnect&X-Amz-Expires=900", nil)
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: awsKeyID, SecretAccessKey: secret, SessionToken: sessionToken}, req, emptySHA256, "kafka-cluster", "eu-west-1", ts)
	if err != nil {
		return err
	}
	u, _ := url.Parse(signed)
	if got := u.Query().Get("X-Amz-Signature"); got == "" || got != p["x-amz-signature"] {
		return errors.New("signature " + p["x-amz-signature"] + " is not aws-sdk-go-v2's " + got)
	}
	return nil
}

func TestAWSMSKIAM(t *testing.T) {
	for _, tok := range []string{"", awsToken} {
		b := &fakeBroker{host: mskHost, mechs: []string{"AWS_MSK_IAM"}, auth: func([]byte) ([]byte, int16) {
			return []byte(`{"version":"2020_10_22","request-id":"9b3c2f0e"}`), 0
		}}
		_, err := Authenticate(context.Background(), b, Credentials{Mechanism: "AWS_MSK_IAM",
			AWS: AWSCredentials{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret, SessionToken: tok, UserAgent: "strait-test"}})
		if err != nil {
			t.Fatalf("session token %q: %v", tok, err)
		}
		if len(b.seen) != 1 {
			t.Fatalf("%d SaslAuthenticate messages, want 1", len(b.seen))
		}
		if err := verifySigV4(t, b.seen[0], awsSecret, tok); err != nil {
			t.Fatalf("session token %q: the client message is not a valid SigV4 signature: %v\n%s", tok, err, b.seen[0])
		}
		// The check can fail: the same message does not verify with another secret.
		if err := verifySigV4(t, b.seen[0], awsSecret+"x", tok); err == nil {
			t.Fatal("the signature verified with a wrong secret: the check proves nothing")
		}
		if strings.Contains(string(b.seen[0]), awsSecret) {
			t.Fatal("the secret key is in the message")
		}
	}
}

func TestAWSMSKIAMRefused(t *testing.T) {
	b := &fakeBroker{host: mskHost, mechs: []string{"AWS_MSK_IAM"}, auth: func([]byte) ([]byte, int16) {
		return nil, kerr.SaslAuthenticationFailed.Code
	}}
	_, err := Authenticate(context.Background(), b, Credentials{Mechanism: "AWS_MSK_IAM", AWS: AWSCredentials{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret}})
	var ue *Error
	if !errors.As(err, &ue) || ue.Reason != "rejected" {
		t.Fatalf("broker error: %v, want reason rejected", err)
	}
	if strings.Contains(err.Error(), awsSecret) {
		t.Fatalf("the error shows the secret: %v", err)
	}
	// A broker without the mechanism, and credentials without a secret.
	b.mechs = []string{"SCRAM-SHA-512"}
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "AWS_MSK_IAM", AWS: AWSCredentials{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret}}); !errors.As(err, &ue) || ue.Reason != "unsupported_mechanism" {
		t.Fatalf("broker without AWS_MSK_IAM: %v", err)
	}
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "AWS_MSK_IAM", AWS: AWSCredentials{AccessKeyID: awsKeyID}}); !errors.As(err, &ue) || ue.Reason != "unsupported_mechanism" {
		t.Fatalf("no secret key: %v", err)
	}
	// A host with no region, and no AWS_REGION: refused before anything is sent.
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	b = &fakeBroker{host: "kafka.internal", mechs: []string{"AWS_MSK_IAM"}, auth: func([]byte) ([]byte, int16) { return []byte("{}"), 0 }}
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "AWS_MSK_IAM", AWS: AWSCredentials{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret}}); !errors.As(err, &ue) || ue.Reason != "protocol" || len(b.seen) != 0 {
		t.Fatalf("no region: %v (sent %d messages)", err, len(b.seen))
	}
}

// OAUTHBEARER through franz-go's client: a broker that refuses the token
// answers an RFC 7628 error challenge; the client's %x01 then gets
// SASL_AUTHENTICATION_FAILED, which is a refusal (a static-token client
// that stopped at the challenge would have called it a success).
func TestOAuthBearerErrorChallenge(t *testing.T) {
	b := &fakeBroker{host: "broker", mechs: []string{"OAUTHBEARER"}, auth: func(msg []byte) ([]byte, int16) {
		if string(msg) == "\x01" {
			return nil, kerr.SaslAuthenticationFailed.Code
		}
		return []byte(`{"status":"invalid_token"}`), 0
	}}
	_, err := Authenticate(context.Background(), b, Credentials{Mechanism: "OAUTHBEARER", Token: "tok-e5d1"})
	var ue *Error
	if !errors.As(err, &ue) || ue.Reason != "rejected" {
		t.Fatalf("error challenge: %v, want reason rejected", err)
	}
	if len(b.seen) != 2 || string(b.seen[0]) != "n,,\x01auth=Bearer tok-e5d1\x01\x01" {
		t.Fatalf("messages sent: %q", b.seen)
	}
	b.seen = nil
	b.auth = func([]byte) ([]byte, int16) { return nil, 0 }
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "OAUTHBEARER", Token: "tok-e5d1"}); err != nil || len(b.seen) != 1 {
		t.Fatalf("accepted token: %v, %d messages", err, len(b.seen))
	}
}
