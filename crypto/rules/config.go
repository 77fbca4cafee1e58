package rules

import (
	"fmt"
	"path"
	"strings"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/kms/awskms"
	"github.com/strait-proxy/strait/crypto/kms/pkcs11"
	"github.com/strait-proxy/strait/crypto/kms/vaulttransit"
)

// Config is the configuration shared by the encrypt and decrypt
// interceptors: the key stores and the rules that say which topics are
// encrypted, how, and under which key.
type Config struct {
	KMS   KMS    `json:"kms"`
	Rules []Rule `json:"rules"`
	// OnDecryptError: "error" (default: the partition gets an error, so
	// the consumer notices) or "leave-encrypted" (the record is passed on
	// still encrypted). A record is never silently dropped.
	OnDecryptError string `json:"on_decrypt_error,omitempty"`
	// BindTopic binds the topic name into each ciphertext (AES-GCM
	// additional data), so a ciphertext copied into another topic fails to
	// decrypt. Default true. Turn it off, or set a rule's source_topic, for
	// topics that are mirrored under another name.
	BindTopic *bool `json:"bind_topic,omitempty"`
	DEK       DEK   `json:"dek,omitempty"`
	// SchemaRegistry resolves Avro and Protobuf writer schemas by the id in
	// each value's Confluent wire header.
	SchemaRegistry *SchemaRegistry `json:"schema_registry,omitempty"`
	// Limits bound what one record batch may cost to read or rewrite.
	Limits Limits `json:"limits,omitempty"`
	// Catalog is the data classification catalog file (package catalog,
	// the file the policy interceptor reads), for rules that name
	// classifications instead of field paths.
	Catalog string `json:"catalog,omitempty"`
}

// Limits bound the work one record batch can cause (decompression and
// record-count bombs, growth from encryption). Zero values pick the
// defaults; a batch over a limit is refused for its partition only.
type Limits struct {
	// MaxDecompressedBytes bounds one batch's decompressed size (default
	// 64 MiB, records.DefaultMaxDecompressedBytes).
	MaxDecompressedBytes int `json:"max_decompressed_bytes,omitempty"`
	// MaxBatchBytes bounds one encrypted batch's records before
	// recompression (default 16 MiB, records.DefaultMaxBatchBytes). A batch
	// whose records could exceed it once encrypted (declared count times the
	// least an envelope adds) is refused from its header.
	MaxBatchBytes int `json:"max_batch_bytes,omitempty"`
	// MaxMessageBytes is the most bytes one encrypted record batch may
	// take (what the broker checks against max.message.bytes). 0 (the
	// default) learns it per topic from the cluster (DescribeConfigs:
	// the topic's max.message.bytes, else the broker's
	// message.max.bytes; 1,032,204 bytes if neither answers). An encrypted
	// batch that may exceed it is sent as several batches.
	MaxMessageBytes int `json:"max_message_bytes,omitempty"`
	// MaxMessageBytesRefresh is how long a learned limit is used before it
	// is asked for again (default 5m).
	MaxMessageBytesRefresh Duration `json:"max_message_bytes_refresh,omitempty"`
}

// KMS configures the key stores; rules name one by its key here.
type KMS struct {
	// Local is the embedded keyring (strait keys generate|rotate|list).
	Local *LocalKMS `json:"local,omitempty"`
	// AWS is AWS KMS. Credentials come from the SDK's default chain.
	AWS *awskms.Config `json:"aws-kms,omitempty"`
	// Vault is HashiCorp Vault's Transit engine.
	Vault *vaulttransit.Config `json:"vault-transit,omitempty"`
	// PKCS11 is a hardware security module (or SoftHSM2).
	PKCS11 *pkcs11.Config `json:"pkcs11,omitempty"`
}

// LocalKMS is the local keyring file.
type LocalKMS struct {
	Keyring string `json:"keyring"`
}

// DEK bounds the life of a cached plaintext data key.
type DEK struct {
	// MaxAge: a data key encrypts for at most this long (default 1h); on
	// the decrypt side, an unwrapped key is reused this long.
	MaxAge Duration `json:"max_age,omitempty"`
	// MaxUses: a data key encrypts at most this many values (default 2^20).
	MaxUses uint64 `json:"max_uses,omitempty"`
	// CacheSize bounds the decrypt-side cache of unwrapped keys (default 4096).
	CacheSize int `json:"cache_size,omitempty"`
	// UnwrapConcurrency bounds the KMS calls unwrapping data keys in flight
	// on the decrypt side (default 16). A record whose key would need one
	// more fails at once, retriable (KAFKA_STORAGE_ERROR).
	UnwrapConcurrency int `json:"unwrap_concurrency,omitempty"`
	// UnwrapRate bounds the KMS unwrap calls started per second, with a
	// burst of as many (default 100); past it, as above.
	UnwrapRate int `json:"unwrap_rate,omitempty"`
}

