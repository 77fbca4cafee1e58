// Package encrypt is Strait's envelope-encryption interceptors: "encrypt"
// seals record values (whole, or chosen JSON/Avro/Protobuf fields) and keys
// on Produce; "decrypt" opens them on Fetch and ShareFetch. Both fail closed:
// a record a rule covers never reaches the broker in clear, and a record
// that cannot be decrypted is never passed off as plaintext or dropped.
package encrypt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/awskms"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/kms/pkcs11"
	"github.com/strait-proxy/strait/crypto/kms/vaulttransit"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/burstlog"
	"github.com/strait-proxy/strait/records"
	"github.com/strait-proxy/strait/topicid"
)

// Names in the interceptor registry.
const (
	EncryptName = "encrypt"
	DecryptName = "decrypt"
)

// Env is what the interceptors need from the process.
type Env struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// Topics resolves topic ids (Produce/Fetch v13+) to names.
	Topics *topicid.Names
	// Providers, when set, replace the key stores of Config.KMS (tests use
	// it to inject a provider).
	Providers []kms.Provider
}

// engine is what both interceptors share: rules, key stores, caches.
type engine struct {
	log       *slog.Logger
	topics    *topicid.Names
	rules     []*rule
	sealers   map[string]*envelope.Sealer
	opener    *envelope.Opener
	providers []kms.Provider
	bindTopic bool
	leaveEnc  bool
	rw        records.Rewriter // Fetch side: tolerant of partial batches
	m         *metrics
	burst     *burstlog.Logger
	limits    *sizeLimits // Produce side: the batch size each topic takes
}

type rule struct {
	Rule
	kms    string
	walker fields.Walker    // nil: whole value
	rw     records.Rewriter // Produce side: strict (nothing may pass unseen), growth bounded
}

// minWrappedDEK is the least a wrapped 256-bit data key takes with any
// provider: AES key wrap adds 8 bytes to the 32 (PKCS#11: 43 bytes, local
// and Vault: 62 and more, AWS: about 184).
const minWrappedDEK = 40

// minGrowth is the least an encrypted record of r grows by: the strait.enc
// header plus one envelope of an empty plaintext (whole value or key), or,
// for fields, the key reference header plus one detached envelope.
func (r *rule) minGrowth() int {
	whole := envelope.HeaderOverhead(envelope.PartValue) + envelope.Overhead(len(r.KeyID), minWrappedDEK, 0)
	if r.walker == nil {
		return whole
	}
	fieldsGrowth := envelope.HeaderOverhead(envelope.PartFields) +
		1 + len(envelope.KeyRefHeader) + 1 + len(r.KeyID) + minWrappedDEK + envelope.DetachedOverhead(0)
	if r.EncryptKey {
		return min(whole, fieldsGrowth)
	}
	return fieldsGrowth
}

// NewEncrypt builds the encrypt interceptor (Produce).
func NewEncrypt(cfg Config, env Env) (*interceptor.Interceptor, error) {
	e, err := newEngine(cfg, env)
	if err != nil {
		return nil, err
	}
	return &interceptor.Interceptor{
		Name:  EncryptName,
		Files: cfg.files(),
		Hooks: []interceptor.Hook{
			{Key: 0, MaxVersion: interceptor.Latest, Request: e.sealProduce, Response: e.mergeProduceFailures},
		},
		Close: e.close,
	}, nil
}

// NewDecrypt builds the decrypt interceptor (Fetch, ShareFetch).
func NewDecrypt(cfg Config, env Env) (*interceptor.Interceptor, error) {
	e, err := newEngine(cfg, env)
	if err != nil {
		return nil, err
	}
	return &interceptor.Interceptor{
		Name:  DecryptName,
		Files: cfg.files(),
		Hooks: []interceptor.Hook{
			{Key: 1, MaxVersion: interceptor.Latest, Response: e.openFetch},
			{Key: 78, MaxVersion: interceptor.Latest, Response: e.openShareFetch},
		},
		// Below Fetch v4 a broker down-converts to message sets, which
		// have no headers: strait.enc would vanish and the consumer get
		// envelope bytes with no error. Strait neither advertises nor
		// forwards those versions while decrypt is on.
		Requires: []interceptor.VersionRange{{Key: 1, Min: 4, Max: math.MaxInt16}},
		Close:    e.close,
	}, nil
}

