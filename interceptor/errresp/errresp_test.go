package errresp

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testCode is TOPIC_AUTHORIZATION_FAILED; any non-zero code would do.
const testCode int16 = 29

// kmsg has no per-API minimum version: every generated type encodes and
// decodes versions 0 through MaxVersion.
const kmsgMinVersion int16 = 0

// populate fills the kmsg struct v (addressable) with a representative
// request: two elements in every list, strings "a"/"b", list indexes in
// int32 fields named Partition, UUIDs non-zero. Byte slices and optional
// pointer-to-struct fields stay empty.
func populate(v reflect.Value, idx int) {
	if def, ok := v.Addr().Interface().(interface{ Default() }); ok {
		def.Default()
	}
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() || f.Name == "Version" {
			continue
		}
		switch ft := f.Type; {
		case ft.Kind() == reflect.String:
			fv.SetString(fmt.Sprintf("%s-%c", strings.ToLower(f.Name), 'a'+idx))
		case ft == reflect.TypeFor[*string]():
			s := fmt.Sprintf("%s-%c", strings.ToLower(f.Name), 'a'+idx)
			fv.Set(reflect.ValueOf(&s))
		case ft.Kind() == reflect.Array:
			fv.Index(0).SetUint(uint64(idx + 1))
		case ft.Kind() == reflect.Int32 && f.Name == "Partition":
			fv.SetInt(int64(idx))
		case ft.Kind() == reflect.Struct && f.Name != "UnknownTags":
			populate(fv, idx)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			s := reflect.MakeSlice(ft, 2, 2)
			for j := range 2 {
				populate(s.Index(j), j)
			}
			fv.Set(s)
		case ft == reflect.TypeFor[[]int32]():
			fv.Set(reflect.ValueOf([]int32{0, 1}))
		case ft == reflect.TypeFor[[]string]():
			fv.Set(reflect.ValueOf([]string{"a", "b"}))
		}
	}
}

// wireRequest returns a populated request of key at version, as the proxy
// would see it: encoded, then decoded (fields the version lacks are gone).
func wireRequest(t *testing.T, key, version int16) kmsg.Request {
	t.Helper()
	req := kmsg.RequestForKey(key)
	populate(reflect.ValueOf(req).Elem(), 0)
	if p, ok := req.(*kmsg.ProduceRequest); ok {
		p.Acks = -1
	}
	req.SetVersion(version)
	back := kmsg.RequestForKey(key)
	back.SetVersion(version)
	if err := back.ReadFrom(req.AppendTo(nil)); err != nil {
		t.Fatalf("%s v%d: decode request: %v", kmsg.NameForKey(key), version, err)
	}
	return back
}

// roundTrip encodes resp at its version and decodes it.
func roundTrip(t *testing.T, resp kmsg.Response) kmsg.Response {
	t.Helper()
	back := kmsg.ResponseForKey(resp.Key())
	back.SetVersion(resp.GetVersion())
	if err := back.ReadFrom(resp.AppendTo(nil)); err != nil {
		t.Fatalf("%s v%d: decode response: %v", kmsg.NameForKey(resp.Key()), resp.GetVersion(), err)
	}
	return back
}

// wantRefused lists the (key, version) pairs for which For cannot
// answer a populated request: DescribeLogDirs before v3 has no top-level
// error code, and its per-directory entries do not come from the request.
var wantRefused = []string{"35 DescribeLogDirs v0", "35 DescribeLogDirs v1", "35 DescribeLogDirs v2"}

// TestErrorResponseEveryKey answers a populated request of every API kmsg
// knows, at every version from kmsg's minimum (0) to its maximum, and checks
// that the code survives encoding at that version.
func TestErrorResponseEveryKey(t *testing.T) {
	var refused []string
	known := 0
	for key := int16(0); key <= 100; key++ {
		if kmsg.RequestForKey(key) == nil {
			continue
		}
		known++
		for v := kmsgMinVersion; v <= kmsg.RequestForKey(key).MaxVersion(); v++ {
			resp, err := For(wireRequest(t, key, v), testCode)
			if err != nil {
				refused = append(refused, fmt.Sprintf("%d %s v%d", key, kmsg.NameForKey(key), v))
				continue
			}
			if resp.Key() != key || resp.GetVersion() != v {
				t.Errorf("%s v%d: response is key %d v%d", kmsg.NameForKey(key), v, resp.Key(), resp.GetVersion())
			}
			if !codeIn(roundTrip(t, resp), testCode) {
				t.Errorf("%s v%d: code missing after the round trip", kmsg.NameForKey(key), v)
			}
		}
	}
	if known < 90 {
		t.Fatalf("kmsg knows only %d request keys", known)
	}
	t.Logf("%d request keys; For refuses: %s", known, strings.Join(refused, ", "))
	if !slices.Equal(refused, wantRefused) {
		t.Errorf("refused %v, want %v", refused, wantRefused)
	}
}

