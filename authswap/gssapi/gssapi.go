// Package gssapi is Strait's Kerberos acceptor for SASL GSSAPI (RFC 4752) as
// Kafka carries it: the client's first token is a raw KRB5 GSS-API initial
// context token (RFC 1964/4121, no SPNEGO) holding an AP-REQ; the acceptor
// verifies it against a service keytab, answers with an AP-REP when the
// client asks for mutual authentication (librdkafka through Cyrus SASL does,
// franz-go does not), then runs the RFC 4752 security-layer
// negotiation: one wrap token from the acceptor offering "no security layer",
// one wrap token back from the client choosing it.
//
//	a, err := gssapi.NewAcceptor("/etc/strait/kafka.keytab", "kafka/broker.example.com")
//	s := a.Start() // one per authentication
//	for {
//		out, done, err := s.Next(ctx, clientToken) // send out to the client
//		...
//	}
//	s.Principal() // "alice@EXAMPLE.COM"
//
// Tokens on the wire (Kafka frames them in SaslAuthenticate, or raw and
// size-prefixed after a v0 SaslHandshake):
//
//	client → AP-REQ token        acceptor → AP-REP token (mutual) | wrap(offer)
//	client → empty (mutual only) acceptor → wrap(offer)
//	client → wrap(choice)        acceptor → nothing, done
//
// Ticket verification is gokrb5's (github.com/jcmturner/gokrb5/v8
// service.VerifyAPREQ: keytab decryption, ticket times, authenticator
// decryption and client-name match, clock skew, replay cache). gokrb5 can
// neither build an AP-REP nor run the security-layer step; both are built
// here on its types.
//
// Only "no security layer" is offered: Kafka's SASL_PLAINTEXT and SASL_SSL
// listeners never use a GSSAPI integrity or confidentiality layer. An
// authorization identity in the client's last token must equal the
// authenticated principal (Cyrus and franz-go send none).
//
// Limits, by design or inherited from gokrb5:
//   - The keytab is read once by NewAcceptor; after a key rotation, build a
//     new Acceptor (tickets under the old key version fail to decrypt).
//   - Tickets bound to client addresses are refused (the acceptor does not
//     know the client address; MIT issues address-less tickets by default).
//   - Clock skew tolerance is gokrb5's default, 5 minutes.
//   - Replay detection is gokrb5's process-wide cache, cleaned by a
//     goroutine that runs for the life of the process
//     (github.com/jcmturner/gokrb5/v8/service.GetReplayCache.func1: goleak
//     users must ignore it). Several Strait processes behind one service
//     principal do not share it.
//   - No user-to-user tickets, no SPNEGO, no delegation.
package gssapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/crypto"
	gss "github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana"
	"github.com/jcmturner/gokrb5/v8/iana/asnAppTag"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/strait-proxy/strait/internal/secfile"
)

// ErrAuthentication is wrapped by every error Next returns because of what
// the client sent (bad, expired, replayed or misaddressed ticket, wrong
// token, protocol violation). Such errors never contain key material.
var ErrAuthentication = errors.New("gssapi: authentication failed")

// Security layers of RFC 4752 section 3.3.
const (
	layerNone      = 0x01
	layerIntegrity = 0x02
	layerConf      = 0x04
)

// maxRecvSize is the largest wrapped message the acceptor says it accepts.
// Without a security layer nothing is ever wrapped after the negotiation;
// the value only fills the field (Java's GssKrb5Server sends the same).
const maxRecvSize = 65536

// GSS-API checksum (RFC 4121 section 4.1.1) carried in the authenticator.
const (
	gssChecksumType = 0x8003
	gssFlagMutual   = 0x02
)

// Wrap-token flags (RFC 4121 section 4.2.2).
const (
	wrapSentByAcceptor = 0x01
	wrapSealed         = 0x02
	wrapAcceptorSubkey = 0x04
)

// maxToken bounds the size of a token the acceptor parses. Tickets with
// large authorization data (Active Directory PACs) stay well below it.
const maxToken = 64 << 10

// maxKeytab bounds the keytab file size: a keytab is small.
const maxKeytab = 1 << 20

