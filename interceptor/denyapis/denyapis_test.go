package denyapis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		wantKeys []int16
		wantCode int16 // 0: per-API default
		wantErr  string
	}{
		{name: "names and keys", cfg: Config{APIs: []string{"DeleteTopics", "deleterecords", "37"}}, wantKeys: []int16{20, 21, 37}},
		{name: "spaces trimmed", cfg: Config{APIs: []string{" CreateTopics "}}, wantKeys: []int16{19}},
		{name: "duplicates collapse", cfg: Config{APIs: []string{"DeleteTopics", "20", "DELETETOPICS"}}, wantKeys: []int16{20}},
		{name: "error code override", cfg: Config{APIs: []string{"CreateTopics"}, ErrorCode: "policy_violation"}, wantKeys: []int16{19}, wantCode: kerr.PolicyViolation.Code},
		{name: "no apis", cfg: Config{}, wantErr: "apis: name at least one"},
		{name: "unknown name", cfg: Config{APIs: []string{"DeleteTopics", "DeleteTopic"}}, wantErr: `apis[1]: unknown Kafka API "DeleteTopic"`},
		{name: "unknown key", cfg: Config{APIs: []string{"999"}}, wantErr: `unknown Kafka API "999"`},
		{name: "negative key", cfg: Config{APIs: []string{"-1"}}, wantErr: `unknown Kafka API "-1"`},
		{name: "kmsg's unknown", cfg: Config{APIs: []string{"Unknown"}}, wantErr: `unknown Kafka API "Unknown"`},
		{name: "empty name", cfg: Config{APIs: []string{""}}, wantErr: `unknown Kafka API ""`},
		{name: "api versions by name", cfg: Config{APIs: []string{"ApiVersions"}}, wantErr: "ApiVersions cannot be denied"},
		{name: "api versions by key", cfg: Config{APIs: []string{"18"}}, wantErr: "ApiVersions cannot be denied"},
		{name: "unknown error", cfg: Config{APIs: []string{"CreateTopics"}, ErrorCode: "NOPE"}, wantErr: `error_code: unknown Kafka error "NOPE"`},
		{name: "none is no error", cfg: Config{APIs: []string{"CreateTopics"}, ErrorCode: "none"}, wantErr: "error_code: NONE is not an error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic, err := New(tc.cfg, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ic.Name != "deny-apis" {
				t.Errorf("name %q", ic.Name)
			}
			var keys []int16
			for _, h := range ic.Hooks {
				keys = append(keys, h.Key)
				if h.Request == nil || h.Response != nil || h.MinVersion != 0 || h.MaxVersion != interceptor.Latest {
					t.Errorf("hook %d: want a request hook on every version", h.Key)
				}
			}
			if !slices.Equal(keys, tc.wantKeys) {
				t.Errorf("keys %v, want %v", keys, tc.wantKeys)
			}
			// The override applies to every denied API.
			if tc.wantCode != 0 {
				x := exchange(kmsg.NewPtrCreateTopicsRequest(), nil)
				x.Request.(*kmsg.CreateTopicsRequest).Topics = []kmsg.CreateTopicsRequestTopic{{Topic: "t"}}
				if err := mustChain(t, ic).Request(context.Background(), x); err != nil {
					t.Fatal(err)
				}
				if got := x.Response.(*kmsg.CreateTopicsResponse).Topics[0].ErrorCode; got != tc.wantCode {
					t.Errorf("code %d, want %d", got, tc.wantCode)
				}
			}
		})
	}
}

func TestConfigJSON(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(`{"apis": ["DeleteTopics", "20"], "error_code": "POLICY_VIOLATION"}`))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.APIs, []string{"DeleteTopics", "20"}) || cfg.ErrorCode != "POLICY_VIOLATION" {
		t.Errorf("decoded %+v", cfg)
	}
}

