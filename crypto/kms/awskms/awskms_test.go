package awskms

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/strait-proxy/strait/config/duration"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/internal/kmsdouble"
)

// These tests run the official aws-sdk-go-v2 KMS client against
// internal/kmsdouble, an in-process test double of the AWS KMS JSON 1.1 API:
// AWS KMS itself cannot run here.

func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSTRAITTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_ROLE_ARN", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
}

func setup(t *testing.T, mod func(*Config)) (*kmsdouble.AWSKMS, *Provider, string) {
	t.Helper()
	awsEnv(t)
	d := kmsdouble.NewAWSKMS()
	t.Cleanup(d.Close)
	_, arn := d.CreateKey("alias/strait")
	cfg := Config{
		Region:      "us-east-1",
		Endpoint:    d.URL(),
		Timeout:     duration.Duration(3 * time.Second),
		MaxAttempts: 2,
		MaxBackoff:  duration.Duration(20 * time.Millisecond),
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, p, arn
}

func TestRoundTripAndKeyIDForms(t *testing.T) {
	d, p, arn := setup(t, func(c *Config) { c.KeyID = "alias/strait" })
	if p.Name() != "aws-kms" {
		t.Fatalf("Name() = %q", p.Name())
	}
	ctx := context.Background()
	keyID := arn[len(arn)-36:]
	for _, id := range []string{arn, keyID, "alias/strait", "arn:aws:kms:us-east-1:111122223333:alias/strait", ""} {
		dk, err := p.GenerateDataKey(ctx, id)
		if err != nil {
			t.Fatalf("GenerateDataKey(%q): %v", id, err)
		}
		if len(dk.Plaintext) != 32 {
			t.Fatalf("plaintext is %d bytes", len(dk.Plaintext))
		}
		if bytes.Contains(dk.Wrapped, dk.Plaintext) {
			t.Fatal("wrapped key contains the plaintext key")
		}
		for _, did := range []string{id, arn} {
			pt, err := p.Decrypt(ctx, did, dk.Wrapped)
			if err != nil {
				t.Fatalf("Decrypt(%q): %v", did, err)
			}
			if !bytes.Equal(pt, dk.Plaintext) {
				t.Fatal("round trip changed the key")
			}
		}
		if len(dk.Wrapped) != 184 {
			t.Fatalf("wrapped DEK is %d bytes; AWS KMS (and the double) give 184", len(dk.Wrapped))
		}
	}
	if n := d.Calls("GenerateDataKey"); n != 5 {
		t.Fatalf("GenerateDataKey reached the double %d times, want 5", n)
	}
}

func TestRotationOldKeysStillDecrypt(t *testing.T) {
	d, p, arn := setup(t, nil)
	ctx := context.Background()
	before, err := p.GenerateDataKey(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	// Rotate through the SDK, as an operator would (RotateKeyOnDemand).
	if _, err := p.client.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	after, err := p.GenerateDataKey(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before.Wrapped[40:72], after.Wrapped[40:72]) {
		t.Fatal("rotation did not change the key material used")
	}
	for _, dk := range []kms.DataKey{before, after} {
		pt, err := p.Decrypt(ctx, arn, dk.Wrapped)
		if err != nil || !bytes.Equal(pt, dk.Plaintext) {
			t.Fatalf("decrypt after rotation: %v", err)
		}
	}
	_ = d
}

func TestErrorMapping(t *testing.T) {
	ctx := context.Background()
	type tc struct {
		name    string
		prepare func(d *kmsdouble.AWSKMS, arn string) (keyID string)
		op      string // "gen" or "dec"
		want    error
	}
	cases := []tc{
		{"unknown key", func(d *kmsdouble.AWSKMS, arn string) string { return "alias/nope" }, "gen", kms.ErrKeyNotFound},
		{"unknown key id", func(d *kmsdouble.AWSKMS, arn string) string {
			return "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000"
		}, "gen", kms.ErrKeyNotFound},
		{"disabled key gen", func(d *kmsdouble.AWSKMS, arn string) string { d.SetKeyState(arn, "Disabled"); return arn }, "gen", kms.ErrKeyNotFound},
		{"disabled key dec", func(d *kmsdouble.AWSKMS, arn string) string { d.SetKeyState(arn, "Disabled"); return arn }, "dec", kms.ErrKeyNotFound},
		{"pending deletion", func(d *kmsdouble.AWSKMS, arn string) string { d.SetKeyState(arn, "PendingDeletion"); return arn }, "dec", kms.ErrKeyNotFound},
		{"access denied gen", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultDeny); return arn }, "gen", kms.ErrAccessDenied},
		{"access denied dec", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultDeny); return arn }, "dec", kms.ErrAccessDenied},
		{"unrecognized client", func(d *kmsdouble.AWSKMS, arn string) string { d.AllowAccessKeys("AKIDOTHER"); return arn }, "gen", kms.ErrAccessDenied},
		{"throttling gen", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultThrottle); return arn }, "gen", kms.ErrUnavailable},
		{"throttling dec", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultThrottle); return arn }, "dec", kms.ErrUnavailable},
		{"5xx gen", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.Fault5xx); return arn }, "gen", kms.ErrUnavailable},
		{"5xx dec", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.Fault5xx); return arn }, "dec", kms.ErrUnavailable},
		{"down gen", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultDown); return arn }, "gen", kms.ErrUnavailable},
		{"down dec", func(d *kmsdouble.AWSKMS, arn string) string { d.SetFault(kmsdouble.FaultDown); return arn }, "dec", kms.ErrUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, p, arn := setup(t, nil)
			dk, err := p.GenerateDataKey(ctx, arn)
			if err != nil {
				t.Fatal(err)
			}
			keyID := c.prepare(d, arn)
			if c.op == "gen" {
				_, err = p.GenerateDataKey(ctx, keyID)
			} else {
				_, err = p.Decrypt(ctx, keyID, dk.Wrapped)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for _, other := range []error{kms.ErrUnavailable, kms.ErrKeyNotFound, kms.ErrAccessDenied, kms.ErrInvalidCiphertext} {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("%v also matches %v", err, other)
				}
			}
			t.Logf("%v", err)
		})
	}
}

