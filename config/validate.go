package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Validate checks everything that can be checked without the network and
// returns every problem at once, each with its path.
func (c *Config) Validate() error {
	var errs Errors
	add := func(path, format string, args ...any) {
		errs = append(errs, path+": "+fmt.Sprintf(format, args...))
	}
	hostPort := func(path, v string) (string, int, bool) {
		h, p, err := net.SplitHostPort(v)
		if err != nil {
			add(path, "%q is not host:port (%v)", v, err)
			return "", 0, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			add(path, "%q: port must be a number 0-65535", v)
			return "", 0, false
		}
		return h, n, true
	}
	file := func(path, name string) {
		if name == "" {
			return
		}
		if _, err := os.Stat(name); err != nil {
			add(path, "%v", err)
		}
	}

	if len(c.Upstream.Bootstrap) == 0 {
		add("upstream.bootstrap", "at least one upstream bootstrap server is required (flag --upstream)")
	}
	for i, b := range c.Upstream.Bootstrap {
		hostPort(fmt.Sprintf("upstream.bootstrap[%d]", i), b)
	}
	if c.Upstream.Endpoint != "" {
		hostPort("upstream.endpoint", c.Upstream.Endpoint)
		if !c.Upstream.TLS.Enabled {
			add("upstream.endpoint", "a private-link endpoint routes by TLS SNI: set upstream.tls.enabled (flag --upstream-tls)")
		}
	}
	if s := c.Upstream.SASL; s != nil {
		switch s.Mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			add("upstream.sasl.mechanism", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", s.Mechanism)
		}
		if s.Username == "" {
			add("upstream.sasl.username", "required")
		}
		if (s.PasswordFile == "") == (s.PasswordEnv == "") {
			add("upstream.sasl", "set exactly one of password_file and password_env")
		}
		file("upstream.sasl.password_file", s.PasswordFile)
	}
	t := c.Upstream.TLS
	file("upstream.tls.ca_file", t.CAFile)
	file("upstream.tls.cert_file", t.CertFile)
	file("upstream.tls.key_file", t.KeyFile)
	if (t.CertFile == "") != (t.KeyFile == "") {
		add("upstream.tls", "cert_file and key_file go together")
	}
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.InsecureSkipVerify) {
		add("upstream.tls.enabled", "TLS files or options are set but TLS is not enabled")
	}
	if c.Upstream.DialTimeout <= 0 {
		add("upstream.dial_timeout", "must be positive")
	}
	if c.Upstream.MetadataRefresh <= 0 {
		add("upstream.metadata_refresh", "must be positive")
	}

	if c.Listen.Bootstrap == "" && c.SNI.Listen == "" {
		add("listen.bootstrap", "set a bootstrap listener (flag --listen) or an SNI listener (sni.listen, flag --sni-listen)")
	}
	if c.Listen.Bootstrap != "" {
		if h, _, ok := hostPort("listen.bootstrap", c.Listen.Bootstrap); ok {
			if c.Listen.AdvertiseHost == "" && (h == "" || net.ParseIP(h) != nil && net.ParseIP(h).IsUnspecified()) {
				add("listen.advertise_host", "the bootstrap listener binds every address (%q): say which host clients should be told (flag --advertise-host)", c.Listen.Bootstrap)
			}
		}
		if c.Listen.BrokerPortBase <= 0 || c.Listen.BrokerPortBase > 65535 {
			add("listen.broker_port_base", "must be a port number; broker node n is served on broker_port_base+n (flag --broker-port-base)")
		}
		for id, p := range c.Listen.BrokerPorts {
			if _, err := strconv.ParseInt(id, 10, 32); err != nil {
				add("listen.broker_ports."+id, "key must be a node id")
			}
			if p <= 0 || p > 65535 {
				add("listen.broker_ports."+id, "port %d out of range", p)
			}
		}
	}
	st := c.Listen.TLS
	file("listen.tls.cert_file", st.CertFile)
	file("listen.tls.key_file", st.KeyFile)
	file("listen.tls.client_ca_file", st.ClientCAFile)
	if (st.CertFile == "") != (st.KeyFile == "") {
		add("listen.tls", "cert_file and key_file go together")
	}
	if st.ClientCAFile != "" && st.CertFile == "" {
		add("listen.tls.client_ca_file", "mTLS needs TLS: set cert_file and key_file")
	}

	if c.SNI.Listen != "" {
		hostPort("sni.listen", c.SNI.Listen)
		if !strings.Contains(c.SNI.HostTemplate, "{node}") {
			add("sni.host_template", "must contain {node}, e.g. b{node}.strait.example.com (flag --sni-host-template)")
		} else if _, _, ok := strings.Cut(c.SNI.HostTemplate, "."); !ok {
			add("sni.host_template", "must have a domain after the first label, e.g. b{node}.strait.example.com")
		}
		if !st.Enabled() {
			add("sni.listen", "SNI routing needs TLS towards clients: set listen.tls.cert_file and key_file (flags --tls-cert, --tls-key)")
		}
	} else if c.SNI.HostTemplate != "" {
		add("sni.host_template", "set without sni.listen")
	}
	if c.Admin.Listen != "" {
		hostPort("admin.listen", c.Admin.Listen)
	}

	if c.Limits.MaxFrameBytes < 1024 {
		add("limits.max_frame_bytes", "must be at least 1024")
	}
	if c.Limits.MaxInFlight < 1 {
		add("limits.max_in_flight", "must be at least 1")
	}
	if c.Limits.IdleTimeout <= 0 {
		add("limits.idle_timeout", "must be positive")
	}
	for name, v := range c.Limits.MaxVersions {
		if _, ok := APIKey(name); !ok {
			add("limits.max_versions."+name, "unknown Kafka API (use the protocol's name, e.g. Fetch, Produce, Metadata)")
		} else if v < 0 {
			add("limits.max_versions."+name, "version %d is negative", v)
		}
	}
	if c.Limits.StallTimeout <= 0 {
		add("limits.stall_timeout", "must be positive")
	}
	if c.Limits.MaxConnections < 1 {
		add("limits.max_connections", "must be at least 1")
	}
	if c.Limits.MaxBufferedBytes < int64(c.Limits.MaxFrameBytes) {
		add("limits.max_buffered_bytes", "must be at least limits.max_frame_bytes (%d), or no frame of the largest size could ever be read", c.Limits.MaxFrameBytes)
	}
	if c.Limits.DrainTimeout < 0 {
		add("limits.drain_timeout", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q: one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add("log.format", "%q: json or text", c.Log.Format)
	}
	for i, ic := range c.Interceptors {
		if ic.Name == "" {
			add(fmt.Sprintf("interceptors[%d].name", i), "required")
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// BrokerPort is the listener port of node id, from the overrides or the base.
func (l Listen) BrokerPort(node int32) int {
	if p, ok := l.BrokerPorts[strconv.Itoa(int(node))]; ok {
		return p
	}
	return l.BrokerPortBase + int(node)
}

// SNIHost is the advertised host of node for an SNI template.
func (s SNI) SNIHost(node int32) string {
	return strings.ReplaceAll(s.HostTemplate, "{node}", strconv.Itoa(int(node)))
}

// BootstrapHost is the SNI name of the bootstrap route.
func (s SNI) BootstrapHost() string {
	_, domain, _ := strings.Cut(s.HostTemplate, ".")
	return "bootstrap." + domain
}

// NodeForHost maps an SNI server name back to a node id; bootstrap is -1.
func (s SNI) NodeForHost(name string) (int32, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == strings.ToLower(s.BootstrapHost()) {
		return -1, true
	}
	pre, suf, _ := strings.Cut(strings.ToLower(s.HostTemplate), "{node}")
	if !strings.HasPrefix(name, pre) || !strings.HasSuffix(name, suf) || len(name) <= len(pre)+len(suf) {
		return 0, false
	}
	n, err := strconv.ParseInt(name[len(pre):len(name)-len(suf)], 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return int32(n), true
}

// APIKey finds a Kafka API by its protocol name (case-insensitive).
func APIKey(name string) (int16, bool) {
	for k := range int16(128) {
		if n := kmsg.NameForKey(k); n != "Unknown" && strings.EqualFold(n, name) {
			return k, true
		}
	}
	return 0, false
}
