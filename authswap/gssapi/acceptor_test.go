package gssapi

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/twmb/franz-go/pkg/sasl/kerberos"

	"github.com/strait-proxy/strait/internal/secfile"
)

const wantPrincipal = "client@STRAIT.TEST"

// TestKerberos runs every exchange against one real MIT KDC.
func TestKerberos(t *testing.T) {
	r := newRealm(t)
	cl := r.client(t)
	ctx := context.Background()

	// franz-go's GSSAPI mechanism (no mutual authentication): AP-REQ, then
	// straight to the security-layer offer, then the client's choice.
	t.Run("franz-go", func(t *testing.T) {
		a := r.acceptor(t, r.svcKeytab, "kafka/localhost")
		mech := kerberos.Auth{Client: cl, Service: "kafka", PersistAfterAuth: true}.AsMechanism()
		fs, first, err := mech.Authenticate(ctx, "localhost:9092")
		if err != nil {
			t.Fatalf("franz-go Authenticate: %v", err)
		}
		s := a.Start()
		offer := mustNext(t, s, first)
		if len(offer) == 0 {
			t.Fatal("no security-layer offer after a non-mutual AP-REQ")
		}
		if s.Principal() != "" {
			t.Fatalf("Principal %q before done", s.Principal())
		}
		fdone, reply, err := fs.Challenge(offer)
		if err != nil {
			t.Fatalf("franz-go rejects the offer: %v", err)
		}
		if !fdone {
			t.Fatal("franz-go expects more steps")
		}
		out, done, err := s.Next(ctx, reply)
		if err != nil || !done || len(out) != 0 {
			t.Fatalf("final step: out %x done %v err %v", out, done, err)
		}
		if got := s.Principal(); got != wantPrincipal {
			t.Fatalf("Principal %q, want %q", got, wantPrincipal)
		}
		if s.Expiry().Before(time.Now()) {
			t.Fatalf("Expiry %v is not the ticket's future end time", s.Expiry())
		}
		// Nothing after done.
		if _, done, err := s.Next(ctx, reply); err == nil || done {
			t.Fatalf("token after done: done %v err %v", done, err)
		}
		if s.Principal() != "" {
			t.Fatal("Principal survives a failed step")
		}
	})

	// Mutual authentication as MIT krb5 runs it: AP-REP, the client's empty
	// token, the offer, the choice (with and without an authorization id).
	for _, authz := range []string{"", wantPrincipal} {
		t.Run("mutual/authzid="+authz, func(t *testing.T) {
			a := r.acceptor(t, r.svcKeytab, "kafka/localhost@STRAIT.TEST")
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			in := newInitiator(t, cl, tkt, key, true)
			s := a.Start()
			in.checkAPRep(t, mustNext(t, s, in.token(t)))
			offer := mustNext(t, s, nil)
			reply := in.answerOffer(t, offer, append([]byte{layerNone, 0, 0, 0}, authz...))
			out, done, err := s.Next(ctx, reply)
			// nil, not merely empty: over raw v0 tokens nothing may be
			// written after the last step (see Next).
			if err != nil || !done || out != nil {
				t.Fatalf("final step: out %x (nil %v) done %v err %v", out, out == nil, done, err)
			}
			if got := s.Principal(); got != wantPrincipal {
				t.Fatalf("Principal %q, want %q", got, wantPrincipal)
			}
		})
	}

	// The keytab may hold other services' keys: only the configured one is
	// accepted, even when the keytab could decrypt the ticket.
	t.Run("keytab with two services", func(t *testing.T) {
		a := r.acceptor(t, r.bothKeytab, "kafka/localhost")
		tkt, key := r.ticket(t, cl, "kafka/localhost")
		s := a.Start()
		in := newInitiator(t, cl, tkt, key, true)
		in.checkAPRep(t, mustNext(t, s, in.token(t)))
	})

	// A forged ticket that is valid must pass, so that the expired and
	// postdated cases below fail for their times and nothing else.
	t.Run("forged valid ticket is accepted", func(t *testing.T) {
		a := r.acceptor(t, r.svcKeytab, "kafka/localhost")
		tkt, key := forgedTicket(t, r, "client", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		s := a.Start()
		mustNext(t, s, apReqToken(t, tkt, key, newAuthenticator(t, "client"), false))
	})

	t.Run("refused", func(t *testing.T) { testRefused(t, r) })
	t.Run("refused after the AP-REQ", func(t *testing.T) { testRefusedLater(t, r) })
}

// testRefused: every AP-REQ that must not authenticate gives an error and
// never done.
func testRefused(t *testing.T, r *realm) {
	cl := r.client(t)
	ctx := context.Background()
	good := func(t *testing.T) []byte {
		tkt, key := r.ticket(t, cl, "kafka/localhost")
		return newInitiator(t, cl, tkt, key, true).token(t)
	}
	cases := []struct {
		name     string
		keytab   string
		spn      string
		token    func(t *testing.T) []byte
		wantText string
	}{
		{name: "empty token", token: func(*testing.T) []byte { return nil }, wantText: "empty"},
		{name: "garbage", token: func(*testing.T) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") }, wantText: "not a GSS-API"},
		{name: "truncated", token: func(t *testing.T) []byte { b := good(t); return b[:len(b)/2] }, wantText: "malformed"},
		{name: "wrong mechanism OID", token: func(t *testing.T) []byte {
			b := good(t)
			b[oidEnd(t, b)-1] ^= 0x01 // last byte of the OID 1.2.840.113554.1.2.2
			return b
		}, wantText: "malformed"},
		{name: "AP-REP token id", token: func(t *testing.T) []byte {
			b := good(t)
			i := oidEnd(t, b)
			b[i], b[i+1] = 0x02, 0x00
			return b
		}, wantText: ""},
		{name: "tampered ticket", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			// A copy: the client caches the ticket and shares its bytes.
			tkt.EncPart.Cipher = append([]byte(nil), tkt.EncPart.Cipher...)
			tkt.EncPart.Cipher[len(tkt.EncPart.Cipher)/2] ^= 0x01
			return newInitiator(t, cl, tkt, key, true).token(t)
		}, wantText: "decrypt"},
		{name: "authenticator under a wrong key", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			key.KeyValue = append([]byte(nil), key.KeyValue...)
			key.KeyValue[0] ^= 0x01
			return newInitiator(t, cl, tkt, key, true).token(t)
		}, wantText: "authenticator"},
		{name: "ticket for another service", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/otherhost")
			return newInitiator(t, cl, tkt, key, true).token(t)
		}, wantText: "kafka/otherhost@STRAIT.TEST, not kafka/localhost@STRAIT.TEST"},
		{name: "ticket for another service the keytab can decrypt", keytab: r.bothKeytab, token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/otherhost")
			return newInitiator(t, cl, tkt, key, true).token(t)
		}, wantText: "not kafka/localhost"},
		{name: "acceptor for another service", spn: "kafka/otherhost", keytab: r.bothKeytab, token: good, wantText: "not kafka/otherhost"},
		{name: "stale keytab after rekey", keytab: r.staleKeytab, spn: "kafka/rotated", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/rotated")
			return newInitiator(t, cl, tkt, key, true).token(t)
		}, wantText: "decrypt"},
		{name: "expired ticket", token: func(t *testing.T) []byte {
			tkt, key := forgedTicket(t, r, "client", time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour))
			return apReqToken(t, tkt, key, newAuthenticator(t, "client"), false)
		}, wantText: "KRB_AP_ERR_TKT_EXPIRED"},
		{name: "postdated ticket", token: func(t *testing.T) []byte {
			tkt, key := forgedTicket(t, r, "client", time.Now().Add(2*time.Hour), time.Now().Add(3*time.Hour))
			return apReqToken(t, tkt, key, newAuthenticator(t, "client"), false)
		}, wantText: "KRB_AP_ERR_TKT_NYV"},
		{name: "authenticator for another client", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			return apReqToken(t, tkt, key, newAuthenticator(t, "mallory"), false)
		}, wantText: "KRB_AP_ERR_BADMATCH"},
		{name: "authenticator clock skew", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			a := newAuthenticator(t, "client")
			a.CTime = a.CTime.Add(-time.Hour)
			return apReqToken(t, tkt, key, a, false)
		}, wantText: "KRB_AP_ERR_SKEW"},
		{name: "no GSS-API checksum", token: func(t *testing.T) []byte {
			tkt, key := r.ticket(t, cl, "kafka/localhost")
			a := newAuthenticator(t, "client")
			a.Cksum.CksumType, a.Cksum.Checksum = 0, nil
			return apReqToken(t, tkt, key, a, false)
		}, wantText: "checksum"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kt, spn := r.svcKeytab, "kafka/localhost"
			if c.keytab != "" {
				kt = c.keytab
			}
			if c.spn != "" {
				spn = c.spn
			}
			s := r.acceptor(t, kt, spn).Start()
			out, done, err := s.Next(ctx, c.token(t))
			if err == nil || done || out != nil {
				t.Fatalf("accepted: out %d bytes, done %v, err %v", len(out), done, err)
			}
			if !errors.Is(err, ErrAuthentication) {
				t.Fatalf("error %v does not wrap ErrAuthentication", err)
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("error %q does not say %q", err, c.wantText)
			}
			if s.Principal() != "" {
				t.Fatalf("Principal %q after a refusal", s.Principal())
			}
			// The session stays failed.
			if _, done, err := s.Next(ctx, nil); err == nil || done {
				t.Fatalf("failed session continues: done %v err %v", done, err)
			}
		})
	}

	// A replayed authenticator: the same AP-REQ accepted once, then refused,
	// also by a second acceptor (the replay cache is per process).
	t.Run("replayed authenticator", func(t *testing.T) {
		tok := good(t)
		a := r.acceptor(t, r.svcKeytab, "kafka/localhost")
		mustNext(t, a.Start(), tok)
		for _, acc := range []*Acceptor{a, r.acceptor(t, r.svcKeytab, "kafka/localhost")} {
			_, done, err := acc.Start().Next(ctx, tok)
			if err == nil || done || !strings.Contains(err.Error(), "KRB_AP_ERR_REPEAT") {
				t.Fatalf("replay: done %v err %v", done, err)
			}
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, done, err := r.acceptor(t, r.svcKeytab, "kafka/localhost").Start().Next(cctx, good(t))
		if !errors.Is(err, context.Canceled) || done {
			t.Fatalf("done %v err %v", done, err)
		}
	})
}