// Acceptor verifies Kerberos tickets for one service principal. It is safe
// for concurrent use; each authentication gets its own Session.
type Acceptor struct {
	service  types.PrincipalName // e.g. kafka/localhost
	realm    string              // service realm, from the argument or the keytab
	settings *service.Settings
}

// NewAcceptor loads keytabPath and accepts tickets for servicePrincipal
// ("kafka/broker.example.com", optionally "@REALM"). The keytab must hold a
// key for that principal and follow Strait's secret-file rule
// (internal/secfile): no access for others, no write for the group (0600,
// 0400, or 0440 for a Kubernetes Secret); otherwise the error wraps
// secfile.ErrInsecure.
func NewAcceptor(keytabPath, servicePrincipal string) (*Acceptor, error) {
	name, realm, _ := strings.Cut(servicePrincipal, "@")
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return nil, fmt.Errorf("gssapi: service principal %q: want service/host[@REALM]", servicePrincipal)
	}
	if strings.Contains(servicePrincipal, "@") && realm == "" {
		return nil, fmt.Errorf("gssapi: service principal %q: empty realm", servicePrincipal)
	}
	// Strait's one rule for secret files (internal/secfile, docs/security.md):
	// no access for others, no write for the group; 0440 is allowed for a
	// Kubernetes Secret read through fsGroup.
	raw, err := secfile.Read(keytabPath, maxKeytab)
	if err != nil {
		return nil, fmt.Errorf("gssapi: keytab: %w", err)
	}
	kt := keytab.New()
	if err := safeCall(func() error { return kt.Unmarshal(raw) }); err != nil {
		return nil, fmt.Errorf("gssapi: keytab %s: %v", keytabPath, err)
	}
	sname := types.NewPrincipalName(int32(1) /* KRB_NT_PRINCIPAL, unused for matching */, name)

	// The keytab must hold at least one key for the principal (in the
	// realm, when one was given). Without a realm, take the keytab's.
	realms := map[string]bool{}
	for _, e := range kt.Entries {
		if e.Principal.Realm != "" && equalStrings(e.Principal.Components, sname.NameString) && (realm == "" || e.Principal.Realm == realm) {
			realms[e.Principal.Realm] = true
		}
	}
	switch {
	case len(realms) == 0:
		return nil, fmt.Errorf("gssapi: keytab %s holds no key for %s", keytabPath, servicePrincipal)
	case realm == "" && len(realms) > 1:
		return nil, fmt.Errorf("gssapi: keytab %s holds keys for %s in several realms: name the realm (%s@REALM)", keytabPath, name, name)
	case realm == "":
		for r := range realms {
			realm = r
		}
	}
	return &Acceptor{
		service: sname,
		realm:   realm,
		// PAC decoding is for Active Directory tickets; MIT tickets carry
		// none and gokrb5 would otherwise refuse or misparse their
		// authorization data.
		settings: service.NewSettings(kt, service.DecodePAC(false)),
	}, nil
}

// ServicePrincipal is the principal tickets must be for, with its realm.
func (a *Acceptor) ServicePrincipal() string {
	return a.service.PrincipalNameString() + "@" + a.realm
}

// Start begins one authentication.
func (a *Acceptor) Start() *Session {
	return &Session{a: a}
}

type state int

const (
	stateAPReq       state = iota // expecting the AP-REQ
	stateAwaitEmpty               // AP-REP sent, expecting the client's empty token
	stateAwaitChoice              // offer sent, expecting the client's wrapped choice
	stateDone
	stateFailed
)

// Session is one SASL GSSAPI exchange. It is not safe for concurrent use.
type Session struct {
	a     *Acceptor
	state state

	key       types.EncryptionKey // context key: initiator subkey, else ticket session key
	seqSend   uint64              // acceptor's sequence number
	principal string
	expiry    time.Time
}

