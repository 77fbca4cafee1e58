package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/capitalone/fpe/ff1"

	"github.com/strait-proxy/strait/crypto/fields"
)

// Field actions.
const (
	actClear     = "clear"
	actRedact    = "redact"
	actMask      = "mask"
	actTokenize  = "tokenize"
	actEncrypted = "encrypted"
)

type actKind uint8

const (
	kClear actKind = iota
	kMask
	kTokenize
	kEncrypted
	kRedact
)

// strength orders actions from most revealing to least: when a field has
// several classifications, the least revealing action wins.
func (k actKind) String() string {
	return [...]string{actClear, actMask, actTokenize, actEncrypted, actRedact}[k]
}

func kindOf(s string) (actKind, bool) {
	switch s {
	case actClear, "":
		return kClear, true
	case actRedact:
		return kRedact, true
	case actMask:
		return kMask, true
	case actTokenize:
		return kTokenize, true
	case actEncrypted:
		return kEncrypted, true
	}
	return 0, false
}

// action is what happens to one field.
type action struct {
	kind     actKind
	keepLast int    // mask: characters kept at the end
	with     string // mask: fixed replacement
}

// group is the fields of a decision that share one action: one walker
// finds them all in a value.
type group struct {
	act    action
	paths  []string
	walker fields.Walker
}

// decision is a compiled decision for the records of one topic.
type decision struct {
	drop   bool
	groups []group
	// failed marks the on_error fallback (counted apart).
	failed string
	// avro: the topic's values are Avro (fields are strings or bytes
	// behind a length prefix) and tf holds their schemas.
	avro, proto bool
	tf          *TopicFields
	// plan: the decision's actions by locator slot (locate.go)
	planOnce sync.Once
	plan     *plan
}

// topicInfo is the catalog's view of one topic.
type topicInfo struct {
	name    string
	tf      *TopicFields        // nil: not in the catalog (JSON values)
	classes map[string][]string // path -> classifications
	byClass map[string][]string // classification -> paths
	paths   []string            // classified paths, sorted
	// input is the "classifications" member of the input document.
	input map[string]any

	valOnce sync.Once
	valW    fields.Walker // finds the value paths the policy reads
	valErr  error
	locState
}

// valueWalker finds the value paths the policy reads in this topic's
// values.
func (ti *topicInfo) valueWalker(rd *reads) (fields.Walker, error) {
	if !ti.isAvro() {
		return rd.valWalker, nil
	}
	ti.valOnce.Do(func() {
		ti.valW, ti.valErr = fields.NewAvro(fields.AvroConfig{Paths: rd.valuePaths, Local: ti.tf.LocalAvro(), Registry: ti.tf.Registry()})
	})
	return ti.valW, ti.valErr
}

func newTopicInfo(cat *Catalog, topic string) *topicInfo {
	ti := &topicInfo{name: topic, classes: map[string][]string{}, byClass: map[string][]string{}, input: map[string]any{}}
	tf := cat.Topic(topic)
	if tf == nil {
		return ti
	}
	ti.tf = tf
	for p, cls := range tf.Fields {
		ti.classes[p] = cls
		ti.paths = append(ti.paths, p)
		l := make([]any, len(cls))
		for i, c := range cls {
			l[i] = c
			ti.byClass[c] = append(ti.byClass[c], p)
		}
		ti.input[p] = l
	}
	sort.Strings(ti.paths)
	return ti
}

// parseAction reads "redact" or {"action": "mask", "keep_last": 4}.
func parseAction(v any) (action, error) {
	switch v := v.(type) {
	case string:
		k, ok := kindOf(v)
		if !ok {
			return action{}, fmt.Errorf("unknown action %q", v)
		}
		return action{kind: k}, nil
	case map[string]any:
		var a action
		for key, x := range v {
			switch key {
			case "action":
				s, _ := x.(string)
				k, ok := kindOf(s)
				if !ok {
					return a, fmt.Errorf("unknown action %v", x)
				}
				a.kind = k
			case "keep_last":
				n, err := toInt(x)
				if err != nil || n < 0 {
					return a, fmt.Errorf("keep_last: %v is not a non-negative integer", x)
				}
				a.keepLast = n
			case "with":
				s, ok := x.(string)
				if !ok {
					return a, fmt.Errorf("with: %v is not a string", x)
				}
				a.with = s
			default:
				return a, fmt.Errorf("unknown key %q in action", key)
			}
		}
		return a, nil
	}
	return action{}, fmt.Errorf("an action is a string or an object, not %T", v)
}

