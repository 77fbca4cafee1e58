// Package kmsdouble holds small in-process HTTP servers that imitate the
// documented wire APIs of AWS KMS (JSON 1.1) and HashiCorp Vault (Transit,
// KV v2, AppRole and Kubernetes auth), so that the official Go clients can be
// tested where neither product can run.
//
// These are TEST DOUBLES of the documented APIs, not the products: they hold
// keys in memory, implement only the operations Strait uses (and a few to set
// up tests), and do not verify AWS SigV4 signatures. They are faithful in the
// parts a client can observe: paths, headers, JSON bodies, ciphertext shapes,
// HTTP statuses and error bodies, including the failure answers the real
// services give (access denied, throttling, 5xx, hanging, unreachable), which
// tests inject with SetFault.
package kmsdouble

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Fault is a failure the double injects into every request (or the next n
// requests, see FailNext).
type Fault int

const (
	// FaultNone: answer normally.
	FaultNone Fault = iota
	// FaultDeny: refuse the caller (AWS: 400 AccessDeniedException;
	// Vault: 403 {"errors":["permission denied"]}).
	FaultDeny
	// FaultThrottle: rate limiting (AWS: 400 ThrottlingException;
	// Vault: 429 rate limit quota exceeded).
	FaultThrottle
	// Fault5xx: server-side failure (AWS: 500 KMSInternalException;
	// Vault: 503 {"errors":["Vault is sealed"]}).
	Fault5xx
	// FaultHang: read the request and never answer until the client gives
	// up (or the fault is cleared / the double closed).
	FaultHang
	// FaultDown: the listener is closed; connections are refused. Any other
	// fault (FaultNone included) brings it back up on the same address.
	FaultDown
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultDeny:
		return "deny"
	case FaultThrottle:
		return "throttle"
	case Fault5xx:
		return "5xx"
	case FaultHang:
		return "hang"
	case FaultDown:
		return "down"
	}
	return "unknown"
}

// server is the restartable listener shared by both doubles.
type server struct {
	handler http.Handler // set by the double before start

	mu        sync.Mutex
	addr      string
	scheme    string
	tlsConfig *tls.Config
	hs        *http.Server
	fault     Fault
	faultLeft int // >0: fault applies to this many more requests
	release   chan struct{}
	calls     map[string]int
	closed    bool
}

func (s *server) start(tlsConfig *tls.Config) error {
	s.tlsConfig = tlsConfig
	s.scheme = "http"
	if tlsConfig != nil {
		s.scheme = "https"
	}
	s.calls = map[string]int{}
	s.release = make(chan struct{})
	return s.listenLocked("127.0.0.1:0")
}

func (s *server) listenLocked(addr string) error {
	var ln net.Listener
	var err error
	// The port of a closed listener can normally be reused at once
	// (SO_REUSEADDR); retry briefly in case the kernel disagrees.
	for i := 0; i < 50; i++ {
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	hs := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	s.hs = hs
	go func() { _ = hs.Serve(ln) }()
	return nil
}

// URL is the base URL of the double (http://127.0.0.1:port, or https).
func (s *server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scheme + "://" + s.addr
}

// Addr is host:port of the listener (stable across FaultDown / back up).
func (s *server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// SetFault injects f into every following request until changed.
func (s *server) SetFault(f Fault) { s.setFault(f, 0) }

// FailNext injects f into the next n requests only, then answers normally.
// FaultDown cannot be limited to n requests and is treated like SetFault.
func (s *server) FailNext(f Fault, n int) { s.setFault(f, n) }

func (s *server) setFault(f Fault, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	wasDown := s.fault == FaultDown
	if s.fault == FaultHang && f != FaultHang {
		close(s.release)
		s.release = make(chan struct{})
	}
	s.fault, s.faultLeft = f, n
	if f == FaultDown {
		s.faultLeft = 0
		if !wasDown {
			close(s.release)
			s.release = make(chan struct{})
			_ = s.hs.Close()
		}
		return
	}
	if wasDown {
		if err := s.listenLocked(s.addr); err != nil {
			panic("kmsdouble: cannot listen again on " + s.addr + ": " + err.Error())
		}
	}
}

// Calls reports how many requests reached operation op (AWS: the
// X-Amz-Target operation, e.g. "GenerateDataKey"; Vault: e.g.
// "transit/datakey", "transit/decrypt", "auth/approle/login"). Requests
// answered by an injected fault are counted too.
func (s *server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func (s *server) count(op string) {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
}

// Close stops the double.
func (s *server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.release)
	if s.fault != FaultDown {
		_ = s.hs.Close()
	}
}

// currentFault returns the fault for this request and consumes one use.
func (s *server) currentFault() (Fault, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	if s.faultLeft > 0 {
		s.faultLeft--
		if s.faultLeft == 0 {
			s.fault = FaultNone
		}
	}
	return f, s.release
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// hang blocks until the client goes away or the fault is cleared.
func hang(r *http.Request, release chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-release:
	}
}

var errNotFound = errors.New("not found")

func trimSlashes(s string) string { return strings.Trim(s, "/") }