// TestErrorResponseCommon checks that the APIs an operator is likely to deny
// carry the code in every topic / partition / resource entry, at the lowest
// and highest version.
func TestErrorResponseCommon(t *testing.T) {
	// path names the list whose every element must carry the code ("" is
	// the top-level ErrorCode), n how many elements it must have (two per
	// request list, see populate).
	type check struct {
		path string
		n    int
	}
	topicParts := []check{{"Topics.Partitions", 4}}
	cases := map[int16][]check{
		0:  topicParts,                          // Produce
		1:  topicParts,                          // Fetch
		3:  {{"Topics", 2}},                     // Metadata
		8:  topicParts,                          // OffsetCommit
		11: {{"", 1}},                           // JoinGroup
		19: {{"Topics", 2}},                     // CreateTopics
		20: {{"Topics", 2}},                     // DeleteTopics
		21: topicParts,                          // DeleteRecords
		22: {{"", 1}},                           // InitProducerID
		30: {{"Results", 2}},                    // CreateACLs
		31: {{"Results", 2}},                    // DeleteACLs
		33: {{"Resources", 2}},                  // AlterConfigs
		37: {{"Topics", 2}},                     // CreatePartitions
		42: {{"Groups", 2}},                     // DeleteGroups
		43: topicParts,                          // ElectLeaders
		44: {{"Resources", 2}},                  // IncrementalAlterConfigs
		45: {{"", 1}, {"Topics.Partitions", 4}}, // AlterPartitionAssignments
	}
	for key, checks := range cases {
		req0 := kmsg.RequestForKey(key)
		for _, v := range []int16{kmsgMinVersion, req0.MaxVersion()} {
			name := fmt.Sprintf("%s/v%d", kmsg.NameForKey(key), v)
			t.Run(name, func(t *testing.T) {
				resp, err := For(wireRequest(t, key, v), testCode)
				if err != nil {
					t.Fatal(err)
				}
				back := reflect.ValueOf(roundTrip(t, resp)).Elem()
				for _, c := range checks {
					items := []reflect.Value{back}
					if c.path != "" {
						items = walk(back, strings.Split(c.path, "."))
					}
					if len(items) != c.n {
						t.Errorf("%s: %d entries, want %d", c.path, len(items), c.n)
					}
					for i, it := range items {
						if got := it.FieldByName("ErrorCode").Int(); got != int64(testCode) {
							t.Errorf("%s[%d].ErrorCode = %d, want %d", c.path, i, got, testCode)
						}
					}
				}
			})
		}
	}
}

// walk returns the elements of the nested lists at path.
func walk(v reflect.Value, path []string) []reflect.Value {
	s := v.FieldByName(path[0])
	var out []reflect.Value
	for i := range s.Len() {
		if len(path) == 1 {
			out = append(out, s.Index(i))
		} else {
			out = append(out, walk(s.Index(i), path[1:])...)
		}
	}
	return out
}

