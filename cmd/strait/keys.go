package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

// keysUsage documents `strait keys`.
const keysUsage = `Usage:
  strait keys generate --keyring FILE --key ID   add key ID (version 1); creates FILE with mode 0600
  strait keys rotate   --keyring FILE --key ID   add a new version of ID and make it current
  strait keys list     --keyring FILE [--key ID] [--json]
                                                 ids, versions, current version, creation times
                                                 (never key material)

The keyring is the "local" key store of the encrypt and decrypt interceptors
(kms.local.keyring). The key id may also be given as the last argument:
strait keys rotate --keyring keys.json customers-kek.

Rotation keeps every older version in the file: records written under them
keep decrypting. A running Strait re-reads the file when it changed, at its
next data key; nothing needs a restart.
`

// cmdKeys manages a local keyring file: generate, rotate, list.
func cmdKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "strait keys: missing subcommand (generate, rotate or list)\n\n"+keysUsage)
		return 2
	}
	sub := args[0]
	switch sub {
	case "generate", "rotate", "list":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, keysUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "strait keys: unknown subcommand %q\n\n%s", sub, keysUsage)
		return 2
	}

	fs := flag.NewFlagSet("strait keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage) }
	keyring := fs.String("keyring", "", "keyring file (the interceptors' kms.local.keyring)")
	key := fs.String("key", "", "key id: 1-255 letters, digits and -_./:")
	asJSON := false
	if sub == "list" {
		fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// The key id may be positional: `strait keys rotate --keyring f id`.
	switch rest := fs.Args(); {
	case len(rest) == 1 && *key == "":
		*key = rest[0]
	case len(rest) > 0:
		fmt.Fprintf(stderr, "strait keys %s: unexpected arguments: %s\n", sub, strings.Join(rest, " "))
		return 2
	}
	if *keyring == "" {
		fmt.Fprintf(stderr, "strait keys %s: --keyring FILE is required\n", sub)
		return 2
	}
	if *key == "" && sub != "list" {
		fmt.Fprintf(stderr, "strait keys %s: --key ID is required\n", sub)
		return 2
	}

	switch sub {
	case "generate":
		if err := local.Generate(*keyring, *key); err != nil {
			fmt.Fprintf(stderr, "strait keys generate: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "generated key %q version 1 in %s (mode 0600)\n", *key, *keyring)
	case "rotate":
		v, err := local.Rotate(*keyring, *key)
		if err != nil {
			fmt.Fprintf(stderr, "strait keys rotate: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "rotated key %q in %s: version %d is current; older versions are kept for decryption\n", *key, *keyring, v)
	case "list":
		infos, err := local.List(*keyring)
		if err != nil {
			fmt.Fprintf(stderr, "strait keys list: %v\n", err)
			return 1
		}
		if *key != "" {
			var only []local.KeyInfo
			for _, k := range infos {
				if k.ID == *key {
					only = append(only, k)
				}
			}
			if len(only) == 0 {
				fmt.Fprintf(stderr, "strait keys list: key %q is not in %s\n", *key, *keyring)
				return 1
			}
			infos = only
		}
		if asJSON {
			if infos == nil {
				infos = []local.KeyInfo{}
			}
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(infos); err != nil {
				fmt.Fprintf(stderr, "strait keys list: %v\n", err)
				return 1
			}
			return 0
		}
		printKeys(stdout, infos)
	}
	return 0
}

// printKeys writes one line per key version; the current one is marked.
func printKeys(w io.Writer, infos []local.KeyInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVERSION\tCURRENT\tCREATED")
	for _, k := range infos {
		for _, v := range k.Versions {
			cur := ""
			if v.Version == k.Current {
				cur = "*"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", k.ID, v.Version, cur, v.Created.UTC().Format(time.RFC3339))
		}
	}
	tw.Flush()
}