func newEngine(cfg Config, env Env) (*engine, error) {
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := env.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	e := &engine{
		log: log, topics: env.Topics,
		sealers:   make(map[string]*envelope.Sealer),
		bindTopic: cfg.BindTopic == nil || *cfg.BindTopic,
		leaveEnc:  cfg.OnDecryptError == "leave-encrypted",
		// Decryption only shrinks records: a rebuilt Fetch batch is never
		// larger than what the broker sent, so max_batch_bytes (a bound on
		// growth) does not apply to it.
		rw: records.Rewriter{MaxDecompressedBytes: cfg.Limits.MaxDecompressedBytes, MaxBatchBytes: math.MaxInt32},
		m:  newMetrics(reg),
	}
	e.burst = burstlog.New(log)
	for _, w := range cfg.warnings() {
		log.Warn("insecure key store configuration", "warning", w)
	}
	if e.topics == nil {
		e.topics = topicid.New()
	}
	e.limits = newSizeLimits(cfg.Limits, e.topics.Cluster)
	provs := env.Providers
	if provs == nil {
		var err error
		if provs, err = openProviders(cfg.KMS); err != nil {
			return nil, err
		}
	}
	e.providers = provs
	for _, p := range provs {
		s, err := envelope.NewSealer(p, envelope.SealerOptions{
			MaxAge: time.Duration(cfg.DEK.MaxAge), MaxUses: cfg.DEK.MaxUses, NoTopicBinding: !e.bindTopic,
		})
		if err != nil {
			e.close()
			return nil, err
		}
		e.sealers[p.Name()] = s
	}
	op, err := envelope.NewOpener(provs, envelope.OpenerOptions{
		MaxEntries: cfg.DEK.CacheSize, MaxAge: time.Duration(cfg.DEK.MaxAge),
		MaxConcurrentUnwraps: cfg.DEK.UnwrapConcurrency, UnwrapRate: cfg.DEK.UnwrapRate,
		OnThrottle: e.m.unwrapThrottled.Inc,
	})
	if err != nil {
		e.close()
		return nil, err
	}
	e.opener = op

	var reg2 *fields.Registry
	if sr := cfg.SchemaRegistry; sr != nil {
		if reg2, err = newRegistry(sr); err != nil {
			e.close()
			return nil, fmt.Errorf("schema_registry: %w", err)
		}
	}
	var localKeys map[string]bool // key ids in the local keyring, to check rules early
	if cfg.KMS.Local != nil && env.Providers == nil {
		infos, err := local.List(cfg.KMS.Local.Keyring)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("kms.local: %w", err)
		}
		localKeys = make(map[string]bool)
		for _, k := range infos {
			localKeys[k.ID] = true
		}
	}
	for i, r := range cfg.Rules {
		cr := &rule{Rule: r, kms: r.KMS}
		if cr.kms == "" {
			cr.kms = provs[0].Name()
		}
		if cr.kms == local.Name && localKeys != nil && !localKeys[r.KeyID] {
			e.close()
			return nil, fmt.Errorf("rules[%d].key_id: %q is not in the keyring %s (strait keys generate --keyring %s --key %s)",
				i, r.KeyID, cfg.KMS.Local.Keyring, cfg.KMS.Local.Keyring, r.KeyID)
		}
		if _, ok := e.sealers[cr.kms]; !ok {
			e.close()
			return nil, fmt.Errorf("rules[%d].kms: %q is not configured", i, cr.kms)
		}
		if len(r.Fields) > 0 {
			if cr.walker, err = newWalker(r, reg2); err != nil {
				e.close()
				return nil, fmt.Errorf("rules[%d]: %w", i, err)
			}
		}
		cr.rw = records.Rewriter{
			Strict:               true,
			MaxDecompressedBytes: cfg.Limits.MaxDecompressedBytes,
			MaxBatchBytes:        cfg.Limits.MaxBatchBytes,
			MinGrowth:            cr.minGrowth(),
		}
		e.rules = append(e.rules, cr)
	}
	return e, nil
}