// SchemaRegistry is a Confluent-compatible Schema Registry.
type SchemaRegistry struct {
	URLs     []string `json:"urls"`
	Username string   `json:"username,omitempty"`
	// PasswordEnv names the environment variable holding the password:
	// secrets never sit in config files.
	PasswordEnv string `json:"password_env,omitempty"`
	CAFile      string `json:"ca_file,omitempty"`
	CertFile    string `json:"cert_file,omitempty"`
	KeyFile     string `json:"key_file,omitempty"`
}

// Rule says how records of matching topics are encrypted. The first rule
// whose topics match wins; records of topics no rule matches pass through
// byte for byte.
type Rule struct {
	// Topics are exact names or globs ("pay*", "orders.?.eu").
	Topics []string `json:"topics"`
	// KMS names the key store: local, aws-kms, vault-transit or pkcs11.
	// Default: the only one configured.
	KMS string `json:"kms,omitempty"`
	// KeyID is the key-encryption key in that store (keyring key name,
	// AWS key id/ARN/alias, Transit key name, PKCS#11 key label).
	KeyID string `json:"key_id"`
	// Format of the value: raw (default), json, avro or protobuf. Only
	// needed with Fields.
	Format string `json:"format,omitempty"`
	// Fields to encrypt ($.a.b, $.list[*].c). Empty (and no
	// Classifications): the whole value.
	Fields []string `json:"fields,omitempty"`
	// Classifications to encrypt, instead of Fields: every field the
	// catalog (Config.Catalog) gives one of these classifications, in the
	// catalog entry of the record's topic, whose format and schemas apply.
	Classifications []string `json:"classifications,omitempty"`
	// EncryptKey encrypts the record key too (whole). Note that the broker
	// partitions and compacts by the encrypted key.
	EncryptKey bool `json:"encrypt_key,omitempty"`
	// Schemas are local writer schemas for avro/protobuf values.
	Schemas []Schema `json:"schemas,omitempty"`
	// SourceTopic is the topic name bound into ciphertexts when reading a
	// mirrored copy of a topic (e.g. MirrorMaker's "east.customers" holds
	// records written to "customers").
	SourceTopic string `json:"source_topic,omitempty"`
}

