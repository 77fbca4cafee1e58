package decrypt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/internal/straittest"
)

// TestShareGroupDecrypt: a KIP-932 share-group consumer (ShareFetch, topics
// by id only) reads through the decrypting Strait and gets plaintext.
func TestShareGroupDecrypt(t *testing.T) {
	r := newRig(t, 0, "error")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := client(t, r.Producer.Bootstrap, kgo.DefaultProduceTopic("payments"))
	const n = 20
	for i := range n {
		straittest.Must(t, p.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: fmt.Appendf(nil, "share-secret-%02d", i)}).FirstErr(), "produce")
	}
	// Share groups start at "latest" unless told otherwise.
	admin := client(t, r.Reader.Bootstrap)
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, "sharers"
	cfg := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = "share.auto.offset.reset", kmsg.StringPtr("earliest")
	res.Configs = append(res.Configs, cfg)
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, admin)
	straittest.Must(t, err, "alter group config")
	straittest.Must(t, kerr.ErrorForCode(resp.Resources[0].ErrorCode), "alter group config")

	c := client(t, r.Reader.Bootstrap, kgo.ConsumeTopics("payments"), kgo.ShareGroup("sharers"))
	seen := map[string]bool{}
	for len(seen) < n {
		fs := c.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("share fetch after %d/%d: %v", len(seen), n, err)
		}
		fs.EachRecord(func(rec *kgo.Record) { seen[string(rec.Value)] = true })
	}
	for i := range n {
		if !seen[fmt.Sprintf("share-secret-%02d", i)] {
			t.Fatalf("record %d not decrypted for the share consumer", i)
		}
	}
	if straittest.Counter(t, r.Reader.Registry, "strait_requests_total", "api", "ShareFetch") == 0 {
		t.Fatal("no ShareFetch went through Strait: the share path was not exercised")
	}
}