func newWalker(r Rule, reg *fields.Registry) (fields.Walker, error) {
	switch r.Format {
	case "json":
		return fields.NewJSON(r.Fields)
	case "avro":
		c := fields.AvroConfig{Paths: r.Fields, Registry: reg}
		for _, s := range r.Schemas {
			c.Local = append(c.Local, fields.LocalAvro{ID: s.ID, Files: s.Files})
		}
		return fields.NewAvro(c)
	case "protobuf":
		c := fields.ProtobufConfig{Paths: r.Fields, Registry: reg}
		for _, s := range r.Schemas {
			if len(s.Files) != 1 {
				return nil, fmt.Errorf("schemas: a protobuf schema is one .proto file or descriptor set, got %d files", len(s.Files))
			}
			c.Local = append(c.Local, fields.LocalProtobuf{ID: s.ID, File: s.Files[0], Name: s.Message})
		}
		// Refuse now, not record by record, a path that names a field of a
		// local schema whose type may not be encrypted (fields.NewAvro does
		// this for Avro; NewProtobuf cannot know the message until a value's
		// message indexes name it, so every message of the file is checked).
		for _, l := range c.Local {
			fd, err := fields.LoadProtobufFile(l)
			if err != nil {
				return nil, err
			}
			if err := checkProtobufTypes(fd.Messages(), r.Fields); err != nil {
				return nil, fmt.Errorf("schemas[id %d]: %w", l.ID, err)
			}
		}
		return fields.NewProtobuf(c)
	}
	return nil, fmt.Errorf("format %q has no fields", r.Format)
}

// checkProtobufTypes returns the first *fields.FieldTypeError of paths in
// any message (nested ones included); paths a message lacks are fine here.
func checkProtobufTypes(ms protoreflect.MessageDescriptors, paths []string) error {
	for i := range ms.Len() {
		md := ms.Get(i)
		if md.IsMapEntry() {
			continue
		}
		var fe *fields.FieldTypeError
		if err := fields.CheckProtobuf(md, paths); errors.As(err, &fe) {
			return fmt.Errorf("message %s: %w", md.FullName(), err)
		}
		if err := checkProtobufTypes(md.Messages(), paths); err != nil {
			return err
		}
	}
	return nil
}

func newRegistry(c *SchemaRegistry) (*fields.Registry, error) {
	rc := fields.RegistryConfig{URLs: c.URLs, Username: c.Username}
	if c.PasswordEnv != "" {
		rc.Password = os.Getenv(c.PasswordEnv)
	}
	if c.CAFile != "" || c.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file: no certificates in %s", c.CAFile)
			}
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		rc.TLS = tc
	}
	return fields.NewRegistry(rc)
}

func openProviders(c KMS) ([]kms.Provider, error) {
	var out []kms.Provider
	if c.Local != nil {
		p, err := local.Load(c.Local.Keyring)
		if err != nil {
			return nil, fmt.Errorf("kms.local: %w", err)
		}
		out = append(out, p)
	}
	if c.AWS != nil {
		p, err := awskms.New(context.Background(), *c.AWS)
		if err != nil {
			return nil, fmt.Errorf("kms.aws-kms: %w", err)
		}
		out = append(out, p)
	}
	if c.Vault != nil {
		p, err := vaulttransit.New(*c.Vault)
		if err != nil {
			return nil, fmt.Errorf("kms.vault-transit: %w", err)
		}
		out = append(out, p)
	}
	if c.PKCS11 != nil {
		p, err := pkcs11.New(*c.PKCS11)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("kms.pkcs11: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

func closeAll(ps []kms.Provider) {
	for _, p := range ps {
		if c, ok := p.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
}

func (e *engine) close() error {
	closeAll(e.providers)
	return nil
}

// ruleFor returns the first rule matching topic, or nil.
func (e *engine) ruleFor(topic string) *rule {
	for _, r := range e.rules {
		if r.matches(topic) {
			return r
		}
	}
	return nil
}

// aadTopic is the topic bound into ciphertexts of topic under r.
func (e *engine) aadTopic(r *rule, topic string) string {
	if !e.bindTopic {
		return ""
	}
	if r != nil && r.SourceTopic != "" {
		return r.SourceTopic
	}
	return topic
}
