package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Frame errors, each counted under its own reason.
var (
	errFrameTooLarge = errors.New("frame larger than the maximum")
	errTLSOnPlain    = errors.New("TLS handshake on a plaintext listener")
	errMalformed     = errors.New("malformed request header")
)

// Smallest frames: a request header (key, version, correlation id, client id
// length), a response header (correlation id).
const (
	minRequestFrame  = 10
	minResponseFrame = 4
)

// sockBuf is the size of each of a session's four socket buffers (client
// and upstream, read and write). Frames larger than it bypass the buffers
// (bufio reads and writes them directly), so it only has to batch small
// frames; it must hold a request header and the start of a Produce body
// for splice (4 + headPeek). Four of them are most of what an idle
// connection costs (docs/security.md).
const sockBuf = 16 << 10

// growStep is the most readFrame allocates ahead of the bytes that have
// arrived: a peer that sends a size and then nothing pins at most this much.
const growStep = 64 << 10

// readFrame reads one size-prefixed frame into buf and returns the body. The
// size is checked against max before anything is allocated, and a buffer too
// small for the frame grows as its bytes arrive, not when its size is read.
func readFrame(r *bufio.Reader, buf []byte, maxSize, minSize int32) ([]byte, error) {
	size, err := r.Peek(4) // Peek, not ReadFull into a local: no allocation
	if err != nil {
		if err == io.EOF && len(size) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	n := int32(binary.BigEndian.Uint32(size))
	if size[0] == 0x16 && size[1] == 0x03 {
		// A TLS record header (handshake, version 3.x) read as a size: a
		// client speaking TLS to a plaintext port. Say so, rather than
		// "frame too large".
		return buf, errTLSOnPlain
	}
	if n < 0 || n > maxSize {
		return buf, fmt.Errorf("%w: %d > %d bytes", errFrameTooLarge, uint32(n), maxSize)
	}
	if n < minSize {
		return buf, fmt.Errorf("%w: frame of %d bytes", errMalformed, n)
	}
	_, _ = r.Discard(4)
	if cap(buf) >= int(n) {
		buf = buf[:n]
		_, err = io.ReadFull(r, buf)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	// Grow at most growStep ahead of what has arrived, doubling, so that a
	// large frame costs O(log n) copies and a stalled one almost nothing.
	want := int(n)
	buf = make([]byte, 0, max(4096, min(want, growStep)))
	for len(buf) < want {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(want-len(buf), max(cap(buf), growStep)))
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), want)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, nil
}

// reqHeader is a decoded request header. clientID aliases the frame.
type reqHeader struct {
	key, version int16
	corr         int32
	clientID     []byte
	nullClientID bool
	bodyOffset   int // where the request body starts in the frame
}

// parseReqHeader decodes request header v1 (and v2, which adds tagged fields
// for flexible versions) without allocating. Flexibility comes from the
// versions table, which knows which (key, version) pairs are flexible.
func parseReqHeader(frame []byte, vt *versionTable) (reqHeader, error) {
	var h reqHeader
	if len(frame) < 10 {
		return h, errMalformed
	}
	h.key = int16(binary.BigEndian.Uint16(frame[0:]))
	h.version = int16(binary.BigEndian.Uint16(frame[2:]))
	h.corr = int32(binary.BigEndian.Uint32(frame[4:]))
	idLen := int16(binary.BigEndian.Uint16(frame[8:]))
	off := 10
	h.nullClientID = idLen < 0
	if idLen > 0 {
		if off+int(idLen) > len(frame) {
			return h, errMalformed
		}
		h.clientID = frame[off : off+int(idLen)]
		off += int(idLen)
	}
	if vt.flexibleRequest(h.key, h.version) {
		n, ok := skipTags(frame[off:])
		if !ok {
			return h, errMalformed
		}
		off += n
	}
	h.bodyOffset = off
	return h, nil
}

// skipTags skips a tagged-field section and returns its length.
func skipTags(b []byte) (int, bool) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, false
	}
	off := n
	for i := uint64(0); i < count; i++ {
		_, n = binary.Uvarint(b[off:]) // tag
		if n <= 0 {
			return 0, false
		}
		off += n
		size, n := binary.Uvarint(b[off:])
		if n <= 0 || !fits(size, len(b)-off-n) {
			return 0, false
		}
		off += n + int(size)
	}
	return off, true
}