func toInt(x any) (int, error) {
	switch n := x.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return int(i), err
	case float64:
		if n == float64(int(n)) {
			return int(n), nil
		}
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("not an integer")
}

// compileDecision turns the query's value into a decision for topic ti.
// The decision document:
//
//	{"drop": true}                                  nothing of the record is sent
//	{"fields": {"$.ssn": "redact",                   per path
//	            "$.card": {"action": "mask", "keep_last": 4}},
//	 "classifications": {"PII/Financial": "tokenize"}, per classification
//	 "default": "redact"}                             other classified fields
//
// An empty object delivers the record with the catalog's defaults.
func compileDecision(v any, ti *topicInfo, cat *Catalog, walkers *walkerCache) (*decision, error) {
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decision is %T, want an object", v)
	}
	d := &decision{}
	per := map[string]action{}
	var classActs map[string]action
	var dflt *action
	for key, x := range doc {
		switch key {
		case "drop":
			b, ok := x.(bool)
			if !ok {
				return nil, fmt.Errorf("drop: %v is not a boolean", x)
			}
			d.drop = b
		case "fields":
			m, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("fields: want an object of path -> action")
			}
			for p, av := range m {
				if _, err := fields.ParsePath(p); err != nil {
					return nil, fmt.Errorf("fields[%s]: %v", p, err)
				}
				a, err := parseAction(av)
				if err != nil {
					return nil, fmt.Errorf("fields[%s]: %v", p, err)
				}
				per[p] = a
			}
		case "classifications":
			m, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("classifications: want an object of classification -> action")
			}
			classActs = map[string]action{}
			for c, av := range m {
				a, err := parseAction(av)
				if err != nil {
					return nil, fmt.Errorf("classifications[%s]: %v", c, err)
				}
				classActs[c] = a
			}
		case "default":
			a, err := parseAction(x)
			if err != nil {
				return nil, fmt.Errorf("default: %v", err)
			}
			dflt = &a
		default:
			return nil, fmt.Errorf("unknown key %q in decision (drop, fields, classifications, default)", key)
		}
	}
	if d.drop {
		return d, nil
	}
	// Classified fields the decision does not name per path.
	for _, p := range ti.paths {
		if _, ok := per[p]; ok {
			continue
		}
		var best *action
		pick := func(a action) {
			if best == nil || a.kind > best.kind {
				best = &a
			}
		}
		named := false
		for _, c := range ti.classes[p] {
			if a, ok := classActs[c]; ok {
				pick(a)
				named = true
			}
		}
		if !named {
			if dflt != nil {
				pick(*dflt)
			} else {
				for _, c := range ti.classes[p] {
					cl := cat.Classifications[c]
					k, _ := kindOf(cl.Action)
					pick(action{kind: k, keepLast: cl.KeepLast})
				}
			}
		}
		if best != nil {
			per[p] = *best
		}
	}
	return d.withFields(per, walkers, ti)
}

// withFields groups the non-clear actions by action and builds a walker
// per group.
func (d *decision) withFields(per map[string]action, walkers *walkerCache, ti *topicInfo) (*decision, error) {
	d.avro, d.proto, d.tf = ti.isAvro(), ti.isProto(), ti.tf
	byAct := map[action][]string{}
	for p, a := range per {
		if a.kind == kClear {
			continue
		}
		byAct[a] = append(byAct[a], p)
	}
	for a, ps := range byAct {
		sort.Strings(ps)
		w, err := walkers.get(ti, ps)
		if err != nil {
			return nil, err
		}
		d.groups = append(d.groups, group{act: a, paths: ps, walker: w})
	}
	sort.Slice(d.groups, func(i, j int) bool { return d.groups[i].paths[0] < d.groups[j].paths[0] })
	return d, nil
}