// Next runs one step of the exchange: in is the client's token, out the
// token to send back. done is true once, after the client's final token
// verified; Principal is then set, and out is nil: there is nothing to send.
// Over SaslAuthenticate that is a response with empty auth bytes; after a v0
// SaslHandshake (raw tokens) nothing at all must be written, not even an
// empty size-prefixed frame: librdkafka reads no final token and takes the
// next 4 bytes for a Kafka response size ("Invalid response size 0", seen
// with kcat). Any error ends the session: later calls fail too.
func (s *Session) Next(ctx context.Context, in []byte) (out []byte, done bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	switch s.state {
	case stateAPReq:
		out, err = s.acceptAPReq(in)
	case stateAwaitEmpty:
		if len(in) != 0 {
			err = authErr("expected an empty token after the AP-REP, got %d bytes", len(in))
			break
		}
		out, err = s.offer()
		if err == nil {
			s.state = stateAwaitChoice
		}
	case stateAwaitChoice:
		err = s.acceptChoice(in)
		if err == nil {
			s.state = stateDone
			return nil, true, nil
		}
	case stateDone:
		err = authErr("token after the exchange completed")
	default:
		err = authErr("session already failed")
	}
	if err != nil {
		s.state = stateFailed
		s.principal = ""
		return nil, false, err
	}
	return out, false, nil
}

// Principal is the authenticated client, "name@REALM" ("client@STRAIT.TEST",
// "svc/host@STRAIT.TEST"), once Next has reported done; "" before.
func (s *Session) Principal() string {
	if s.state != stateDone {
		return ""
	}
	return s.principal
}

// Expiry is the end time of the client's ticket, once Next has reported
// done (zero before). A KIP-368 session lifetime should not exceed it.
func (s *Session) Expiry() time.Time {
	if s.state != stateDone {
		return time.Time{}
	}
	return s.expiry
}

func authErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrAuthentication, fmt.Sprintf(format, args...))
}

// parseInitialToken parses a KRB5 initial context token holding an AP-REQ.
func parseInitialToken(in []byte) (*messages.APReq, error) {
	if len(in) == 0 {
		return nil, authErr("empty initial token")
	}
	if len(in) > maxToken {
		return nil, authErr("initial token of %d bytes is larger than %d", len(in), maxToken)
	}
	if in[0] != 0x60 {
		return nil, authErr("initial token is not a GSS-API initial context token (first byte 0x%02x)", in[0])
	}
	var tok spnego.KRB5Token
	if err := safeCall(func() error { return tok.Unmarshal(in) }); err != nil {
		return nil, authErr("malformed initial token: %v", err)
	}
	if tok.IsAPRep() || tok.IsKRBError() || !tok.IsAPReq() {
		return nil, authErr("initial token does not carry an AP-REQ")
	}
	return &tok.APReq, nil
}

func (s *Session) acceptAPReq(in []byte) ([]byte, error) {
	apreq, err := parseInitialToken(in)
	if err != nil {
		return nil, err
	}
	a := s.a
	if !equalStrings(apreq.Ticket.SName.NameString, a.service.NameString) || apreq.Ticket.Realm != a.realm {
		return nil, authErr("ticket is for %s@%s, not %s", apreq.Ticket.SName.PrincipalNameString(), apreq.Ticket.Realm, a.ServicePrincipal())
	}
	if types.IsFlagSet(&apreq.APOptions, flags.APOptionUseSessionKey) {
		return nil, authErr("user-to-user tickets are not supported")
	}
	var (
		ok   bool
		err2 error
	)
	if err := safeCall(func() error {
		ok, _, err2 = service.VerifyAPREQ(apreq, a.settings)
		return nil
	}); err != nil {
		return nil, authErr("verifying AP-REQ: %v", err)
	}
	if err2 != nil {
		return nil, authErr("%v", krbErrText(err2))
	}
	if !ok {
		return nil, authErr("AP-REQ not valid")
	}
	auth := &apreq.Authenticator

	// RFC 4121 4.1.1: the authenticator checksum carries the GSS flags.
	if auth.Cksum.CksumType != gssChecksumType || len(auth.Cksum.Checksum) < 24 ||
		binary.LittleEndian.Uint32(auth.Cksum.Checksum[0:4]) != 16 {
		return nil, authErr("authenticator has no GSS-API checksum (type %d, %d bytes)", auth.Cksum.CksumType, len(auth.Cksum.Checksum))
	}
	gssFlags := binary.LittleEndian.Uint32(auth.Cksum.Checksum[20:24])
	mutual := gssFlags&gssFlagMutual != 0 || types.IsFlagSet(&apreq.APOptions, flags.APOptionMutualRequired)

	s.key = apreq.Ticket.DecryptedEncPart.Key
	if len(auth.SubKey.KeyValue) > 0 {
		s.key = auth.SubKey
	}
	if _, err := crypto.GetEtype(s.key.KeyType); err != nil {
		return nil, authErr("unsupported key type %d", s.key.KeyType)
	}
	s.principal = auth.CName.PrincipalNameString() + "@" + auth.CRealm
	s.expiry = apreq.Ticket.DecryptedEncPart.EndTime

	if !mutual {
		// Without an AP-REP the acceptor's sequence numbers start at the
		// initiator's (RFC 4121 section 4.2.3, as MIT and Java do).
		s.seqSend = uint64(uint32(auth.SeqNumber))
		s.state = stateAwaitChoice
		return s.offer()
	}
	seq, err := rand.Int(rand.Reader, big.NewInt(1<<30))
	if err != nil {
		return nil, err
	}
	s.seqSend = seq.Uint64() + 1 // non-zero: a zero value would be omitted from the AP-REP
	rep, err := buildAPRep(apreq.Ticket.DecryptedEncPart.Key, auth.CTime, auth.Cusec, int64(s.seqSend))
	if err != nil {
		return nil, err
	}
	s.state = stateAwaitEmpty
	return rep, nil
}

