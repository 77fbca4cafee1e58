package krbtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder stands in for the testing.TB a caller passes, to see whether
// Need skips or fails.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

func need(t *testing.T, names ...string) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Need(r, names...)
	}()
	<-done
	return r
}

func TestNeedMissingTool(t *testing.T) {
	t.Setenv("CI", "")
	r := need(t, "strait-no-such-kerberos-tool")
	if r.failed != "" || !strings.Contains(r.skipped, "KERBEROS TEST NOT RUN") || !strings.Contains(r.skipped, "strait-no-such-kerberos-tool") {
		t.Fatalf("locally: want a loud skip, got skip %q fail %q", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	r = need(t, "strait-no-such-kerberos-tool")
	if r.skipped != "" || !strings.Contains(r.failed, "strait-no-such-kerberos-tool") {
		t.Fatalf("under CI=true: want a failure, got skip %q fail %q", r.skipped, r.failed)
	}
}

func TestNeedPresentTool(t *testing.T) {
	t.Setenv("CI", "true")
	r := need(t, "sh")
	if r.skipped != "" || r.failed != "" {
		t.Fatalf("sh is present: skip %q fail %q", r.skipped, r.failed)
	}
}