// testRefusedLater: a valid AP-REQ followed by a bad security-layer step.
func testRefusedLater(t *testing.T, r *realm) {
	cl := r.client(t)
	ctx := context.Background()
	// start runs a mutual exchange up to the offer (or up to the AP-REP).
	start := func(t *testing.T, toOffer bool) (*initiator, *Session, []byte) {
		tkt, key := r.ticket(t, cl, "kafka/localhost")
		in := newInitiator(t, cl, tkt, key, true)
		s := r.acceptor(t, r.svcKeytab, "kafka/localhost").Start()
		rep := mustNext(t, s, in.token(t))
		in.checkAPRep(t, rep)
		if !toOffer {
			return in, s, rep
		}
		return in, s, mustNext(t, s, nil)
	}
	cases := []struct {
		name     string
		toOffer  bool
		reply    func(t *testing.T, in *initiator, last []byte) []byte
		wantText string
	}{
		{name: "non-empty token after the AP-REP", reply: func(t *testing.T, in *initiator, _ []byte) []byte {
			return []byte{0x01}
		}, wantText: "empty token"},
		{name: "choice before the offer", reply: func(t *testing.T, in *initiator, _ []byte) []byte {
			return wrapFromInitiator(t, []byte{layerNone, 0, 0, 0}, in.subkey)
		}, wantText: "empty token"},
		{name: "empty choice", toOffer: true, reply: func(*testing.T, *initiator, []byte) []byte { return nil }, wantText: "shorter than its header"},
		{name: "offer reflected back", toOffer: true, reply: func(_ *testing.T, _ *initiator, offer []byte) []byte {
			return offer
		}, wantText: "reflected"},
		{name: "choice under the ticket session key instead of the subkey", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			in.answerOffer(t, offer, []byte{layerNone, 0, 0, 0})
			return wrapFromInitiator(t, []byte{layerNone, 0, 0, 0}, in.sessionKey)
		}, wantText: "does not verify"},
		{name: "tampered choice", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			b := in.answerOffer(t, offer, []byte{layerNone, 0, 0, 0})
			b[16] = layerIntegrity // payload byte, checksum now wrong
			return b
		}, wantText: "does not verify"},
		{name: "integrity layer chosen", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			return in.answerOffer(t, offer, []byte{layerIntegrity, 0, 0x10, 0})
		}, wantText: "security layer 0x02"},
		{name: "short choice", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			return in.answerOffer(t, offer, []byte{layerNone})
		}, wantText: "at least 4"},
		{name: "authorization id of another principal", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			return in.answerOffer(t, offer, append([]byte{layerNone, 0, 0, 0}, "admin@STRAIT.TEST"...))
		}, wantText: `asked to act as "admin@STRAIT.TEST"`},
		{name: "sealed choice", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			b := in.answerOffer(t, offer, []byte{layerNone, 0, 0, 0})
			b[2] |= wrapSealed
			return b
		}, wantText: "sealed"},
		{name: "MIC token instead of wrap", toOffer: true, reply: func(t *testing.T, in *initiator, offer []byte) []byte {
			b := in.answerOffer(t, offer, []byte{layerNone, 0, 0, 0})
			b[0], b[1] = 0x04, 0x04
			return b
		}, wantText: "not a wrap token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, s, last := start(t, c.toOffer)
			out, done, err := s.Next(ctx, c.reply(t, in, last))
			if err == nil || done || out != nil {
				t.Fatalf("accepted: out %d bytes, done %v, err %v", len(out), done, err)
			}
			if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("error %q, want one saying %q", err, c.wantText)
			}
			if s.Principal() != "" {
				t.Fatalf("Principal %q after a refusal", s.Principal())
			}
		})
	}
}

