package proxy

import "github.com/twmb/franz-go/pkg/kmsg"

// API keys the session treats specially.
const (
	keyProduce          = int16(kmsg.Produce)
	keySaslHandshake    = int16(kmsg.SASLHandshake)
	keyApiVersions      = int16(kmsg.ApiVersions)
	keySaslAuthenticate = int16(kmsg.SASLAuthenticate)
)

// verdict is what the proxy does with a client request.
type verdict int

const (
	forward         verdict = iota // through the chain, then upstream
	answerVersions                 // ApiVersions: always Strait's own answer
	unauthenticated                // refused: the authentication gate is closed
	unsupported                    // refused: an API or version Strait does not forward
)

// class is what the proxy knows about a client request from its header
// (and, for Produce, the acks at the front of its body), before decoding it.
type class struct {
	verdict verdict
	// acks is a Produce request's acks, -1 for other APIs or when the body
	// is too short to tell (a response is then expected). acks 0 means no
	// response will come.
	acks int16
	// reqHooked and respHooked say whether some interceptor of the current
	// chain decodes the request or its response.
	reqHooked, respHooked bool
}

// classify decides what happens to request h, whose body starts with body.
// The read path and the splice path both ask it, so a spliced frame is
// held to the same gate and version rules as a decoded one.
func (ss *session) classify(h reqHeader, body []byte, vt *versionTable) class {
	switch {
	case ss.ic.AuthPending() && h.key != keyApiVersions && h.key != keySaslHandshake && h.key != keySaslAuthenticate:
		return class{verdict: unauthenticated, acks: -1}
	case h.key == keyApiVersions:
		return class{verdict: answerVersions, acks: -1}
	case !vt.accepts(h.key, h.version):
		return class{verdict: unsupported, acks: -1}
	}
	c := class{verdict: forward, acks: -1}
	if h.key == keyProduce {
		if a, ok := produceAcks(body, h.version); ok {
			c.acks = a
		}
	}
	c.reqHooked, c.respHooked = ss.srv.chain.Load().Hooked(h.key, h.version)
	return c
}
