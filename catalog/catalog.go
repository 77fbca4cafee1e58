// Package catalog is Strait's data classification catalog: one file that
// says which fields of which topics (or schema subjects) carry which
// classifications ("PII/Financial", "Protected"), and what each
// classification does by default. The policy interceptor reads it to
// resolve per-classification decisions; any other interceptor (encrypt
// rules that name classifications instead of field paths) can load the
// same file and ask, for a topic, which field paths carry a class.
//
// See README.md in this directory and docs/policy.md ("The catalog").
package catalog

import (
	"fmt"
	"os"
	"path"
	"sort"
	"sync"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/fields"
)

// The default actions a classification may name (Classification.Action).
const (
	Clear     = "clear"
	Redact    = "redact"
	Mask      = "mask"
	Tokenize  = "tokenize"
	Encrypted = "encrypted"
)

// Catalog is the data classification file: which fields of which topics
// carry which classifications, and what each classification does by
// default. A loaded Catalog is checked and read-only (safe for concurrent
// use); [Catalog.UseRegistry] is the one setter, called before use.
type Catalog struct {
	// Classifications map a classification ("PII/Financial") to its
	// defaults.
	Classifications map[string]Classification `json:"classifications,omitempty"`
	// Topics classify fields, first match wins.
	Topics []Topic `json:"topics,omitempty"`

	name string // prefix of error messages ("catalog")
}

// Classification is what a classification means.
type Classification struct {
	// Action applies to fields of this classification when a policy's
	// decision does not name them: clear (default), redact, mask,
	// tokenize or encrypted.
	Action string `json:"action,omitempty"`
	// KeepLast, for mask, keeps the last N characters.
	KeepLast int `json:"keep_last,omitempty"`
	// Description is for people.
	Description string `json:"description,omitempty"`
}

// Topic classifies the fields of the values of some topics (one entry of
// the catalog's topics list).
type Topic struct {
	// Topics are names or globs (path.Match syntax).
	Topics []string `json:"topics,omitempty"`
	// Subjects are Schema Registry subjects (names or globs) this entry
	// also covers, for users that know a value's subject rather than its
	// topic. Optional; an entry needs topics or subjects.
	Subjects []string `json:"subjects,omitempty"`
	// Format of the values: json (default), avro or protobuf (Confluent
	// wire format).
	Format string `json:"format,omitempty"`
	// Fields map a path ($.a.b, $.items[*].c, docs/fields.md) to its
	// classifications.
	Fields map[string][]string `json:"fields"`
	// Schemas are the writer schemas of the values, by the schema id
	// producers put in the wire header (formats avro and protobuf).
	Schemas []Schema `json:"schemas,omitempty"`

	avro    map[int32]avro.Schema                 // parsed by check
	proto   map[int32]protoreflect.FileDescriptor // parsed by check
	paths   []string                              // classified paths, sorted
	reg     *fields.Registry                      // UseRegistry: schemas by id
	fromReg sync.Map                              // int32 -> avro.Schema | protoreflect.FileDescriptor
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

// Load reads and checks a catalog file (YAML or JSON). Errors name the
// path inside the file ("FILE.topics[0].fields[$.x]: ...").
func Load(file string) (*Catalog, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("catalog: %v", err)
	}
	return Parse(b, file)
}

