package charts

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// No container runtime runs here, so the image is not built. What can be
// checked without one is: the Dockerfile's go build line builds the package
// `make build` builds and produces a working binary (it is run, with the
// Dockerfile's own environment and flags); the binary needs nothing the
// runtime base lacks; ENTRYPOINT is the copied binary and CMD's flags are
// accepted by it; the chart runs the same arguments; the build context
// keeps every file the build reads.

const repoRoot = ".."

type instruction struct {
	cmd  string // upper case
	args string
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	text := readFile(t, filepath.Join(repoRoot, "Dockerfile"))
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func jsonArray(t *testing.T, in instruction) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(in.args), &a); err != nil {
		t.Fatalf("%s %s: use the JSON (exec) form: %v", in.cmd, in.args, err)
	}
	return a
}

// shellWords splits a command line the way sh would for what the
// Dockerfile uses: spaces, double quotes, ${VAR} from vars.
func shellWords(t *testing.T, s string, vars map[string]string) []string {
	t.Helper()
	s = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`).ReplaceAllStringFunc(s, func(m string) string {
		name := strings.Trim(m, "${}")
		v, ok := vars[name]
		if !ok {
			t.Fatalf("Dockerfile uses $%s, which the test does not know", name)
		}
		return v
	})
	var words []string
	var w strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				words = append(words, w.String())
				w.Reset()
				have = false
			}
		default:
			w.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, w.String())
	}
	return words
}

// goBuild is the Dockerfile's go build: its environment and arguments.
type goBuild struct {
	env  []string
	args []string // after "go"
	out  string   // -o
	pkg  string
}

func dockerGoBuild(t *testing.T, ins []instruction) goBuild {
	t.Helper()
	vars := map[string]string{}
	for _, in := range ins {
		if in.cmd == "ARG" {
			k, v, _ := strings.Cut(in.args, "=")
			vars[k] = v
		}
	}
	vars["VERSION"] = "chart-test" // as with --build-arg VERSION=chart-test
	for _, in := range ins {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		words := shellWords(t, in.args, vars)
		i := slices.Index(words, "go")
		if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
			t.Fatalf("cannot find `go build` in RUN %s", in.args)
		}
		var b goBuild
		for _, w := range words[:i] {
			if strings.HasPrefix(w, "--mount=") {
				continue
			}
			if !strings.Contains(w, "=") {
				t.Fatalf("RUN: %q before go build is neither a --mount nor VAR=value", w)
			}
			b.env = append(b.env, w)
		}
		b.args = words[i+1:]
		for j, a := range b.args {
			if a == "-o" && j+1 < len(b.args) {
				b.out = b.args[j+1]
			}
		}
		b.pkg = b.args[len(b.args)-1]
		return b
	}
	t.Fatal("Dockerfile has no RUN ... go build")
	return goBuild{}
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms []string
	byCmd := map[string][]instruction{}
	for _, in := range ins {
		byCmd[in.cmd] = append(byCmd[in.cmd], in)
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:1.26") || !strings.HasSuffix(froms[0], " AS build") {
		t.Fatalf("stages %q: want a golang:1.26 build stage then the runtime", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/") && final != "scratch" {
		t.Errorf("runtime base %q is neither distroless nor scratch", final)
	}
	if len(byCmd["HEALTHCHECK"]) != 0 {
		t.Error("HEALTHCHECK present: probes use /healthz and /readyz")
	}
	users := byCmd["USER"]
	if len(users) != 1 {
		t.Fatalf("USER instructions: %v", users)
	}
	uid, _, _ := strings.Cut(users[0].args, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root UID (runAsNonRoot needs a number to check)", users[0].args)
	} else if want := readValues(t, filepath.Join(chartDir, "values.yaml"))["podSecurityContext"].(map[string]any)["runAsUser"]; float64(n) != want {
		t.Errorf("USER %d, chart runAsUser %v", n, want)
	}

	b := dockerGoBuild(t, ins)
	// `make build` builds the same package.
	mk := readFile(t, filepath.Join(repoRoot, "Makefile"))
	m := regexp.MustCompile(`(?m)^build:\n\t\$\(GO\) build -o \$\(BIN\) (\S+)$`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatal("cannot find the Makefile's build recipe")
	}
	if b.pkg != m[1] {
		t.Errorf("Dockerfile builds %s, make build builds %s", b.pkg, m[1])
	}
	if !slices.Contains(b.args, "-trimpath") {
		t.Error("go build without -trimpath")
	}
	if !slices.ContainsFunc(b.env, func(e string) bool { return strings.HasPrefix(e, "CGO_ENABLED=") }) {
		t.Error("CGO_ENABLED is not set explicitly")
	}

	// ENTRYPOINT is the binary the build stage made.
	entry := jsonArray(t, byCmd["ENTRYPOINT"][0])
	var copied bool
	for _, c := range byCmd["COPY"] {
		f := strings.Fields(c.args)
		if len(f) == 3 && f[0] == "--from=build" && f[1] == b.out && f[2] == entry[0] {
			copied = true
		}
	}
	if len(entry) != 1 || !copied {
		t.Errorf("ENTRYPOINT %q is not the binary copied from the build stage's %s", entry, b.out)
	}
	cmd := jsonArray(t, byCmd["CMD"][0])

	// The chart runs the image with CMD's arguments.
	r := renderCI(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	c := straitContainer(t, r.deployment.Spec.Template.Spec.Containers)
	if !slices.Equal(c.Args, cmd) || len(c.Command) != 0 {
		t.Errorf("chart container command %q args %q, Dockerfile CMD %q", c.Command, c.Args, cmd)
	}

	// Build with the Dockerfile's own environment and flags.
	bin := filepath.Join(t.TempDir(), "strait")
	args := slices.Clone(b.args)
	args[slices.Index(args, "-o")+1] = bin
	build := exec.Command("go", args...)
	build.Dir = repoRoot
	build.Env = append(os.Environ(), b.env...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build (%s go %s) fails:\n%s", strings.Join(b.env, " "), strings.Join(args, " "), out)
	}
	if out := runStrait(t, bin, 0, "version"); strings.TrimSpace(out) != "strait chart-test" {
		t.Errorf("strait version = %q: -X main.version did not take", out)
	}
	checkRuntimeLibs(t, bin, final)

	// CMD's command and flags are the real binary's: `run --help` lists
	// the flags, and validate (which takes run's flags) accepts them with
	// the config path pointed at the chart's rendered strait.yaml.
	if len(cmd) == 0 || cmd[0] != "run" {
		t.Fatalf("CMD %q does not start with run", cmd)
	}
	help := runStrait(t, bin, 0, "run", "--help")
	for _, a := range cmd[1:] {
		if strings.HasPrefix(a, "-") && !strings.Contains(help, "  "+strings.SplitN(a, "=", 2)[0]+" ") && !strings.Contains(help, "  -"+strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")) {
			t.Errorf("CMD flag %s is not in `strait run --help`:\n%s", a, help)
		}
	}
	cfgFile := filepath.Join(t.TempDir(), "strait.yaml")
	// A minimal config: the rendered one's files are TestRender*'s business.
	if err := os.WriteFile(cfgFile, []byte("upstream: {bootstrap: [\"kafka:9092\"]}\nlisten: {bootstrap: \"127.0.0.1:9092\", broker_port_base: 19092}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vargs := append([]string{"validate"}, cmd[1:]...)
	ci := slices.Index(vargs, "--config")
	if ci < 0 || ci+1 >= len(vargs) {
		t.Fatalf("CMD %q has no --config FILE", cmd)
	}
	if vargs[ci+1] != c.Args[2] {
		t.Errorf("CMD config %s, chart mounts it at %s", vargs[ci+1], c.Args[2])
	}
	vargs[ci+1] = cfgFile
	if out := runStrait(t, bin, 0, vargs...); !strings.Contains(out, "configuration ok") {
		t.Errorf("strait %q: %s", vargs, out)
	}
	// And a flag that does not exist is refused, so the check above means something.
	runStrait(t, bin, 2, "run", "--no-such-flag")
}

// checkRuntimeLibs: a static binary for scratch or distroless/static; with
// cgo, only glibc's own libraries, which distroless/base ships.
func checkRuntimeLibs(t *testing.T, bin, base string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	static := base == "scratch" || strings.Contains(base, "/static")
	if static && len(libs) > 0 {
		t.Errorf("%s has no libc, but the binary needs %v", base, libs)
	}
	glibc := regexp.MustCompile(`^(libc|libm|libdl|libpthread|libresolv|librt|ld-linux-x86-64|ld-linux-aarch64)\.so\.\d+$`)
	for _, l := range libs {
		if !glibc.MatchString(l) {
			t.Errorf("the binary needs %s, which %s does not ship", l, base)
		}
	}
	t.Logf("dynamic libraries: %v", libs)
}

// TestDockerignoreKeepsBuildInputs: nothing `go build ./cmd/strait` reads is
// left out of the build context.
func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	var patterns []string
	for _, l := range strings.Split(readFile(t, filepath.Join(repoRoot, ".dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf(".dockerignore exception %q: the test's matcher does not handle them", l)
			}
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	out, err := exec.Command("go", "list", "-C", repoRoot, "-deps",
		"-f", `{{if .Module}}{{if eq .Module.Path "github.com/strait-proxy/strait"}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .CgoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .HFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		"./cmd/strait").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	if len(files) < 20 {
		t.Fatalf("only %d files listed: %v", len(files), files)
	}
	for _, f := range files {
		for _, p := range patterns {
			if ignored(p, f) {
				t.Errorf(".dockerignore %q drops %s, which the build needs", p, f)
			}
		}
	}
	// The matcher works: these are meant to be dropped.
	for _, f := range []string{"bin/strait", "charts/strait/Chart.yaml", "docs/operations.md", "config/testdata/x.yaml", "crypto/README.md"} {
		if !slices.ContainsFunc(patterns, func(p string) bool { return ignored(p, f) }) {
			t.Errorf("%s is not ignored", f)
		}
	}
}

// ignored reports whether a .dockerignore pattern excludes path (slash
// separated, relative to the context): the pattern matches the path or one
// of its parent directories; a leading **/ matches at any depth.
func ignored(pattern, path string) bool {
	segs := strings.Split(path, "/")
	try := func(p string, from int) bool {
		for end := from + 1; end <= len(segs); end++ {
			if ok, _ := filepath.Match(p, strings.Join(segs[from:end], "/")); ok {
				return true
			}
		}
		return false
	}
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		for i := range segs {
			if try(rest, i) {
				return true
			}
		}
		return false
	}
	return try(pattern, 0)
}
