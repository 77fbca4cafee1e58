package burstlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestOneLinePerBurst(t *testing.T) {
	var out bytes.Buffer
	b := New(slog.New(slog.NewTextHandler(&out, nil)))
	for range 100 {
		b.Warn("refused", "reason", "limit")
	}
	if n := strings.Count(out.String(), "refused"); n != 1 {
		t.Fatalf("%d lines for one burst, want 1:\n%s", n, out.String())
	}
	b.last = b.last.Add(-2 * Every) // the burst is over
	b.Error("refused again")
	if !strings.Contains(out.String(), "suppressed_since_last=99") {
		t.Fatalf("second line does not count the 99 suppressed:\n%s", out.String())
	}
}
