package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
)

func hookOf(t *testing.T, ic *interceptor.Interceptor, key int16) interceptor.Hook {
	t.Helper()
	for _, h := range ic.Hooks {
		if h.Key == key {
			return h
		}
	}
	t.Fatalf("%s hooks no key %d", ic.Name, key)
	return interceptor.Hook{}
}

// TestEncryptedKeepsCiphertext: "encrypted" on a field that decrypt
// opened gives the consumer the field's original ciphertext (what the
// broker sent), while the record's other fields are decrypted; without
// decrypt's originals (no decrypt in the chain) it still redacts.
func TestEncryptedKeepsCiphertext(t *testing.T) {
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keys.json")
	if err := local.Generate(keyring, "orders-kek"); err != nil {
		t.Fatal(err)
	}
	var rc rules.Config
	if err := json.Unmarshal(fmt.Appendf(nil, `{"kms": {"local": {"keyring": %q}}, "rules": [{"topics": ["orders"], "key_id": "orders-kek", "format": "json", "fields": ["$.ssn_id", "$.account"]}]}`, keyring), &rc); err != nil {
		t.Fatal(err)
	}
	enc, err := encrypt.New(rc, rules.Env{})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := decrypt.New(rc, rules.Env{})
	if err != nil {
		t.Fatal(err)
	}
	pol := writeFile(t, dir, "p.rego", `package strait
decision := {"fields": {"$.ssn_id": "encrypted"}, "default": "clear"}
`)
	p, _ := newPolicy(t, Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml"})
	conn := &interceptor.Conn{ID: 1}
	ctx := context.Background()

	// encrypt on the way in
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "orders"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch(0, -1, false, rec("k", usaOrder))
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	px := &interceptor.Exchange{Conn: conn, Key: 0, Version: 9, Request: req}
	if err := hookOf(t, enc, 0).Request(ctx, px); err != nil {
		t.Fatal(err)
	}
	sealed := append([]byte(nil), req.Topics[0].Partitions[0].Records...)
	px.Done()
	got, _ := decode(t, sealed)
	var sealedDoc map[string]any
	if err := json.Unmarshal([]byte(got[0].Value), &sealedDoc); err != nil {
		t.Fatal(err)
	}
	ct, _ := sealedDoc["ssn_id"].(string)
	if ct == "" || ct == "123-45-6789" {
		t.Fatalf("ssn_id not sealed: %s", got[0].Value)
	}

	// decrypt, then the policy, on the way out
	fetchThrough := func(ics ...*interceptor.Interceptor) map[string]any {
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = 12
		tp := kmsg.NewFetchResponseTopic()
		tp.Topic = "orders"
		pt := kmsg.NewFetchResponseTopicPartition()
		pt.RecordBatches = sealed
		tp.Partitions = append(tp.Partitions, pt)
		resp.Topics = append(resp.Topics, tp)
		x := &interceptor.Exchange{Conn: conn, Key: 1, Version: 12, Response: resp}
		defer x.Done()
		for _, ic := range ics {
			if err := hookOf(t, ic, 1).Response(ctx, x); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := decode(t, resp.Topics[0].Partitions[0].RecordBatches)
		var m map[string]any
		if len(got) != 1 || json.Unmarshal([]byte(got[0].Value), &m) != nil {
			t.Fatalf("delivered %v", got)
		}
		return m
	}
	m := fetchThrough(dec, p.Interceptor())
	if m["ssn_id"] != ct || m["account"] != "678901234567" || m["name"] != "Joe Example" {
		t.Fatalf("through decrypt: %v, want ssn_id %q (the original ciphertext) and the rest in clear", m, ct)
	}
	if n := testutil.ToFloat64(p.m.fields.WithLabelValues(actEncrypted)); n != 1 {
		t.Fatalf("%v fields left encrypted", n)
	}
	// No decrypt in the chain: the record still carries Strait's header,
	// so "encrypted" leaves the field as it is, ciphertext.
	if m := fetchThrough(p.Interceptor()); m["ssn_id"] != ct {
		t.Fatalf("without decrypt: %v", m)
	}
}
