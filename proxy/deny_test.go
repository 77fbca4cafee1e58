package proxy_test

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/denyapis"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestDenyAPIsThroughStrait: an application sidecar refuses DeleteTopics; the
// client gets TOPIC_AUTHORIZATION_FAILED and the topic survives.
func TestDenyAPIsThroughStrait(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "precious"))
	deny, err := denyapis.New(denyapis.Config{APIs: []string{"DeleteTopics"}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	straittest.Must(t, err, "deny-apis")
	s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{deny}, nil)
	ctx := ctxT(t, 20*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap))
	straittest.Must(t, err, "client")
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.DeleteTopics(ctx, "precious")
	straittest.Must(t, err, "delete topics request")
	if got := resp["precious"].Err; !errors.Is(got, kerr.TopicAuthorizationFailed) {
		t.Fatalf("DeleteTopics answered %v, want TOPIC_AUTHORIZATION_FAILED", got)
	}
	topics, err := adm.ListTopics(ctx)
	straittest.Must(t, err, "list")
	if !topics.Has("precious") {
		t.Fatal("the topic was deleted")
	}
	if n := straittest.Counter(t, s.Registry, "strait_local_responses_total", "api", "DeleteTopics"); n != 1 {
		t.Fatalf("strait_local_responses_total{api=DeleteTopics} = %v", n)
	}
}
