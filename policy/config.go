package policy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/strait-proxy/strait/catalog"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/fields"
)

// Name is the interceptor's name in the registry.
const Name = "policy"

// DefaultQuery is the rule whose value is the decision for one record.
const DefaultQuery = "data.strait.decision"

// Config configures the policy interceptor.
type Config struct {
	// Policies are .rego files or directories of them (read recursively;
	// *_test.rego files are left to `strait policy test`).
	Policies []string `json:"policies,omitempty"`
	// Bundle is an OPA bundle: a directory or a .tar.gz file (its data.json
	// files become data.*, its manifest revision the policy revision).
	Bundle string `json:"bundle,omitempty"`
	// Query is the rule that holds the decision (default data.strait.decision).
	Query string `json:"query,omitempty"`
	// Catalog is the data classification file (YAML or JSON).
	Catalog string `json:"catalog,omitempty"`
	// OnError says what happens to a record the policy could not decide
	// (evaluation error, timeout, no decision, malformed decision): "drop"
	// (default) or "redact" (every classified field redacted). Never allow.
	OnError string `json:"on_error,omitempty"`
	// PerRecord forces (true) or forbids (false) per-record evaluation.
	// Unset: decided from the input paths the policy reads.
	PerRecord *bool `json:"per_record,omitempty"`
	// CacheSize bounds the decision cache (entries; default 65536).
	CacheSize int `json:"cache_size,omitempty"`
	// EvalTimeout bounds one evaluation (default 100ms).
	EvalTimeout config.Duration `json:"eval_timeout,omitempty"`
	// Tokenize configures the tokenize action.
	Tokenize *Tokenize `json:"tokenize,omitempty"`
	// Audit configures the audit log.
	Audit *Audit `json:"audit,omitempty"`
	// SchemaRegistry resolves Avro and Protobuf writer schemas by the id
	// in each value's wire header, for catalog topics without local
	// schemas (or ids they do not list).
	SchemaRegistry *SchemaRegistry `json:"schema_registry,omitempty"`
	// Produce also decides Produce requests (input.operation "produce"):
	// a partition holding a record the decision drops is refused with
	// POLICY_VIOLATION.
	Produce bool `json:"produce,omitempty"`
}

// SchemaRegistry is a Confluent-compatible Schema Registry.
type SchemaRegistry struct {
	URLs     []string `json:"urls"`
	Username string   `json:"username,omitempty"`
	// PasswordEnv names the environment variable holding the password.
	PasswordEnv string `json:"password_env,omitempty"`
	CAFile      string `json:"ca_file,omitempty"`
}

