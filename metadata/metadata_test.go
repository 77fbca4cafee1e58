package metadata

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/topicid"
)

var (
	topicID1 = [16]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	topicID2 = [16]byte{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}
)

// rewriteCase is one response to rewrite at every version in [lo, hi].
type rewriteCase struct {
	name   string
	key    int16
	lo, hi int16
	// build returns the upstream response; fields a version lacks are
	// dropped by the encode/decode round trip.
	build func() kmsg.Response
	// patch sets, on a decoded copy, the addresses the rewrite must produce.
	patch func(r kmsg.Response)
	// calls returns the node ids the Mapper must be asked about at v.
	calls func(v int16) []int32
	// unchanged: the rewrite must leave the response alone.
	unchanged bool
}

func ids(v ...int32) func(int16) []int32 { return func(int16) []int32 { return v } }

func rewriteCases() []rewriteCase {
	const (
		notLeader     = 6
		coordNotAvail = 15
	)
	var (
		maxProduce     = (&kmsg.ProduceResponse{}).MaxVersion()
		maxFetch       = (&kmsg.FetchResponse{}).MaxVersion()
		maxMetadata    = (&kmsg.MetadataResponse{}).MaxVersion()
		maxFindCoord   = (&kmsg.FindCoordinatorResponse{}).MaxVersion()
		maxDescCluster = (&kmsg.DescribeClusterResponse{}).MaxVersion()
		maxShare       = (&kmsg.ShareFetchResponse{}).MaxVersion()
		maxShareAck    = (&kmsg.ShareAcknowledgeResponse{}).MaxVersion()
	)
	produce := func(hints bool) func() kmsg.Response {
		return func() kmsg.Response {
			r := &kmsg.ProduceResponse{
				ThrottleMillis: 7,
				Topics: []kmsg.ProduceResponseTopic{{
					Topic:   "orders",
					TopicID: topicID1,
					Partitions: []kmsg.ProduceResponseTopicPartition{
						{Partition: 0, BaseOffset: 41, LogAppendTime: -1, LogStartOffset: 3},
						{Partition: 1, ErrorCode: notLeader, BaseOffset: -1, ErrorMessage: ptr("not leader"),
							CurrentLeader: kmsg.ProduceResponseTopicPartitionCurrentLeader{LeaderID: 2, LeaderEpoch: 9}},
					},
				}},
			}
			if hints {
				r.Brokers = []kmsg.ProduceResponseBroker{
					{NodeID: 2, Host: upstreamHost(2), Port: upstreamPort, Rack: ptr("az-b")},
					{NodeID: 3, Host: upstreamHost(3), Port: upstreamPort},
				}
			}
			return r
		}
	}
	fetch := func(hints bool) func() kmsg.Response {
		return func() kmsg.Response {
			r := &kmsg.FetchResponse{
				ThrottleMillis: 1,
				SessionID:      77,
				Topics: []kmsg.FetchResponseTopic{{
					Topic:   "orders",
					TopicID: topicID1,
					Partitions: []kmsg.FetchResponseTopicPartition{
						{Partition: 0, HighWatermark: 100, LastStableOffset: 100, LogStartOffset: 0,
							PreferredReadReplica: -1, RecordBatches: []byte("not really a batch, but opaque bytes")},
						{Partition: 1, ErrorCode: notLeader, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1,
							PreferredReadReplica: -1,
							CurrentLeader:        kmsg.FetchResponseTopicPartitionCurrentLeader{LeaderID: 1, LeaderEpoch: 4}},
					},
				}},
			}
			if hints {
				r.Brokers = []kmsg.FetchResponseBroker{{NodeID: 1, Host: upstreamHost(1), Port: upstreamPort, Rack: ptr("az-a")}}
			}
			return r
		}
	}

	return []rewriteCase{
		{
			name: "Produce", key: 0, lo: 10, hi: maxProduce,
			build: produce(true),
			patch: func(r kmsg.Response) {
				b := r.(*kmsg.ProduceResponse).Brokers
				b[0].Host, b[0].Port = advHost, advPortBase+2
				b[1].Host, b[1].Port = advHost, advPortBase+3
			},
			calls: ids(2, 3),
		},
		{
			name: "Produce/no-hints", key: 0, lo: 10, hi: maxProduce,
			build: produce(false), patch: func(kmsg.Response) {}, calls: ids(), unchanged: true,
		},
		{
			name: "Fetch", key: 1, lo: 16, hi: maxFetch,
			build: fetch(true),
			patch: func(r kmsg.Response) {
				b := r.(*kmsg.FetchResponse).Brokers
				b[0].Host, b[0].Port = advHost, advPortBase+1
			},
			calls: ids(1),
		},
		{
			name: "Fetch/no-hints", key: 1, lo: 16, hi: maxFetch,
			build: fetch(false), patch: func(kmsg.Response) {}, calls: ids(), unchanged: true,
		},
		{
			name: "Metadata", key: 3, lo: 0, hi: maxMetadata,
			build: func() kmsg.Response {
				r := &kmsg.MetadataResponse{
					ThrottleMillis: 5,
					ClusterID:      ptr("cluster-1"),
					ControllerID:   2,
					Topics: []kmsg.MetadataResponseTopic{{
						Topic:   ptr("orders"),
						TopicID: topicID1,
						Partitions: []kmsg.MetadataResponseTopicPartition{
							{Partition: 0, Leader: 1, LeaderEpoch: 3, Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2}, OfflineReplicas: []int32{}},
						},
						AuthorizedOperations: -2147483648,
					}},
					AuthorizedOperations: -2147483648,
				}
				for id := int32(1); id <= 3; id++ {
					r.Brokers = append(r.Brokers, kmsg.MetadataResponseBroker{
						NodeID: id, Host: upstreamHost(id), Port: upstreamPort, Rack: ptr("az"),
					})
				}
				// An unknown tagged field must survive the rewrite.
				r.UnknownTags.Set(99, []byte{0xca, 0xfe})
				return r
			},
			patch: func(r kmsg.Response) {
				for i := range r.(*kmsg.MetadataResponse).Brokers {
					b := &r.(*kmsg.MetadataResponse).Brokers[i]
					b.Host, b.Port = advHost, advPortBase+b.NodeID
				}
			},
			calls: ids(1, 2, 3),
		},
		{
			name: "FindCoordinator", key: 10, lo: 0, hi: maxFindCoord,
			build: func() kmsg.Response {
				return &kmsg.FindCoordinatorResponse{
					ThrottleMillis: 3,
					NodeID:         2, Host: upstreamHost(2), Port: upstreamPort,
					Coordinators: []kmsg.FindCoordinatorResponseCoordinator{
						{Key: "group-a", NodeID: 2, Host: upstreamHost(2), Port: upstreamPort},
						{Key: "group-b", NodeID: -1, Host: "", Port: -1, ErrorCode: coordNotAvail, ErrorMessage: ptr("loading")},
						{Key: "group-c", NodeID: 3, Host: upstreamHost(3), Port: upstreamPort},
					},
				}
			},
			patch: func(r kmsg.Response) {
				f := r.(*kmsg.FindCoordinatorResponse)
				if f.Version < 4 {
					f.Host, f.Port = advHost, advPortBase+2
					return
				}
				f.Coordinators[0].Host, f.Coordinators[0].Port = advHost, advPortBase+2
				f.Coordinators[2].Host, f.Coordinators[2].Port = advHost, advPortBase+3
			},
			calls: func(v int16) []int32 {
				if v < 4 {
					return []int32{2}
				}
				return []int32{2, 3}
			},
		},
		{
			name: "FindCoordinator/none", key: 10, lo: 0, hi: maxFindCoord,
			build: func() kmsg.Response {
				return &kmsg.FindCoordinatorResponse{
					ErrorCode: coordNotAvail, NodeID: -1, Host: "", Port: -1,
					Coordinators: []kmsg.FindCoordinatorResponseCoordinator{
						{Key: "group-b", NodeID: -1, Host: "", Port: -1, ErrorCode: coordNotAvail},
					},
				}
			},
			patch: func(kmsg.Response) {}, calls: ids(), unchanged: true,
		},
		{
			name: "DescribeCluster", key: 60, lo: 0, hi: maxDescCluster,
			build: func() kmsg.Response {
				r := &kmsg.DescribeClusterResponse{
					EndpointType: 1, ClusterID: "cluster-1", ControllerID: 3,
					ClusterAuthorizedOperations: -2147483648,
				}
				for id := int32(1); id <= 3; id++ {
					r.Brokers = append(r.Brokers, kmsg.DescribeClusterResponseBroker{
						NodeID: id, Host: upstreamHost(id), Port: upstreamPort, IsFenced: id == 3,
					})
				}
				return r
			},
			patch: func(r kmsg.Response) {
				for i := range r.(*kmsg.DescribeClusterResponse).Brokers {
					b := &r.(*kmsg.DescribeClusterResponse).Brokers[i]
					b.Host, b.Port = advHost, advPortBase+b.NodeID
				}
			},
			calls: ids(1, 2, 3),
		},
		{
			name: "ShareFetch", key: 78, lo: 0, hi: maxShare,
			build: func() kmsg.Response {
				return &kmsg.ShareFetchResponse{
					AcquisitionLockTimeoutMillis: 30000,
					Topics: []kmsg.ShareFetchResponseTopic{{
						TopicID: topicID1,
						Partitions: []kmsg.ShareFetchResponseTopicPartition{{
							Partition: 0, ErrorCode: notLeader,
							CurrentLeader:   kmsg.ShareFetchResponseTopicPartitionCurrentLeader{LeaderID: 2, LeaderEpoch: 1},
							Records:         []byte("opaque"),
							AcquiredRecords: []kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 1, LastOffset: 4, DeliveryCount: 1}},
						}},
					}},
					NodeEndpoints: []kmsg.ShareFetchResponseNodeEndpoint{
						{NodeID: 2, Host: upstreamHost(2), Port: upstreamPort, Rack: ptr("az-b")},
					},
				}
			},
			patch: func(r kmsg.Response) {
				e := r.(*kmsg.ShareFetchResponse).NodeEndpoints
				e[0].Host, e[0].Port = advHost, advPortBase+2
			},
			calls: ids(2),
		},
		{
			name: "ShareAcknowledge", key: 79, lo: 0, hi: maxShareAck,
			build: func() kmsg.Response {
				return &kmsg.ShareAcknowledgeResponse{
					Topics: []kmsg.ShareAcknowledgeResponseTopic{{
						TopicID: topicID2,
						Partitions: []kmsg.ShareAcknowledgeResponseTopicPartition{{
							Partition: 3, ErrorCode: notLeader,
							CurrentLeader: kmsg.ShareAcknowledgeResponseTopicPartitionCurrentLeader{LeaderID: 1, LeaderEpoch: 2},
						}},
					}},
					NodeEndpoints: []kmsg.ShareAcknowledgeResponseNodeEndpoint{
						{NodeID: 1, Host: upstreamHost(1), Port: upstreamPort},
						{NodeID: 3, Host: upstreamHost(3), Port: upstreamPort, Rack: ptr("az-c")},
					},
				}
			},
			patch: func(r kmsg.Response) {
				e := r.(*kmsg.ShareAcknowledgeResponse).NodeEndpoints
				e[0].Host, e[0].Port = advHost, advPortBase+1
				e[1].Host, e[1].Port = advHost, advPortBase+3
			},
			calls: ids(1, 3),
		},
	}
}

