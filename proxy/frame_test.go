package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func frameOf(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func TestReadFrame(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"ok", frameOf(make([]byte, 20)), nil},
		{"too large", binary.BigEndian.AppendUint32(nil, 1<<20+1), errFrameTooLarge},
		{"negative size", binary.BigEndian.AppendUint32(nil, 0x80000000), errFrameTooLarge},
		{"too small", frameOf(make([]byte, 3)), errMalformed},
		{"tls hello", []byte{0x16, 0x03, 0x01, 0x00, 0xff}, errTLSOnPlain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readFrame(bufio.NewReader(bytes.NewReader(tc.in)), nil, 1<<20, minRequestFrame)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseReqHeader(t *testing.T) {
	vt := newVersionTable()
	for _, tc := range []struct {
		req kmsg.Request
		ver int16
		id  *string
	}{
		{kmsg.NewPtrMetadataRequest(), 1, kmsg.StringPtr("client-a")},
		{kmsg.NewPtrMetadataRequest(), 12, kmsg.StringPtr("flex")},
		{kmsg.NewPtrProduceRequest(), 9, nil},
		{kmsg.NewPtrFetchRequest(), 4, kmsg.StringPtr("")},
		{kmsg.NewPtrApiVersionsRequest(), 3, kmsg.StringPtr("x")},
	} {
		tc.req.SetVersion(tc.ver)
		var opts []kmsg.RequestFormatterOpt
		if tc.id != nil {
			opts = append(opts, kmsg.FormatterClientID(*tc.id))
		}
		frame := kmsg.NewRequestFormatter(opts...).AppendRequest(nil, tc.req, 42)[4:]
		h, err := parseReqHeader(frame, vt)
		if err != nil {
			t.Fatal(err)
		}
		if h.key != tc.req.Key() || h.version != tc.ver || h.corr != 42 {
			t.Fatalf("%+v", h)
		}
		if tc.id != nil && string(h.clientID) != *tc.id || tc.id == nil && !h.nullClientID {
			t.Fatalf("client id %q null=%v", h.clientID, h.nullClientID)
		}
		// The body decodes where the header says it starts.
		fresh := kmsg.RequestForKey(h.key)
		fresh.SetVersion(h.version)
		if err := fresh.ReadFrom(frame[h.bodyOffset:]); err != nil {
			t.Fatalf("%s v%d body: %v", kmsg.NameForKey(h.key), h.version, err)
		}
		// Re-encoding reproduces the frame byte for byte.
		if re := appendRequestFrame(nil, h, fresh)[4:]; !bytes.Equal(re, frame) {
			t.Fatalf("%s v%d: re-encoded frame differs", kmsg.NameForKey(h.key), h.version)
		}
	}
}

func TestProduceAcks(t *testing.T) {
	for _, v := range []int16{3, 8, 9, 11} {
		for _, acks := range []int16{0, 1, -1} {
			for _, txn := range []*string{nil, kmsg.StringPtr("tx-id")} {
				req := kmsg.NewPtrProduceRequest()
				req.SetVersion(v)
				req.Acks, req.TransactionID = acks, txn
				body := req.AppendTo(nil)
				got, ok := produceAcks(body, v)
				if !ok || got != acks {
					t.Fatalf("v%d txn=%v acks=%d: got %d ok=%v", v, txn != nil, acks, got, ok)
				}
			}
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and the header
// parser: they must never panic, never return a frame over the limit, and
// never claim a body offset outside the frame.
func FuzzReadFrame(f *testing.F) {
	vt := newVersionTable()
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	f.Add(kmsg.NewRequestFormatter(kmsg.FormatterClientID("c")).AppendRequest(nil, md, 1))
	f.Add([]byte{0, 0, 0, 10, 0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff})
	f.Add([]byte{0x16, 0x03, 0x01, 0x00})
	// Produce v9 with a transactional-id length of 2^64-1 (issue 12 point
	// 1), so mutations start from hostile varints in a body, not only in
	// the size and header.
	f.Add([]byte{0, 0, 0, 24, 0, 0, 0, 9, 0, 0, 0, 1, 0, 1, 't', 0,
		0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			frame, err := readFrame(r, nil, 1<<16, minRequestFrame)
			if err != nil {
				return
			}
			if len(frame) > 1<<16 {
				t.Fatalf("frame of %d bytes over the limit", len(frame))
			}
			h, err := parseReqHeader(frame, vt)
			if err != nil {
				continue
			}
			if h.bodyOffset > len(frame) {
				t.Fatalf("body offset %d beyond frame of %d", h.bodyOffset, len(frame))
			}
			if h.key == 0 {
				produceAcks(frame[h.bodyOffset:], h.version)
			}
		}
	})
}

// FuzzRequestBody feeds hostile bodies straight to the parsers that read
// request bodies without kmsg (the generator of FuzzReadFrame rarely builds
// a valid header and a long varint at once).
func FuzzRequestBody(f *testing.F) {
	f.Add(int16(9), []byte{0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0xff, 0xff})
	f.Add(int16(9), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1})
	f.Add(int16(3), []byte{0x7f, 0xff, 0, 1})
	f.Add(int16(9), []byte{3, 'a', 'b', 0, 1})
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		if acks, ok := produceAcks(body, version); ok && (acks < -1 || acks > 1) {
			_ = acks // any int16 is a value the client sent; only a panic fails
		}
		if l, n, ok := compactLen(body); ok && (n <= 0 || l < -1 || n+max(l, 0) > len(body)) {
			t.Fatalf("compactLen(%x) = %d, %d: beyond the input", body, l, n)
		}
		skipTags(body)
	})
}

func TestProduceAcksHostileLengths(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int16
		body    []byte
		acks    int16
		ok      bool
	}{
		{"v9 length 2^64-1", 9, []byte{0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0xff, 0xff}, 0, false},
		{"v9 length past the body", 9, []byte{0x10, 0, 1}, 0, false},
		{"v9 null id", 9, []byte{0, 0, 1}, 1, true},
		{"v9 id ab", 9, []byte{3, 'a', 'b', 0xff, 0xff}, -1, true},
		{"v3 id past the body", 3, []byte{0x7f, 0xff, 0, 1}, 0, false},
		{"v3 null id", 3, []byte{0xff, 0xff, 0, 0}, 0, true},
		{"v2 no id", 2, []byte{0, 1}, 1, true},
	} {
		acks, ok := produceAcks(tc.body, tc.version)
		if ok != tc.ok || ok && acks != tc.acks {
			t.Errorf("%s: produceAcks = %d, %v; want %d, %v", tc.name, acks, ok, tc.acks, tc.ok)
		}
	}
}