// TestErrorResponseMirrors checks that items are identified as in the
// request, including the renamed and scalar-list cases.
func TestErrorResponseMirrors(t *testing.T) {
	t.Run("DeleteTopics v0 names", func(t *testing.T) {
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.SetVersion(0)
		req.TopicNames = []string{"orders", "payments"}
		resp := mustRespond(t, req).(*kmsg.DeleteTopicsResponse)
		var got []string
		for _, tp := range resp.Topics {
			got = append(got, *tp.Topic)
		}
		if !slices.Equal(got, req.TopicNames) {
			t.Errorf("topics %v, want %v", got, req.TopicNames)
		}
	})
	t.Run("ElectLeaders partition list", func(t *testing.T) {
		req := kmsg.NewPtrElectLeadersRequest()
		req.SetVersion(2)
		rt := kmsg.NewElectLeadersRequestTopic()
		rt.Topic, rt.Partitions = "orders", []int32{3, 7}
		req.Topics = append(req.Topics, rt)
		resp := mustRespond(t, req).(*kmsg.ElectLeadersResponse)
		if len(resp.Topics) != 1 || resp.Topics[0].Topic != "orders" {
			t.Fatalf("topics %+v", resp.Topics)
		}
		var parts []int32
		for _, p := range resp.Topics[0].Partitions {
			parts = append(parts, p.Partition)
			if p.ErrorMessage == nil || *p.ErrorMessage == "" {
				t.Errorf("partition %d: no error message", p.Partition)
			}
		}
		if !slices.Equal(parts, []int32{3, 7}) {
			t.Errorf("partitions %v, want [3 7]", parts)
		}
	})
	t.Run("FindCoordinator v4 keys", func(t *testing.T) {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.SetVersion(4)
		req.CoordinatorKeys = []string{"g1", "g2"}
		resp := mustRespond(t, req).(*kmsg.FindCoordinatorResponse)
		if len(resp.Coordinators) != 2 || resp.Coordinators[1].Key != "g2" || resp.Coordinators[1].ErrorCode != testCode {
			t.Errorf("coordinators %+v", resp.Coordinators)
		}
	})
	t.Run("Produce topic and partition", func(t *testing.T) {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(9)
		req.Acks = 1
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "orders"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = 5
		rp.Records = []byte("not echoed")
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := mustRespond(t, req).(*kmsg.ProduceResponse)
		p := resp.Topics[0].Partitions[0]
		if resp.Topics[0].Topic != "orders" || p.Partition != 5 || p.ErrorCode != testCode {
			t.Errorf("got %+v", resp.Topics)
		}
		if p.CurrentLeader.LeaderID != -1 {
			t.Errorf("kmsg default not kept: leader %d, want -1", p.CurrentLeader.LeaderID)
		}
		if len(p.ErrorRecords) != 0 {
			t.Errorf("error records %+v: lists without an error code stay empty", p.ErrorRecords)
		}
	})
	t.Run("AlterClientQuotas entity key", func(t *testing.T) {
		req := kmsg.NewPtrAlterClientQuotasRequest()
		e := kmsg.NewAlterClientQuotasRequestEntry()
		name := "alice"
		e.Entity = []kmsg.AlterClientQuotasRequestEntryEntity{{Type: "user", Name: &name}}
		req.Entries = append(req.Entries, e)
		resp := mustRespond(t, req).(*kmsg.AlterClientQuotasResponse)
		if len(resp.Entries) != 1 || len(resp.Entries[0].Entity) != 1 || *resp.Entries[0].Entity[0].Name != "alice" {
			t.Errorf("entries %+v", resp.Entries)
		}
	})
}

func mustRespond(t *testing.T, req kmsg.Request) kmsg.Response {
	t.Helper()
	resp, err := For(req, testCode)
	if err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, resp)
}

func TestErrorResponseRefuses(t *testing.T) {
	meta := kmsg.NewPtrMetadataRequest() // v0..v12 all topics: nowhere to put the code
	meta.SetVersion(12)
	acks0 := kmsg.NewPtrProduceRequest()
	acks0.Acks = 0
	ok := kmsg.NewPtrHeartbeatRequest()
	for _, tc := range []struct {
		name string
		req  kmsg.Request
		code int16
	}{
		{"metadata all topics v12", meta, testCode},
		{"produce acks=0", acks0, testCode},
		{"code 0", ok, 0},
	} {
		if resp, err := For(tc.req, tc.code); err == nil {
			t.Errorf("%s: got %T, want an error", tc.name, resp)
		}
	}
	meta13 := kmsg.NewPtrMetadataRequest()
	meta13.SetVersion(13)
	if _, err := For(meta13, testCode); err != nil {
		t.Errorf("metadata v13 has a top-level error code: %v", err)
	}
}

// FuzzErrorResponse feeds ErrorResponse what a hostile client can send: any
// request body that kmsg decodes. It must not panic, and an answer it gives
// must survive the round trip with the code in it.
func FuzzErrorResponse(f *testing.F) {
	for key := int16(0); key <= 100; key++ {
		if r := kmsg.RequestForKey(key); r != nil {
			req := kmsg.RequestForKey(key)
			populate(reflect.ValueOf(req).Elem(), 0)
			req.SetVersion(r.MaxVersion())
			f.Add(key, r.MaxVersion(), req.AppendTo(nil))
			req.SetVersion(0)
			f.Add(key, int16(0), req.AppendTo(nil))
		}
	}
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		req := kmsg.RequestForKey(key)
		if req == nil || version < 0 || version > req.MaxVersion() {
			return
		}
		req.SetVersion(version)
		if req.ReadFrom(body) != nil {
			return
		}
		resp, err := For(req, testCode)
		if err != nil {
			return
		}
		if !codeIn(roundTrip(t, resp), testCode) {
			t.Fatalf("%s v%d: code missing after the round trip", kmsg.NameForKey(key), version)
		}
	})
}