// Schema is a local writer schema and the id producers put in the wire
// header.
type Schema struct {
	ID int32 `json:"id"`
	// Files: for Avro, .avsc files (the last is the schema, earlier ones
	// define named types it uses); for Protobuf, one .proto file or a
	// compiled descriptor set.
	Files []string `json:"files"`
	// Message (Protobuf, descriptor sets) names the file whose messages the
	// wire message indexes refer to.
	Message string `json:"message,omitempty"`
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration = config.Duration

func (c *Config) providers() []string {
	var out []string
	if c.KMS.Local != nil {
		out = append(out, "local")
	}
	if c.KMS.AWS != nil {
		out = append(out, "aws-kms")
	}
	if c.KMS.Vault != nil {
		out = append(out, "vault-transit")
	}
	if c.KMS.PKCS11 != nil {
		out = append(out, "pkcs11")
	}
	return out
}

// warnings lists, per key store, what is accepted but insecure (an inline
// secret, TLS verification off); logged at start.
func (c *Config) warnings() []string {
	var out []string
	if c.KMS.Vault != nil {
		for _, w := range c.KMS.Vault.Warnings() {
			out = append(out, "kms.vault-transit: "+w)
		}
	}
	if c.KMS.PKCS11 != nil {
		for _, w := range c.KMS.PKCS11.Warnings() {
			out = append(out, "kms.pkcs11: "+w)
		}
	}
	return out
}

// validate checks what can be checked without files or the network.
func (c *Config) validate() []string {
	var errs []string
	add := func(p, f string, a ...any) { errs = append(errs, p+": "+fmt.Sprintf(f, a...)) }
	provs := c.providers()
	if len(provs) == 0 {
		add("kms", "configure at least one key store: local, aws-kms, vault-transit or pkcs11")
	}
	if c.KMS.Local != nil && c.KMS.Local.Keyring == "" {
		add("kms.local.keyring", "required: the keyring file (create one with `strait keys generate`)")
	}
	if c.KMS.AWS != nil {
		if err := c.KMS.AWS.Validate(); err != nil {
			add("kms.aws-kms", "%v", err)
		}
	}
	if c.KMS.Vault != nil {
		if err := c.KMS.Vault.Validate(); err != nil {
			add("kms.vault-transit", "%v", err)
		}
	}
	if c.KMS.PKCS11 != nil {
		if err := c.KMS.PKCS11.Validate(); err != nil {
			add("kms.pkcs11", "%v", err)
		}
	}
	if c.DEK.UnwrapConcurrency < 0 {
		add("dek.unwrap_concurrency", "must not be negative")
	}
	if c.DEK.UnwrapRate < 0 {
		add("dek.unwrap_rate", "must not be negative")
	}
	if c.Limits.MaxDecompressedBytes < 0 {
		add("limits.max_decompressed_bytes", "must not be negative")
	}
	if c.Limits.MaxBatchBytes < 0 {
		add("limits.max_batch_bytes", "must not be negative")
	}
	if c.Limits.MaxMessageBytes < 0 || c.Limits.MaxMessageBytes > 0 && c.Limits.MaxMessageBytes < 1024 {
		add("limits.max_message_bytes", "must be 0 (learn it from the cluster) or at least 1024")
	}
	if c.Limits.MaxMessageBytesRefresh < 0 {
		add("limits.max_message_bytes_refresh", "must not be negative")
	}
	switch c.OnDecryptError {
	case "", "error", "leave-encrypted":
	default:
		add("on_decrypt_error", "%q: error or leave-encrypted", c.OnDecryptError)
	}
	if len(c.Rules) == 0 {
		add("rules", "at least one rule is required")
	}
	for i, r := range c.Rules {
		p := fmt.Sprintf("rules[%d]", i)
		if len(r.Topics) == 0 {
			add(p+".topics", "required")
		}
		for j, t := range r.Topics {
			if _, err := path.Match(t, ""); err != nil || t == "" {
				add(fmt.Sprintf("%s.topics[%d]", p, j), "%q is not a topic name or glob", t)
			}
		}
		if r.KeyID == "" {
			add(p+".key_id", "required")
		}
		kmsName := r.KMS
		if kmsName == "" && len(provs) == 1 {
			kmsName = provs[0]
		}
		if kmsName == "" {
			add(p+".kms", "required when several key stores are configured (%s)", strings.Join(provs, ", "))
		} else if !contains(provs, kmsName) {
			add(p+".kms", "%q is not configured under kms (configured: %s)", kmsName, strings.Join(provs, ", "))
		}
		if len(r.Classifications) > 0 {
			if c.Catalog == "" {
				add(p+".classifications", "need catalog: the data classification catalog file that defines them")
			}
			if len(r.Fields) > 0 {
				add(p+".classifications", "a rule names fields or classifications, not both")
			}
			if r.Format != "" || len(r.Schemas) > 0 {
				add(p+".classifications", "format and schemas come from the catalog entry of each topic: remove them from the rule")
			}
			for j, cl := range r.Classifications {
				if cl == "" {
					add(fmt.Sprintf("%s.classifications[%d]", p, j), "empty classification")
				}
			}
			continue
		}
		switch r.Format {
		case "", "raw":
			if len(r.Fields) > 0 {
				add(p+".format", "fields need a format: json, avro or protobuf")
			}
		case "json":
		case "avro", "protobuf":
			if len(r.Fields) > 0 && len(r.Schemas) == 0 && c.SchemaRegistry == nil {
				add(p+".schemas", "%s fields need writer schemas: list local schema files or configure schema_registry", r.Format)
			}
		default:
			add(p+".format", "%q: raw, json, avro or protobuf", r.Format)
		}
		if len(r.Fields) == 0 && len(r.Schemas) > 0 {
			add(p+".schemas", "schemas are only used with fields")
		}
	}
	return errs
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// matches reports whether topic matches one of the rule's names or globs.
func (r *Rule) matches(topic string) bool { return matchAny(r.Topics, topic) }

// matchAny reports whether topic is one of names or matches one of them as
// a glob.
func matchAny(names []string, topic string) bool {
	for _, t := range names {
		if t == topic {
			return true
		}
		if ok, _ := path.Match(t, topic); ok {
			return true
		}
	}
	return false
}

// Files are the files an interceptor built from c reads (the local
// keyring, local schemas): the binary reloads the configuration when one of
// them changes, so a rotated keyring takes effect without a restart.
func (c Config) Files() []string {
	var out []string
	if c.KMS.Local != nil {
		out = append(out, c.KMS.Local.Keyring)
	}
	if c.Catalog != "" {
		out = append(out, c.Catalog)
	}
	for _, r := range c.Rules {
		for _, s := range r.Schemas {
			out = append(out, s.Files...)
		}
	}
	return out
}
