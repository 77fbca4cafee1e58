package policy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

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

// Catalog is the data classification file: which fields of which topics
// carry which classifications, and what each classification does by
// default.
type Catalog struct {
	// Classifications map a classification ("PII/Financial") to its
	// defaults.
	Classifications map[string]Classification `json:"classifications,omitempty"`
	// Topics classify fields, first match wins.
	Topics []TopicFields `json:"topics,omitempty"`
}

// Classification is what a classification means.
type Classification struct {
	// Action applies to fields of this classification when the policy's
	// decision does not name them: clear (default), redact, mask,
	// tokenize or encrypted.
	Action string `json:"action,omitempty"`
	// KeepLast, for mask, keeps the last N characters.
	KeepLast int `json:"keep_last,omitempty"`
	// Description is for people.
	Description string `json:"description,omitempty"`
}

// TopicFields classifies the fields of the values of some topics.
type TopicFields struct {
	// Topics are names or globs.
	Topics []string `json:"topics"`
	// Format of the values: json (default), avro or protobuf (Confluent
	// wire format, with local writer schemas).
	Format string `json:"format,omitempty"`
	// Fields map a path ($.a.b, $.items[*].c) to its classifications.
	Fields map[string][]string `json:"fields"`
	// Schemas are the writer schemas of the values, by the schema id
	// producers put in the wire header (formats avro and protobuf).
	Schemas []Schema `json:"schemas,omitempty"`

	avro    map[int32]avro.Schema                 // parsed by check
	proto   map[int32]protoreflect.FileDescriptor // parsed by check
	reg     *fields.Registry                      // set by Load: schemas by id
	fromReg sync.Map                              // int32 -> avro.Schema | protoreflect.FileDescriptor
}

// avroSchema is the writer schema with id: local, else from the registry.
func (t *TopicFields) avroSchema(id int32) (avro.Schema, error) {
	if s, ok := t.avro[id]; ok {
		return s, nil
	}
	if v, ok := t.fromReg.Load(id); ok {
		return v.(avro.Schema), nil
	}
	if t.reg == nil {
		return nil, fmt.Errorf("%w: avro: no local schema with id %d and no schema_registry", fields.ErrSchema, id)
	}
	rs, err := t.reg.SchemaByID(int(id))
	if err != nil {
		return nil, err
	}
	s, err := fields.ParseAvroRegistrySchema(t.reg, rs)
	if err != nil {
		return nil, err
	}
	t.fromReg.Store(id, s)
	return s, nil
}

// protoFile is the schema with id: local, else from the registry.
func (t *TopicFields) protoFile(id int32) (protoreflect.FileDescriptor, error) {
	if fd, ok := t.proto[id]; ok {
		return fd, nil
	}
	if v, ok := t.fromReg.Load(id); ok {
		return v.(protoreflect.FileDescriptor), nil
	}
	if t.reg == nil {
		return nil, fmt.Errorf("%w: protobuf: no local schema with id %d and no schema_registry", fields.ErrSchema, id)
	}
	rs, err := t.reg.SchemaByID(int(id))
	if err != nil {
		return nil, err
	}
	fd, err := fields.ParseProtobufRegistrySchema(t.reg, rs, fmt.Sprintf("schema-%d.proto", id))
	if err != nil {
		return nil, err
	}
	t.fromReg.Store(id, fd)
	return fd, nil
}

// Schema is a local writer schema. Avro: the last file is the schema,
// earlier ones define named types it uses. Protobuf: one .proto file (its
// imports next to it) or a descriptor set, whose file Name the message
// indexes refer to (default: the last of the set).
type Schema struct {
	ID    int32    `json:"id"`
	Files []string `json:"files"`
	Name  string   `json:"name,omitempty"`
}

func (t *TopicFields) local() []fields.LocalAvro {
	out := make([]fields.LocalAvro, len(t.Schemas))
	for i, s := range t.Schemas {
		out[i] = fields.LocalAvro{ID: s.ID, Files: s.Files}
	}
	return out
}

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

// LoadCatalog reads and checks a catalog file. Errors name the path inside
// the file ("topics[0].fields[$.x]").
func LoadCatalog(file string) (*Catalog, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("catalog: %v", err)
	}
	return ParseCatalog(b, file)
}

