package gssapi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// offlineRealm is a service keytab made in-process (no KDC), and tickets
// encrypted in its key the way a KDC makes them: enough for valid seed
// tokens that the fuzzer mutates.
type offlineRealm struct {
	kt   *keytab.Keytab
	path string
}

func newOfflineRealm(tb testing.TB) *offlineRealm {
	tb.Helper()
	kt := keytab.New()
	if err := kt.AddEntry("kafka/localhost", "STRAIT.TEST", "fuzz-service-password", time.Now(), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		tb.Fatal(err)
	}
	raw, err := kt.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "kafka.keytab")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	return &offlineRealm{kt: kt, path: path}
}

func (o *offlineRealm) ticket(tb testing.TB) (messages.Ticket, types.EncryptionKey) {
	tb.Helper()
	now := time.Now()
	tkt, key, err := messages.NewTicket(types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "client"), "STRAIT.TEST",
		types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "kafka/localhost"), "STRAIT.TEST",
		types.NewKrbFlags(), o.kt, etypeID.AES256_CTS_HMAC_SHA1_96, 1, now, now, now.Add(time.Hour), now.Add(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	return tkt, key
}

func (o *offlineRealm) token(t testing.TB, mutual bool) []byte {
	tkt, key := o.ticket(t)
	a := newAuthenticator(t, "client")
	if mutual {
		a.Cksum.Checksum = gssChecksum(0x20 | gssFlagMutual)
	}
	return apReqToken(t, tkt, key, a, mutual)
}

// TestOfflineExchange checks the seeds the fuzz targets start from are
// accepted (so the fuzzer explores past the parser), without a KDC.
func TestOfflineExchange(t *testing.T) {
	o := newOfflineRealm(t)
	a, err := NewAcceptor(o.path, "kafka/localhost")
	if err != nil {
		t.Fatal(err)
	}
	tkt, key := o.ticket(t)
	auth := newAuthenticator(t, "client")
	s := a.Start()
	offer := mustNext(t, s, apReqToken(t, tkt, key, auth, false))
	in := &initiator{subkey: key}
	reply := in.answerOffer(t, offer, []byte{layerNone, 0, 0, 0})
	if _, done, err := s.Next(context.Background(), reply); err != nil || !done {
		t.Fatalf("done %v err %v", done, err)
	}
	if s.Principal() != wantPrincipal {
		t.Fatalf("Principal %q", s.Principal())
	}
}

// FuzzInitialToken: hostile first tokens never panic, never authenticate,
// and a refusal always wraps ErrAuthentication.
func FuzzInitialToken(f *testing.F) {
	o := newOfflineRealm(f)
	a, err := NewAcceptor(o.path, "kafka/localhost")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte{0x60})
	f.Add([]byte{0x60, 0x80})
	f.Add([]byte{0x60, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x60, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02})
	f.Add([]byte{0x60, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01, 0x00})
	for _, mutual := range []bool{false, true} {
		f.Add(o.token(f, mutual))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, done, err := a.Start().Next(context.Background(), in)
		if done {
			t.Fatal("a first token completed the exchange")
		}
		if err != nil {
			if !errors.Is(err, ErrAuthentication) {
				t.Fatalf("error %v does not wrap ErrAuthentication", err)
			}
			if out != nil {
				t.Fatal("output with an error")
			}
			return
		}
		if len(out) == 0 {
			t.Fatal("accepted without an answer")
		}
	})
}

// FuzzChoice: hostile security-layer replies after a valid AP-REQ never
// panic and complete the exchange only when they verify under the context
// key and choose no security layer.
func FuzzChoice(f *testing.F) {
	o := newOfflineRealm(f)
	a, err := NewAcceptor(o.path, "kafka/localhost")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte{0x05, 0x04, 0x00, 0xff, 0x00, 0x0c, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x05, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{0x05, 0x04, 0x00, 0xff, 0x00, 0x0c, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Fuzz(func(t *testing.T, in []byte) {
		tkt, key := o.ticket(t)
		s := a.Start()
		if _, _, err := s.Next(context.Background(), apReqToken(t, tkt, key, newAuthenticator(t, "client"), false)); err != nil {
			t.Fatal(err)
		}
		out, done, err := s.Next(context.Background(), in)
		if err != nil {
			if done || out != nil || !errors.Is(err, ErrAuthentication) {
				t.Fatalf("done %v out %x err %v", done, out, err)
			}
			return
		}
		// A fresh session key per ticket: random input cannot verify.
		t.Fatalf("a fuzzed reply verified: %x", in)
	})
}
