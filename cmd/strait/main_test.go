package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

// strait runs the CLI in-process and returns its exit code and output.
func strait(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, errOut := strait(t, arg)
		if code != 0 || !strings.HasPrefix(out, "strait ") || errOut != "" {
			t.Fatalf("strait %s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := strait(t); code != 2 || !strings.Contains(errOut, "strait keys") {
		t.Fatalf("no args: exit %d, usage %q", code, errOut)
	}
	if code, _, errOut := strait(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: exit %d, %q", code, errOut)
	}
}

// keyMaterial returns every base64 key in the keyring file.
func keyMaterial(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Keys []struct {
			Versions []struct{ Key string } `json:"versions"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range f.Keys {
		for _, v := range k.Versions {
			out = append(out, v.Key)
		}
	}
	return out
}

// TestKeysRoundTrip: generate creates a 0600 file, rotate adds versions,
// list shows ids, versions, the current one and creation times, never the
// key material; the keyring works with the local provider afterwards.
func TestKeysRoundTrip(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "keys.json")

	code, out, errOut := strait(t, "keys", "generate", "--keyring", kr, "--key", "customers-kek")
	if code != 0 || !strings.Contains(out, `"customers-kek" version 1`) {
		t.Fatalf("generate: exit %d, %q %q", code, out, errOut)
	}
	fi, err := os.Stat(kr)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("keyring mode %04o, want 0600", perm)
	}
	// A second key; the id may be positional.
	if code, out, errOut := strait(t, "keys", "generate", "--keyring", kr, "payments-kek"); code != 0 {
		t.Fatalf("generate positional: exit %d, %q %q", code, out, errOut)
	}
	// Generating an existing key is refused and changes nothing.
	before, _ := os.ReadFile(kr)
	if code, _, errOut := strait(t, "keys", "generate", "--keyring", kr, "--key", "customers-kek"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate generate: exit %d, %q", code, errOut)
	}
	if after, _ := os.ReadFile(kr); !bytes.Equal(before, after) {
		t.Fatal("a refused generate changed the keyring")
	}

	for want := 2; want <= 3; want++ {
		code, out, errOut := strait(t, "keys", "rotate", "--keyring", kr, "--key", "customers-kek")
		if code != 0 || !strings.Contains(out, "version "+string(rune('0'+want))+" is current") {
			t.Fatalf("rotate: exit %d, %q %q", code, out, errOut)
		}
	}
	if code, _, errOut := strait(t, "keys", "rotate", "--keyring", kr, "--key", "nope"); code != 1 || !strings.Contains(errOut, `"nope"`) {
		t.Fatalf("rotate unknown key: exit %d, %q", code, errOut)
	}

	code, out, errOut = strait(t, "keys", "list", "--keyring", kr)
	if code != 0 {
		t.Fatalf("list: exit %d, %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 { // header + customers-kek v1..v3 + payments-kek v1
		t.Fatalf("list printed %d lines, want 5:\n%s", len(lines), out)
	}
	rows := map[string]bool{}
	ts := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if !ts.MatchString(l) {
			t.Fatalf("list line without a creation time: %q", l)
		}
		rows[strings.Join(f[:len(f)-1], " ")] = true
	}
	for _, want := range []string{"customers-kek 1", "customers-kek 2", "customers-kek 3 *", "payments-kek 1 *"} {
		if !rows[want] {
			t.Fatalf("list lacks %q:\n%s", want, out)
		}
	}
	material := keyMaterial(t, kr)
	if len(material) != 4 {
		t.Fatalf("keyring holds %d versions, want 4", len(material))
	}

	code, jsonOut, errOut := strait(t, "keys", "list", "--keyring", kr, "--key", "customers-kek", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d, %q", code, errOut)
	}
	var infos []local.KeyInfo
	if err := json.Unmarshal([]byte(jsonOut), &infos); err != nil {
		t.Fatalf("list --json: %v\n%s", err, jsonOut)
	}
	if len(infos) != 1 || infos[0].ID != "customers-kek" || infos[0].Current != 3 || len(infos[0].Versions) != 3 || infos[0].Versions[0].Created.IsZero() {
		t.Fatalf("list --json: %+v", infos)
	}
	for _, m := range material {
		if strings.Contains(out, m) || strings.Contains(jsonOut, m) {
			t.Fatal("list printed key material")
		}
	}
	if code, _, errOut := strait(t, "keys", "list", "--keyring", kr, "--key", "nope"); code != 1 || !strings.Contains(errOut, `"nope"`) {
		t.Fatalf("list unknown key: exit %d, %q", code, errOut)
	}

	// The file is a working keyring for the local provider.
	if _, err := local.Load(kr); err != nil {
		t.Fatalf("load generated keyring: %v", err)
	}

	// A keyring others can read is refused, naming the fix.
	if err := os.Chmod(kr, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := strait(t, "keys", "list", "--keyring", kr); code != 1 || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("list of a 0644 keyring: exit %d, %q", code, errOut)
	}
}

func TestKeysUsageErrors(t *testing.T) {
	kr := filepath.Join(t.TempDir(), "keys.json")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"keys"}, "missing subcommand"},
		{[]string{"keys", "delete", "--keyring", kr}, `unknown subcommand "delete"`},
		{[]string{"keys", "generate", "--key", "k"}, "--keyring FILE is required"},
		{[]string{"keys", "rotate", "--keyring", kr}, "--key ID is required"},
		{[]string{"keys", "generate", "--keyring", kr, "--key", "a", "b"}, "unexpected arguments"},
		{[]string{"keys", "generate", "--keyring", kr, "--no-such-flag"}, "no-such-flag"},
	} {
		code, _, errOut := strait(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", c.args, code, errOut, c.want)
		}
	}
	if code, _, errOut := strait(t, "keys", "generate", "--keyring", kr, "--key", "bad id!"); code != 1 || !strings.Contains(errOut, "only letters") {
		t.Errorf("bad key id: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(kr); err == nil {
		t.Error("a refused generate created the keyring")
	}
	if code, out, _ := strait(t, "keys", "help"); code != 0 || !strings.Contains(out, "strait keys rotate") {
		t.Errorf("keys help: exit %d, %q", code, out)
	}
}

const encryptConfig = `upstream:
  bootstrap: ["127.0.0.1:9092"]
listen:
  bootstrap: 127.0.0.1:19092
  broker_port_base: 19100
interceptors:
  - name: encrypt
    config:
      kms:
        local:
          keyring: %s
      rules:
        - topics: [customers]
          key_id: customers-kek
          format: json
          fields: ["$.ssn_id", "$.account"]
`

// TestValidate: a good config (encrypt interceptor with a real keyring) is
// ok; a bad one exits 1 and names every offending key by its path.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "keys.json")
	if code, _, errOut := strait(t, "keys", "generate", "--keyring", kr, "--key", "customers-kek"); code != 0 {
		t.Fatal(errOut)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(strings.Replace(encryptConfig, "%s", kr, 1)), 0o644)
	if code, out, errOut := strait(t, "validate", "--config", good); code != 0 || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("good config: exit %d, %q %q", code, out, errOut)
	}
	// Flags override the file and are validated too.
	if code, _, errOut := strait(t, "validate", "--config", good, "--upstream", "", "--broker-port-base", "x"); code == 0 || !strings.Contains(errOut, "broker-port-base") {
		t.Fatalf("bad flag: exit %d, %q", code, errOut)
	}

	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown keys", "upstream:\n  bootstrap: [\"127.0.0.1:9092\"]\n  no_such_setting: 1\nlisten:\n  bootstrap: 127.0.0.1:19092\n  broker_port_base: 19100\n",
			[]string{"upstream.no_such_setting"}},
		{"missing upstream", "listen:\n  bootstrap: 127.0.0.1:19092\n  broker_port_base: 19100\n",
			[]string{"upstream.bootstrap"}},
		{"bad encrypt rules", strings.NewReplacer(
			"keyring: %s", "keyring: "+kr,
			"key_id: customers-kek", "key_id: \"\"",
			"format: json", "format: xml").Replace(encryptConfig),
			[]string{"interceptors[0].config", "rules[0].key_id", "rules[0].format", `"xml"`}},
		{"unknown interceptor key", strings.Replace(strings.Replace(encryptConfig, "%s", kr, 1), "      rules:", "      ruels: []\n      rules:", 1),
			[]string{"interceptors[0].config", "ruels"}},
		{"missing keyring", strings.Replace(encryptConfig, "%s", filepath.Join(dir, "missing.json"), 1),
			[]string{"interceptors[0].config", "kms.local", "missing.json"}},
		{"unknown interceptor", strings.Replace(strings.Replace(encryptConfig, "%s", kr, 1), "name: encrypt", "name: encrypt-all", 1),
			[]string{"interceptors[0].name", `"encrypt-all"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			os.WriteFile(p, []byte(c.yaml), 0o644)
			code, out, errOut := strait(t, "validate", "--config", p)
			if code != 1 || out != "" || !strings.HasPrefix(errOut, "invalid configuration:") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and errors on stderr", code, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}

	if code, _, errOut := strait(t, "validate", "--config", filepath.Join(dir, "nope.yaml")); code != 1 || !strings.Contains(errOut, "nope.yaml") {
		t.Fatalf("missing file: exit %d, %q", code, errOut)
	}
}
