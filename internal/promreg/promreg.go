// Package promreg registers an interceptor's metrics on a registry that
// other instances of the same interceptor (a reload builds new ones) may
// already have registered them on.
package promreg

import "github.com/prometheus/client_golang/prometheus"

// Register registers c on reg and returns it, or returns the collector
// already registered under the same name, so that every generation of an
// interceptor counts into one series. A nil reg registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