// ParseCatalog parses catalog YAML or JSON; name prefixes errors.
func ParseCatalog(b []byte, name string) (*Catalog, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	var c Catalog
	if err := config.DecodeStrict(j, &c, name); err != nil {
		return nil, err
	}
	if errs := c.check(name); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

func (c *Catalog) check(prefix string) config.Errors {
	var errs config.Errors
	add := func(p, f string, a ...any) { errs = append(errs, prefix+"."+p+": "+fmt.Sprintf(f, a...)) }
	for name, cl := range c.Classifications {
		p := "classifications[" + name + "]"
		if name == "" {
			add(p, "empty classification name")
		}
		switch cl.Action {
		case "", actClear, actRedact, actMask, actTokenize, actEncrypted:
		default:
			add(p+".action", "%q: clear, redact, mask, tokenize or encrypted", cl.Action)
		}
		if cl.KeepLast < 0 {
			add(p+".keep_last", "must not be negative")
		}
	}
	for i := range c.Topics {
		t := &c.Topics[i]
		p := fmt.Sprintf("topics[%d]", i)
		if len(t.Topics) == 0 {
			add(p+".topics", "required")
		}
		for j, g := range t.Topics {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add(fmt.Sprintf("%s.topics[%d]", p, j), "%q is not a topic name or glob", g)
			}
		}
		switch t.Format {
		case "", "json":
			if len(t.Schemas) > 0 {
				add(p+".schemas", "only used with format avro")
			}
		case "avro":
			t.avro = map[int32]avro.Schema{}
			for j, sc := range t.Schemas {
				sp := fmt.Sprintf("%s.schemas[%d]", p, j)
				if len(sc.Files) == 0 {
					add(sp+".files", "required")
					continue
				}
				parsed, err := avro.ParseFiles(sc.Files...)
				if err != nil {
					add(sp, "%v", err)
					continue
				}
				var paths []string
				for fp := range t.Fields {
					paths = append(paths, fp)
				}
				if err := fields.CheckAvro(parsed, paths); err != nil {
					add(sp, "%v", err)
					continue
				}
				t.avro[sc.ID] = parsed
			}
		case "protobuf":
			t.proto = map[int32]protoreflect.FileDescriptor{}
			for j, sc := range t.Schemas {
				sp := fmt.Sprintf("%s.schemas[%d]", p, j)
				if len(sc.Files) != 1 {
					add(sp+".files", "one .proto file or descriptor set")
					continue
				}
				fd, err := fields.LoadProtobufFile(fields.LocalProtobuf{ID: sc.ID, File: sc.Files[0], Name: sc.Name})
				if err != nil {
					add(sp, "%v", err)
					continue
				}
				t.proto[sc.ID] = fd
			}
		default:
			add(p+".format", "%q: json, avro or protobuf", t.Format)
		}
		if len(t.Fields) == 0 {
			add(p+".fields", "required: path -> classifications")
		}
		var paths []string
		for fp, cls := range t.Fields {
			if _, err := fields.ParsePath(fp); err != nil {
				add(p+".fields["+fp+"]", "%v", err)
				continue
			}
			paths = append(paths, fp)
			if len(cls) == 0 {
				add(p+".fields["+fp+"]", "list at least one classification")
			}
			for _, cl := range cls {
				if _, ok := c.Classifications[cl]; !ok {
					add(p+".fields["+fp+"]", "classification %q is not defined under classifications", cl)
				}
			}
		}
		if len(paths) > 0 && t.Format != "avro" && t.Format != "protobuf" {
			if _, err := fields.NewJSON(paths); err != nil {
				add(p+".fields", "%v", err)
			}
		}
	}
	return errs
}

// topic returns the classified fields of topic, nil if none.
func (c *Catalog) topic(name string) *TopicFields {
	if c == nil {
		return nil
	}
	for i := range c.Topics {
		for _, g := range c.Topics[i].Topics {
			if g == name {
				return &c.Topics[i]
			}
			if ok, _ := path.Match(g, name); ok {
				return &c.Topics[i]
			}
		}
	}
	return nil
}

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
