package gssapi

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/crypto"
	gss "github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/strait-proxy/strait/internal/krbtest"
)

// realm is a running MIT KDC with the principals the tests use.
type realm struct {
	kdc          *krbtest.KDC
	svcKeytab    string // kafka/localhost
	bothKeytab   string // kafka/localhost and kafka/otherhost
	staleKeytab  string // kafka/rotated, exported before its key changed
	clientKeytab string // client@STRAIT.TEST
	cfg          *config.Config
}

func newRealm(t *testing.T) *realm {
	t.Helper()
	kdc := krbtest.Start(t)
	for _, p := range []string{"kafka/localhost", "kafka/otherhost", "kafka/rotated", "client"} {
		kdc.AddPrincipal(t, p)
	}
	r := &realm{
		kdc:          kdc,
		svcKeytab:    kdc.Keytab(t, "kafka.keytab", "kafka/localhost"),
		bothKeytab:   kdc.Keytab(t, "both.keytab", "kafka/localhost", "kafka/otherhost"),
		staleKeytab:  kdc.Keytab(t, "stale.keytab", "kafka/rotated"),
		clientKeytab: kdc.Keytab(t, "client.keytab", "client"),
	}
	kdc.Rekey(t, "kafka/rotated")
	cfg, err := config.Load(kdc.Config)
	if err != nil {
		t.Fatalf("gokrb5 cannot read %s: %v", kdc.Config, err)
	}
	r.cfg = cfg
	return r
}

// client logs client@STRAIT.TEST in with its keytab (gokrb5, against the
// real KDC).
func (r *realm) client(t *testing.T) *client.Client {
	t.Helper()
	kt, err := keytab.Load(r.clientKeytab)
	if err != nil {
		t.Fatal(err)
	}
	cl := client.NewWithKeytab("client", krbtest.Realm, kt, r.cfg, client.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		t.Fatalf("client login: %v", err)
	}
	t.Cleanup(cl.Destroy)
	return cl
}

// ticket asks the KDC for a service ticket.
func (r *realm) ticket(t *testing.T, cl *client.Client, spn string) (messages.Ticket, types.EncryptionKey) {
	t.Helper()
	tkt, key, err := cl.GetServiceTicket(spn)
	if err != nil {
		t.Fatalf("service ticket for %s: %v", spn, err)
	}
	return tkt, key
}

func (r *realm) acceptor(t *testing.T, kt, spn string) *Acceptor {
	t.Helper()
	a, err := NewAcceptor(kt, spn)
	if err != nil {
		t.Fatalf("NewAcceptor(%s, %s): %v", filepath.Base(kt), spn, err)
	}
	return a
}

// initiator is the client side of the exchange with mutual authentication,
// the way MIT krb5 (librdkafka through Cyrus SASL) runs it: an authenticator
// subkey, GSS flags mutual|sequence|integrity, AP option mutual-required.
// Written here on gokrb5's types because gokrb5's client cannot verify an
// AP-REP.
type initiator struct {
	tkt        messages.Ticket
	sessionKey types.EncryptionKey
	auth       types.Authenticator
	subkey     types.EncryptionKey
	mutual     bool
}

func newInitiator(t *testing.T, cl *client.Client, tkt messages.Ticket, key types.EncryptionKey, mutual bool) *initiator {
	t.Helper()
	auth, err := types.NewAuthenticator(cl.Credentials.Domain(), cl.Credentials.CName())
	if err != nil {
		t.Fatal(err)
	}
	gflags := uint32(0x20 | 0x08) // integrity | sequence
	if mutual {
		gflags |= gssFlagMutual
	}
	auth.Cksum = types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(gflags)}
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.GenerateSeqNumberAndSubKey(key.KeyType, et.GetKeyByteSize()); err != nil {
		t.Fatal(err)
	}
	return &initiator{tkt: tkt, sessionKey: key, auth: auth, subkey: auth.SubKey, mutual: mutual}
}

func gssChecksum(fl uint32) []byte {
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:4], 16)
	binary.LittleEndian.PutUint32(b[20:24], fl)
	return b
}

// token is the KRB5 initial context token carrying the AP-REQ.
func (in *initiator) token(t testing.TB) []byte {
	t.Helper()
	return apReqToken(t, in.tkt, in.sessionKey, in.auth, in.mutual)
}

