// Package awskms is the "aws-kms" key-management provider: data keys come
// from AWS KMS GenerateDataKey (KeySpec AES_256) and are unwrapped with
// Decrypt, through the official aws-sdk-go-v2 client. Credentials come from
// the SDK's default chain (environment, shared config/credentials files and
// profiles, web identity, ECS/EC2 roles).
//
// Wrapped is the CiphertextBlob exactly as AWS KMS returns it: it is
// self-describing (AWS embeds the key and the key-material version), so
// records wrapped before a key rotation keep decrypting.
package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/strait-proxy/strait/config/duration"
	"github.com/strait-proxy/strait/crypto/kms"
)

// Name is the provider kind in configuration.
const Name = "aws-kms"

// Defaults applied by Validate to zero fields.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = 1 * time.Second
)

// Config configures the aws-kms provider. Credentials are not part of it:
// they come from the SDK default chain (AWS_ACCESS_KEY_ID/
// AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws files,
// AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, ECS/EC2 instance roles).
type Config struct {
	// Region, e.g. "eu-west-1". Empty: the SDK chain's region (AWS_REGION,
	// profile); Validate does not require it, New fails without one.
	Region string `json:"region,omitempty"`
	// Endpoint overrides the KMS endpoint URL (VPC endpoint, FIPS
	// endpoint, a test double).
	Endpoint string `json:"endpoint,omitempty"`
	// Profile selects a shared-config profile (default: AWS_PROFILE or
	// "default").
	Profile string `json:"profile,omitempty"`
	// KeyID is used when a caller passes an empty key id: a key id, key
	// ARN, alias name ("alias/strait") or alias ARN.
	KeyID string `json:"key_id,omitempty"`
	// EncryptionContext is sent with every GenerateDataKey and Decrypt; AWS
	// binds it to the wrapped key (and logs it in CloudTrail). Changing it
	// makes existing wrapped keys undecryptable.
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	// Timeout bounds one provider call, retries included (default 5s).
	Timeout duration.Duration `json:"timeout,omitempty"`
	// MaxAttempts bounds SDK attempts per call, first one included
	// (default 3; 1 disables retries).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxBackoff caps the SDK's jittered backoff between attempts
	// (default 1s).
	MaxBackoff duration.Duration `json:"max_backoff,omitempty"`
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Timeout < 0 || c.MaxBackoff < 0 || c.MaxAttempts < 0 {
		return errors.New("aws-kms: timeout, max_backoff and max_attempts must not be negative")
	}
	if c.MaxAttempts > 10 {
		return errors.New("aws-kms: max_attempts must be at most 10")
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "https://") && !strings.HasPrefix(c.Endpoint, "http://") {
		return fmt.Errorf("aws-kms: endpoint %q must be an http(s) URL", c.Endpoint)
	}
	if c.Timeout == 0 {
		c.Timeout = duration.Duration(DefaultTimeout)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = duration.Duration(DefaultMaxBackoff)
	}
	return nil
}

// Provider implements kms.Provider on AWS KMS. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	client *awskms.Client
}

var _ kms.Provider = (*Provider)(nil)

