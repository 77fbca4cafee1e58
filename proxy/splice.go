package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// spliceMin is the size from which a frame that no interceptor decodes is
// forwarded between two plaintext TCP connections with splice(2) (Go's
// TCPConn.ReadFrom), instead of being copied into Strait's memory and out
// again: the two copies through user space are most of what a large
// passthrough produce or fetch costs Strait.
const spliceMin = 128 << 10

// headPeek is how much of a frame is read to decode its request header and,
// for Produce, the acks that say whether a response will come.
const headPeek = 4096

// spliceRequest forwards the next client frame by splice when it is large,
// not hooked, and both connections are plain TCP. It reports whether it did;
// when it did not, nothing has been consumed and the caller reads the frame
// as usual (which also reports any framing error).
func (ss *session) spliceRequest() (bool, error) {
	if ss.up == nil {
		return false, nil
	}
	src, ok1 := ss.client.(*net.TCPConn)
	dst, ok2 := ss.up.conn.(*net.TCPConn)
	if !ok1 || !ok2 {
		return false, nil
	}
	s := ss.srv
	size, err := ss.cr.Peek(4)
	if err != nil {
		return false, nil
	}
	n := int(int32(binary.BigEndian.Uint32(size)))
	if n < spliceMin || n > int(s.cfg.Limits.MaxFrameBytes) {
		return false, nil
	}
	head, err := ss.cr.Peek(4 + headPeek)
	if err != nil {
		return false, nil
	}
	vt := s.vt.Load()
	h, err := parseReqHeader(head[4:], vt)
	if err != nil {
		return false, nil
	}
	// Anything but a plain forward (the gate, ApiVersions, an unsupported
	// version) or a request an interceptor decodes takes the read path,
	// which acts on the same classification.
	c := ss.classify(h, head[4+h.bodyOffset:], vt)
	if c.verdict != forward || c.reqHooked {
		return false, nil
	}
	acks, respHooked := c.acks, c.respHooked
	ss.account(h, n)
	p := pending{key: h.key, version: h.version, corr: h.corr}

	if err := ss.flushUpstream(); err != nil {
		return false, err
	}
	ss.upWD.arm(ss.up.conn, s.cfg.Limits.StallTimeout.D())
	// What the reader has buffered goes first, the rest straight from
	// socket to socket.
	k := min(ss.cr.Buffered(), 4+n)
	b, _ := ss.cr.Peek(k)
	if _, err := dst.Write(b); err != nil {
		return false, err
	}
	_, _ = ss.cr.Discard(k)
	if rest := int64(4 + n - k); rest > 0 {
		if _, err := io.CopyN(dst, src, rest); err != nil {
			return false, fmt.Errorf("splice %d bytes of %s: %w", rest, apiName(h.key), err)
		}
	}
	if acks == 0 {
		ss.srv.metrics.spliced[0].Inc()
		return true, nil
	}
	if respHooked {
		p.newExchange(ss, h)
		p.decodeResp = true
	}
	p.up, p.start = ss.up, time.Now()
	ss.srv.metrics.spliced[0].Inc()
	if !ss.enqueue(p) {
		if p.x != nil {
			p.x.Done()
		}
		return false, net.ErrClosed
	}
	return true, nil
}

// spliceResponse is spliceRequest's mirror for a response no interceptor
// decodes. It returns the bytes forwarded, 0 when it did not forward.
func (ss *session) spliceResponse(p pending) (int, error) {
	if p.decodeResp {
		return 0, nil
	}
	src, ok1 := p.up.conn.(*net.TCPConn)
	dst, ok2 := ss.client.(*net.TCPConn)
	if !ok1 || !ok2 {
		return 0, nil
	}
	head, err := p.up.r.get().Peek(8)
	if err != nil {
		return 0, nil
	}
	n := int(int32(binary.BigEndian.Uint32(head)))
	if n < spliceMin || n > int(ss.srv.cfg.Limits.MaxFrameBytes) {
		return 0, nil
	}
	if got := int32(binary.BigEndian.Uint32(head[4:])); got != p.corr {
		return 0, nil // readFrame's path reports the mismatch
	}
	ss.clientWD.arm(ss.client, ss.srv.cfg.Limits.StallTimeout.D())
	if err := ss.cwl.get().Flush(); err != nil {
		return 0, err
	}
	k := min(p.up.r.get().Buffered(), 4+n)
	b, _ := p.up.r.get().Peek(k)
	if _, err := dst.Write(b); err != nil {
		return 0, err
	}
	_, _ = p.up.r.get().Discard(k)
	if rest := int64(4 + n - k); rest > 0 {
		if _, err := io.CopyN(dst, src, rest); err != nil {
			return 0, fmt.Errorf("splice %d bytes of %s response: %w", rest, apiName(p.key), err)
		}
	}
	ss.srv.metrics.spliced[1].Inc()
	return 4 + n, nil
}
