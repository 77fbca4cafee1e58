package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/authswap/sasl"
)

// The printed entry, under "users:", is a users file that authenticates the
// password with every mechanism, and does not contain it.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-user", "alice", "-bcrypt-cost", "4", "-iterations", "4096"}, strings.NewReader("p@ss word\n"), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "p@ss word") {
		t.Fatal("the password is in the output")
	}
	users, err := sasl.ParseUsers([]byte("users:\n" + out.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	_, done, err := sasl.NewPlain(sasl.Static(users)).Start().Next(context.Background(), []byte("\x00alice\x00p@ss word"))
	if err != nil || !done {
		t.Fatalf("PLAIN with the generated hash: %v", err)
	}
	u, _ := users.Lookup("alice")
	if u.ScramSHA256 == nil || u.ScramSHA512 == nil || u.ScramSHA256.Iterations != 4096 {
		t.Fatalf("%+v", u)
	}
	if err := run([]string{"-user", "x"}, strings.NewReader(""), &out); err == nil {
		t.Fatal("empty password accepted")
	}
}