// TestKmsgMaxVersions pins the kmsg versions this package was checked
// against. When a kmsg upgrade adds a version, TestRewrite covers it already;
// this test fails so that someone reads the new version's schema for new
// address fields before bumping the numbers.
func TestKmsgMaxVersions(t *testing.T) {
	for _, c := range []struct {
		r    kmsg.Response
		want int16
	}{
		{&kmsg.ProduceResponse{}, 13},
		{&kmsg.FetchResponse{}, 18},
		{&kmsg.MetadataResponse{}, 13},
		{&kmsg.FindCoordinatorResponse{}, 6},
		{&kmsg.DescribeClusterResponse{}, 2},
		{&kmsg.ShareFetchResponse{}, 2},
		{&kmsg.ShareAcknowledgeResponse{}, 2},
	} {
		if got := c.r.MaxVersion(); got != c.want {
			t.Errorf("%s: kmsg max version %d, checked up to %d: look for new broker address fields", kmsg.NameForKey(c.r.Key()), got, c.want)
		}
	}
}

// TestRewrite encodes each case with kmsg at every version the hook covers
// (lowest through kmsg's max), decodes it, runs it through a chain, re-encodes
// and decodes it again, and checks that exactly the addresses changed.
func TestRewrite(t *testing.T) {
	for _, tc := range rewriteCases() {
		for v := tc.lo; v <= tc.hi; v++ {
			t.Run(tc.name+"/v"+itoa(v), func(t *testing.T) {
				wire := encode(tc.build(), v)
				orig := decode(t, tc.key, v, wire)
				want := decode(t, tc.key, v, wire)
				tc.patch(want)
				wantWire := encode(want, v)
				changed := !bytes.Equal(wire, wantWire)
				if changed == tc.unchanged {
					t.Fatalf("test case: patch changed=%v, unchanged=%v", changed, tc.unchanged)
				}

				m := &fakeMapper{}
				got := decode(t, tc.key, v, wire)
				x, err := runChain(t, m, nil, tc.key, v, got)
				if err != nil {
					t.Fatalf("rewrite: %v", err)
				}
				if x.ResponseModified() != changed {
					t.Errorf("ResponseModified = %v, want %v", x.ResponseModified(), changed)
				}

				gotWire := encode(got, v)
				if !bytes.Equal(gotWire, wantWire) {
					t.Errorf("re-encoded response differs from the original with addresses patched:\n got %x\nwant %x", gotWire, wantWire)
				}
				if bytes.Contains(gotWire, []byte("upstream.internal")) {
					t.Errorf("an upstream address survived the rewrite: %q", gotWire)
				}
				again := decode(t, tc.key, v, gotWire)
				if !reflect.DeepEqual(again, want) {
					t.Errorf("decoded rewrite:\n got %+v\nwant %+v", again, want)
				}
				if !changed && !reflect.DeepEqual(got, orig) {
					t.Errorf("unchanged response was touched:\n got %+v\nwant %+v", got, orig)
				}

				var gotIDs []int32
				for _, c := range m.Calls() {
					gotIDs = append(gotIDs, c.NodeID)
					if c.Host != upstreamHost(c.NodeID) || c.Port != upstreamPort {
						t.Errorf("Advertise(%d, %q, %d): want the upstream address %s:%d", c.NodeID, c.Host, c.Port, upstreamHost(c.NodeID), upstreamPort)
					}
				}
				if wantIDs := tc.calls(v); !reflect.DeepEqual(gotIDs, wantIDs) && len(gotIDs)+len(wantIDs) > 0 {
					t.Errorf("Advertise node ids = %v, want %v", gotIDs, wantIDs)
				}
			})
		}
	}
}

