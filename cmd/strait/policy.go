package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/policy"
)

const policyUsage = `Usage:
  strait policy test PATH...
        run the rego unit tests (test_* rules) in the files and directories
        given, with OPA's tester (rego v1)
  strait policy eval --input FILE (--config FILE [--index N] | --policy PATH... [--catalog FILE] [--query Q])
        show the decision for one input document (docs/policy.md): the
        policy's value, the resolved field actions and the value as the
        consumer would get it. --config takes the policy interceptor of a
        strait.yaml (the first, or interceptors[N]).
`

// cmdPolicy runs `strait policy test|eval`.
func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "strait policy: missing subcommand (test or eval)\n\n"+policyUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return cmdPolicyTest(args[1:], stdout, stderr)
	case "eval":
		return cmdPolicyEval(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "strait policy: unknown subcommand %q\n\n%s", args[0], policyUsage)
	return 2
}

func cmdPolicyTest(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "strait policy test: name at least one file or directory\n")
		return 2
	}
	rs, err := policy.RunTests(context.Background(), args)
	if err != nil {
		fmt.Fprintf(stderr, "strait policy test: %v\n", err)
		return 1
	}
	failed := 0
	for _, r := range rs {
		status := "PASS"
		if !r.Pass {
			status = "FAIL"
			failed++
		}
		if r.Detail != "" {
			fmt.Fprintf(stdout, "%s %s: %s\n", status, r.Name, r.Detail)
		} else {
			fmt.Fprintf(stdout, "%s %s\n", status, r.Name)
		}
	}
	if len(rs) == 0 {
		fmt.Fprintln(stderr, "strait policy test: no test_ rule found")
		return 1
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", len(rs)-failed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdPolicyEval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("strait policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pols multiFlag
	input := fs.String("input", "", "JSON input document")
	cfgFile := fs.String("config", "", "strait.yaml holding a policy interceptor")
	index := fs.Int("index", -1, "with --config: the policy interceptor at interceptors[N]")
	catalog := fs.String("catalog", "", "classification catalog (with --policy)")
	query := fs.String("query", "", "decision rule (default "+policy.DefaultQuery+")")
	fs.Var(&pols, "policy", ".rego file or directory (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *input == "" || (*cfgFile == "") == (len(pols) == 0) {
		fmt.Fprint(stderr, "strait policy eval: give --input and one of --config or --policy\n\n"+policyUsage)
		return 2
	}
	var pc policy.Config
	if *cfgFile != "" {
		cfg, err := config.Load(*cfgFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s:\n%s\n", *cfgFile, indent(err.Error()))
			return 1
		}
		found := -1
		for i, ic := range cfg.Interceptors {
			if ic.Name == policy.Name && (*index < 0 && found < 0 || i == *index) {
				found = i
			}
		}
		if found < 0 {
			fmt.Fprintf(stderr, "%s: no policy interceptor found\n", *cfgFile)
			return 1
		}
		if err := config.DecodeStrict(cfg.Interceptors[found].Config, &pc, fmt.Sprintf("interceptors[%d].config", found)); err != nil {
			fmt.Fprintf(stderr, "%s:\n%s\n", *cfgFile, indent(err.Error()))
			return 1
		}
	} else {
		pc = policy.Config{Policies: pols, Catalog: *catalog, Query: *query}
	}
	pc.Audit = nil // eval decides nothing for real
	compiled, err := policy.Load(pc)
	if err != nil {
		fmt.Fprintf(stderr, "invalid policy:\n%s\n", indent(err.Error()))
		return 1
	}
	raw, err := os.ReadFile(*input)
	if err != nil {
		fmt.Fprintf(stderr, "strait policy eval: %v\n", err)
		return 1
	}
	var in map[string]any
	if err := json.Unmarshal(raw, &in); err != nil {
		fmt.Fprintf(stderr, "strait policy eval: %s: not a JSON object: %v\n", *input, err)
		return 1
	}
	ex, err := compiled.Explain(context.Background(), pc, in)
	if err != nil {
		fmt.Fprintf(stderr, "strait policy eval: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(ex)
	return 0
}
