package chaos

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Hostile clients. Each returns what happened; none of them may take
// Strait down or disturb the well-behaved clients, which the run checks at
// the end.

// frame builds a request frame: size, api key, version, correlation id,
// client id (header v1), optional header tags (v2), then body.
func frame(apiKey, version int16, flexibleHeader bool, body []byte) []byte {
	const clientID = "chaos"
	h := binary.BigEndian.AppendUint16(nil, uint16(apiKey))
	h = binary.BigEndian.AppendUint16(h, uint16(version))
	h = binary.BigEndian.AppendUint32(h, 7)
	h = binary.BigEndian.AppendUint16(h, uint16(len(clientID)))
	h = append(h, clientID...)
	if flexibleHeader {
		h = append(h, 0) // no tagged fields
	}
	h = append(h, body...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(h))), h...)
}

// hostileVarint is a Produce v9 request whose body starts with a 10-byte
// varint (the transactional id's length) that overflows 64 bits, followed by
// 0xff 0xff.
func hostileVarint() []byte {
	return frame(0, 9, true, []byte{0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0xff, 0xff})
}

// garbageKinds are the malformed inputs sent to Strait's listeners. expect
// is true when Strait must close the connection (or answer) by itself.
var garbageKinds = []struct {
	name    string
	payload func(r *rand.Rand) []byte
	mustEnd bool
}{
	{"random-bytes", func(r *rand.Rand) []byte {
		b := make([]byte, 64+r.IntN(4096))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}, false},
	{"oversized-size", func(r *rand.Rand) []byte {
		return binary.BigEndian.AppendUint32(nil, uint32(0x7fffff00+r.IntN(0xff)))
	}, true},
	{"negative-size", func(r *rand.Rand) []byte { return binary.BigEndian.AppendUint32(nil, 0xffffffff) }, true},
	{"hostile-varint-produce-v9", func(r *rand.Rand) []byte { return hostileVarint() }, true},
	{"huge-array-count", func(r *rand.Rand) []byte {
		// Metadata v1: topics array with 2^31-1 entries and no data.
		return frame(3, 1, false, binary.BigEndian.AppendUint32(nil, 0x7fffffff))
	}, false},
	{"truncated-frame-then-close", func(r *rand.Rand) []byte {
		f := frame(18, 0, false, nil)
		return append(binary.BigEndian.AppendUint32(nil, 4096), f[4:]...)
	}, false},
}

type hostileStats struct {
	mu       sync.Mutex
	sent     map[string]int // by kind
	closedBy map[string]int // connections Strait ended by itself
	stayed   []string       // mustEnd kinds Strait left open (an error)
	dialErrs int            // Strait down at that moment (e.g. just SIGKILLed)
}

func newHostileStats() *hostileStats {
	return &hostileStats{sent: map[string]int{}, closedBy: map[string]int{}}
}

func (h *hostileStats) add(kind string, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent[kind]++
	if closed {
		h.closedBy[kind]++
	}
}

// endsWithin reads until the peer closes (EOF or reset); false if the
// connection is still open after d.
func endsWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// sendGarbage opens one connection per garbage kind to addr, all at once.
func sendGarbage(ctx context.Context, r *rand.Rand, addr string, st *hostileStats) {
	var wg sync.WaitGroup
	for _, g := range garbageKinds {
		payload := g.payload(r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				st.mu.Lock()
				st.dialErrs++
				st.mu.Unlock()
				return
			}
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, werr := c.Write(payload)
			if !g.mustEnd {
				st.add(g.name, false)
				return
			}
			// Strait must close (or answer and close) by itself. A write
			// error means it already did.
			closed := werr != nil || endsWithin(c, 15*time.Second)
			st.add(g.name, closed)
			if !closed && ctx.Err() == nil {
				st.mu.Lock()
				st.stayed = append(st.stayed, fmt.Sprintf("%s to %s", g.name, addr))
				st.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// slowloris sends a plausible size prefix, then one byte a second, for up to
// d; it reports whether Strait cut the connection first.
func slowloris(ctx context.Context, addr string, d time.Duration) (cut bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	f := frame(18, 0, false, nil)
	if _, err := c.Write(f[:4]); err != nil {
		return true, nil
	}
	rest := f[4:]
	t := time.NewTicker(time.Second)
	defer t.Stop()
	end := time.After(d)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return false, nil
		case <-end:
			return false, nil
		case <-t.C:
		}
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte{rest[i%len(rest)]}); err != nil {
			return true, nil
		}
	}
}

// tlsReset starts a TLS handshake with addr and resets the TCP connection
// (SO_LINGER 0) at a random point: before the ClientHello is complete, or
// right after it.
func tlsReset(r *rand.Rand, addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	tc := c.(*net.TCPConn)
	switch r.IntN(3) {
	case 0: // half a ClientHello record header
		tc.Write([]byte{0x16, 0x03, 0x01, 0x02})
	case 1: // the full handshake started, cut mid-flight
		cl := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"})
		cl.SetDeadline(time.Now().Add(time.Duration(1+r.IntN(20)) * time.Millisecond))
		cl.Handshake()
	case 2: // nothing at all
	}
	tc.SetLinger(0)
	return tc.Close()
}
