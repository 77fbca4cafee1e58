// Command strait-authswap-user prints one entry of an authswap users file
// (sasl.users_file): a bcrypt hash for PLAIN and SCRAM salted credentials,
// never the password. The password is read from stdin (one line) or from
// the environment variable named by -password-env.
//
//	printf '%s\n' "$PW" | go run github.com/strait-proxy/strait/authswap/cmd/strait-authswap-user -user alice >> users.yaml
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap/sasl"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "strait-authswap-user:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("strait-authswap-user", flag.ContinueOnError)
	user := fs.String("user", "", "user name (required)")
	mechs := fs.String("mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", "credentials to derive")
	iters := fs.Int("iterations", 8192, "SCRAM iterations (at least 4096)")
	cost := fs.Int("bcrypt-cost", 12, "bcrypt cost for PLAIN")
	pwEnv := fs.String("password-env", "", "read the password from this environment variable instead of stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("-user is required")
	}
	var pw string
	if *pwEnv != "" {
		pw = os.Getenv(*pwEnv)
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return err
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return errors.New("empty password")
	}
	var u sasl.User
	for _, m := range strings.Split(*mechs, ",") {
		switch m = strings.TrimSpace(m); m {
		case sasl.PLAIN:
			h, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
			if err != nil {
				return err
			}
			u.Plain = string(h)
		case sasl.SCRAMSHA256, sasl.SCRAMSHA512:
			c, err := sasl.NewScramCred(m, *user, pw, *iters)
			if err != nil {
				return err
			}
			if m == sasl.SCRAMSHA256 {
				u.ScramSHA256 = c
			} else {
				u.ScramSHA512 = c
			}
		default:
			return fmt.Errorf("unknown mechanism %q", m)
		}
	}
	b, err := yaml.Marshal(map[string]sasl.User{*user: u})
	if err != nil {
		return err
	}
	// Indented to go under "users:".
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintln(stdout, "  "+l)
	}
	return nil
}
