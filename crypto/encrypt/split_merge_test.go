package encrypt

import (
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceResp(throttle int32, parts ...kmsg.ProduceResponseTopicPartition) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	r.ThrottleMillis = throttle
	t := kmsg.NewProduceResponseTopic()
	t.Topic = "t"
	t.Partitions = parts
	r.Topics = append(r.Topics, t)
	return r
}

func part(p int32, code int16, base int64) kmsg.ProduceResponseTopicPartition {
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.Partition, rp.ErrorCode, rp.BaseOffset = p, code, base
	return rp
}

// TestMergeSplit: the client's partition gets the first part's base offset
// when every part succeeded, and the first failing part's error (base
// offset -1, record errors renumbered to the client's batch) otherwise;
// unsplit partitions keep the broker's answer; throttle is the longest.
func TestMergeSplit(t *testing.T) {
	splits := []split{
		{topic: "t", partition: 0, batches: make([][]byte, 3), counts: []int32{400, 400, 150}}, // all parts succeed
		{topic: "t", partition: 1, batches: make([][]byte, 3), counts: []int32{500, 450, 10}},  // part 2 fails
	}
	first := produceResp(5, part(0, 0, 1000), part(1, 0, 2000), part(2, 0, 3000))
	failed := part(1, kerr.InvalidRecord.Code, -1)
	failed.ErrorRecords = []kmsg.ProduceResponseTopicPartitionErrorRecord{{RelativeOffset: 7}}
	second := produceResp(20, part(0, 0, 1400), failed)
	third := produceResp(1, part(0, 0, 1800), part(1, kerr.OutOfOrderSequenceNumber.Code, -1))
	got, err := mergeSplit(splits, nil)([]kmsg.Response{first, second, third})
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*kmsg.ProduceResponse)
	if out.ThrottleMillis != 20 {
		t.Errorf("throttle %d, want the longest, 20", out.ThrottleMillis)
	}
	ps := out.Topics[0].Partitions
	if ps[0].ErrorCode != 0 || ps[0].BaseOffset != 1000 {
		t.Errorf("partition 0: error %d base %d, want success at the first part's offset 1000", ps[0].ErrorCode, ps[0].BaseOffset)
	}
	if ps[1].ErrorCode != kerr.InvalidRecord.Code || ps[1].BaseOffset != -1 || len(ps[1].ErrorRecords) != 1 || ps[1].ErrorRecords[0].RelativeOffset != 507 {
		t.Errorf("partition 1: %+v, want the first failing part's INVALID_RECORD, base -1, record 7 of part 2 as 507", ps[1])
	}
	if ps[2].ErrorCode != 0 || ps[2].BaseOffset != 3000 {
		t.Errorf("unsplit partition 2 changed: %+v", ps[2])
	}
	// A broker answer that lacks a part's partition is an error (the
	// connection closes), never a silent success.
	if _, err := mergeSplit(splits, nil)([]kmsg.Response{first, produceResp(0), third}); err == nil {
		t.Error("a missing partition in a part's response was merged as success")
	}
}

// TestSplitRequests: the i-th extra request carries the (i+1)-th batch of
// every split partition that has one, with the client's transactional id,
// acks and timeout.
func TestSplitRequests(t *testing.T) {
	req := kmsg.NewPtrProduceRequest()
	txn := "tx"
	req.TransactionID, req.Acks, req.TimeoutMillis = &txn, -1, 1234
	splits := []split{
		{topic: "a", partition: 0, batches: [][]byte{{0}, {1}, {2}}},
		{topic: "a", partition: 3, batches: [][]byte{{0}, {31}}},
		{topic: "b", partition: 1, batches: [][]byte{{0}, {11}, {12}}},
	}
	more := splitRequests(req, splits)
	if len(more) != 2 {
		t.Fatalf("%d extra requests, want 2", len(more))
	}
	r1, r2 := more[0].(*kmsg.ProduceRequest), more[1].(*kmsg.ProduceRequest)
	for _, r := range []*kmsg.ProduceRequest{r1, r2} {
		if r.TransactionID == nil || *r.TransactionID != "tx" || r.Acks != -1 || r.TimeoutMillis != 1234 {
			t.Fatalf("extra request lost the client's header fields: %+v", r)
		}
	}
	if len(r1.Topics) != 2 || len(r1.Topics[0].Partitions) != 2 || r1.Topics[0].Partitions[1].Records[0] != 31 || r1.Topics[1].Partitions[0].Records[0] != 11 {
		t.Fatalf("first extra request: %+v", r1.Topics)
	}
	if len(r2.Topics) != 2 || len(r2.Topics[0].Partitions) != 1 || r2.Topics[0].Partitions[0].Records[0] != 2 || r2.Topics[1].Partitions[0].Records[0] != 12 {
		t.Fatalf("second extra request: %+v", r2.Topics)
	}
}

// TestMergeSplitForgottenParts: a part answered OUT_OF_ORDER_SEQUENCE_NUMBER
// counts as stored when the broker's last sequence for the producer is at
// or past the part's last record (sequences wrap); the first part stored
// that way makes the answer DUPLICATE_SEQUENCE_NUMBER; a last sequence
// short of the part, or another epoch, keeps the error.
func TestMergeSplitForgottenParts(t *testing.T) {
	sp := split{topic: "t", name: "t", partition: 0, batches: make([][]byte, 2), counts: []int32{100, 50},
		seqs: []int32{math.MaxInt32 - 9, 90}, pid: 7, epoch: 2} // part 0 covers MaxInt32-9 .. 89 (wrapped)
	resps := func() []kmsg.Response {
		return []kmsg.Response{produceResp(0, part(0, kerr.OutOfOrderSequenceNumber.Code, -1)), produceResp(0, part(0, 0, 500))}
	}
	for _, c := range []struct {
		epoch int16
		last  int32
		want  int16
	}{
		{2, 139, kerr.DuplicateSequenceNumber.Code},            // both parts stored
		{2, 89, kerr.DuplicateSequenceNumber.Code},             // exactly the part's last record
		{2, 88, kerr.OutOfOrderSequenceNumber.Code},            // one short
		{3, 139, kerr.OutOfOrderSequenceNumber.Code},           // another epoch
		{2, math.MaxInt32, kerr.OutOfOrderSequenceNumber.Code}, // before the wrap: not stored
	} {
		got, err := mergeSplit([]split{sp}, func(split) (int16, int32, bool) { return c.epoch, c.last, true })(resps())
		if err != nil {
			t.Fatal(err)
		}
		p := got.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if p.ErrorCode != c.want || p.BaseOffset != -1 {
			t.Errorf("last sequence %d epoch %d: %v base %d, want %v", c.last, c.epoch, kerr.ErrorForCode(p.ErrorCode), p.BaseOffset, kerr.ErrorForCode(c.want))
		}
	}
}
