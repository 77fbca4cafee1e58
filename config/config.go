// Package config is Strait's configuration: one YAML file, decoded strictly
// into typed structs, with defaults in one place (Default) and every error
// reported with the path of the offending key.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/config/duration"
)

// Config is the whole file. YAML keys are the json tags.
type Config struct {
	Upstream     Upstream      `json:"upstream"`
	Listen       Listen        `json:"listen"`
	SNI          SNI           `json:"sni"`
	Admin        Admin         `json:"admin"`
	Limits       Limits        `json:"limits"`
	Log          Log           `json:"log"`
	Interceptors []Interceptor `json:"interceptors"`
}

// Upstream is the Kafka cluster Strait fronts.
type Upstream struct {
	// Bootstrap servers, host:port.
	Bootstrap []string `json:"bootstrap"`
	// Endpoint, when set, is the one address (a private-link endpoint or
	// an SNI router) every upstream connection dials; the broker's
	// advertised host is sent as TLS SNI and verified in its certificate.
	Endpoint string    `json:"endpoint,omitempty"`
	TLS      ClientTLS `json:"tls"`
	// DialTimeout bounds TCP connect plus TLS handshake.
	DialTimeout Duration `json:"dial_timeout"`
	// MetadataRefresh is how often Strait asks the cluster for its brokers
	// (to open listeners for new ones and close those of departed ones).
	MetadataRefresh Duration `json:"metadata_refresh"`
	// SASL authenticates Strait's own connections to the cluster (the
	// broker list, topic-id lookups). Client connections are not affected:
	// they authenticate as themselves, or as their principal through
	// authswap.
	SASL *UpstreamSASL `json:"sasl,omitempty"`
}

// UpstreamSASL is a SASL identity of Strait's own towards the brokers. The
// password comes from a file (mode-checked like every secret file) or an
// environment variable, never from the config itself.
type UpstreamSASL struct {
	Mechanism    string `json:"mechanism"` // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Username     string `json:"username"`
	PasswordFile string `json:"password_file,omitempty"`
	PasswordEnv  string `json:"password_env,omitempty"`
}