// failClosed is the on_error decision for topic ti: drop, or redact every
// classified field.
func failClosed(onError string, ti *topicInfo, walkers *walkerCache, reason string) *decision {
	if onError != "redact" {
		return &decision{drop: true, failed: reason}
	}
	per := map[string]action{}
	for _, p := range ti.paths {
		per[p] = action{kind: kRedact}
	}
	d, err := (&decision{failed: reason}).withFields(per, walkers, ti)
	if err != nil { // the catalog's paths were checked at load: not reached
		return &decision{drop: true, failed: reason}
	}
	return d
}

// walkerCache shares JSON walkers between decisions with the same paths.
type walkerCache struct {
	mu sync.Mutex
	m  map[string]fields.Walker
}

func (ti *topicInfo) isAvro() bool  { return ti.tf != nil && ti.tf.Format == "avro" }
func (ti *topicInfo) isProto() bool { return ti.tf != nil && ti.tf.Format == "protobuf" }

// get returns a walker over paths for the values of topic ti.
func (c *walkerCache) get(ti *topicInfo, paths []string) (fields.Walker, error) {
	k := strings.Join(paths, "\x00")
	if ti.isAvro() {
		k = fmt.Sprintf("avro:%p\x00%s", ti.tf, k)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.m[k]; ok {
		return w, nil
	}
	var w fields.Walker
	var err error
	if ti.isProto() {
		// Protobuf values are rewritten through their descriptors
		// (applyProto): check the paths only.
		for _, p := range paths {
			if _, err := fields.ParsePath(p); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if ti.isAvro() {
		w, err = fields.NewAvro(fields.AvroConfig{Paths: paths, Local: ti.tf.LocalAvro(), Registry: ti.tf.Registry()})
	} else {
		w, err = fields.NewJSON(paths)
	}
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]fields.Walker{}
	}
	if len(c.m) > 4096 {
		clear(c.m)
	}
	c.m[k] = w
	return w, nil
}

// tokenizer makes deterministic keyed tokens.
type tokenizer struct {
	key  []byte
	ff1  bool
	mu   sync.Mutex // ff1.Cipher and the HMAC are not safe for concurrent use
	ciph ff1.Cipher
	mac  hash.Hash
	sum  []byte
}

func newTokenizer(key []byte, useFF1 bool) (*tokenizer, error) {
	t := &tokenizer{key: key, ff1: useFF1, mac: hmac.New(sha256.New, key)}
	if useFF1 {
		// A key derived for FF1, so the HMAC key is never used as an AES key.
		m := hmac.New(sha256.New, key)
		m.Write([]byte("strait policy ff1"))
		c, err := ff1.NewCipher(10, 0, m.Sum(nil), nil)
		if err != nil {
			return nil, err
		}
		t.ciph = c
	}
	return t, nil
}

// minFF1Digits: FF1 needs radix^len >= 1,000,000.
const minFF1Digits = 6

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// token appends the token of s to dst: FF1 (same length, digits) for digit
// strings of 6 or more when enabled, else "tok_" and 24 hex digits of
// HMAC-SHA256(key, s).
func (t *tokenizer) token(dst, s []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ff1 && len(s) >= minFF1Digits && len(s) <= 1<<10 && allDigits(s) {
		out, err := t.ciph.Encrypt(string(s))
		if err != nil {
			return dst, err
		}
		return append(dst, out...), nil
	}
	t.mac.Reset()
	t.mac.Write(s)
	t.sum = t.mac.Sum(t.sum[:0])
	dst = append(dst, "tok_"...)
	return hex.AppendEncode(dst, t.sum[:12]), nil
}

// mask appends the masked form of the string s (runes): every rune but the
// last keepLast becomes '*', or the fixed text with.
func mask(dst, s []byte, a action) []byte {
	if a.with != "" {
		return append(dst, a.with...)
	}
	n := utf8.RuneCount(s)
	keep := min(a.keepLast, n)
	i := 0
	for p := 0; p < len(s); {
		_, sz := utf8.DecodeRune(s[p:])
		if i < n-keep {
			dst = append(dst, '*')
		} else {
			dst = append(dst, s[p:p+sz]...)
		}
		p += sz
		i++
	}
	return dst
}