// buildAPRep builds the KRB5 GSS token (token id 02 00) carrying the AP-REP
// of RFC 4120 section 5.5.2: ctime and cusec echo the authenticator's, no
// acceptor subkey (the initiator's subkey stays the context key), our
// initial sequence number; encrypted in the ticket session key, usage 12.
func buildAPRep(sessionKey types.EncryptionKey, ctime time.Time, cusec int, seq int64) ([]byte, error) {
	enc := messages.EncAPRepPart{
		CTime:          ctime.UTC().Truncate(time.Second),
		Cusec:          cusec,
		SequenceNumber: seq,
	}
	plain, err := asn1.Marshal(enc)
	if err != nil {
		return nil, fmt.Errorf("gssapi: marshalling EncAPRepPart: %v", err)
	}
	plain = asn1tools.AddASNAppTag(plain, asnAppTag.EncAPRepPart)
	ed, err := crypto.GetEncryptedData(plain, sessionKey, keyusage.AP_REP_ENCPART, 0)
	if err != nil {
		return nil, fmt.Errorf("gssapi: encrypting EncAPRepPart: %v", err)
	}
	rep := messages.APRep{PVNO: iana.PVNO, MsgType: msgtype.KRB_AP_REP, EncPart: ed}
	b, err := asn1.Marshal(rep)
	if err != nil {
		return nil, fmt.Errorf("gssapi: marshalling AP-REP: %v", err)
	}
	b = asn1tools.AddASNAppTag(b, asnAppTag.APREP)
	oid, err := asn1.Marshal(gss.OIDKRB5.OID())
	if err != nil {
		return nil, err
	}
	tok := append(oid, 0x02, 0x00)
	tok = append(tok, b...)
	return asn1tools.AddASNAppTag(tok, 0), nil
}

// offer is the acceptor's RFC 4752 security-layer token: a wrap token
// (integrity only, RFC 4121 section 4.2.6.2) whose payload offers only
// "no security layer" and states the maximum message size.
func (s *Session) offer() ([]byte, error) {
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], maxRecvSize)
	payload := []byte{layerNone, size[1], size[2], size[3]}
	et, err := crypto.GetEtype(s.key.KeyType)
	if err != nil {
		return nil, authErr("unsupported key type %d", s.key.KeyType)
	}
	wt := gss.WrapToken{
		Flags:     wrapSentByAcceptor,
		EC:        uint16(et.GetHMACBitLength() / 8),
		SndSeqNum: s.seqSend,
		Payload:   payload,
	}
	if err := wt.SetCheckSum(s.key, keyusage.GSSAPI_ACCEPTOR_SEAL); err != nil {
		return nil, fmt.Errorf("gssapi: wrap token checksum: %v", err)
	}
	s.seqSend++
	return wt.Marshal()
}

