package metadata

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/topicid"
)

// TestKfake sends real requests to an in-process kfake cluster with kgo and
// rewrites the real responses: no kfake listener address may remain, and the
// Mapper must have been told each broker's real address, so the proxy can
// dial it.
func TestKfake(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kfake cluster")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	upstream := make(map[string]bool) // kfake's host:port listeners
	for _, a := range c.ListenAddrs() {
		upstream[a] = true
	}
	names := topicid.New()

	for _, tc := range []struct {
		name  string
		req   kmsg.Request
		addrs func(kmsg.Response) []string // every address the response hands out
	}{
		{
			name: "Metadata",
			req:  &kmsg.MetadataRequest{Topics: []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("t")}}},
			addrs: func(r kmsg.Response) (a []string) {
				for _, b := range r.(*kmsg.MetadataResponse).Brokers {
					a = append(a, hostPort(b.Host, b.Port))
				}
				return a
			},
		},
		{
			name: "FindCoordinator",
			req:  &kmsg.FindCoordinatorRequest{CoordinatorKey: "g1", CoordinatorKeys: []string{"g1", "g2", "g3"}},
			addrs: func(r kmsg.Response) (a []string) {
				f := r.(*kmsg.FindCoordinatorResponse)
				if f.Version < 4 {
					return []string{hostPort(f.Host, f.Port)}
				}
				for _, co := range f.Coordinators {
					a = append(a, hostPort(co.Host, co.Port))
				}
				return a
			},
		},
		{
			name: "DescribeCluster",
			req:  &kmsg.DescribeClusterRequest{},
			addrs: func(r kmsg.Response) (a []string) {
				for _, b := range r.(*kmsg.DescribeClusterResponse).Brokers {
					a = append(a, hostPort(b.Host, b.Port))
				}
				return a
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := cl.Request(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if err := kerrOf(resp); err != nil {
				t.Fatalf("kfake answered an error: %v", err)
			}
			before := tc.addrs(resp)
			if len(before) == 0 {
				t.Fatal("response hands out no address")
			}
			for _, a := range before {
				if !upstream[a] {
					t.Fatalf("address %s is not a kfake listener %v", a, c.ListenAddrs())
				}
			}

			m := &fakeMapper{}
			key, v := resp.Key(), resp.GetVersion()
			x, err := runChain(t, m, names, key, v, resp)
			if err != nil {
				t.Fatal(err)
			}
			if !x.ResponseModified() {
				t.Error("ResponseModified = false")
			}
			// What the client receives: re-encode and decode.
			wire := encode(resp, v)
			if bytes.Contains(wire, []byte("127.0.0.1")) {
				t.Errorf("a kfake address survived in the encoded v%d response", v)
			}
			for _, a := range tc.addrs(decode(t, key, v, wire)) {
				if upstream[a] || !bytes.HasPrefix([]byte(a), []byte(advHost+":")) {
					t.Errorf("client is handed %s", a)
				}
			}
			for _, call := range m.Calls() {
				if !upstream[hostPort(call.Host, call.Port)] {
					t.Errorf("Mapper told broker %d is at %s:%d, not a kfake listener", call.NodeID, call.Host, call.Port)
				}
			}
			t.Logf("v%d: %v -> %v", v, before, tc.addrs(resp))
		})
	}

	// The Metadata response (v10+ from kfake) taught the topic id of "t".
	meta, err := cl.Request(ctx, &kmsg.MetadataRequest{Topics: []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("t")}}})
	if err != nil {
		t.Fatal(err)
	}
	if mr := meta.(*kmsg.MetadataResponse); mr.Version >= 10 {
		if n, ok := names.Name(mr.Topics[0].TopicID); !ok || n != "t" {
			t.Errorf("Name(id of t) = %q, %v", n, ok)
		}
	}
}

func hostPort(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// kerrOf returns the top-level error a response carries, if any.
func kerrOf(r kmsg.Response) error {
	switch r := r.(type) {
	case *kmsg.FindCoordinatorResponse:
		for _, co := range r.Coordinators {
			if co.ErrorCode != 0 {
				return kerrCode(co.ErrorCode)
			}
		}
		return kerrCode(r.ErrorCode)
	case *kmsg.DescribeClusterResponse:
		return kerrCode(r.ErrorCode)
	}
	return nil
}
