package fields

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

// benchDoc is a ~1 KiB JSON record (the demo's customer record plus padding
// fields), with the two sealed fields ssn_id and account.
func benchDoc() []byte {
	var b strings.Builder
	b.WriteString(`{"name":"Joe Example","address":"123 Main St","ssn_id":"123-45-6789","account":"678900000234",`)
	b.WriteString(`"email":"joe@example.com","phone":"+1-555-0100","created":"2026-11-28T17:00:00Z","active":true,"score":12.75,`)
	b.WriteString(`"tags":["gold","newsletter","beta"],"prefs":{"lang":"en","tz":"Europe/Paris","notify":{"sms":false,"mail":true}},`)
	b.WriteString(`"history":[`)
	for i := 0; len(b.String()) < 1000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ts":%d,"kind":"login","ip":"10.0.%d.%d"}`, 1700000000+i*60, i, i*7%255)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// gcmBenchSeal is a realistic SealFunc: AES-256-GCM, fixed key, random
// 12-byte nonce from crypto/rand, path as additional data, fresh output.
func gcmBenchSeal(b *testing.B) (SealFunc, OpenFunc) {
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	aead, _ := cipher.NewGCM(blk)
	seal := func(path string, pt []byte) ([]byte, error) {
		out := make([]byte, 12, 12+len(pt)+16)
		rand.Read(out)
		return aead.Seal(out, out[:12], pt, []byte(path)), nil
	}
	open := func(path string, ct []byte) ([]byte, error) {
		return aead.Open(nil, ct[:12], ct[12:], []byte(path))
	}
	return seal, open
}

// cpuTime returns the CPU time (user+system) consumed by the process so far.
// Benchmarks report it next to wall time: on a shared machine wall time
// includes time spent waiting for a core, CPU time does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports records/s by wall time and by CPU time since start.
func reportRate(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	cpu := cpuTime() - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
}

func BenchmarkJSON(b *testing.B) {
	doc := benchDoc()
	w, err := NewJSON([]string{"$.ssn_id", "$.account"})
	if err != nil {
		b.Fatal(err)
	}
	gseal, gopen := gcmBenchSeal(b)
	ct := bytes.Repeat([]byte{1}, 12+16+14) // same size as a GCM ciphertext
	nopSeal := func(string, []byte) ([]byte, error) { return ct, nil }
	sealed, err := w.Seal(nil, doc, gseal)
	if err != nil {
		b.Fatal(err)
	}
	nopOpen := func(path string, c []byte) ([]byte, error) {
		if path == "$.ssn_id" {
			return []byte(`"123-45-6789"`), nil
		}
		return []byte(`"678900000234"`), nil
	}
	b.Logf("doc %d bytes, sealed %d bytes", len(doc), len(sealed))
	run := func(name string, f func(dst []byte) ([]byte, error)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			dst := make([]byte, 0, 2048)
			start := cpuTime()
			for b.Loop() {
				var err error
				if dst, err = f(dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, start)
		})
	}
	run("Seal/aes-gcm", func(d []byte) ([]byte, error) { return w.Seal(d, doc, gseal) })
	run("Seal/walker-only", func(d []byte) ([]byte, error) { return w.Seal(d, doc, nopSeal) })
	run("Open/aes-gcm", func(d []byte) ([]byte, error) { return w.Open(d, sealed, gopen) })
	run("Open/walker-only", func(d []byte) ([]byte, error) { return w.Open(d, sealed, nopOpen) })
	b.Run("reference/json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			if !json.Valid(doc) {
				b.Fatal("invalid")
			}
		}
		reportRate(b, start)
	})
	b.Run("reference/aes-gcm-2-fields", func(b *testing.B) {
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			gseal("$.ssn_id", doc[20:33])
			gseal("$.account", doc[40:54])
		}
		reportRate(b, start)
	})
}

func benchBinary(b *testing.B, w Walker, value []byte) {
	gseal, gopen := gcmBenchSeal(b)
	sealed, err := w.Seal(nil, value, gseal)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("value %d bytes, sealed %d bytes", len(value), len(sealed))
	ct := bytes.Repeat([]byte{1}, 12+16+14)
	nopSeal := func(string, []byte) ([]byte, error) { return ct, nil }
	pt := []byte("123-45-6789")
	nopOpen := func(string, []byte) ([]byte, error) { return pt, nil }
	run := func(name string, f func(dst []byte) ([]byte, error)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			dst := make([]byte, 0, 4096)
			start := cpuTime()
			for b.Loop() {
				var err error
				if dst, err = f(dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, start)
		})
	}
	run("Seal/aes-gcm", func(d []byte) ([]byte, error) { return w.Seal(d, value, gseal) })
	run("Seal/walker-only", func(d []byte) ([]byte, error) { return w.Seal(d, value, nopSeal) })
	run("Open/aes-gcm", func(d []byte) ([]byte, error) { return w.Open(d, sealed, gopen) })
	run("Open/walker-only", func(d []byte) ([]byte, error) { return w.Open(d, sealed, nopOpen) })
}

// BenchmarkAvro: the Customer record (~330 bytes, records, arrays, maps,
// unions), two string fields sealed.
func BenchmarkAvro(b *testing.B) {
	w, err := NewAvro(AvroConfig{Paths: []string{"$.ssn", "$.account"}, Local: []LocalAvro{{ID: 1, Files: avroFiles}}})
	if err != nil {
		b.Fatal(err)
	}
	benchBinary(b, w, avroEncode(b, avro.DefaultConfig, customerSchema(b), 1, sampleCustomer()))
}

// BenchmarkProtobuf: the Customer message, two string fields sealed, one of
// them nested (address.zip: the enclosing length is recomputed).
func BenchmarkProtobuf(b *testing.B) {
	w, err := NewProtobuf(ProtobufConfig{Paths: []string{"$.ssn", "$.address.zip"}, Local: []LocalProtobuf{{ID: 1, File: "testdata/customer.pb"}}})
	if err != nil {
		b.Fatal(err)
	}
	md, _ := MessageByIndexes(customerFD(b), []int{0})
	benchBinary(b, w, append(AppendWire(nil, 1, []int{0}), protoPayload(b, md, customerJSON)...))
}
