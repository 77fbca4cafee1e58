package authswap

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/authswap/mapping"
	"github.com/strait-proxy/strait/config"
)

// Config is the authswap interceptor's configuration (the `config:` of its
// entry in `interceptors:`). Secrets are never inline: files (mode-checked)
// or environment variable names.
type Config struct {
	// MTLS maps a verified client certificate to the principal.
	MTLS *MTLSConfig `json:"mtls,omitempty"`
	// SASL terminates SASL from clients: Strait answers SaslHandshake and
	// SaslAuthenticate itself and forwards nothing until the client has
	// authenticated.
	SASL *SASLConfig `json:"sasl,omitempty"`
	// Credentials maps each principal to its upstream credentials. Without
	// it Strait does no upstream SASL (the cluster sees Strait's own
	// connections unauthenticated, or authenticated by upstream TLS).
	Credentials *CredentialsConfig `json:"credentials,omitempty"`
	// Upstream configures upstream SASL.
	Upstream UpstreamConfig `json:"upstream,omitempty"`
}

// MTLSConfig is downstream mTLS. The listener's client_ca_file makes Strait
// verify certificates (expired and unknown-CA certificates fail the TLS
// handshake); this block names the principal and checks revocation.
type MTLSConfig struct {
	// Required refuses connections without a verified client certificate.
	Required bool `json:"required,omitempty"`
	// PrincipalMappingRules in Kafka's ssl.principal.mapping.rules syntax
	// (default "DEFAULT": the subject DN as it is).
	PrincipalMappingRules string `json:"principal_mapping_rules,omitempty"`
	// Source is what the rules apply to: "subject" (default, RFC 2253
	// form), "san_dns", "san_uri" or "san_email" (the first such SAN).
	Source string `json:"source,omitempty"`
	// CRLFile is a PEM or DER CRL signed by the client certificates' CA;
	// revoked certificates are refused, and so is every certificate while
	// the CRL is past its next update (fail closed). Re-read on change.
	CRLFile string `json:"crl_file,omitempty"`
}

// SASLConfig is downstream SASL termination.
type SASLConfig struct {
	// Mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI,
	// OAUTHBEARER.
	Mechanisms []string `json:"mechanisms"`
	// UsersFile holds bcrypt hashes and SCRAM salted credentials
	// (sasl.Users); mode-checked, re-read on change. Required for PLAIN
	// and SCRAM.
	UsersFile string `json:"users_file,omitempty"`
	// GSSAPI configures Kerberos (required when GSSAPI is offered).
	GSSAPI *GSSAPIConfig `json:"gssapi,omitempty"`
	// OAuthBearer configures JWT checking (required when OAUTHBEARER is
	// offered).
	OAuthBearer *OAuthBearerConfig `json:"oauthbearer,omitempty"`
	// SessionLifetime, when set, is sent as KIP-368 session_lifetime_ms in
	// SaslAuthenticate v1+ so that clients re-authenticate that often.
	SessionLifetime config.Duration `json:"session_lifetime,omitempty"`
}

// GSSAPIConfig is the Kerberos acceptor.
type GSSAPIConfig struct {
	// KeytabFile holds the service principal's keys (mode-checked).
	KeytabFile string `json:"keytab_file"`
	// ServicePrincipal, e.g. "kafka/strait.example.com@EXAMPLE.COM" (the
	// realm defaults to the keytab's).
	ServicePrincipal string `json:"service_principal"`
	// StripRealm names the principal "client" instead of
	// "client@EXAMPLE.COM" (the realm stays in Attrs["realm"]).
	StripRealm bool `json:"strip_realm,omitempty"`
}

// OAuthBearerConfig checks OAUTHBEARER tokens as JWTs.
type OAuthBearerConfig struct {
	// JWKSFile holds the identity provider's public keys (a JSON Web Key
	// Set), re-read on change; or JWKSURL, where the provider publishes
	// them (fetched at start, every JWKSRefresh, default 5m, and when a
	// token names an unknown key id). Exactly one.
	JWKSFile    string          `json:"jwks_file,omitempty"`
	JWKSURL     string          `json:"jwks_url,omitempty"`
	JWKSRefresh config.Duration `json:"jwks_refresh,omitempty"`
	// Issuer (iss, exactly) and Audience (one of aud) tokens must carry.
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	// PrincipalClaim names the principal (default "sub").
	PrincipalClaim string `json:"principal_claim,omitempty"`
	// ClockSkew tolerated on exp, nbf, iat (default 30s).
	ClockSkew config.Duration `json:"clock_skew,omitempty"`
}

