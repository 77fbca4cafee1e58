package proxy

import (
	"bufio"
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// reencoded holds the request frames a hook changed, re-encoded, to be
// written upstream in order. Every request is encoded with kmsg, but the
// record batches of a Produce request (megabytes the interceptor has just
// written into its own buffers, which stay valid until the exchange is
// done) are not copied into the frame: the frame is written as the pieces
// kmsg encodes around them and the batches themselves.
//
// The reader goroutine owns one and reuses its buffers.
type reencoded struct {
	buf  []byte    // the encoded pieces, back to back
	segs []segment // the frames, in order
	recs [][]byte  // scratch: a Produce request's batches while it is encoded
	at   []field   // scratch: where its batches' fields are
	enc  []byte    // scratch: the Produce request encoded without its batches
}

// segment is buf[from:to], or ext when it is not nil.
type segment struct {
	from, to int
	ext      []byte
}

func (r *reencoded) reset() {
	r.buf, r.segs = r.buf[:0], r.segs[:0]
	clear(r.recs[:cap(r.recs)]) // drop references to the exchange's buffers
	r.recs = r.recs[:0]
	clear(r.segs[:cap(r.segs)])
}

// add appends the frame of req (size, h, body) and returns the frame's
// size without its 4-byte prefix.
func (r *reencoded) add(h reqHeader, req kmsg.Request) int {
	if p, ok := req.(*kmsg.ProduceRequest); ok {
		if n, ok := r.addProduce(h, p); ok {
			return n
		}
	}
	start := len(r.buf)
	r.buf = appendRequestFrame(r.buf, h, req)
	r.piece(start)
	return len(r.buf) - start - 4
}

// piece ends the piece of buf that starts at from.
func (r *reencoded) piece(from int) {
	if from < len(r.buf) {
		r.segs = append(r.segs, segment{from: from, to: len(r.buf)})
	}
}

// addProduce encodes req with kmsg with every partition's records taken
// out (null), finds where each partition's records field is in that
// encoding (produceRecordsFields), and puts the records back there as
// pieces of their own. ok is false if the encoding is not laid out as
// expected, which a test rules out for every version kmsg encodes: the
// caller then encodes the frame whole.
func (r *reencoded) addProduce(h reqHeader, req *kmsg.ProduceRequest) (size int, ok bool) {
	recs := r.recs[:0]
	for ti := range req.Topics {
		t := &req.Topics[ti]
		for pi := range t.Partitions {
			recs = append(recs, t.Partitions[pi].Records)
			t.Partitions[pi].Records = nil
		}
	}
	r.recs = recs
	r.enc = appendRequestHeader(r.enc[:0], h, req.IsFlexible())
	bodyAt := len(r.enc)
	r.enc = req.AppendTo(r.enc)
	i := 0
	for ti := range req.Topics {
		t := &req.Topics[ti]
		for pi := range t.Partitions {
			t.Partitions[pi].Records = recs[i]
			i++
		}
	}
	var fieldsOK bool
	r.at, fieldsOK = produceRecordsFields(r.at[:0], r.enc[bodyAt:], req.Version)
	if !fieldsOK || len(r.at) != len(recs) {
		return 0, false
	}
	flexible := req.IsFlexible()
	start := len(r.buf)
	from, prev := start, 0
	for i, f := range r.at {
		if recs[i] == nil {
			continue // null in the request too: the encoding has it
		}
		r.buf = append(r.buf, r.enc[prev:bodyAt+f.from]...)
		if flexible {
			r.buf = binary.AppendUvarint(r.buf, uint64(len(recs[i]))+1)
		} else {
			r.buf = binary.BigEndian.AppendUint32(r.buf, uint32(len(recs[i])))
		}
		r.piece(from)
		r.segs = append(r.segs, segment{ext: recs[i]})
		size += len(recs[i])
		from, prev = len(r.buf), bodyAt+f.to
	}
	r.buf = append(r.buf, r.enc[prev:]...)
	r.piece(from)
	size += len(r.buf) - start - 4
	binary.BigEndian.PutUint32(r.buf[start:], uint32(size))
	return size, true
}

// writeTo writes the frames to w, in order. Frames that do not fit w's
// free space are flushed to the end, as a single Write of them would have
// been (the buffer only batches small frames): a broker must not wait for
// the last bytes of a large request until the next one is read.
func (r *reencoded) writeTo(w *bufio.Writer) error {
	size := 0
	for _, s := range r.segs {
		size += s.to - s.from + len(s.ext)
	}
	through := size > w.Available()
	for _, s := range r.segs {
		b := s.ext
		if b == nil {
			b = r.buf[s.from:s.to]
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if through {
		return w.Flush()
	}
	return nil
}

// field is where one partition's records field (length and bytes) is in a
// Produce request body: body[from:to].
type field struct{ from, to int }

// produceRecordsFields appends to at where each partition's records field
// is in body, a Produce request body of version v as kmsg encodes it
// (ProduceRequest.AppendTo), in the request's order of topics and
// partitions. ok is false if body does not follow that layout to its end.
func produceRecordsFields(at []field, body []byte, v int16) ([]field, bool) {
	c := cursor{b: body}
	flexible := v >= 9
	if v >= 3 {
		c.nullableString(flexible) // transactional id
	}
	c.skip(2 + 4) // acks, timeout
	topics := c.arrayLen(flexible)
	for range topics {
		if c.bad {
			return at, false
		}
		if v >= 13 {
			c.skip(16) // topic id
		} else {
			c.nullableString(flexible) // topic name (never null)
		}
		partitions := c.arrayLen(flexible)
		for range partitions {
			if c.bad {
				return at, false
			}
			c.skip(4) // partition
			from := c.p
			c.nullableBytes(flexible)
			at = append(at, field{from, c.p})
			if flexible {
				c.tags()
			}
		}
		if flexible {
			c.tags()
		}
	}
	if flexible {
		c.tags()
	}
	return at, !c.bad && c.p == len(body)
}

// cursor reads the primitive types of the Kafka protocol from b, setting
// bad (and reading nothing more) on the first that does not fit.
type cursor struct {
	b   []byte
	p   int
	bad bool
}

func (c *cursor) skip(n int) {
	if c.bad || n < 0 || n > len(c.b)-c.p {
		c.bad = true
		return
	}
	c.p += n
}

func (c *cursor) uvarint() uint64 {
	if c.bad {
		return 0
	}
	u, n := binary.Uvarint(c.b[c.p:])
	if n <= 0 {
		c.bad = true
		return 0
	}
	c.p += n
	return u
}

func (c *cursor) int16() int16 {
	if c.skip(2); c.bad {
		return 0
	}
	return int16(binary.BigEndian.Uint16(c.b[c.p-2:]))
}

func (c *cursor) int32() int32 {
	if c.skip(4); c.bad {
		return 0
	}
	return int32(binary.BigEndian.Uint32(c.b[c.p-4:]))
}

// length reads a length that is -1 for null: a compact (uvarint, plus one)
// or a classic one of int16 or int32.
func (c *cursor) length(flexible, int32Len bool) int {
	switch {
	case flexible:
		u := c.uvarint()
		if u > uint64(len(c.b)) {
			c.bad = true
			return 0
		}
		return int(u) - 1
	case int32Len:
		return int(c.int32())
	default:
		return int(c.int16())
	}
}

func (c *cursor) nullableString(flexible bool) {
	if n := c.length(flexible, false); n > 0 {
		c.skip(n)
	} else if n < -1 {
		c.bad = true
	}
}

func (c *cursor) nullableBytes(flexible bool) {
	if n := c.length(flexible, true); n > 0 {
		c.skip(n)
	} else if n < -1 {
		c.bad = true
	}
}

// arrayLen reads an array's length (never null in a Produce request).
func (c *cursor) arrayLen(flexible bool) int {
	n := c.length(flexible, true)
	if n < 0 || n > len(c.b) {
		c.bad = true
		return 0
	}
	return n
}

// tags skips a tagged-fields section.
func (c *cursor) tags() {
	n := c.uvarint()
	for i := uint64(0); i < n && !c.bad; i++ {
		c.uvarint() // tag
		size := c.uvarint()
		if size > uint64(len(c.b)) {
			c.bad = true
			return
		}
		c.skip(int(size))
	}
}
