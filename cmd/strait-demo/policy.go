package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/topicid"
)

// The policy and catalog of examples/policy-fields.
const demoPolicy = `package strait

region := {"us-financial": "usa", "brazil": "brazil"}

default decision := {"drop": true}

decision := {"default": "clear"} if {
	input.principal.name == "full-pii"
} else := {"drop": true} if {
	input.value.country != region[input.principal.name]
} else := {"classifications": {"PII/Financial": "clear"}, "default": "redact"} if {
	region[input.principal.name]
}
`

const demoCatalog = `classifications:
  PII/Personal: {action: redact}
  PII/Financial: {action: mask, keep_last: 4}
  Protected: {action: redact}
topics:
  - topics: [orders-pii]
    fields:
      $.name: [PII/Personal]
      $.address: [PII/Personal]
      $.country: [PII/Personal]
      $.ssn_id: [Protected, PII/Personal]
      $.account: [PII/Financial]
`

const brazilOrder = `{"name":"Ana Souza","address":"Rua das Flores 8","country":"brazil","ssn_id":"987.654.321-00","account":"341100009876","Order_time":"2024-03-01T11:00:00Z","itemid":"B-2"}`

const slidesOrder = `{"name":"Joe Example","address":"123 Main St","country":"usa","ssn_id":"123-45-6789","account":"678900000234","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`

// demoIdentity names each consumer by its client id. It stands in for
// authentication in this demo only: client ids prove nothing, and a real
// deployment lists authswap (mTLS or SASL) first.
func demoIdentity() *interceptor.Interceptor {
	set := func(_ context.Context, x *interceptor.Exchange) error {
		if x.Conn.Principal().Anonymous() && x.Conn.ClientID() != "" {
			x.Conn.SetPrincipal(interceptor.Principal{Name: x.Conn.ClientID(), Mechanism: "demo"})
		}
		return nil
	}
	return &interceptor.Interceptor{Name: "demo-identity", Hooks: []interceptor.Hook{{Key: 1, MaxVersion: interceptor.Latest, Request: set}}}
}

// policyAct is the third act: the slides' record with "country": "usa",
// as four consumers see it.
func policyAct(ctx context.Context, cluster *kfake.Cluster) error {
	step("5. Per-consumer views: an OPA policy after decryption (policy before decrypt in the chain)")
	dir, err := os.MkdirTemp("", "strait-demo-policy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	keyring := filepath.Join(dir, "keys.json")
	if err := local.Generate(keyring, "orders-kek"); err != nil {
		return err
	}
	polFile, catFile := filepath.Join(dir, "policy.rego"), filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(polFile, []byte(demoPolicy), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(catFile, []byte(demoCatalog), 0o644); err != nil {
		return err
	}
	crypto := rules.Config{
		KMS:   rules.KMS{Local: &rules.LocalKMS{Keyring: keyring}},
		Rules: []rules.Rule{{Topics: []string{"orders-pii"}, KeyID: "orders-kek", Format: "json", Fields: []string{"$.ssn_id", "$.account"}}},
	}
	ptopics := topicid.New()
	enc, err := encrypt.New(crypto, rules.Env{Topics: ptopics})
	if err != nil {
		return err
	}
	producerSide, stopP, err := startStrait(ctx, cluster.ListenAddrs(), []*interceptor.Interceptor{enc}, ptopics)
	if err != nil {
		return err
	}
	defer stopP()
	ctopics := topicid.New()
	dec, err := decrypt.New(crypto, rules.Env{Topics: ctopics})
	if err != nil {
		return err
	}
	pol, err := policy.New(policy.Config{Policies: []string{polFile}, Catalog: catFile}, policy.Env{Topics: ctopics})
	if err != nil {
		return err
	}
	defer pol.Close()
	consumerSide, stopC, err := startStrait(ctx, cluster.ListenAddrs(), []*interceptor.Interceptor{demoIdentity(), pol, dec}, ctopics)
	if err != nil {
		return err
	}
	defer stopC()
	fmt.Println("   policy: full-pii sees all; a regional consumer sees its country's orders, financial fields only")
	fmt.Println("   catalog: name, address, country PII/Personal; ssn_id Protected; account PII/Financial")

	p, err := kgo.NewClient(kgo.SeedBrokers(producerSide.Addr()), kgo.DefaultProduceTopic("orders-pii"))
	if err != nil {
		return err
	}
	defer p.Close()
	// One key: both orders land in one partition, offsets 0 and 1.
	for _, v := range []string{slidesOrder, brazilOrder} {
		if err := p.ProduceSync(ctx, &kgo.Record{Key: []byte("orders"), Value: []byte(v)}).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		fmt.Printf("\n   produced (encrypting $.ssn_id, $.account):\n     %s", v)
	}
	fmt.Println()

	for _, c := range []struct{ who, until, want string }{
		{"us-financial", `"A-17"`, `offset 0: {"name":null,"address":null,"country":null,"ssn_id":null,"account":"678900000234","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`},
		{"brazil", `"B-2"`, `offset 1: {"name":null,"address":null,"country":null,"ssn_id":null,"account":"341100009876","Order_time":"2024-03-01T11:00:00Z","itemid":"B-2"}`},
		{"full-pii", `"B-2"`, "offset 0: " + slidesOrder + "\n     offset 1: " + brazilOrder},
	} {
		got, err := view(ctx, consumerSide.Addr(), c.who, c.until)
		if err != nil {
			return err
		}
		fmt.Printf("\n   %s reads:\n     %s\n", c.who, got)
		if c.who == "brazil" {
			fmt.Println("     -> nothing of the usa order: offset 0 was dropped, the consumer skipped past it")
		}
		if got != c.want {
			return fmt.Errorf("%s saw %s, want %s", c.who, got, c.want)
		}
	}
	stored, err := readOne(ctx, cluster.ListenAddrs()[0], "orders-pii")
	if err != nil {
		return err
	}
	fmt.Printf("\n   a consumer without the key (the broker directly) reads:\n     %s\n", stored.Value)
	if strings.Contains(string(stored.Value), "678900000234") || strings.Contains(string(stored.Value), "123-45-6789") {
		return fmt.Errorf("secret stored in clear")
	}
	fmt.Println()
	return nil
}

// view reads orders-pii as client id who until it has a record whose
// value contains until, and returns what it got, with offsets.
func view(ctx context.Context, seed, who, until string) (string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed), kgo.ClientID(who), kgo.ConsumeTopics("orders-pii"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	var got []string
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return "", err
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, fmt.Sprintf("offset %d: %s", r.Offset, r.Value))
			done = done || strings.Contains(string(r.Value), until)
		})
		if done {
			return strings.Join(got, "\n     "), nil
		}
	}
}
