package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
)

// A connection holds its socket buffers only while it moves data: they come
// from these pools when a burst starts and go back when it ends, so an idle
// connection costs its goroutines and little else (docs/security.md).
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, sockBuf) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, sockBuf) }}
)

// lazyWriter is a buffered writer over c, taken from the pool on first use
// and given back by idle once empty. One goroutine uses it.
type lazyWriter struct {
	c net.Conn
	w *bufio.Writer
}

func (l *lazyWriter) get() *bufio.Writer {
	if l.w == nil {
		l.w = writers.Get().(*bufio.Writer)
		l.w.Reset(l.c)
	}
	return l.w
}

// buffered is what has been written and not flushed.
func (l *lazyWriter) buffered() int {
	if l.w == nil {
		return 0
	}
	return l.w.Buffered()
}

// idle gives the buffer back if nothing is waiting in it.
func (l *lazyWriter) idle() {
	if l.w != nil && l.w.Buffered() == 0 {
		l.w.Reset(nil)
		writers.Put(l.w)
		l.w = nil
	}
}

// lazyReader is lazyWriter's mirror for reading.
type lazyReader struct {
	c  net.Conn
	r  *bufio.Reader
	pc prefixConn // the byte that ended an idle wait, then c
}

func (l *lazyReader) get() *bufio.Reader {
	if l.r == nil {
		l.r = readers.Get().(*bufio.Reader)
		l.r.Reset(l.c)
	}
	return l.r
}

// idle gives the buffer back if nothing is left in it.
func (l *lazyReader) idle() {
	if l.r != nil && l.r.Buffered() == 0 {
		l.r.Reset(nil)
		readers.Put(l.r)
		l.r = nil
	}
}

// await blocks until the peer sends a byte, holding no buffer meanwhile,
// and returns a reader that starts with that byte.
func (l *lazyReader) await() (*bufio.Reader, error) {
	l.idle()
	var one [1]byte
	n, err := l.c.Read(one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, err
	}
	l.pc = prefixConn{b: one[0], has: true, Conn: l.c}
	l.r = readers.Get().(*bufio.Reader)
	l.r.Reset(&l.pc)
	return l.r, nil
}

// prefixConn reads one byte already taken off the socket, then the socket.
type prefixConn struct {
	b   byte
	has bool
	net.Conn
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if p.has && len(b) > 0 {
		b[0], p.has = p.b, false
		return 1, nil
	}
	return p.Conn.Read(b)
}