// TestRewriteSameAddress: a Mapper that advertises the upstream address itself
// (e.g. a proxy in front of brokers that already advertise it) must leave the
// response unmodified, so the proxy forwards the original bytes.
func TestRewriteSameAddress(t *testing.T) {
	for _, tc := range rewriteCases() {
		for _, v := range []int16{tc.lo, tc.hi} {
			t.Run(tc.name+"/v"+itoa(v), func(t *testing.T) {
				m := &fakeMapper{identity: true}
				x, err := runChain(t, m, nil, tc.key, v, decode(t, tc.key, v, encode(tc.build(), v)))
				if err != nil {
					t.Fatal(err)
				}
				if x.ResponseModified() {
					t.Error("ResponseModified = true for a Mapper that changed nothing")
				}
				if len(m.Calls()) != len(tc.calls(v)) {
					t.Errorf("Advertise called %d times, want %d", len(m.Calls()), len(tc.calls(v)))
				}
			})
		}
	}
}

func TestMapperError(t *testing.T) {
	boom := errors.New("no listener left")
	for _, tc := range rewriteCases() {
		if tc.unchanged {
			continue
		}
		v := tc.hi
		t.Run(tc.name, func(t *testing.T) {
			// Fail for the last node id the case names.
			want := tc.calls(v)
			bad := want[len(want)-1]
			m := &fakeMapper{fail: map[int32]error{bad: boom}}
			_, err := runChain(t, m, nil, tc.key, v, decode(t, tc.key, v, encode(tc.build(), v)))
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v, want it to wrap %v", err, boom)
			}
			api := strings.SplitN(tc.name, "/", 2)[0]
			if ctx := "rewrite " + api + " broker " + itoa16(bad) + ": "; !strings.Contains(err.Error(), ctx) {
				t.Errorf("err = %q, want it to contain %q", err, ctx)
			}
			if !strings.HasPrefix(err.Error(), Name+": ") {
				t.Errorf("err = %q, want the chain's %q prefix", err, Name+": ")
			}
		})
	}
}

