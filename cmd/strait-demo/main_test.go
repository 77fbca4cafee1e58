package main

import "testing"

// TestDemo runs the whole demo: it checks its own story (rewritten
// addresses, secrets absent from the broker, byte-exact decryption) and
// fails on any deviation.
func TestDemo(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