func TestDefaultCode(t *testing.T) {
	txnCoord := kmsg.NewPtrFindCoordinatorRequest()
	txnCoord.CoordinatorType = 1
	for _, tc := range []struct {
		req  kmsg.Request
		want *kerr.Error
	}{
		{kmsg.NewPtrDeleteTopicsRequest(), kerr.TopicAuthorizationFailed},
		{kmsg.NewPtrProduceRequest(), kerr.TopicAuthorizationFailed},
		{kmsg.NewPtrMetadataRequest(), kerr.TopicAuthorizationFailed},
		{kmsg.NewPtrJoinGroupRequest(), kerr.GroupAuthorizationFailed},
		{kmsg.NewPtrDeleteGroupsRequest(), kerr.GroupAuthorizationFailed},
		{kmsg.NewPtrFindCoordinatorRequest(), kerr.GroupAuthorizationFailed},
		{txnCoord, kerr.TransactionalIDAuthorizationFailed},
		{kmsg.NewPtrInitProducerIDRequest(), kerr.TransactionalIDAuthorizationFailed},
		{kmsg.NewPtrEndTxnRequest(), kerr.TransactionalIDAuthorizationFailed},
		{kmsg.NewPtrCreateACLsRequest(), kerr.ClusterAuthorizationFailed},
		{kmsg.NewPtrAlterPartitionAssignmentsRequest(), kerr.ClusterAuthorizationFailed},
		{kmsg.NewPtrIncrementalAlterConfigsRequest(), kerr.ClusterAuthorizationFailed},
	} {
		if got := defaultCode(tc.req); got != tc.want.Code {
			t.Errorf("%s: %v, want %v", kmsg.NameForKey(tc.req.Key()), kerr.ErrorForCode(got), tc.want)
		}
	}
}