func apReqToken(t testing.TB, tkt messages.Ticket, key types.EncryptionKey, auth types.Authenticator, mutual bool) []byte {
	t.Helper()
	req, err := messages.NewAPReq(tkt, key, auth)
	if err != nil {
		t.Fatal(err)
	}
	if mutual {
		types.SetFlag(&req.APOptions, flags.APOptionMutualRequired)
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	oid, _ := asn1.Marshal(gss.OIDKRB5.OID())
	tok := append(oid, 0x01, 0x00)
	return asn1tools.AddASNAppTag(append(tok, b...), 0)
}

// checkAPRep verifies the acceptor's AP-REP as an MIT initiator does
// (krb5_rd_rep): KRB5 token id 02 00, decrypts with the session key under
// usage 12, ctime and cusec echo the authenticator.
func (in *initiator) checkAPRep(t *testing.T, tok []byte) messages.EncAPRepPart {
	t.Helper()
	var kt spnego.KRB5Token
	if err := kt.Unmarshal(tok); err != nil {
		t.Fatalf("AP-REP token does not parse: %v", err)
	}
	if !kt.IsAPRep() {
		t.Fatalf("token is not an AP-REP (token id must be 02 00): %x", tok[:min(len(tok), 20)])
	}
	plain, err := crypto.DecryptEncPart(kt.APRep.EncPart, in.sessionKey, keyusage.AP_REP_ENCPART)
	if err != nil {
		t.Fatalf("AP-REP does not decrypt with the session key (usage 12): %v", err)
	}
	var enc messages.EncAPRepPart
	if err := enc.Unmarshal(plain); err != nil {
		t.Fatalf("EncAPRepPart: %v", err)
	}
	if !enc.CTime.Equal(in.auth.CTime.Truncate(time.Second)) || enc.Cusec != in.auth.Cusec {
		t.Fatalf("AP-REP ctime/cusec %v/%d, authenticator %v/%d", enc.CTime, enc.Cusec, in.auth.CTime, in.auth.Cusec)
	}
	if enc.SequenceNumber == 0 {
		t.Fatal("AP-REP carries no sequence number")
	}
	if len(enc.Subkey.KeyValue) != 0 {
		t.Fatal("AP-REP carries an acceptor subkey the wrap tokens do not use")
	}
	return enc
}

// answerOffer verifies the acceptor's wrap token (with the initiator's
// subkey, usage 22) and wraps the choice payload back (usage 24).
func (in *initiator) answerOffer(t testing.TB, offer []byte, choice []byte) []byte {
	t.Helper()
	var wt gss.WrapToken
	if err := wt.Unmarshal(offer, true); err != nil {
		t.Fatalf("offer is not an acceptor wrap token: %v", err)
	}
	if ok, err := wt.Verify(in.subkey, keyusage.GSSAPI_ACCEPTOR_SEAL); !ok {
		t.Fatalf("offer does not verify with the initiator subkey: %v", err)
	}
	if len(wt.Payload) != 4 || wt.Payload[0] != layerNone {
		t.Fatalf("offer payload %x, want 01 and a 3-byte size", wt.Payload)
	}
	return wrapFromInitiator(t, choice, in.subkey)
}

func wrapFromInitiator(t testing.TB, payload []byte, key types.EncryptionKey) []byte {
	t.Helper()
	wt, err := gss.NewInitiatorWrapToken(payload, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgedTicket makes a ticket for kafka/localhost the way the KDC would,
// encrypted in the service key taken from the service keytab, but with the
// validity times given: how the tests get an expired or postdated ticket
// without waiting for one.
func forgedTicket(t *testing.T, r *realm, cname string, start, end time.Time) (messages.Ticket, types.EncryptionKey) {
	t.Helper()
	kt, err := keytab.Load(r.svcKeytab)
	if err != nil {
		t.Fatal(err)
	}
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "kafka/localhost")
	_, kvno, err := kt.GetEncryptionKey(sname, krbtest.Realm, 0, etypeID.AES256_CTS_HMAC_SHA1_96)
	if err != nil {
		t.Fatal(err)
	}
	tkt, key, err := messages.NewTicket(types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, cname), krbtest.Realm,
		sname, krbtest.Realm, types.NewKrbFlags(), kt, etypeID.AES256_CTS_HMAC_SHA1_96, kvno, start, start, end, end)
	if err != nil {
		t.Fatal(err)
	}
	return tkt, key
}

func newAuthenticator(t testing.TB, cname string) types.Authenticator {
	t.Helper()
	a, err := types.NewAuthenticator(krbtest.Realm, types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, cname))
	if err != nil {
		t.Fatal(err)
	}
	a.Cksum = types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(0x20)}
	return a
}

func mustNext(t testing.TB, s *Session, in []byte) []byte {
	t.Helper()
	out, done, err := s.Next(context.Background(), in)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if done {
		t.Fatal("Next reported done too early")
	}
	return out
}

func writeFile(t *testing.T, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
