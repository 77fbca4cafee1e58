package interceptor

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the contract light: any interceptor may import this
// package without pulling in the proxy, so it may depend only on the standard
// library and kmsg (with kmsg's own internal packages).
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const self = "github.com/strait-proxy/strait/interceptor"
	const kmsg = "github.com/twmb/franz-go/pkg/kmsg"
	for _, p := range strings.Fields(string(out)) {
		if p == self || p == kmsg || strings.HasPrefix(p, kmsg+"/") {
			continue
		}
		t.Errorf("package interceptor depends on %s; only the standard library and %s are allowed", p, kmsg)
	}
}
