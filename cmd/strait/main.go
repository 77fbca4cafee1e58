// Command strait is the Strait Kafka proxy.
//
//	strait run [--config FILE] [flags]   serve
//	strait validate --config FILE        check a config, explain every error
//	strait version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "keys":
		return cmdKeys(args[1:], stdout, stderr)
	case "policy":
		return cmdPolicy(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "strait: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Strait: a Kafka-protocol sidecar and gateway.

Usage:
  strait run [--config FILE] [flags]   serve (strait run -h lists the flags)
  strait validate --config FILE [flags] check a configuration and explain every error
  strait keys generate|rotate|list      manage a local keyring (strait keys help)
  strait policy test|eval               run rego tests, explain one decision (strait policy help)
  strait version                        print the version
`)
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v = "dev-" + s.Value[:12]
			}
		}
	}
	return "strait " + v
}

// flags are the command-line overrides of the config file's common keys.
type flags struct {
	fs     *flag.FlagSet
	config string
	apply  []func(*config.Config) // only for flags that were set
}

func newFlags(name string, stderr io.Writer) *flags {
	f := &flags{fs: flag.NewFlagSet("strait "+name, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.config, "config", "", "YAML configuration file")
	str := func(name, usage string, set func(*config.Config, string)) {
		f.fs.Func(name, usage, func(v string) error {
			f.apply = append(f.apply, func(c *config.Config) { set(c, v) })
			return nil
		})
	}
	boolean := func(name, usage string, set func(*config.Config)) {
		f.fs.BoolFunc(name, usage, func(v string) error {
			if v != "true" {
				return nil
			}
			f.apply = append(f.apply, set)
			return nil
		})
	}
	str("upstream", "upstream bootstrap servers, HOST:PORT[,HOST:PORT...] (upstream.bootstrap)", func(c *config.Config, v string) {
		c.Upstream.Bootstrap = splitList(v)
	})
	str("listen", "bootstrap listener HOST:PORT given to clients (listen.bootstrap)", func(c *config.Config, v string) { c.Listen.Bootstrap = v })
	f.fs.Func("broker-port-base", "broker with node id n is served on port N+n of the listen host (listen.broker_port_base)", func(v string) error {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		f.apply = append(f.apply, func(c *config.Config) { c.Listen.BrokerPortBase = n })
		return nil
	})
	str("advertise-host", "host put into rewritten metadata; default: the listen host (listen.advertise_host)", func(c *config.Config, v string) { c.Listen.AdvertiseHost = v })
	boolean("upstream-tls", "connect to the brokers with TLS (upstream.tls.enabled)", func(c *config.Config) { c.Upstream.TLS.Enabled = true })
	str("upstream-ca", "CA file to verify the brokers (upstream.tls.ca_file)", func(c *config.Config, v string) { c.Upstream.TLS.CAFile = v })
	str("upstream-cert", "client certificate towards the brokers (upstream.tls.cert_file)", func(c *config.Config, v string) { c.Upstream.TLS.CertFile = v })
	str("upstream-key", "client key towards the brokers (upstream.tls.key_file)", func(c *config.Config, v string) { c.Upstream.TLS.KeyFile = v })
	str("upstream-endpoint", "private-link endpoint HOST:PORT every upstream connection dials, with the broker host as SNI (upstream.endpoint)", func(c *config.Config, v string) { c.Upstream.Endpoint = v })
	str("tls-cert", "certificate for client-side TLS (listen.tls.cert_file)", func(c *config.Config, v string) { c.Listen.TLS.CertFile = v })
	str("tls-key", "key for client-side TLS (listen.tls.key_file)", func(c *config.Config, v string) { c.Listen.TLS.KeyFile = v })
	str("tls-client-ca", "CA that client certificates must chain to: turns on mTLS (listen.tls.client_ca_file)", func(c *config.Config, v string) { c.Listen.TLS.ClientCAFile = v })
	str("sni-listen", "one TLS port routed by SNI, HOST:PORT (sni.listen)", func(c *config.Config, v string) { c.SNI.Listen = v })
	str("sni-host-template", "advertised broker names in SNI mode, e.g. b{node}.strait.local (sni.host_template)", func(c *config.Config, v string) { c.SNI.HostTemplate = v })
	str("admin-listen", "HOST:PORT serving /metrics, /healthz, /readyz (admin.listen)", func(c *config.Config, v string) { c.Admin.Listen = v })
	str("log-level", "debug, info, warn or error (log.level)", func(c *config.Config, v string) { c.Log.Level = v })
	str("log-format", "json or text (log.format)", func(c *config.Config, v string) { c.Log.Format = v })
	return f
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// load reads the config file (if any) and applies the flags over it.
func (f *flags) load(args []string) (config.Config, error) {
	if err := f.fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if f.fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("unexpected arguments: %v", f.fs.Args())
	}
	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return cfg, fmt.Errorf("%s:\n%w", f.config, err)
		}
	}
	for _, a := range f.apply {
		a(&cfg)
	}
	return cfg, nil
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	f := newFlags("validate", stderr)
	cfg, err := f.load(args)
	if err == nil {
		// Report config and interceptor problems together.
		var errs []error
		if verr := cfg.Validate(); verr != nil {
			errs = append(errs, verr)
		}
		if set, berr := plugins.Build(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); berr != nil {
			errs = append(errs, berr)
		} else {
			set.Close()
		}
		err = errors.Join(errs...)
	}
	if err != nil {
		fmt.Fprintf(stderr, "invalid configuration:\n%s\n", indent(err.Error()))
		return 1
	}
	fmt.Fprintln(stdout, "configuration ok")
	return 0
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ")
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, o))
	}
	return slog.New(slog.NewJSONHandler(w, o))
}

func cmdRun(args []string, stderr io.Writer) int {
	f := newFlags("run", stderr)
	cfg, err := f.load(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "strait: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ics, err := plugins.Build(cfg, log, reg)
	if err != nil {
		fmt.Fprintf(stderr, "strait: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	srv, err := proxy.New(cfg, proxy.Options{Logger: log, Registerer: reg, Interceptors: ics.List, Topics: ics.Topics})
	if err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		return 2
	}
	if err := srv.Listen(); err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// Each reload parses the same command line afresh over the file.
	load := func() (config.Config, error) { return newFlags("run", io.Discard).load(args) }
	go newReloader(load, srv, log, reg, ics.Topics, cfg, ics, f.config).run(ctx)
	if cfg.Admin.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			fmt.Fprintf(stderr, "strait: admin.listen: %v\n", err)
			return 1
		}
		hs := &http.Server{Handler: srv.AdminHandler(reg), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
		log.Info("admin listening", "addr", ln.Addr().String())
	}
	log.Info("strait starting", "version", versionString(), "bootstrap", cfg.Listen.Bootstrap, "sni", cfg.SNI.Listen,
		"upstream", strings.Join(cfg.Upstream.Bootstrap, ","), "endpoint", cfg.Upstream.Endpoint, "interceptors", len(ics.List))
	if err := srv.Run(ctx); err != nil {
		log.Error("strait stopped", "err", err)
		return 1
	}
	return 0
}
