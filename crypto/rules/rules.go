// Package rules is what Strait's two encryption interceptors share: the
// configuration (key stores, and the rules saying which topics are
// encrypted, how and under which key), and what is built from it: the key
// stores, a sealer per store, the opener, the compiled rules, the metrics.
// The interceptors themselves live in crypto/encrypt (Produce) and
// crypto/decrypt (Fetch, ShareFetch); both read the same YAML.
package rules

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/strait-proxy/strait/catalog"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/awskms"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/kms/pkcs11"
	"github.com/strait-proxy/strait/crypto/kms/vaulttransit"
	"github.com/strait-proxy/strait/internal/burstlog"
	"github.com/strait-proxy/strait/topicid"
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

// Set is a configuration built: the compiled rules, the key stores they
// name, a sealer per store and one opener, shared caches and metrics.
type Set struct {
	Topics *topicid.Names // never nil
	Rules  []*Compiled
	Opener *envelope.Opener
	// LeaveEncrypted: on_decrypt_error is leave-encrypted.
	LeaveEncrypted bool
	Metrics        *Metrics
	Burst          *burstlog.Logger // rate-limited error logs
	// Files are the files read to build the Set (Interceptor.Files).
	Files []string

	log       *slog.Logger
	sealers   map[string]*envelope.Sealer
	providers []kms.Provider
	bindTopic bool
}

// Compiled is a rule ready for use.
type Compiled struct {
	Rule
	// Index is the rule's position in Config.Rules.
	Index int
	// Sealer seals under the rule's key store.
	Sealer *envelope.Sealer

	walker  fields.Walker    // Fields; nil: the whole value (or classifications)
	cat     *catalog.Catalog // Classifications: the catalog...
	byEntry []fields.Walker  // ...and a walker per catalog entry (nil: no field of it)
}

// ByField reports whether r encrypts fields (by path or classification)
// rather than the whole value.
func (r *Compiled) ByField() bool { return r.walker != nil || r.cat != nil }

// WalkerFor is the walker of r's fields in topic's values: the rule's
// paths, or, for classifications, the fields the catalog entry classifying
// topic gives them. Nil for a whole-value rule, and for a topic whose
// catalog entry (if any) carries none of the rule's classifications: its
// records have nothing to encrypt.
func (r *Compiled) WalkerFor(topic string) fields.Walker {
	if r.cat == nil {
		return r.walker
	}
	for i := range r.cat.Topics { // the first entry matching, as catalog.Lookup
		if matchAny(r.cat.Topics[i].Topics, topic) {
			return r.byEntry[i]
		}
	}
	return nil
}

// Open validates cfg and builds what it names. The caller closes the Set.
func Open(cfg Config, env Env) (*Set, error) {
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
	e := &Set{
		log: log, Topics: env.Topics,
		sealers:        make(map[string]*envelope.Sealer),
		bindTopic:      cfg.BindTopic == nil || *cfg.BindTopic,
		LeaveEncrypted: cfg.OnDecryptError == "leave-encrypted",
		Metrics:        newMetrics(reg),
	}
	e.Burst = burstlog.New(log)
	for _, w := range cfg.warnings() {
		log.Warn("insecure key store configuration", "warning", w)
	}
	if e.Topics == nil {
		e.Topics = topicid.New()
	}
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
			e.Close()
			return nil, err
		}
		e.sealers[p.Name()] = s
	}
	op, err := envelope.NewOpener(provs, envelope.OpenerOptions{
		MaxEntries: cfg.DEK.CacheSize, MaxAge: time.Duration(cfg.DEK.MaxAge),
		MaxConcurrentUnwraps: cfg.DEK.UnwrapConcurrency, UnwrapRate: cfg.DEK.UnwrapRate,
		OnThrottle: e.Metrics.UnwrapThrottled.Inc,
	})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.Opener = op

	var reg2 *fields.Registry
	if sr := cfg.SchemaRegistry; sr != nil {
		if reg2, err = newRegistry(sr); err != nil {
			e.Close()
			return nil, fmt.Errorf("schema_registry: %w", err)
		}
	}
	e.Files = cfg.Files()
	var cat *catalog.Catalog
	if cfg.Catalog != "" {
		if cat, err = loadCatalog(cfg.Catalog); err != nil {
			e.Close()
			return nil, err
		}
		e.Files = append(e.Files, cat.SchemaFiles()...)
	}
	var localKeys map[string]bool // key ids in the local keyring, to check rules early
	if cfg.KMS.Local != nil && env.Providers == nil {
		infos, err := local.List(cfg.KMS.Local.Keyring)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("kms.local: %w", err)
		}
		localKeys = make(map[string]bool)
		for _, k := range infos {
			localKeys[k.ID] = true
		}
	}
	for i, r := range cfg.Rules {
		store := r.KMS
		if store == "" {
			store = provs[0].Name()
		}
		if store == local.Name && localKeys != nil && !localKeys[r.KeyID] {
			e.Close()
			return nil, fmt.Errorf("rules[%d].key_id: %q is not in the keyring %s (strait keys generate --keyring %s --key %s)",
				i, r.KeyID, cfg.KMS.Local.Keyring, cfg.KMS.Local.Keyring, r.KeyID)
		}
		cr := &Compiled{Rule: r, Index: i, Sealer: e.sealers[store]}
		if cr.Sealer == nil {
			e.Close()
			return nil, fmt.Errorf("rules[%d].kms: %q is not configured", i, store)
		}
		if len(r.Fields) > 0 {
			if cr.walker, err = newWalker(r, reg2); err != nil {
				e.Close()
				return nil, fmt.Errorf("rules[%d]: %w", i, err)
			}
		}
		if len(r.Classifications) > 0 {
			if err := cr.classify(cat, cfg.Catalog, reg2); err != nil {
				e.Close()
				return nil, err
			}
		}
		e.Rules = append(e.Rules, cr)
	}
	return e, nil
}