// unwrapInitiator verifies a wrap token from the initiator (integrity only)
// and returns its payload.
func unwrapInitiator(in []byte, key types.EncryptionKey) ([]byte, error) {
	if len(in) > maxToken {
		return nil, authErr("wrap token of %d bytes is too large", len(in))
	}
	if len(in) < gss.HdrLen {
		return nil, authErr("wrap token of %d bytes is shorter than its header", len(in))
	}
	if in[0] != 0x05 || in[1] != 0x04 {
		return nil, authErr("not a wrap token (token id %02x%02x)", in[0], in[1])
	}
	fl := in[2]
	switch {
	case fl&wrapSentByAcceptor != 0:
		return nil, authErr("wrap token claims to come from the acceptor (reflected token)")
	case fl&wrapAcceptorSubkey != 0:
		return nil, authErr("wrap token uses an acceptor subkey, but none was sent")
	case fl&wrapSealed != 0:
		return nil, authErr("sealed wrap token during security-layer negotiation is not supported")
	case fl&^(wrapSentByAcceptor|wrapSealed|wrapAcceptorSubkey) != 0:
		return nil, authErr("wrap token has unknown flags 0x%02x", fl)
	}
	if in[3] != gss.FillerByte {
		return nil, authErr("wrap token filler is 0x%02x", in[3])
	}
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		return nil, authErr("unsupported key type %d", key.KeyType)
	}
	ec := int(binary.BigEndian.Uint16(in[4:6]))
	rrc := int(binary.BigEndian.Uint16(in[6:8]))
	if want := et.GetHMACBitLength() / 8; ec != want {
		return nil, authErr("wrap token checksum length %d, want %d", ec, want)
	}
	// Undo the right rotation of everything after the header (RFC 4121 4.2.5).
	body := append([]byte(nil), in[gss.HdrLen:]...)
	if len(body) < ec {
		return nil, authErr("wrap token too short for its %d-byte checksum", ec)
	}
	if n := len(body); n > 0 && rrc%n != 0 {
		r := rrc % n
		body = append(body[r:], body[:r]...)
	}
	hdr := make([]byte, gss.HdrLen)
	copy(hdr, in[:gss.HdrLen])
	payload, sum := body[:len(body)-ec], body[len(body)-ec:]
	// Checksum over payload | header with EC and RRC as zero.
	binary.BigEndian.PutUint16(hdr[4:6], 0)
	binary.BigEndian.PutUint16(hdr[6:8], 0)
	want, err := et.GetChecksumHash(key.KeyValue, append(append([]byte(nil), payload...), hdr...), keyusage.GSSAPI_INITIATOR_SEAL)
	if err != nil {
		return nil, authErr("wrap token checksum: %v", err)
	}
	if !hmac.Equal(want, sum) {
		return nil, authErr("wrap token checksum does not verify")
	}
	return payload, nil
}

// acceptChoice verifies the client's security-layer choice (RFC 4752 3.1).
func (s *Session) acceptChoice(in []byte) error {
	payload, err := unwrapInitiator(in, s.key)
	if err != nil {
		return err
	}
	if len(payload) < 4 {
		return authErr("security-layer reply of %d bytes, want at least 4", len(payload))
	}
	if payload[0] != layerNone {
		return authErr("client chose security layer 0x%02x; only 0x01 (none) is offered", payload[0])
	}
	// An authorization identity, if the client names one, must be itself:
	// a client never gets to act as another principal.
	if authz := payload[4:]; len(authz) > 0 && !bytes.Equal(authz, []byte(s.principal)) {
		return authErr("client %s asked to act as %q", s.principal, truncate(authz))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// krbErrText turns gokrb5's errors (KRBError values print their whole
// structure) into one line.
func krbErrText(err error) string {
	var ke messages.KRBError
	if errors.As(err, &ke) {
		return ke.Error() // "KRB Error: (32) KRB_AP_ERR_TKT_EXPIRED ... - text"
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// safeCall runs f, turning a panic in third-party parsing code into an
// error: a hostile token must not take the process down.
func safeCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed input (%v)", r)
		}
	}()
	return f()
}