// CredentialsConfig names the store of upstream credentials: exactly one
// of File and Vault.
type CredentialsConfig struct {
	// File: a YAML file of principals (creds.File), mode-checked.
	File string `json:"file,omitempty"`
	// Vault KV version 2.
	Vault *creds.VaultConfig `json:"vault,omitempty"`
	// CacheTTL keeps a looked-up entry this long (default 5m; "0s" asks
	// the store for every connection). An entry the broker refused is
	// dropped at once, so a rotated secret is picked up by the next
	// connection.
	CacheTTL *config.Duration `json:"cache_ttl,omitempty"`
}

// UpstreamConfig is upstream SASL.
type UpstreamConfig struct {
	// Mechanism for entries that name none: PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM (default SCRAM-SHA-512).
	Mechanism string `json:"mechanism,omitempty"`
	// OAuth configures the token endpoint of OAUTHBEARER entries that have
	// client_id and client_secret (upstream_oauth.go).
	OAuth *UpstreamOAuthConfig `json:"oauth,omitempty"`
}

var (
	downstreamMechs = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"}
	upstreamMechs   = creds.Mechanisms
	sources         = []string{"subject", "san_dns", "san_uri", "san_email"}
)

// Validate fills defaults and returns every problem, each on its own line
// with its key path (relative to the interceptor's config).
func (c *Config) Validate() error {
	var errs []string
	add := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if c.MTLS == nil && c.SASL == nil && c.Credentials == nil {
		add("authswap: set at least one of mtls, sasl, credentials")
	}
	if m := c.MTLS; m != nil {
		if m.Source == "" {
			m.Source = "subject"
		}
		if !slices.Contains(sources, m.Source) {
			add("mtls.source: unknown %q (%s)", m.Source, strings.Join(sources, ", "))
		}
		if _, err := mapping.Parse(m.PrincipalMappingRules); err != nil {
			add("mtls.principal_mapping_rules: %v", err)
		}
	}
	if s := c.SASL; s != nil {
		if len(s.Mechanisms) == 0 {
			add("sasl.mechanisms: required (%s)", strings.Join(downstreamMechs, ", "))
		}
		seen := map[string]bool{}
		for i, m := range s.Mechanisms {
			switch {
			case !slices.Contains(downstreamMechs, m):
				add("sasl.mechanisms[%d]: unknown %q (%s)", i, m, strings.Join(downstreamMechs, ", "))
			case seen[m]:
				add("sasl.mechanisms[%d]: %s listed twice", i, m)
			}
			seen[m] = true
		}
		if s.UsersFile == "" && (seen["PLAIN"] || seen["SCRAM-SHA-256"] || seen["SCRAM-SHA-512"]) {
			add("sasl.users_file: required for PLAIN and SCRAM")
		}
		if seen["GSSAPI"] != (s.GSSAPI != nil) {
			add("sasl.gssapi: set it exactly when GSSAPI is among the mechanisms")
		}
		if seen["OAUTHBEARER"] != (s.OAuthBearer != nil) {
			add("sasl.oauthbearer: set it exactly when OAUTHBEARER is among the mechanisms")
		}
		if o := s.OAuthBearer; o != nil {
			if (o.JWKSFile == "") == (o.JWKSURL == "") {
				add("sasl.oauthbearer: exactly one of jwks_file, jwks_url")
			}
			if o.Issuer == "" {
				add("sasl.oauthbearer.issuer: required")
			}
			if o.Audience == "" {
				add("sasl.oauthbearer.audience: required")
			}
		}
		if g := s.GSSAPI; g != nil {
			if g.KeytabFile == "" {
				add("sasl.gssapi.keytab_file: required")
			}
			if g.ServicePrincipal == "" {
				add("sasl.gssapi.service_principal: required")
			}
		}
		if s.SessionLifetime.D() < 0 || (s.SessionLifetime.D() > 0 && s.SessionLifetime.D() < time.Second) {
			add("sasl.session_lifetime: at least 1s")
		}
	}
	if c.Upstream.Mechanism == "" {
		c.Upstream.Mechanism = "SCRAM-SHA-512"
	}
	if !slices.Contains(upstreamMechs, c.Upstream.Mechanism) {
		add("upstream.mechanism: unknown %q (%s)", c.Upstream.Mechanism, strings.Join(upstreamMechs, ", "))
	}
	if o := c.Upstream.OAuth; o != nil {
		o.validate(add)
	}
	if cr := c.Credentials; cr != nil {
		if (cr.File == "") == (cr.Vault == nil) {
			add("credentials: exactly one of file, vault")
		}
		if cr.Vault != nil {
			if err := cr.Vault.Validate(); err != nil {
				for _, l := range strings.Split(err.Error(), "\n") {
					add("credentials.vault.%s", l)
				}
			}
		}
		if cr.CacheTTL == nil {
			d := config.Duration(5 * time.Minute)
			cr.CacheTTL = &d
		}
		if cr.CacheTTL.D() < 0 {
			add("credentials.cache_ttl: must not be negative")
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}
