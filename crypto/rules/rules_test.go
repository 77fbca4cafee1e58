package rules

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMayOverlap: a catalog entry is compiled for a rule unless a name on
// one side is provably not matched by the other side.
func TestMayOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b []string
		want bool
	}{
		{[]string{"orders"}, []string{"orders"}, true},
		{[]string{"orders"}, []string{"orders.*", "payments"}, false},
		{[]string{"orders.eu"}, []string{"orders.*"}, true},
		{[]string{"orders.*"}, []string{"orders.eu"}, true},
		{[]string{"orders.*"}, []string{"payments"}, false},
		{[]string{"orders.*"}, []string{"pay*"}, true}, // two globs: taken to overlap
		{[]string{"a", "b"}, []string{"c", "b"}, true},
		{[]string{"a"}, nil, false}, // an entry for subjects only
	} {
		if got := mayOverlap(c.a, c.b); got != c.want {
			t.Errorf("mayOverlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestWalkerForFirstEntry: a topic gets the walker of the first catalog
// entry matching it (as catalog.Lookup), nil when that entry carries none
// of the rule's classifications even if a later one does.
func TestWalkerForFirstEntry(t *testing.T) {
	dir := t.TempDir()
	cat := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(cat, []byte(`classifications: {Protected: {}, Other: {}}
topics:
  - {topics: [orders.internal], fields: {"$.note": [Other]}}
  - {topics: ["orders.*"], fields: {"$.ssn": [Protected]}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadCatalog(cat)
	if err != nil {
		t.Fatal(err)
	}
	r := &Compiled{Rule: Rule{Topics: []string{"orders.*"}, Classifications: []string{"Protected"}}}
	if err := r.classify(c, cat, nil); err != nil {
		t.Fatal(err)
	}
	if !r.ByField() || r.WalkerFor("orders.eu") == nil {
		t.Fatal("orders.eu: no walker of $.ssn")
	}
	if w := r.WalkerFor("orders.internal"); w != nil {
		t.Fatal("orders.internal: its first entry has no Protected field, yet it got a walker")
	}
	if w := r.WalkerFor("payments"); w != nil {
		t.Fatal("payments: not classified, yet it got a walker")
	}
}
