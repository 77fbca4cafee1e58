package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/records"
)

// TestPolicyWorkload: the policy workload's config builds, and its policy
// redacts ssn_id, and only ssn_id, of every order kfake serves for the
// anonymous consumer, dropping none (so direct and through-Strait runs
// count the same records).
func TestPolicyWorkload(t *testing.T) {
	path, cleanup, err := policyConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.Bootstrap = []string{"127.0.0.1:1"}
	set, err := plugins.Build(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.List) != 1 || set.List[0].Name != "policy" {
		t.Fatalf("interceptors %v", set.List)
	}
	in := ordersBatch(128, 1024)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = benchTopic
	pt := kmsg.NewFetchResponseTopicPartition()
	pt.RecordBatches = in
	tp.Partitions = append(tp.Partitions, pt)
	resp.Topics = append(resp.Topics, tp)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{ID: 1}, Key: 1, Version: 12, Response: resp}
	defer x.Done()
	var hook interceptor.Hook
	for _, h := range set.List[0].Hooks {
		if h.Key == 1 {
			hook = h
		}
	}
	if err := hook.Response(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = records.Walk(resp.Topics[0].Partitions[0].RecordBatches, func(b *records.Batch) error {
		return b.Records(func(r *records.Record) error {
			var v map[string]any
			if err := json.Unmarshal(r.Value, &v); err != nil {
				return err
			}
			if v["ssn_id"] != nil || v["name"] == nil || v["country"] != "usa" || len(r.Value) < 1000 {
				t.Fatalf("record %d: %s", n, r.Value)
			}
			n++
			return nil
		})
	})
	if err != nil || n != 128 {
		t.Fatalf("%d records delivered (want 128): %v", n, err)
	}
}
