package metadata

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/topicid"
)

// Upstream addresses in tests are b<id>.upstream.internal:9092; the fake
// Mapper advertises strait.local:20000+id.
const (
	upstreamPort = 9092
	advHost      = "strait.local"
	advPortBase  = 20000
)

func upstreamHost(id int32) string { return fmt.Sprintf("b%d.upstream.internal", id) }

type advertiseCall struct {
	NodeID int32
	Host   string
	Port   int32
}

// fakeMapper is a Mapper that advertises strait.local:20000+id (or, with
// identity, the upstream address itself), fails for the node ids in fail, and
// records its calls.
type fakeMapper struct {
	identity bool
	fail     map[int32]error

	mu    sync.Mutex
	calls []advertiseCall
}

func (m *fakeMapper) Advertise(_ *interceptor.Conn, nodeID int32, host string, port int32) (string, int32, error) {
	m.mu.Lock()
	m.calls = append(m.calls, advertiseCall{nodeID, host, port})
	m.mu.Unlock()
	if err := m.fail[nodeID]; err != nil {
		return "", 0, err
	}
	if m.identity {
		return host, port, nil
	}
	return advHost, advPortBase + nodeID, nil
}

func (m *fakeMapper) Calls() []advertiseCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]advertiseCall(nil), m.calls...)
}

// encode encodes r at version v.
func encode(r kmsg.Response, v int16) []byte {
	r.SetVersion(v)
	return r.AppendTo(nil)
}

// decode decodes b as the response of key at version v into a fresh struct.
func decode(t testing.TB, key, v int16, b []byte) kmsg.Response {
	t.Helper()
	r := kmsg.ResponseForKey(key)
	if r == nil {
		t.Fatalf("kmsg knows no response for key %d", key)
	}
	r.SetVersion(v)
	if err := r.ReadFrom(b); err != nil {
		t.Fatalf("decode key %d v%d: %v", key, v, err)
	}
	return r
}

// runChain runs resp through a chain holding only the metadata interceptor,
// the way the proxy does.
func runChain(t testing.TB, m Mapper, topics *topicid.Names, key, v int16, resp kmsg.Response) (*interceptor.Exchange, error) {
	t.Helper()
	chain, err := interceptor.NewChain(New(m, topics))
	if err != nil {
		t.Fatalf("NewChain: %v", err)
	}
	x := &interceptor.Exchange{Key: key, Version: v, Response: resp}
	return x, chain.Response(context.Background(), x)
}

func ptr[T any](v T) *T { return &v }

func kerrCode(code int16) error { return kerr.ErrorForCode(code) }