// ClientTLS is TLS towards the brokers.
type ClientTLS struct {
	Enabled  bool   `json:"enabled"`
	CAFile   string `json:"ca_file,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// InsecureSkipVerify turns certificate verification off. Strait logs a
	// warning at every start while it is set.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// Listen is the port-per-broker mode: one bootstrap port, and broker node n
// on BrokerPortBase+n (or its override) of the same host.
type Listen struct {
	Bootstrap      string `json:"bootstrap"`
	BrokerPortBase int    `json:"broker_port_base"`
	// BrokerPorts overrides the port of individual node ids.
	BrokerPorts map[string]int `json:"broker_ports,omitempty"`
	// AdvertiseHost is the host put into rewritten metadata; default: the
	// bootstrap listener's host.
	AdvertiseHost string    `json:"advertise_host,omitempty"`
	TLS           ServerTLS `json:"tls"`
}

// ServerTLS is TLS (and mTLS when ClientCAFile is set) towards clients.
type ServerTLS struct {
	CertFile     string `json:"cert_file,omitempty"`
	KeyFile      string `json:"key_file,omitempty"`
	ClientCAFile string `json:"client_ca_file,omitempty"`
}

// Enabled reports whether client-side TLS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// SNI is the one-port mode: a TLS listener that routes each connection by the
// server name the client sent. Metadata advertises HostTemplate with {node}
// replaced by the node id; the bootstrap name is "bootstrap" followed by the
// template's part after its first dot.
type SNI struct {
	Listen       string `json:"listen,omitempty"`
	HostTemplate string `json:"host_template,omitempty"`
	// AdvertisePort is the port put into metadata; default: the SNI
	// listener's port (set it when a load balancer maps another port).
	// The certificate is listen.tls's.
	AdvertisePort int `json:"advertise_port,omitempty"`
}

// Admin serves /metrics, /healthz and /readyz.
type Admin struct {
	Listen string `json:"listen,omitempty"`
}

// Limits protect Strait and the brokers from clients.
type Limits struct {
	// MaxFrameBytes is the largest request or response frame accepted,
	// checked before allocation (the broker's socket.request.max.bytes).
	MaxFrameBytes int32 `json:"max_frame_bytes"`
	// MaxInFlight bounds the requests one connection may have waiting for
	// responses; the client is read no further until one completes.
	MaxInFlight int `json:"max_in_flight"`
	// IdleTimeout closes a connection that sends nothing for this long.
	IdleTimeout Duration `json:"idle_timeout"`
	// DrainTimeout bounds the graceful drain on SIGTERM.
	DrainTimeout Duration `json:"drain_timeout"`
	// StallTimeout bounds how long one frame may take to arrive once its
	// size has been read, and how long a write to the client or the broker
	// may block: a peer that stops reading (or trickles a frame) is closed
	// instead of holding its buffers forever.
	StallTimeout Duration `json:"stall_timeout"`
	// MaxConnections bounds the client connections open at once, over all
	// listeners; one more is closed at accept (clients retry).
	MaxConnections int `json:"max_connections"`
	// MaxBufferedBytes is the memory budget for client request frames held
	// at once (being read, or kept by an interceptor until the response is
	// written), over all connections. A frame that does not fit waits for
	// room up to stall_timeout, then its connection is closed.
	MaxBufferedBytes int64 `json:"max_buffered_bytes"`
	// MaxVersions caps the version Strait advertises for the named APIs
	// (protocol names, e.g. "Fetch"), below the cluster's and Strait's own
	// maximum. The default {Fetch: 15} gives up the KIP-951 leader hints of
	// Fetch v16+ (clients refresh metadata after a leader change, as before
	// Kafka 3.7) so that, with no interceptor on Fetch, fetch responses are
	// forwarded socket to socket instead of decoded to rewrite those hints:
	// consume through Strait goes from ~0.8 to ~0.9 of direct throughput
	// (docs/performance.md). Set {Fetch: 18} to keep the hints.
	MaxVersions map[string]int16 `json:"max_versions,omitempty"`
}

// Log configures structured logging.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn, error
	Format string `json:"format"` // json or text
}

// Interceptor names a built-in interceptor and its own configuration, which
// that interceptor decodes strictly.
type Interceptor struct {
	Name   string          `json:"name"`
	Config json.RawMessage `json:"config,omitempty"`
}

// Default is every default in one place.
func Default() Config {
	return Config{
		Upstream: Upstream{
			DialTimeout:     Duration(10 * time.Second),
			MetadataRefresh: Duration(30 * time.Second),
		},
		Limits: Limits{
			MaxFrameBytes: 100 << 20,
			MaxInFlight:   64,
			IdleTimeout:   Duration(10 * time.Minute),
			DrainTimeout:  Duration(30 * time.Second),
			StallTimeout:  Duration(60 * time.Second),
			// docs/security.md gives the measured memory per connection.
			MaxConnections:   10000,
			MaxBufferedBytes: 1 << 30,
			MaxVersions:      map[string]int16{"Fetch": 15},
		},
		Log: Log{Level: "info", Format: "json"},
	}
}

// Load reads and strictly decodes a YAML file over the defaults.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return Parse(b)
}

// Parse strictly decodes YAML over the defaults. Unknown keys and wrong types
// are errors naming the key's path.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return cfg, fmt.Errorf("yaml: %w", err)
	}
	if len(bytes.TrimSpace(j)) == 0 || string(bytes.TrimSpace(j)) == "null" {
		return cfg, nil
	}
	var generic any
	if err := json.Unmarshal(j, &generic); err != nil {
		return cfg, err
	}
	if errs := checkKeys(generic, cfg, ""); len(errs) > 0 {
		return cfg, errs
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var te *json.UnmarshalTypeError
		if asTypeError(err, &te) {
			want := te.Type.String()
			if te.Type == reflect.TypeFor[Duration]() {
				want = `a duration such as "10s" or "5m"`
			}
			return cfg, fmt.Errorf("%s: expected %s, got %s", te.Field, want, te.Value)
		}
		return cfg, err
	}
	return cfg, nil
}

// Errors is a list of problems, each prefixed with its path.
type Errors []string

func (e Errors) Error() string { return strings.Join(e, "\n") }

// Duration is a time.Duration written as "10s", "5m" in YAML: the one type
// every config block uses (package duration, so that the key-store
// packages can use it without importing the application's config).
type Duration = duration.Duration