func TestRetriesAreBounded(t *testing.T) {
	d, p, arn := setup(t, func(c *Config) { c.MaxAttempts = 3 })
	d.SetFault(kmsdouble.FaultThrottle)
	_, err := p.GenerateDataKey(context.Background(), arn)
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatal(err)
	}
	if n := d.Calls("GenerateDataKey"); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	// One throttled answer, then success: the SDK retry absorbs it.
	d.FailNext(kmsdouble.Fault5xx, 1)
	if _, err := p.GenerateDataKey(context.Background(), arn); err != nil {
		t.Fatalf("a single 5xx was not retried: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	d, p, arn := setup(t, func(c *Config) { c.Timeout = duration.Duration(300 * time.Millisecond) })
	dk, err := p.GenerateDataKey(context.Background(), arn)
	if err != nil {
		t.Fatal(err)
	}
	d.SetFault(kmsdouble.FaultHang)
	start := time.Now()
	_, err = p.Decrypt(context.Background(), arn, dk.Wrapped)
	if !errors.Is(err, kms.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("configured timeout not honoured: %v", el)
	}
	// A caller deadline shorter than the configured timeout wins.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = p.GenerateDataKey(ctx, arn)
	if !errors.Is(err, kms.ErrUnavailable) || time.Since(start) > 3*time.Second {
		t.Fatalf("caller deadline: %v after %v", err, time.Since(start))
	}
	d.SetFault(kmsdouble.FaultNone)
	if _, err := p.Decrypt(context.Background(), arn, dk.Wrapped); err != nil {
		t.Fatalf("after the hang cleared: %v", err)
	}
}

func TestDownThenBackUp(t *testing.T) {
	d, p, arn := setup(t, nil)
	d.SetFault(kmsdouble.FaultDown)
	if _, err := p.GenerateDataKey(context.Background(), arn); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("down: %v", err)
	}
	d.SetFault(kmsdouble.FaultNone)
	if _, err := p.GenerateDataKey(context.Background(), arn); err != nil {
		t.Fatalf("back up: %v", err)
	}
}

func TestTamperAndWrongKey(t *testing.T) {
	d, p, arn := setup(t, nil)
	ctx := context.Background()
	dk, err := p.GenerateDataKey(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 5, 45, 72, 100, 124, 140, len(dk.Wrapped) - 1} {
		bad := bytes.Clone(dk.Wrapped)
		bad[i] ^= 0x01
		if _, err := p.Decrypt(ctx, arn, bad); !errors.Is(err, kms.ErrInvalidCiphertext) {
			t.Fatalf("flip byte %d: got %v", i, err)
		}
	}
	if _, err := p.Decrypt(ctx, arn, dk.Wrapped[:50]); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := p.Decrypt(ctx, arn, nil); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("empty: %v", err)
	}
	_, other := d.CreateKey("alias/other")
	if _, err := p.Decrypt(ctx, other, dk.Wrapped); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("blob of another key: %v", err)
	}
}

func TestEncryptionContextIsBound(t *testing.T) {
	d, p, arn := setup(t, func(c *Config) { c.EncryptionContext = map[string]string{"app": "strait"} })
	dk, err := p.GenerateDataKey(context.Background(), arn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Decrypt(context.Background(), arn, dk.Wrapped); err != nil {
		t.Fatal(err)
	}
	p2, err := New(context.Background(), Config{Region: "us-east-1", Endpoint: d.URL(), EncryptionContext: map[string]string{"app": "other"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Decrypt(context.Background(), arn, dk.Wrapped); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("other context: %v", err)
	}
}

func TestNoCredentialsIsAccessDenied(t *testing.T) {
	d, _, arn := setup(t, nil)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	p, err := New(context.Background(), Config{Region: "us-east-1", Endpoint: d.URL(), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.GenerateDataKey(context.Background(), arn)
	if !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
}

func TestConfigValidate(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Timeout != duration.Duration(DefaultTimeout) || c.MaxAttempts != DefaultMaxAttempts || c.MaxBackoff != duration.Duration(DefaultMaxBackoff) {
		t.Fatalf("defaults not applied: %+v", c)
	}
	for _, bad := range []Config{{Endpoint: "kms.local"}, {MaxAttempts: 11}, {Timeout: -1}} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	if _, err := os.Stat("/nonexistent"); err == nil {
		t.Skip()
	}
}