func (c *SchemaRegistry) registry() (*fields.Registry, error) {
	rc := fields.RegistryConfig{URLs: c.URLs, Username: c.Username}
	if c.PasswordEnv != "" {
		rc.Password = os.Getenv(c.PasswordEnv)
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("schema_registry.ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("schema_registry.ca_file: no certificates in %s", c.CAFile)
		}
		rc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return fields.NewRegistry(rc)
}

// Tokenize is the key of the tokenize action.
type Tokenize struct {
	// KeyEnv names an environment variable holding the key, hex encoded
	// (32 bytes). Secrets never sit in config files.
	KeyEnv string `json:"key_env,omitempty"`
	// KeyFile is a file holding the hex key.
	KeyFile string `json:"key_file,omitempty"`
	// FF1 tokenizes strings of 6 or more digits format-preserving (NIST SP
	// 800-38G FF1, radix 10) instead of with an HMAC token. Default true.
	FF1 *bool `json:"ff1,omitempty"`
}

// Audit is where audit lines go.
type Audit struct {
	// Output: "stdout", "stderr" or a file path (appended to).
	Output string `json:"output"`
	// MaxSizeMB rotates the file when it would grow past this size:
	// FILE becomes FILE.1, FILE.1 FILE.2, ... (0: no rotation).
	MaxSizeMB int `json:"max_size_mb,omitempty"`
	// MaxFiles is how many rotated files are kept (default 5).
	MaxFiles int `json:"max_files,omitempty"`
}

// The catalog lives in package catalog (one file for policy and encrypt);
// these names keep the policy API as it was.
type (
	// Catalog is the data classification file (package catalog).
	Catalog = catalog.Catalog
	// Classification is what a classification means.
	Classification = catalog.Classification
	// TopicFields classifies the fields of the values of some topics.
	TopicFields = catalog.Topic
	// Schema is a local writer schema.
	Schema = catalog.Schema
)

func (c *Config) validate() config.Errors {
	var errs config.Errors
	add := func(p, f string, a ...any) { errs = append(errs, p+": "+fmt.Sprintf(f, a...)) }
	if len(c.Policies) == 0 && c.Bundle == "" {
		add("policies", "required: .rego files or directories (or a bundle)")
	}
	for i, p := range c.Policies {
		if p == "" {
			add(fmt.Sprintf("policies[%d]", i), "empty path")
		}
	}
	if c.Query != "" && !strings.HasPrefix(c.Query, "data.") {
		add("query", "%q: must be a rule under data, such as data.strait.decision", c.Query)
	}
	switch c.OnError {
	case "", "drop", "redact":
	default:
		add("on_error", "%q: drop or redact (a record the policy cannot decide is never allowed through)", c.OnError)
	}
	if c.CacheSize < 0 {
		add("cache_size", "must not be negative")
	}
	if c.EvalTimeout < 0 {
		add("eval_timeout", "must not be negative")
	}
	if t := c.Tokenize; t != nil {
		if (t.KeyEnv == "") == (t.KeyFile == "") {
			add("tokenize", "set one of key_env or key_file")
		}
	}
	if r := c.SchemaRegistry; r != nil && len(r.URLs) == 0 {
		add("schema_registry.urls", "required")
	}
	if a := c.Audit; a != nil {
		if a.Output == "" {
			add("audit.output", "required: stdout, stderr or a file path")
		}
		if a.MaxSizeMB < 0 || a.MaxFiles < 0 {
			add("audit", "max_size_mb and max_files must not be negative")
		}
		if a.MaxSizeMB > 0 && (a.Output == "stdout" || a.Output == "stderr") {
			add("audit.max_size_mb", "only a file is rotated")
		}
	}
	return errs
}

// tokenKey reads the tokenization key.
func (t *Tokenize) key() ([]byte, error) {
	var s, where string
	if t.KeyEnv != "" {
		s, where = os.Getenv(t.KeyEnv), "tokenize.key_env: $"+t.KeyEnv
		if s == "" {
			return nil, fmt.Errorf("%s is not set", where)
		}
	} else {
		b, err := os.ReadFile(t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tokenize.key_file: %v", err)
		}
		s, where = string(b), "tokenize.key_file"
	}
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%s: want 32 bytes, hex encoded (64 characters)", where)
	}
	return k, nil
}

// LoadCatalog reads and checks a catalog file ([catalog.Load]).
func LoadCatalog(file string) (*Catalog, error) { return catalog.Load(file) }

// ParseCatalog parses catalog YAML or JSON ([catalog.Parse]); name
// prefixes errors.
func ParseCatalog(b []byte, name string) (*Catalog, error) { return catalog.Parse(b, name) }

// CheckOrder checks the chain order rule of docs/identity.md: policy must
// be listed before decrypt, so that on the Fetch response path (last to
// first) it runs after decryption and decides on clear values. names are
// the interceptor names in config order.
func CheckOrder(names []string) config.Errors {
	pol, dec := -1, -1
	for i, n := range names {
		switch n {
		case Name:
			if pol < 0 {
				pol = i
			}
		case "decrypt":
			if dec < 0 {
				dec = i
			}
		}
	}
	if pol >= 0 && dec >= 0 && pol > dec {
		return config.Errors{fmt.Sprintf("interceptors[%d].name: policy must be listed before decrypt (interceptors[%d]): responses run last to first, so policy must see decrypted records", pol, dec)}
	}
	return nil
}