// fits reports whether a length read off the wire fits in the rest bytes
// that follow it. Every length and count Strait parses itself goes through
// it before any conversion to int, offset or allocation: a hostile uvarint
// of 2^64-1 must not become a negative offset.
func fits(length uint64, rest int) bool {
	return rest >= 0 && length <= uint64(rest)
}

// compactLen reads a compact string or bytes length (uvarint of length+1,
// 0 for null) and returns the length (-1 for null) and the bytes the uvarint
// took, checked against what follows it.
func compactLen(b []byte) (length, n int, ok bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, false
	}
	if l == 0 {
		return -1, n, true
	}
	if !fits(l-1, len(b)-n) {
		return 0, 0, false
	}
	return int(l - 1), n, true
}

// produceAcks returns the acks of a Produce request body without decoding
// it: acks=0 produce has no response and must not be waited for.
func produceAcks(body []byte, version int16) (int16, bool) {
	off := 0
	if version >= 3 { // transactional id, nullable string
		if version >= 9 { // compact nullable string: uvarint length+1
			l, n, ok := compactLen(body)
			if !ok {
				return 0, false
			}
			off = n + max(l, 0)
		} else {
			if len(body) < 2 {
				return 0, false
			}
			l := int16(binary.BigEndian.Uint16(body))
			off = 2
			if l > 0 {
				off += int(l)
			}
		}
	}
	if off+2 > len(body) {
		return 0, false
	}
	return int16(binary.BigEndian.Uint16(body[off:])), true
}

// responseBodyOffset is where a response body starts: after the correlation
// id and, for flexible versions, the header's tagged fields. ApiVersions
// responses always use header v0 so that clients can parse them before they
// know the broker's versions.
func responseBodyOffset(frame []byte, key int16, flexible bool) (int, bool) {
	if len(frame) < 4 {
		return 0, false
	}
	if !flexible || key == keyApiVersions {
		return 4, true
	}
	n, ok := skipTags(frame[4:])
	return 4 + n, ok
}

// appendResponseFrame encodes a complete response frame (size, header, body).
func appendResponseFrame(dst []byte, corr int32, resp kmsg.Response) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	if resp.IsFlexible() && resp.Key() != keyApiVersions {
		dst = append(dst, 0) // empty header tags
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// appendRequestFrame re-encodes a request frame after an interceptor changed
// it, keeping the client's header.
func appendRequestFrame(dst []byte, h reqHeader, req kmsg.Request) []byte {
	start := len(dst)
	dst = appendRequestHeader(dst, h, req.IsFlexible())
	dst = req.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// appendRequestHeader appends a frame's size prefix (0, to be set) and the
// request header h.
func appendRequestHeader(dst []byte, h reqHeader, flexible bool) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(h.key))
	dst = binary.BigEndian.AppendUint16(dst, uint16(h.version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.corr))
	if h.nullClientID {
		dst = binary.BigEndian.AppendUint16(dst, 0xffff)
	} else {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.clientID)))
		dst = append(dst, h.clientID...)
	}
	if flexible {
		dst = append(dst, 0)
	}
	return dst
}

// writeSize writes a frame's 4-byte size prefix.
func writeSize(w *bufio.Writer, n int) error {
	for _, shift := range [4]uint{24, 16, 8, 0} {
		if err := w.WriteByte(byte(n >> shift)); err != nil {
			return err
		}
	}
	return nil
}

// Frames that a decoded request aliases are handed to its exchange and come
// back here when the exchange is done, so that large produce requests do not
// cost an allocation each.
var framePool sync.Pool // of *[]byte

func getFrame() []byte {
	if bp, ok := framePool.Get().(*[]byte); ok {
		return (*bp)[:0]
	}
	return nil // readFrame allocates
}

func putFrame(b []byte) {
	if cap(b) == 0 || cap(b) > 16<<20 {
		return
	}
	b = b[:0]
	framePool.Put(&b)
}