// Parse parses and checks catalog YAML or JSON; name prefixes errors.
// Local schema files are read and parsed here (relative paths are taken
// from the working directory).
func Parse(b []byte, name string) (*Catalog, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	c := Catalog{name: name}
	if err := config.DecodeStrict(j, &c, name); err != nil {
		return nil, err
	}
	if errs := c.check(name); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// UseRegistry makes reg the source of the writer schemas that avro and
// protobuf topics do not list locally (nil: none). It fails, naming the
// entry, when such a topic lists no schema and reg is nil. Call it once,
// before the catalog is used.
func (c *Catalog) UseRegistry(reg *fields.Registry) error {
	var errs config.Errors
	for i := range c.Topics {
		t := &c.Topics[i]
		if (t.Format == "avro" || t.Format == "protobuf") && len(t.Schemas) == 0 && reg == nil {
			errs = append(errs, fmt.Sprintf("%s.topics[%d].schemas: %s values need writer schemas: list local files or configure schema_registry", c.name, i, t.Format))
		}
		t.reg = reg
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// SchemaFiles lists the local schema files the catalog names, in order
// (for reload watching).
func (c *Catalog) SchemaFiles() []string {
	var out []string
	for i := range c.Topics {
		for _, sc := range c.Topics[i].Schemas {
			out = append(out, sc.Files...)
		}
	}
	return out
}

// Topic returns the entry classifying topic's values (the first whose
// topics match), nil if none. A nil catalog has no entries.
func (c *Catalog) Topic(name string) *Topic {
	return c.Lookup(name, "")
}

// Lookup returns the first entry whose topics match topic or whose
// subjects match subject (either may be empty: not matched), nil if none.
func (c *Catalog) Lookup(topic, subject string) *Topic {
	if c == nil {
		return nil
	}
	for i := range c.Topics {
		t := &c.Topics[i]
		if topic != "" && match(t.Topics, topic) || subject != "" && match(t.Subjects, subject) {
			return t
		}
	}
	return nil
}

func match(globs []string, name string) bool {
	for _, g := range globs {
		if g == name {
			return true
		}
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Paths returns the field paths of topic (or subject, see Lookup) that
// carry class, sorted; nil when the catalog does not classify the topic or
// no field has that class.
func (c *Catalog) Paths(topic, subject, class string) []string {
	return c.Lookup(topic, subject).Paths(class)
}

// Action is the default action of class ("" when the class is not
// defined; clear when defined without one).
func (c *Catalog) Action(class string) (Classification, bool) {
	if c == nil {
		return Classification{}, false
	}
	cl, ok := c.Classifications[class]
	if ok && cl.Action == "" {
		cl.Action = Clear
	}
	return cl, ok
}

// Paths returns the entry's field paths that carry class, sorted (nil for
// a nil entry).
func (t *Topic) Paths(class string) []string {
	if t == nil {
		return nil
	}
	var out []string
	for _, p := range t.paths {
		for _, c := range t.Fields[p] {
			if c == class {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// Classified returns every classified path of the entry, sorted. The
// slice is shared: do not change it.
func (t *Topic) Classified() []string {
	if t == nil {
		return nil
	}
	return t.paths
}

// Classes returns the classifications of path (as written in the file).
func (t *Topic) Classes(path string) []string {
	if t == nil {
		return nil
	}
	return t.Fields[path]
}

// IsAvro and IsProtobuf report the entry's value format (JSON otherwise).
func (t *Topic) IsAvro() bool     { return t != nil && t.Format == "avro" }
func (t *Topic) IsProtobuf() bool { return t != nil && t.Format == "protobuf" }

// Registry is the Schema Registry set by UseRegistry (nil: local schemas
// only).
func (t *Topic) Registry() *fields.Registry { return t.reg }

// LocalAvro returns the entry's local schemas in the form the Avro walker
// of crypto/fields takes (fields.AvroConfig.Local).
func (t *Topic) LocalAvro() []fields.LocalAvro {
	out := make([]fields.LocalAvro, len(t.Schemas))
	for i, s := range t.Schemas {
		out[i] = fields.LocalAvro{ID: s.ID, Files: s.Files}
	}
	return out
}

// AvroSchema is the writer schema with id: local, else from the registry
// (cached).
func (t *Topic) AvroSchema(id int32) (avro.Schema, error) {
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

// ProtoFile is the Protobuf schema with id: local, else from the registry
// (cached).
func (t *Topic) ProtoFile(id int32) (protoreflect.FileDescriptor, error) {
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

func (c *Catalog) check(prefix string) config.Errors {
	var errs config.Errors
	add := func(p, f string, a ...any) { errs = append(errs, prefix+"."+p+": "+fmt.Sprintf(f, a...)) }
	for name, cl := range c.Classifications {
		p := "classifications[" + name + "]"
		if name == "" {
			add(p, "empty classification name")
		}
		switch cl.Action {
		case "", Clear, Redact, Mask, Tokenize, Encrypted:
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
		if len(t.Topics) == 0 && len(t.Subjects) == 0 {
			add(p+".topics", "required")
		}
		for j, g := range t.Topics {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add(fmt.Sprintf("%s.topics[%d]", p, j), "%q is not a topic name or glob", g)
			}
		}
		for j, g := range t.Subjects {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add(fmt.Sprintf("%s.subjects[%d]", p, j), "%q is not a subject name or glob", g)
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
		sort.Strings(paths)
		t.paths = paths
		if len(paths) > 0 && t.Format != "avro" && t.Format != "protobuf" {
			if _, err := fields.NewJSON(paths); err != nil {
				add(p+".fields", "%v", err)
			}
		}
	}
	return errs
}