// oidEnd is the index just past the KRB5 mechanism OID in a token.
func oidEnd(t *testing.T, b []byte) int {
	t.Helper()
	oid := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}
	i := bytes.Index(b, oid)
	if i < 0 {
		t.Fatalf("no KRB5 OID in token %x", b[:min(len(b), 24)])
	}
	return i + len(oid)
}

func TestNewAcceptor(t *testing.T) {
	kt := keytab.New()
	if err := kt.AddEntry("kafka/localhost", "STRAIT.TEST", "pw", time.Now(), 1, 18); err != nil {
		t.Fatal(err)
	}
	if err := kt.AddEntry("kafka/localhost", "OTHER.TEST", "pw", time.Now(), 1, 18); err != nil {
		t.Fatal(err)
	}
	raw, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	good := writeFile(t, "kafka.keytab", raw, 0o600)

	cases := []struct {
		name, path, spn, wantErr, wantSPN string
		insecure                          bool // error wraps secfile.ErrInsecure
	}{
		{name: "ok with realm", path: good, spn: "kafka/localhost@STRAIT.TEST", wantSPN: "kafka/localhost@STRAIT.TEST"},
		{name: "ok other realm", path: good, spn: "kafka/localhost@OTHER.TEST", wantSPN: "kafka/localhost@OTHER.TEST"},
		{name: "read-only owner", path: writeFile(t, "ro.keytab", raw, 0o400), spn: "kafka/localhost@STRAIT.TEST", wantSPN: "kafka/localhost@STRAIT.TEST"},
		{name: "realm ambiguous", path: good, spn: "kafka/localhost", wantErr: "several realms"},
		// Strait's secret-file rule (internal/secfile): group read is
		// fine (a Kubernetes Secret through fsGroup is 0440), group write
		// and any access for others are not.
		{name: "kubernetes secret 0440", path: writeFile(t, "k8s.keytab", raw, 0o440), spn: "kafka/localhost@STRAIT.TEST", wantSPN: "kafka/localhost@STRAIT.TEST"},
		{name: "group readable 0640", path: writeFile(t, "g.keytab", raw, 0o640), spn: "kafka/localhost@STRAIT.TEST", wantSPN: "kafka/localhost@STRAIT.TEST"},
		{name: "group writable", path: writeFile(t, "gw.keytab", raw, 0o660), spn: "kafka/localhost@STRAIT.TEST", wantErr: "mode 0660", insecure: true},
		{name: "world readable", path: writeFile(t, "w.keytab", raw, 0o604), spn: "kafka/localhost@STRAIT.TEST", wantErr: "mode 0604", insecure: true},
		{name: "world everything", path: writeFile(t, "ww.keytab", raw, 0o666), spn: "kafka/localhost@STRAIT.TEST", wantErr: "mode 0666", insecure: true},
		{name: "missing", path: good + ".nope", spn: "kafka/localhost", wantErr: "no such file"},
		{name: "directory", path: t.TempDir(), spn: "kafka/localhost", wantErr: "not a regular file"},
		{name: "not a keytab", path: writeFile(t, "junk.keytab", []byte("\x05\x02junkjunkjunk"), 0o600), spn: "kafka/localhost", wantErr: "keytab"},
		{name: "empty file", path: writeFile(t, "empty.keytab", nil, 0o600), spn: "kafka/localhost", wantErr: "keytab"},
		{name: "principal not in keytab", path: good, spn: "kafka/otherhost", wantErr: "no key for kafka/otherhost"},
		{name: "realm not in keytab", path: good, spn: "kafka/localhost@NOPE.TEST", wantErr: "no key"},
		{name: "empty principal", path: good, spn: "", wantErr: "want service/host"},
		{name: "empty realm", path: good, spn: "kafka/localhost@", wantErr: "empty realm"},
		{name: "empty host", path: good, spn: "kafka/", wantErr: "want service/host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewAcceptor(c.path, c.spn)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a.ServicePrincipal() != c.wantSPN {
					t.Fatalf("ServicePrincipal %q, want %q", a.ServicePrincipal(), c.wantSPN)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err %v, want one saying %q", err, c.wantErr)
			}
			if errors.Is(err, secfile.ErrInsecure) != c.insecure {
				t.Fatalf("err %v: wraps secfile.ErrInsecure %v, want %v", err, !c.insecure, c.insecure)
			}
		})
	}
}
