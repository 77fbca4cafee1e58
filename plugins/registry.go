// Package plugins is where the binary's interceptors are wired: it maps the
// names a config may use to their constructors and builds the chain from a
// config. The interceptor contract (package interceptor) knows none of them.
package plugins

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/denyapis"
	"github.com/strait-proxy/strait/metadata"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/topicid"
)

// Env is what constructors may use: a logger, a metrics registry, and the
// topic id→name map fed by the metadata interceptor.
type Env struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	Topics  *topicid.Names
	// Path is the config path of this interceptor's config, for errors.
	Path string
}

// Constructor builds one interceptor from its raw config.
type Constructor func(raw json.RawMessage, env Env) (*interceptor.Interceptor, error)

// strict makes a Constructor from a function of the interceptor's own typed
// config: the raw config is decoded strictly (unknown keys are errors with
// their path) before build sees it.
func strict[C any](build func(C, Env) (*interceptor.Interceptor, error)) Constructor {
	return func(raw json.RawMessage, env Env) (*interceptor.Interceptor, error) {
		var c C
		if err := config.DecodeStrict(raw, &c, env.Path); err != nil {
			return nil, err
		}
		return build(c, env)
	}
}

// builtins are the interceptors a config may name. A new one is one line
// here (and its package).
var builtins = map[string]Constructor{
	encrypt.Name: strict(func(c rules.Config, env Env) (*interceptor.Interceptor, error) {
		return encrypt.New(c, rules.Env{Logger: env.Logger, Metrics: env.Metrics, Topics: env.Topics})
	}),
	decrypt.Name: strict(func(c rules.Config, env Env) (*interceptor.Interceptor, error) {
		return decrypt.New(c, rules.Env{Logger: env.Logger, Metrics: env.Metrics, Topics: env.Topics})
	}),
	policy.Name: strict(func(c policy.Config, env Env) (*interceptor.Interceptor, error) {
		return policy.New(c, policy.Env{Logger: env.Logger, Metrics: env.Metrics, Topics: env.Topics})
	}),
	authswap.Name: strict(func(c authswap.Config, env Env) (*interceptor.Interceptor, error) {
		return authswap.New(c, authswap.Env{Logger: env.Logger, Metrics: env.Metrics})
	}),
	denyapis.Name: strict(func(c denyapis.Config, env Env) (*interceptor.Interceptor, error) {
		return denyapis.New(c, env.Logger)
	}),
}

// Names lists the interceptors a config may name.
func Names() []string {
	out := make([]string, 0, len(builtins)+1)
	for n := range builtins {
		out = append(out, n)
	}
	out = append(out, metadata.Name)
	sort.Strings(out)
	return out
}

func names(cfg config.Config) []string {
	out := make([]string, len(cfg.Interceptors))
	for i, ic := range cfg.Interceptors {
		out[i] = ic.Name
	}
	return out
}

// Set is a built chain's interceptors and what they share.
type Set struct {
	List   []*interceptor.Interceptor
	Topics *topicid.Names
}

// Close releases every interceptor.
func (s *Set) Close() error {
	var errs []error
	for _, ic := range s.List {
		if ic.Close != nil {
			errs = append(errs, ic.Close())
		}
	}
	return errors.Join(errs...)
}

// Build constructs the interceptors cfg names, in order. The metadata
// interceptor is built in by the proxy and always runs first; naming it is
// an error, to avoid the illusion that it can be moved or removed.
func Build(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*Set, error) {
	return BuildWith(cfg, log, reg, topicid.New())
}

// BuildWith is Build sharing an existing topic id→name map: a reload builds
// the new interceptors on the map the running proxy feeds.
func BuildWith(cfg config.Config, log *slog.Logger, reg prometheus.Registerer, topics *topicid.Names) (*Set, error) {
	set := &Set{Topics: topics}
	var errs config.Errors
	errs = append(errs, policy.CheckOrder(names(cfg))...)
	for i, ic := range cfg.Interceptors {
		path := fmt.Sprintf("interceptors[%d]", i)
		if ic.Name == metadata.Name {
			errs = append(errs, path+".name: the metadata interceptor is built in and always first; remove it from the list")
			continue
		}
		ctor, ok := builtins[ic.Name]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s.name: unknown interceptor %q (known: %s)", path, ic.Name, strings.Join(Names(), ", ")))
			continue
		}
		built, err := ctor(ic.Config, Env{Logger: log.With("interceptor", ic.Name), Metrics: reg, Topics: set.Topics, Path: path + ".config"})
		if err != nil {
			// Every line of the error names its full path.
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path) {
					line = path + ".config." + line
				}
				errs = append(errs, line)
			}
			continue
		}
		set.List = append(set.List, built)
	}
	if len(errs) > 0 {
		set.Close()
		return nil, errs
	}
	return set, nil
}
