package policy

import (
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/strait-proxy/strait/crypto/fields"
)

// One walk per JSON record. Deciding a record and rewriting it used to
// take two walks of its value: one for the fields the policy reads
// (applier.extract), one per action group of the decision for the fields
// it changes (applier.apply); both scan the whole document, and the scan
// is most of the cost of a record. A locator is one walker over the union
// of the value paths the policy reads and every classified path of the
// topic: a single walk finds the spans of all of them, the decision is
// made from the read ones, and its changes are spliced at the spans it
// names. Only static paths (no [*]) of JSON topics qualify; a decision
// naming a path outside the locator falls back to its group walkers.

// locator finds the read and classified paths of one JSON topic.
type locator struct {
	w     fields.Walker
	slots []string // canonical paths; the first nread are rd.valuePaths
	nread int
	index map[string]int // slots by path, when there are many
	ptrs  []atomic.Pointer[byte]
	top   []string // the slots' top-level keys when every path is one (jsonscan.go)
}

// loc is one occurrence of a slot's path in a value (document order).
type loc struct {
	slot       int
	start, end int
}

// newLocator returns nil when the topic's paths do not qualify.
func newLocator(rd *reads, ti *topicInfo) *locator {
	if ti.isAvro() || ti.isProto() {
		return nil
	}
	l := &locator{nread: len(rd.valuePaths)}
	seen := map[string]bool{}
	add := func(p string) bool {
		fp, err := fields.ParsePath(p)
		if err != nil {
			return false
		}
		c := fp.String()
		if strings.Contains(c, "[*]") {
			return false // dynamic: the walker reports concrete paths
		}
		if !seen[c] {
			seen[c] = true
			l.slots = append(l.slots, c)
		}
		return true
	}
	for _, p := range rd.valuePaths {
		if !add(p) {
			return nil
		}
	}
	for _, p := range ti.paths {
		if !add(p) {
			return nil
		}
	}
	if len(l.slots) == 0 {
		return nil
	}
	w, err := fields.NewJSON(l.slots) // refuses overlapping paths
	if err != nil {
		return nil
	}
	l.w = w
	l.ptrs = make([]atomic.Pointer[byte], len(l.slots))
	l.top = topKeys(l.slots)
	if len(l.slots) > 8 {
		l.index = make(map[string]int, len(l.slots))
		for i, s := range l.slots {
			l.index[s] = i
		}
	}
	return l
}

func (l *locator) slot(p string) int {
	// The walker reports a static path as the same string every time:
	// compare its data pointer first (learnt on the first lookup).
	d := unsafe.StringData(p)
	for i := range l.ptrs {
		if l.ptrs[i].Load() == d {
			return i
		}
	}
	i := l.lookup(p)
	if i >= 0 && d != nil {
		l.ptrs[i].Store(d)
	}
	return i
}

func (l *locator) lookup(p string) int {
	if l.index != nil {
		if i, ok := l.index[p]; ok {
			return i
		}
		return -1
	}
	for i, s := range l.slots {
		if s == p {
			return i
		}
	}
	return -1
}

// locator returns the topic's locator for the policy's reads (nil: none).
func (ti *topicInfo) locator(rd *reads) *locator {
	ti.locOnce.Do(func() { ti.loc = newLocator(rd, ti) })
	return ti.loc
}

// plan is a decision's actions by locator slot.
type plan struct {
	acts []action // kClear: unchanged
	ok   bool     // every changed path of the decision is a slot
	any  bool     // some slot changes
}

// planFor returns d's plan for l (computed once per decision).
func (d *decision) planFor(l *locator) *plan {
	d.planOnce.Do(func() {
		pl := &plan{acts: make([]action, len(l.slots)), ok: true}
		for _, g := range d.groups {
			for _, p := range g.paths {
				fp, err := fields.ParsePath(p)
				i := -1
				if err == nil {
					i = l.slot(fp.String())
				}
				if i < 0 {
					pl.ok = false
					continue
				}
				pl.acts[i] = g.act
				pl.any = true
			}
		}
		d.plan = pl
	})
	return d.plan
}

// locate walks value once with l: ap.locs holds every occurrence of the
// locator's paths, in document order.
func (ap *applier) locate(l *locator, value []byte) error {
	if l.top != nil {
		var err error
		if ap.locs, err = topScan(ap.locs[:0], l.top, value); err == nil {
			return nil
		}
	}
	ap.locs = ap.locs[:0]
	ap.curLoc = l
	ap.value = value
	var err error
	ap.scratch, err = l.w.Seal(ap.scratch[:0], value, ap.findFn)
	ap.value, ap.curLoc = nil, nil
	return err
}

// find is the SealFunc of locate.
func (ap *applier) find(p string, pt []byte) ([]byte, error) {
	off := cap(ap.value) - cap(pt)
	if len(pt) == 0 || off < 0 || off+len(pt) > len(ap.value) || &ap.value[off] != &pt[0] {
		return nil, errAlias
	}
	if i := ap.curLoc.slot(p); i >= 0 {
		ap.locs = append(ap.locs, loc{i, off, off + len(pt)})
	}
	return nil, nil
}

// readVals returns the values of the read slots found by locate (the last
// occurrence of each, as extract does; nil where absent).
func (ap *applier) readVals(l *locator, value []byte) [][]byte {
	ap.vals = ap.vals[:0]
	for range l.nread {
		ap.vals = append(ap.vals, nil)
	}
	for _, o := range ap.locs {
		if o.slot < l.nread {
			ap.vals[o.slot] = value[o.start:o.end]
		}
	}
	return ap.vals
}

// applyLocated is apply for a value located with l: it splices d's
// changes at the spans found. ok false: d names a path outside l (use
// apply).
func (ap *applier) applyLocated(d *decision, l *locator, value []byte, stillEncrypted bool, c *counts) (out []byte, changed, ok bool, err error) {
	pl := d.planFor(l)
	if !pl.ok {
		return nil, false, false, nil
	}
	ap.spans = ap.spans[:0]
	if pl.any {
		for _, o := range ap.locs {
			if a := pl.acts[o.slot]; a.kind != kClear {
				ap.spans = append(ap.spans, span{o.start, o.end, a, l.slots[o.slot]})
			}
		}
	}
	if len(ap.spans) == 0 {
		return value, false, true, nil
	}
	out, changed, err = ap.splice(value, stillEncrypted, c)
	return out, changed, true, err
}

// locState is the locator state of a topicInfo.
type locState struct {
	locOnce sync.Once
	loc     *locator
}