// syncBuffer is a log sink safe to read while a kfake goroutine writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the logged records.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func mustChain(t *testing.T, ics ...*interceptor.Interceptor) *interceptor.Chain {
	t.Helper()
	c, err := interceptor.NewChain(ics...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testConn() *interceptor.Conn {
	c := &interceptor.Conn{ID: 42, Listener: "bootstrap", NodeID: -1}
	c.SetPrincipal(interceptor.Principal{Name: "alice"})
	c.SetClientID("billing-app")
	return c
}

func exchange(req kmsg.Request, conn *interceptor.Conn) *interceptor.Exchange {
	if conn == nil {
		conn = testConn()
	}
	return &interceptor.Exchange{Conn: conn, Key: req.Key(), Version: req.GetVersion(), Request: req}
}

// TestDenyThroughKfake puts the chain in front of a real kfake broker, the
// way the proxy will: every request the broker decodes first runs through
// chain.Request; an answered request is never handled by the broker. A kadm
// client then sees the denials over the wire.
func TestDenyThroughKfake(t *testing.T) {
	var logs syncBuffer
	ic, err := New(Config{APIs: []string{"DeleteTopics", "DeleteRecords"}}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	chain := mustChain(t, ic)

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "payments"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	conn := testConn()
	cluster.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		x := exchange(req, conn)
		if err := chain.Request(context.Background(), x); err != nil {
			return nil, err, true
		}
		if x.Response != nil {
			return x.Response, nil, true
		}
		return nil, nil, false
	})

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ClientID("billing-app"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	deleted, err := adm.DeleteTopics(ctx, "orders", "payments")
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 2 {
		t.Fatalf("DeleteTopics answered %d topics, want 2", len(deleted))
	}
	for topic, r := range deleted {
		if !errors.Is(r.Err, kerr.TopicAuthorizationFailed) {
			t.Errorf("DeleteTopics %s: %v, want TOPIC_AUTHORIZATION_FAILED", topic, r.Err)
		}
	}

	var offsets kadm.Offsets
	for _, topic := range []string{"orders", "payments"} {
		for p := range int32(2) {
			offsets.AddOffset(topic, p, 0, -1)
		}
	}
	recs, err := adm.DeleteRecords(ctx, offsets)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ps := range recs {
		for _, r := range ps {
			n++
			if !errors.Is(r.Err, kerr.TopicAuthorizationFailed) {
				t.Errorf("DeleteRecords %s/%d: %v, want TOPIC_AUTHORIZATION_FAILED", r.Topic, r.Partition, r.Err)
			}
		}
	}
	if n != 4 {
		t.Errorf("DeleteRecords answered %d partitions, want 4", n)
	}

	// Allowed APIs pass: the topics are still there, and creating works.
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !topics.Has("orders") || !topics.Has("payments") {
		t.Errorf("topics after denied deletes: %v", topics.Names())
	}
	created, err := adm.CreateTopics(ctx, 1, 1, nil, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if r := created["audit"]; r.Err != nil {
		t.Errorf("CreateTopics audit: %v", r.Err)
	}

	// One Info line per denied request, with the connection's facts and no
	// request contents.
	lines := logs.lines(t)
	if len(lines) < 2 {
		t.Fatalf("log lines %d, want one per denied request (>= 2):\n%s", len(lines), logs.String())
	}
	t.Logf("%d denials logged", len(lines))
	apis := map[string]bool{}
	for _, l := range lines {
		if l["msg"] != "denied request" || l["level"] != "INFO" {
			t.Errorf("log line %v", l)
		}
		apis[l["api"].(string)] = true
		if l["principal"] != "User:alice" || l["client_id"] != "billing-app" || l["conn"] != float64(42) || l["error"] != "TOPIC_AUTHORIZATION_FAILED" {
			t.Errorf("log line %v lacks the connection's facts", l)
		}
	}
	if !apis["DeleteTopics"] || !apis["DeleteRecords"] {
		t.Errorf("logged APIs %v", apis)
	}
	if strings.Contains(logs.String(), "orders") {
		t.Errorf("log records request contents:\n%s", logs.String())
	}
}

// TestDenyWire checks each version of DeleteTopics as the proxy sees it: a
// request encoded as a client would, decoded with kmsg, run through the
// chain, the answer encoded and decoded again.
func TestDenyWire(t *testing.T) {
	for _, tc := range []struct {
		errorCode string
		want      *kerr.Error
	}{
		{"", kerr.TopicAuthorizationFailed},
		{"POLICY_VIOLATION", kerr.PolicyViolation},
	} {
		ic, err := New(Config{APIs: []string{"DeleteTopics"}, ErrorCode: tc.errorCode}, nil)
		if err != nil {
			t.Fatal(err)
		}
		chain := mustChain(t, ic)
		topics := []string{"orders", "payments"}
		for v := int16(0); v <= kmsg.NewPtrDeleteTopicsRequest().MaxVersion(); v++ {
			if req, resp := chain.Hooked(20, v); !req || resp {
				t.Fatalf("Hooked(DeleteTopics, %d) = %v, %v", v, req, resp)
			}
			// As kadm builds it: names in both the old and new field.
			sent := kmsg.NewPtrDeleteTopicsRequest()
			sent.SetVersion(v)
			sent.TimeoutMillis = 5000
			for _, name := range topics {
				sent.TopicNames = append(sent.TopicNames, name)
				rt := kmsg.NewDeleteTopicsRequestTopic()
				rt.Topic = kmsg.StringPtr(name)
				sent.Topics = append(sent.Topics, rt)
			}
			got := kmsg.NewPtrDeleteTopicsRequest()
			got.SetVersion(v)
			if err := got.ReadFrom(sent.AppendTo(nil)); err != nil {
				t.Fatal(err)
			}

			x := exchange(got, nil)
			if err := chain.Request(context.Background(), x); err != nil {
				t.Fatalf("v%d: %v", v, err)
			}
			if x.Response == nil {
				t.Fatalf("v%d: not answered", v)
			}
			if err := chain.Response(context.Background(), x); err != nil {
				t.Fatal(err)
			}
			resp := kmsg.NewPtrDeleteTopicsResponse()
			resp.SetVersion(v)
			if err := resp.ReadFrom(x.Response.AppendTo(nil)); err != nil {
				t.Fatalf("v%d: decode response: %v", v, err)
			}
			var names []string
			for _, rt := range resp.Topics {
				names = append(names, *rt.Topic)
				if err := kerr.ErrorForCode(rt.ErrorCode); err != tc.want {
					t.Errorf("v%d %s: %v, want %v", v, *rt.Topic, err, tc.want)
				}
			}
			if !slices.Equal(names, topics) {
				t.Errorf("v%d: topics %v, want %v", v, names, topics)
			}
		}
	}
	ic, _ := New(Config{APIs: []string{"DeleteTopics"}}, nil)
	if req, resp := mustChain(t, ic).Hooked(3, 12); req || resp {
		t.Error("Metadata is hooked: undenied APIs must pass as raw bytes")
	}
}

// A Produce with acks=0 has no response to carry the error: the connection
// is closed instead, as a broker does.
func TestDenyProduceAcksZero(t *testing.T) {
	var logs syncBuffer
	ic, err := New(Config{APIs: []string{"Produce"}}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	req.Acks = 0
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: "orders", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0}}}}
	x := exchange(req, nil)
	err = mustChain(t, ic).Request(context.Background(), x)
	if !errors.Is(err, interceptor.ErrClose) {
		t.Fatalf("err = %v, want ErrClose", err)
	}
	if x.Response != nil {
		t.Error("answered a request that has no response")
	}
	if lines := logs.lines(t); len(lines) != 1 || lines[0]["api"] != "Produce" {
		t.Errorf("log %v, want one line", lines)
	}

	req.Acks = -1
	x = exchange(req, nil)
	if err := mustChain(t, ic).Request(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	p := x.Response.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	if p.ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Errorf("acks=-1: code %d", p.ErrorCode)
	}
}
