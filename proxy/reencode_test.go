package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// written is what r.writeTo writes.
func written(t testing.TB, r *reencoded) []byte {
	t.Helper()
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 64)
	if err := r.writeTo(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// randomProduce is a Produce request of version v with topics and
// partitions whose records are null, empty, or of sizes that take one to
// three bytes of compact length; flexible versions carry unknown tags at
// every level.
func randomProduce(rng *rand.Rand, v int16) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(v)
	req.Acks, req.TimeoutMillis = int16(rng.IntN(3)-1), rng.Int32()
	if rng.IntN(2) == 0 {
		req.TransactionID = kmsg.StringPtr(fmt.Sprintf("txn-%d", rng.IntN(1000)))
	}
	tags := func(tg *kmsg.Tags) {
		if v >= 9 && rng.IntN(3) == 0 {
			tg.Set(uint32(rng.IntN(5)+10), bytes.Repeat([]byte{7}, rng.IntN(200)))
		}
	}
	tags(&req.UnknownTags)
	for range rng.IntN(4) {
		t := kmsg.NewProduceRequestTopic()
		t.Topic = fmt.Sprintf("topic-%d", rng.IntN(100))
		if v >= 13 {
			t.Topic = ""
			for i := range t.TopicID {
				t.TopicID[i] = byte(rng.Uint32())
			}
		}
		tags(&t.UnknownTags)
		for range rng.IntN(4) {
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition = rng.Int32N(64)
			switch rng.IntN(5) {
			case 0: // null
			case 1:
				p.Records = []byte{}
			default:
				n := []int{1, 126, 127, 128, 300, 16382, 16383, 16384, 70000}[rng.IntN(9)]
				p.Records = bytes.Repeat([]byte{byte(rng.Uint32())}, n)
			}
			tags(&p.UnknownTags)
			t.Partitions = append(t.Partitions, p)
		}
		req.Topics = append(req.Topics, t)
	}
	return req
}

// TestReencodedProduceFrames: the frames written in pieces, with the
// record batches not copied, are byte for byte the frames kmsg encodes
// whole, for every Produce version, and the request keeps its batches.
func TestReencodedProduceFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for v := int16(0); v <= (*kmsg.ProduceRequest)(nil).MaxVersion(); v++ {
		for i := range 200 {
			var r reencoded
			var want []byte
			batches, fromRecords := 0, 0
			for frame := range 1 + rng.IntN(3) {
				req := randomProduce(rng, v)
				h := reqHeader{key: 0, version: v, corr: int32(i*10 + frame), clientID: []byte("client")}
				if rng.IntN(4) == 0 {
					h.clientID, h.nullClientID = nil, true
				}
				var before [][]byte
				for _, tp := range req.Topics {
					for _, p := range tp.Partitions {
						before = append(before, p.Records)
						if p.Records != nil {
							batches++
						}
					}
				}
				whole := appendRequestFrame(nil, h, req)
				want = append(want, whole...)
				if n := r.add(h, req); n != len(whole)-4 {
					t.Fatalf("v%d: frame size %d, want %d", v, n, len(whole)-4)
				}
				j := 0
				for _, tp := range req.Topics {
					for _, p := range tp.Partitions {
						if !sameSlice(p.Records, before[j]) {
							t.Fatalf("v%d: partition %d lost its records", v, j)
						}
						j++
					}
				}
			}
			for _, s := range r.segs {
				if s.ext != nil {
					fromRecords++
				}
			}
			if fromRecords != batches {
				t.Fatalf("v%d: %d batches written from where they are, want all %d", v, fromRecords, batches)
			}
			if got := written(t, &r); !bytes.Equal(got, want) {
				t.Fatalf("v%d: frames written in pieces differ from kmsg's encoding (%d vs %d bytes)", v, len(got), len(want))
			}
			r.reset()
			if len(written(t, &r)) != 0 {
				t.Fatal("reset left frames")
			}
		}
	}
}

func sameSlice(a, b []byte) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// TestReencodedOtherRequests: a request other than Produce is encoded whole.
func TestReencodedOtherRequests(t *testing.T) {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(12)
	req.Topics = append(req.Topics, kmsg.MetadataRequestTopic{Topic: kmsg.StringPtr("a")})
	h := reqHeader{key: 3, version: 12, corr: 7, clientID: []byte("c")}
	var r reencoded
	want := appendRequestFrame(nil, h, req)
	if n := r.add(h, req); n != len(want)-4 {
		t.Fatalf("size %d, want %d", n, len(want)-4)
	}
	if got := written(t, &r); !bytes.Equal(got, want) {
		t.Fatal("metadata request re-encoded differently")
	}
}

// FuzzProduceRecordsFields: on any bytes the locator neither panics nor
// claims fields outside the body; on every body kmsg decodes, writing the
// decoded request in pieces gives kmsg's own encoding.
func FuzzProduceRecordsFields(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for v := int16(0); v <= 13; v++ {
		for range 3 {
			req := randomProduce(rng, v)
			f.Add(v, req.AppendTo(nil))
		}
	}
	f.Fuzz(func(t *testing.T, v int16, body []byte) {
		if v < 0 || v > 13 {
			return
		}
		at, _ := produceRecordsFields(nil, body, v)
		for _, fd := range at {
			if fd.from < 0 || fd.from > fd.to || fd.to > len(body) {
				t.Fatalf("field %+v outside a body of %d bytes", fd, len(body))
			}
		}
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(v)
		if req.ReadFrom(body) != nil {
			return
		}
		h := reqHeader{key: 0, version: v, corr: 1, clientID: []byte("f")}
		want := appendRequestFrame(nil, h, req)
		var r reencoded
		if n := r.add(h, req); n != len(want)-4 {
			t.Fatalf("v%d: size %d, want %d", v, n, len(want)-4)
		}
		if got := written(t, &r); !bytes.Equal(got, want) {
			t.Fatalf("v%d: pieces differ from kmsg's encoding", v)
		}
	})
}

// TestReencodedLargeFramesFlushed: re-encoded frames larger than the
// writer's free space are on the wire once written, as a single Write of
// them would be (none of their bytes waits in the buffer for the next
// request); small ones stay buffered with the other small frames.
func TestReencodedLargeFramesFlushed(t *testing.T) {
	for _, size := range []int{100, 64 << 10} {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(9)
		tp := kmsg.NewProduceRequestTopic()
		tp.Topic = "t"
		p := kmsg.NewProduceRequestTopicPartition()
		p.Records = make([]byte, size)
		tp.Partitions = append(tp.Partitions, p)
		req.Topics = append(req.Topics, tp)
		var r reencoded
		r.add(reqHeader{key: 0, version: 9, corr: 1}, req)
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 16<<10)
		if err := r.writeTo(w); err != nil {
			t.Fatal(err)
		}
		if large := size > 16<<10; large != (w.Buffered() == 0) {
			t.Fatalf("frame of %d bytes: %d bytes left buffered", size, w.Buffered())
		}
	}
}
