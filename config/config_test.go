package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseStrictWithPaths(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error; none: must parse
	}{
		{"defaults", "upstream: {bootstrap: [k:9092]}", nil},
		{"unknown top key", "upstrem: {}", []string{"upstrem: unknown key"}},
		{"unknown nested key", "upstream: {tls: {enabld: true}}", []string{"upstream.tls.enabld: unknown key", "enabled"}},
		{"unknown key in list", "interceptors: [{name: x, confg: {}}]", []string{"interceptors[0].confg: unknown key"}},
		{"two unknown keys", "listen: {a: 1, b: 2}", []string{"listen.a", "listen.b"}},
		{"wrong type", "limits: {max_frame_bytes: lots}", []string{"limits.max_frame_bytes", "int32"}},
		{"bad duration", "limits: {idle_timeout: soon}", []string{"idle_timeout"}},
		{"interceptor config left to its owner", "interceptors: [{name: x, config: {anything: 1}}]", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("parsed, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte(`
upstream: {bootstrap: ["a:1", "b:2"], endpoint: "pl:9092", tls: {enabled: true}}
listen: {bootstrap: "127.0.0.1:9092", broker_port_base: 19092, broker_ports: {"7": 30007}}
limits: {idle_timeout: 90s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstream.Bootstrap) != 2 || c.Upstream.Endpoint != "pl:9092" || !c.Upstream.TLS.Enabled {
		t.Fatalf("%+v", c.Upstream)
	}
	if c.Limits.IdleTimeout.D() != 90*time.Second || c.Limits.MaxFrameBytes != 100<<20 {
		t.Fatalf("limits %+v: file values and defaults must combine", c.Limits)
	}
	if c.Listen.BrokerPort(7) != 30007 || c.Listen.BrokerPort(2) != 19094 {
		t.Fatal("broker ports")
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Upstream.Bootstrap = []string{"k:9092"}
		c.Listen.Bootstrap = "127.0.0.1:9092"
		c.Listen.BrokerPortBase = 19092
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"no upstream", func(c *Config) { c.Upstream.Bootstrap = nil }, "upstream.bootstrap"},
		{"bad upstream", func(c *Config) { c.Upstream.Bootstrap = []string{"nohost"} }, "upstream.bootstrap[0]"},
		{"endpoint without tls", func(c *Config) { c.Upstream.Endpoint = "pl:1" }, "upstream.endpoint"},
		{"wildcard without advertise", func(c *Config) { c.Listen.Bootstrap = "0.0.0.0:9092" }, "listen.advertise_host"},
		{"wildcard with advertise", func(c *Config) { c.Listen.Bootstrap = "0.0.0.0:9092"; c.Listen.AdvertiseHost = "gw" }, ""},
		{"no port base", func(c *Config) { c.Listen.BrokerPortBase = 0 }, "listen.broker_port_base"},
		{"bad override", func(c *Config) { c.Listen.BrokerPorts = map[string]int{"x": 1} }, "listen.broker_ports.x"},
		{"mtls without tls", func(c *Config) { c.Listen.TLS.ClientCAFile = "/etc/hostname" }, "listen.tls.client_ca_file"},
		{"missing file", func(c *Config) { c.Upstream.TLS.Enabled = true; c.Upstream.TLS.CAFile = "/nonexistent" }, "upstream.tls.ca_file"},
		{"sni without tls", func(c *Config) { c.Listen.Bootstrap = ""; c.SNI.Listen = ":9443"; c.SNI.HostTemplate = "b{node}.x.y" }, "sni.listen"},
		{"sni bad template", func(c *Config) { c.SNI.Listen = ":9443"; c.SNI.HostTemplate = "broker.x" }, "sni.host_template"},
		{"both modes", func(c *Config) {
			c.SNI.Listen, c.SNI.HostTemplate = ":9443", "b{node}.x.y"
			c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile = "/etc/hostname", "/etc/hostname"
		}, ""},
		{"nothing to listen on", func(c *Config) { c.Listen.Bootstrap = "" }, "listen.bootstrap"},
		{"tiny frames", func(c *Config) { c.Limits.MaxFrameBytes = 10 }, "limits.max_frame_bytes"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"version cap", func(c *Config) { c.Limits.MaxVersions = map[string]int16{"fetch": 15} }, ""},
		{"version cap of an unknown API", func(c *Config) { c.Limits.MaxVersions = map[string]int16{"Fetchh": 15} }, "limits.max_versions.Fetchh"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestSNIHosts(t *testing.T) {
	s := SNI{HostTemplate: "b{node}.strait.test"}
	if s.BootstrapHost() != "bootstrap.strait.test" || s.SNIHost(12) != "b12.strait.test" {
		t.Fatal(s.BootstrapHost(), s.SNIHost(12))
	}
	for name, want := range map[string]int32{"bootstrap.strait.test": -1, "b0.strait.test": 0, "B7.Strait.Test.": 7} {
		if got, ok := s.NodeForHost(name); !ok || got != want {
			t.Fatalf("%s: %d %v", name, got, ok)
		}
	}
	for _, bad := range []string{"b.strait.test", "b-1.strait.test", "bx.strait.test", "b1.other.test", "strait.test", ""} {
		if _, ok := s.NodeForHost(bad); ok {
			t.Fatalf("%q routed", bad)
		}
	}
}

// FuzzParse: no YAML input may panic the parser, and whatever parses must
// also survive Validate.
func FuzzParse(f *testing.F) {
	f.Add([]byte("upstream: {bootstrap: [k:9092]}\nlisten: {bootstrap: 127.0.0.1:9092, broker_port_base: 19092}"))
	f.Add([]byte("interceptors: [{name: deny-apis, config: {apis: [DeleteTopics]}}]"))
	f.Add([]byte("limits: {idle_timeout: 1s, max_frame_bytes: 1024}\nsni: {listen: ':1', host_template: 'b{node}.x'}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse(in)
		if err == nil {
			_ = c.Validate()
		}
	})
}
