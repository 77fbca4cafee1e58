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
