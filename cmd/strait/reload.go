package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// reloader re-reads the configuration on SIGHUP and whenever the config
// file or a file it points to changes, and swaps it into the running
// server. A configuration that fails validation or cannot be built is
// rejected whole: the running one stays, and the reason is logged and
// counted.
type reloader struct {
	load    func() (config.Config, error) // the config file plus the command-line flags
	srv     *proxy.Server
	log     *slog.Logger
	reg     prometheus.Registerer
	topics  *topicid.Names
	reloads *prometheus.CounterVec
	every   time.Duration // how often watched files are checked
	path    string        // the config file; "" when flags alone configure
	sum     [32]byte      // fingerprint of the watched files
	files   []string
}

func newReloader(load func() (config.Config, error), srv *proxy.Server, log *slog.Logger, reg prometheus.Registerer, topics *topicid.Names, cfg config.Config, set *plugins.Set, configPath string) *reloader {
	r := &reloader{load: load, srv: srv, log: log, reg: reg, topics: topics, every: 2 * time.Second, path: configPath}
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_config_reloads_total", Help: "Configuration reloads (SIGHUP or a watched file changed), by result: applied or rejected.",
	}, []string{"result"})
	reg.MustRegister(r.reloads)
	r.reloads.WithLabelValues("applied")
	r.reloads.WithLabelValues("rejected")
	r.files = watchedFiles(configPath, cfg, set)
	r.sum = fingerprint(r.files)
	return r
}

// watchedFiles are the config file, the TLS files it names and the files
// each interceptor declared.
func watchedFiles(configPath string, cfg config.Config, set *plugins.Set) []string {
	files := []string{configPath, cfg.Listen.TLS.CertFile, cfg.Listen.TLS.KeyFile, cfg.Listen.TLS.ClientCAFile}
	for _, ic := range set.List {
		files = append(files, ic.Files...)
	}
	out := files[:0]
	for _, f := range files {
		if f != "" {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// fingerprint hashes the contents of files (a missing file hashes as
// missing): content, not modification times, so a Kubernetes ConfigMap or
// Secret swapped by symlink is seen, and a touch is not a change.
func fingerprint(files []string) [32]byte {
	h := sha256.New()
	for _, name := range files {
		fmt.Fprintf(h, "%s\x00", name)
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(h, "missing\x00")
			continue
		}
		_, _ = io.Copy(h, f)
		f.Close()
		h.Write([]byte{0})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// run reloads on SIGHUP and on file changes until ctx ends.
func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload("SIGHUP")
		case <-tick.C:
			if sum := fingerprint(r.files); sum != r.sum {
				r.reload("file changed")
			}
		}
	}
}

// reload builds the new configuration and swaps it in, or rejects it.
func (r *reloader) reload(why string) bool {
	reject := func(err error) bool {
		r.reloads.WithLabelValues("rejected").Inc()
		r.log.Error("configuration reload rejected; the running configuration stays", "trigger", why, "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		// Do not retry the same bad files every tick.
		r.sum = fingerprint(r.files)
		return false
	}
	cfg, err := r.load()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return reject(err)
	}
	set, err := plugins.BuildWith(cfg, r.log, r.reg, r.topics)
	if err != nil {
		return reject(err)
	}
	restart, err := r.srv.Reload(cfg, set.List)
	if err != nil {
		set.Close()
		return reject(err)
	}
	r.files = watchedFiles(r.path, cfg, set)
	r.sum = fingerprint(r.files)
	r.reloads.WithLabelValues("applied").Inc()
	r.log.Info("configuration reloaded", "trigger", why, "interceptors", len(set.List))
	if len(restart) > 0 {
		r.log.Warn("configuration reloaded, but these keys changed and take effect only at restart", "keys", strings.Join(restart, ", "))
	}
	return true
}