func TestHookedVersions(t *testing.T) {
	chain, err := interceptor.NewChain(New(&fakeMapper{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, version int16
		want         bool
	}{
		{0, 9, false}, {0, 10, true}, {0, 13, true},
		{1, 15, false}, {1, 16, true}, {1, 18, true},
		{3, 0, true}, {3, 13, true},
		{10, 0, true}, {10, 6, true},
		{60, 0, true}, {78, 0, true}, {79, 0, true},
		{2, 0, false}, {18, 3, false},
	} {
		req, resp := chain.Hooked(tc.key, tc.version)
		if req || resp != tc.want {
			t.Errorf("Hooked(%d, %d) = %v, %v; want false, %v", tc.key, tc.version, req, resp, tc.want)
		}
	}
}

// TestRequestThenResponse runs the proxy's full flow: the request phase (no
// metadata request hooks, nothing answers), then the response phase.
func TestRequestThenResponse(t *testing.T) {
	chain, err := interceptor.NewChain(New(&fakeMapper{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := &interceptor.Exchange{Key: 3, Version: 12, Request: &kmsg.MetadataRequest{Version: 12}}
	if err := chain.Request(ctx, x); err != nil || x.Response != nil || x.RequestModified() {
		t.Fatalf("request phase: err=%v response=%v modified=%v", err, x.Response, x.RequestModified())
	}
	resp := &kmsg.MetadataResponse{Version: 12, Brokers: []kmsg.MetadataResponseBroker{{NodeID: 4, Host: upstreamHost(4), Port: upstreamPort}}}
	x.Response = resp
	if err := chain.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	if b := resp.Brokers[0]; !x.ResponseModified() || b.Host != advHost || b.Port != advPortBase+4 {
		t.Errorf("broker = %s:%d modified=%v; want %s:%d", b.Host, b.Port, x.ResponseModified(), advHost, advPortBase+4)
	}
}

func TestDescribeClusterControllersRefused(t *testing.T) {
	resp := &kmsg.DescribeClusterResponse{
		Version: 1, EndpointType: endpointTypeController, ClusterID: "c",
		Brokers: []kmsg.DescribeClusterResponseBroker{{NodeID: 3000, Host: "ctl.upstream.internal", Port: 9093}},
	}
	m := &fakeMapper{}
	if _, err := runChain(t, m, nil, 60, 1, resp); err == nil {
		t.Fatal("controller endpoints were rewritten; want an error")
	}
	if len(m.Calls()) != 0 {
		t.Errorf("Mapper was asked about controllers: %v", m.Calls())
	}
	// The broker's refusal (no endpoints) passes.
	resp = &kmsg.DescribeClusterResponse{Version: 1, EndpointType: endpointTypeController, ErrorCode: 119}
	if x, err := runChain(t, m, nil, 60, 1, resp); err != nil || x.ResponseModified() {
		t.Fatalf("UNSUPPORTED_ENDPOINT_TYPE answer: modified=%v err=%v", x.ResponseModified(), err)
	}
}

func TestWrongResponseType(t *testing.T) {
	for _, key := range []int16{0, 1, 3, 10, 60, 78, 79} {
		x := &kmsg.ApiVersionsResponse{Version: 16}
		if _, err := runChain(t, &fakeMapper{}, nil, key, 16, x); err == nil {
			t.Errorf("key %d: an ApiVersions response was accepted", key)
		}
	}
}

func TestTopicNamesLearnsFromMetadataV12(t *testing.T) {
	resp := &kmsg.MetadataResponse{
		Brokers: []kmsg.MetadataResponseBroker{{NodeID: 1, Host: upstreamHost(1), Port: upstreamPort}},
		Topics: []kmsg.MetadataResponseTopic{
			{Topic: ptr("orders"), TopicID: topicID1},
			{Topic: ptr("payments"), TopicID: topicID2},
			{Topic: ptr("missing"), ErrorCode: 3}, // UNKNOWN_TOPIC_OR_PARTITION: zero id
		},
	}
	names := topicid.New()
	x, err := runChain(t, &fakeMapper{}, names, 3, 12, decode(t, 3, 12, encode(resp, 12)))
	if err != nil {
		t.Fatal(err)
	}
	if !x.ResponseModified() {
		t.Error("broker was not rewritten")
	}
	for id, want := range map[[16]byte]string{topicID1: "orders", topicID2: "payments"} {
		if got, ok := names.Name(id); !ok || got != want {
			t.Errorf("Name(%x) = %q, %v; want %q", id, got, ok, want)
		}
	}
	for _, id := range [][16]byte{{}, {9}} {
		if got, ok := names.Name(id); ok {
			t.Errorf("Name(%x) = %q; want unknown", id, got)
		}
	}

	// Metadata v9 carries no ids: nothing to learn, nothing learned.
	names = topicid.New()
	if _, err := runChain(t, &fakeMapper{}, names, 3, 9, decode(t, 3, 9, encode(resp, 9))); err != nil {
		t.Fatal(err)
	}
	if _, ok := names.Name(topicID1); ok {
		t.Error("learned an id from a v9 response")
	}
	names.Learn(nil) // must not panic

	var zero topicid.Names // usable as is
	if _, ok := zero.Name(topicID1); ok {
		t.Error("zero topicid.Names knows a name")
	}
	zero.Learn(&kmsg.MetadataResponse{Topics: resp.Topics})
	if n, ok := zero.Name(topicID1); !ok || n != "orders" {
		t.Errorf("zero topicid.Names: Name = %q, %v", n, ok)
	}
}

func TestTopicNamesConcurrent(t *testing.T) {
	names := topicid.New()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := [16]byte{byte(g), byte(i)}
				names.Learn(&kmsg.MetadataResponse{Topics: []kmsg.MetadataResponseTopic{{Topic: ptr("t" + itoa(int16(i))), TopicID: id}}})
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 200 {
				names.Name([16]byte{byte(g), byte(i)})
			}
		}()
	}
	wg.Wait()
	if n, ok := names.Name([16]byte{3, 199}); !ok || n != "t199" {
		t.Errorf("Name = %q, %v", n, ok)
	}
}

func itoa(v int16) string   { return strconv.Itoa(int(v)) }
func itoa16(v int32) string { return strconv.Itoa(int(v)) }