// loadCatalog reads and checks the catalog file; its errors name their
// place in it ("catalog.topics[0].fields[$.x]: ...").
func loadCatalog(file string) (*catalog.Catalog, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return catalog.Parse(b, "catalog")
}

// classify compiles a rule that names classifications: for every catalog
// entry that may classify a topic of the rule, a walker of the entry's
// fields that carry one of them, in the entry's format and with its
// schemas. Errors: a classification the catalog does not define, an entry
// whose walker cannot be built, and a rule no field of the catalog answers
// (a typo in either file would otherwise leave every record in clear).
func (r *Compiled) classify(cat *catalog.Catalog, file string, reg *fields.Registry) error {
	p := fmt.Sprintf("rules[%d].classifications", r.Index)
	for j, cl := range r.Classifications {
		if _, ok := cat.Classifications[cl]; !ok {
			known := make([]string, 0, len(cat.Classifications))
			for k := range cat.Classifications {
				known = append(known, k)
			}
			sort.Strings(known)
			return fmt.Errorf("%s[%d]: %q is not a classification of the catalog %s (it defines: %s)", p, j, cl, file, strings.Join(known, ", "))
		}
	}
	r.cat, r.byEntry = cat, make([]fields.Walker, len(cat.Topics))
	found := false
	for i := range cat.Topics {
		t := &cat.Topics[i]
		if !mayOverlap(r.Topics, t.Topics) {
			continue
		}
		var paths []string
		for _, cl := range r.Classifications {
			paths = append(paths, t.Paths(cl)...)
		}
		if len(paths) == 0 {
			continue
		}
		sort.Strings(paths)
		paths = slices.Compact(paths)
		format := t.Format
		if format == "" {
			format = "json"
		}
		if (format == "avro" || format == "protobuf") && len(t.Schemas) == 0 && reg == nil {
			return fmt.Errorf("%s: catalog.topics[%d] holds %s values without local schemas: configure schema_registry", p, i, format)
		}
		fr := Rule{Format: format, Fields: paths}
		for _, sc := range t.Schemas {
			fr.Schemas = append(fr.Schemas, Schema{ID: sc.ID, Files: sc.Files, Message: sc.Name})
		}
		w, err := newWalker(fr, reg)
		if err != nil {
			return fmt.Errorf("%s: catalog.topics[%d]: %w", p, i, err)
		}
		r.byEntry[i], found = w, true
	}
	if !found {
		return fmt.Errorf("%s: no field of the catalog's entries for topics %v carries %s", p, r.Topics, strings.Join(r.Classifications, " or "))
	}
	return nil
}

// mayOverlap reports whether some topic could match both a name or glob of
// a and one of b: a name of either side must match the other side's glob;
// two globs are taken to overlap.
func mayOverlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			switch {
			case x == y:
				return true
			case !isGlob(x):
				if ok, _ := path.Match(y, x); ok {
					return true
				}
			case !isGlob(y):
				if ok, _ := path.Match(x, y); ok {
					return true
				}
			default:
				return true
			}
		}
	}
	return false
}

func isGlob(s string) bool { return strings.ContainsAny(s, `*?[\`) }

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

// Close closes the key stores.
func (e *Set) Close() error {
	closeAll(e.providers)
	return nil
}

// For returns the first rule matching topic, or nil.
func (e *Set) For(topic string) *Compiled {
	for _, r := range e.Rules {
		if r.matches(topic) {
			return r
		}
	}
	return nil
}

// AADTopic is the topic bound into ciphertexts of topic under r ("" when
// bind_topic is off).
func (e *Set) AADTopic(r *Compiled, topic string) string {
	if !e.bindTopic {
		return ""
	}
	if r != nil && r.SourceTopic != "" {
		return r.SourceTopic
	}
	return topic
}

// PrefetchIDs looks up together (one upstream Metadata request) the ids
// id(0) .. id(n-1) of one request that no Metadata response has named, so
// that resolving each of them then answers from the caches.
func (e *Set) PrefetchIDs(ctx context.Context, n int, id func(i int) [16]byte) {
	var unknown [][16]byte
	for i := range n {
		if _, ok := e.Topics.Name(id(i)); !ok {
			unknown = append(unknown, id(i))
		}
	}
	if len(unknown) > 0 {
		e.Topics.Prefetch(ctx, unknown)
	}
}
