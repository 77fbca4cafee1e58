package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/straittest"
)

func TestFranzGoProduceConsume(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(3, "t"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.ConsumeTopics("t"), kgo.DefaultProduceTopic("t"))
	straittest.Must(t, err, "client")
	defer cl.Close()

	const n = 100
	for i := range n {
		cl.Produce(ctx, kgo.StringRecord(fmt.Sprintf("v%d", i)), nil)
	}
	straittest.Must(t, cl.Flush(ctx), "flush")
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		straittest.Must(t, fs.Err0(), "poll")
		got += fs.NumRecords()
	}
	if got != n {
		t.Fatalf("consumed %d, want %d", got, n)
	}

	// The client only ever learned Strait's addresses.
	adm := kadm.NewClient(cl)
	md, err := adm.BrokerMetadata(ctx)
	straittest.Must(t, err, "metadata")
	for _, b := range md.Brokers {
		for _, up := range c.ListenAddrs() {
			if fmt.Sprintf("%s:%d", b.Host, b.Port) == up {
				t.Fatalf("client saw upstream address %s", up)
			}
		}
		if b.Host != "127.0.0.1" || int(b.Port) != s.PortBase+int(b.NodeID) {
			t.Fatalf("broker %d advertised as %s:%d, want 127.0.0.1:%d", b.NodeID, b.Host, b.Port, s.PortBase+int(b.NodeID))
		}
	}
	if !strings.HasPrefix(s.Bootstrap, "127.0.0.1:") {
		t.Fatal(s.Bootstrap)
	}
}
