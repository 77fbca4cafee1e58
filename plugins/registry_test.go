package plugins

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/interceptor/denyapis"
	"github.com/strait-proxy/strait/metadata"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/topicid"
)

// Every interceptor is registered under the name its package declares, and
// Names lists them with the built-in metadata interceptor, sorted.
func TestNames(t *testing.T) {
	want := []string{authswap.Name, decrypt.Name, denyapis.Name, encrypt.Name, metadata.Name, policy.Name}
	slices.Sort(want)
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range want {
		if _, ok := builtins[n]; !ok && n != metadata.Name {
			t.Errorf("%s has no constructor", n)
		}
	}
}

func TestBuild(t *testing.T) {
	ic := func(name, cfg string) config.Interceptor {
		return config.Interceptor{Name: name, Config: json.RawMessage(cfg)}
	}
	for _, tc := range []struct {
		name string
		ics  []config.Interceptor
		errs []string // each must appear; none: the build succeeds
	}{
		{"deny-apis builds", []config.Interceptor{ic(denyapis.Name, `{"apis":["DeleteTopics"]}`)}, nil},
		{"unknown name lists the known", []config.Interceptor{ic("encrpyt", `{}`)}, []string{`interceptors[0].name: unknown interceptor "encrpyt"`, "known: " + strings.Join(Names(), ", ")}},
		{"metadata is built in", []config.Interceptor{ic(metadata.Name, ``)}, []string{"interceptors[0].name: the metadata interceptor is built in"}},
		{"unknown key has its path", []config.Interceptor{ic(denyapis.Name, `{"apis":["DeleteTopics"]}`), ic(denyapis.Name, `{"apiz":[]}`)}, []string{"interceptors[1].config.apiz"}},
		{"every error is reported", []config.Interceptor{ic("a", `{}`), ic("b", `{}`)}, []string{`interceptors[0].name: unknown interceptor "a"`, `interceptors[1].name: unknown interceptor "b"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Interceptors = tc.ics
			topics := topicid.New()
			set, err := BuildWith(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), topics)
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				defer set.Close()
				if len(set.List) != len(tc.ics) || set.Topics != topics {
					t.Fatalf("built %d interceptors (want %d), shared topic map %v", len(set.List), len(tc.ics), set.Topics == topics)
				}
				return
			}
			if err == nil {
				t.Fatal("built; want an error")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