// New loads the SDK default configuration (credentials are resolved lazily,
// on the first call) and returns a provider. It does not contact AWS.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = time.Duration(cfg.MaxBackoff)
				// No client-side retry quota: every call gets its bounded
				// attempts, so behaviour does not depend on past failures.
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = time.Duration(cfg.Timeout)
		})),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws-kms: loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("aws-kms: no region (set region in the config, AWS_REGION or the profile)")
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = credentialsMarker{awsCfg.Credentials}
	}
	client := awskms.NewFromConfig(awsCfg, func(o *awskms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return &Provider{cfg: cfg, client: client}, nil
}

// Name returns "aws-kms".
func (p *Provider) Name() string { return Name }

func (p *Provider) keyID(keyID string) (string, error) {
	if keyID == "" {
		keyID = p.cfg.KeyID
	}
	if keyID == "" {
		return "", fmt.Errorf("aws-kms: %w: no key id given and no default key_id configured", kms.ErrKeyNotFound)
	}
	return keyID, nil
}

// GenerateDataKey calls GenerateDataKey with KeySpec AES_256.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	keyID, err := p.keyID(keyID)
	if err != nil {
		return kms.DataKey{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	out, err := p.client.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId:             aws.String(keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: p.cfg.EncryptionContext,
	})
	if err != nil {
		return kms.DataKey{}, mapError("GenerateDataKey", keyID, err, kms.ErrKeyNotFound)
	}
	if len(out.Plaintext) != 32 || len(out.CiphertextBlob) == 0 {
		return kms.DataKey{}, fmt.Errorf("aws-kms: GenerateDataKey %s: %w: unexpected answer (%d-byte key, %d-byte blob)",
			keyID, kms.ErrUnavailable, len(out.Plaintext), len(out.CiphertextBlob))
	}
	return kms.DataKey{Plaintext: out.Plaintext, Wrapped: out.CiphertextBlob}, nil
}

// Decrypt calls Decrypt with the CiphertextBlob and KeyId, so AWS refuses
// (IncorrectKeyException) a blob that another key wrapped.
func (p *Provider) Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	keyID, err := p.keyID(keyID)
	if err != nil {
		return nil, err
	}
	if len(wrapped) == 0 || len(wrapped) > 6144 {
		return nil, fmt.Errorf("aws-kms: Decrypt %s: %w: %d-byte ciphertext blob", keyID, kms.ErrInvalidCiphertext, len(wrapped))
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	out, err := p.client.Decrypt(ctx, &awskms.DecryptInput{
		CiphertextBlob:    wrapped,
		KeyId:             aws.String(keyID),
		EncryptionContext: p.cfg.EncryptionContext,
	})
	if err != nil {
		return nil, mapError("Decrypt", keyID, err, kms.ErrInvalidCiphertext)
	}
	if len(out.Plaintext) != 32 {
		return nil, fmt.Errorf("aws-kms: Decrypt %s: %w: unwrapped key is %d bytes, want 32", keyID, kms.ErrInvalidCiphertext, len(out.Plaintext))
	}
	return out.Plaintext, nil
}

// mapError turns an SDK error into one wrapping exactly one kms sentinel
// (and the original error, for logs and errors.Is on context errors).
// Unknown client-side (4xx) API errors map to fallback: ErrKeyNotFound for
// GenerateDataKey (the key cannot be used as configured), ErrInvalidCiphertext
// for Decrypt (the only request-specific input is the blob).
func mapError(op, keyID string, err error, fallback error) error {
	sentinel := classify(err, fallback)
	return fmt.Errorf("aws-kms: %s %s: %w: %w", op, keyID, sentinel, err)
}

// credentialsMarker tags failures of the SDK credential chain so that
// classify can tell "no usable credentials" from a KMS answer.
type credentialsMarker struct{ aws.CredentialsProvider }

func (m credentialsMarker) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err}
	}
	return c, nil
}

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "retrieving AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

func classify(err error, fallback error) error {
	if s, ok := kms.Known(err); ok {
		return s
	}
	// Credentials could not be obtained: a missing or refused credential
	// source is a refusal; a credential endpoint (IMDS, STS, SSO) that
	// cannot be reached or is throttling is an outage.
	var ce *credentialsError
	if errors.As(err, &ce) {
		var ne net.Error
		if errors.As(ce.err, &ne) {
			return kms.ErrUnavailable
		}
		var apiErr smithy.APIError
		if errors.As(ce.err, &apiErr) && classify(ce.err, kms.ErrAccessDenied) == kms.ErrUnavailable {
			return kms.ErrUnavailable
		}
		return kms.ErrAccessDenied
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
			"LimitExceededException", "KMSInternalException", "DependencyTimeoutException",
			"KeyUnavailableException", "ServiceUnavailable", "ServiceUnavailableException",
			"InternalFailure", "InternalError", "RequestTimeout", "RequestTimeoutException",
			"CustomKeyStoreInvalidStateException", "CloudHsmClusterInvalidConfigurationException",
			"XksProxyUriUnreachableException", "XksProxyInvalidResponseException",
			"XksProxyVpcEndpointServiceNotFoundException":
			return kms.ErrUnavailable
		case "NotFoundException", "DisabledException", "KMSInvalidStateException",
			"InvalidArnException", "InvalidKeyUsageException", "UnsupportedOperationException":
			return kms.ErrKeyNotFound
		case "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
			"InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch",
			"IncompleteSignature", "IncompleteSignatureException", "MissingAuthenticationToken",
			"MissingAuthenticationTokenException", "ExpiredToken", "ExpiredTokenException",
			"RequestExpired", "InvalidGrantTokenException", "InvalidGrantIdException",
			"OptInRequired", "NotAuthorized":
			return kms.ErrAccessDenied
		case "InvalidCiphertextException", "IncorrectKeyException":
			return kms.ErrInvalidCiphertext
		}
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			switch s := re.HTTPStatusCode(); {
			case s >= 500, s == 429:
				return kms.ErrUnavailable
			case s == 401, s == 403:
				return kms.ErrAccessDenied
			}
		}
		if apiErr.ErrorFault() == smithy.FaultServer {
			return kms.ErrUnavailable
		}
		var se *v4.SigningError
		if errors.As(err, &se) { // e.g. STS refused the web identity token
			return kms.ErrAccessDenied
		}
		return fallback
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch s := re.HTTPStatusCode(); {
		case s == 401, s == 403:
			return kms.ErrAccessDenied
		case s >= 400 && s < 500 && s != 408 && s != 429:
			return fallback
		}
		return kms.ErrUnavailable
	}
	var se *v4.SigningError
	if errors.As(err, &se) {
		return kms.ErrAccessDenied
	}
	// Connection refused, reset, DNS, TLS handshake, retries exhausted on
	// any of those: the service could not be reached.
	return kms.ErrUnavailable
}
