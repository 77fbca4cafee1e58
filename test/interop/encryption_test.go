package interop

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

// Envelope encryption with the real binary: a producer-side `strait run
// --config enc.yaml` (interceptor "encrypt") and a consumer-side `strait run
// --config dec.yaml` ("decrypt") in front of one kfake cluster. Clients we
// did not write produce through the first and consume through the second;
// what they read must be byte for byte what they wrote, and what the brokers
// hold must contain no secret.

const encHeader = "strait.enc"

// encSetup is a kfake cluster and the two Straits.
type encSetup struct {
	cluster  *kfake.Cluster
	enc, dec *proxy
}

func encryptionYAML(name, keyring string) string {
	return fmt.Sprintf(`# written by test/interop/encryption_test.go
interceptors:
  - name: %s
    config:
      kms: {local: {keyring: %q}}
      rules:
        - {topics: ["cust*"], key_id: customers-kek, format: json, fields: ["$.ssn_id", "$.account"]}
        - {topics: ["pay*"], key_id: payments-kek}
`, name, keyring)
}

func startEncryption(t *testing.T, topics ...string) *encSetup {
	t.Helper()
	if directMode {
		t.Skip("STRAIT_INTEROP_DIRECT=1: these tests check Strait's encryption itself")
	}
	need(t, "strait")
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keys.json")
	for _, k := range []string{"customers-kek", "payments-kek"} {
		if err := local.Generate(keyring, k); err != nil {
			t.Fatalf("keyring: %v", err)
		}
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	encCfg := write("enc.yaml", encryptionYAML("encrypt", keyring))
	decCfg := write("dec.yaml", encryptionYAML("decrypt", keyring))
	c := kfakeCluster(t, topics)
	return &encSetup{
		cluster: c,
		enc:     startStrait(t, straitConfig{Upstream: c.ListenAddrs(), Args: []string{"--config", encCfg}, NoDirect: true}),
		dec:     startStrait(t, straitConfig{Upstream: c.ListenAddrs(), Args: []string{"--config", decCfg}, NoDirect: true}),
	}
}

// encRecord is a record sent through the encrypting Strait and the values
// that must never be stored in clear.
type encRecord struct {
	Key, Value []byte
	Secrets    [][]byte
}

// customerRecords makes n JSON records whose ssn_id and account are secrets
// unique to tag. The JSON varies in spacing and in the type of account
// (string, number, object) so that "the same bytes back" is a real check of
// the in-place splice: a re-serialized document would differ.
func customerRecords(tag string, n int) []encRecord {
	out := make([]encRecord, n)
	for i := range out {
		ssn := fmt.Sprintf("%03d-%s-%04d", 100+i%800, tag, i)
		acct := fmt.Sprintf("9%011d", 7_000_000_000+int64(i)*7919)
		var v string
		switch i % 4 {
		case 0:
			v = fmt.Sprintf(`{"name":"Joe Example %d","address":"123 Main St","ssn_id":"%s","account":"%s","balance":%d.25,"tags":["a","b"]}`, i, ssn, acct, i)
		case 1: // account as a number; spaces around the separators
			v = fmt.Sprintf(`{ "name" : "Jane Doe %d" , "ssn_id" : "%s", "account" : %s , "vip" : true }`, i, ssn, acct)
		case 2: // account as an object; fields in another order; unicode
			v = fmt.Sprintf(`{"account":{"iban":"%s","bic":"ABCDEF"},"ssn_id":"%s","name":"Zoë \u00e9 %d","address":null}`, acct, ssn, i)
		case 3: // no account at all; nested other fields
			v = fmt.Sprintf(`{"name":"No Account %d","ssn_id":"%s","meta":{"ssn_id_present":true,"n":[1,2,3]}}`, i, ssn)
		}
		out[i] = encRecord{Key: fmt.Appendf(nil, "%s-k%d", tag, i), Value: []byte(v), Secrets: [][]byte{[]byte(ssn)}}
		if i%4 != 3 {
			out[i].Secrets = append(out[i].Secrets, []byte(acct))
		}
	}
	return out
}

// hexLines renders records as "hex(key) hex(value)" lines (the client
// scripts' input and output format).
func hexLines(recs []encRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = hex.EncodeToString(r.Key) + " " + hex.EncodeToString(r.Value)
	}
	return out
}

// readDirect reads every record of topic straight from kfake (no Strait).
func readDirect(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s directly from kfake: %d of %d records", topic, len(out), n)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading %s directly from kfake: %v", topic, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// rawLog fetches every partition of topic from its leader with plain Fetch
// requests (kmsg, no record decoding) and returns the concatenated record
// batches as the broker serves them, the number of records they hold, and
// whether every batch was uncompressed.
func rawLog(t *testing.T, brokers []string, topic string) ([]byte, int, bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	md, err := mreq.RequestWith(ctx, cl)
	if err != nil || len(md.Topics) != 1 || md.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata for %s: %v %+v", topic, err, md)
	}
	var all []byte
	records, uncompressed := 0, true
	for _, p := range md.Topics[0].Partitions {
		for offset := int64(0); ; {
			req := kmsg.NewPtrFetchRequest()
			req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.SessionEpoch = -1, 100, 1, 64<<20, -1
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic, ft.TopicID = topic, md.Topics[0].TopicID
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes, fp.CurrentLeaderEpoch, fp.LogStartOffset = p.Partition, offset, 32<<20, -1, -1
			ft.Partitions = append(ft.Partitions, fp)
			req.Topics = append(req.Topics, ft)
			kr, err := cl.Broker(int(p.Leader)).Request(ctx, req)
			if err != nil {
				t.Fatalf("raw fetch %s/%d: %v", topic, p.Partition, err)
			}
			resp := kr.(*kmsg.FetchResponse)
			if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
				t.Fatalf("raw fetch %s/%d: unexpected response shape", topic, p.Partition)
			}
			rp := resp.Topics[0].Partitions[0]
			if rp.ErrorCode != 0 {
				t.Fatalf("raw fetch %s/%d: error code %d", topic, p.Partition, rp.ErrorCode)
			}
			if offset >= rp.HighWatermark {
				break
			}
			b := rp.RecordBatches
			all = append(all, b...)
			progressed := false
			for len(b) >= 12 {
				size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
				if size > len(b) {
					break // a partial batch at the end of the response
				}
				var rb kmsg.RecordBatch
				if err := rb.ReadFrom(b[:size]); err != nil {
					t.Fatalf("raw fetch %s/%d: batch: %v", topic, p.Partition, err)
				}
				if rb.Attributes&0x07 != 0 {
					uncompressed = false
				}
				if rb.Attributes&0x20 == 0 { // not a control batch
					records += int(rb.NumRecords)
				}
				offset = rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
				progressed = true
				b = b[size:]
			}
			if !progressed {
				t.Fatalf("raw fetch %s/%d at %d: no complete batch", topic, p.Partition, offset)
			}
		}
	}
	return all, records, uncompressed
}

// assertNoPlaintextAtRest reads the topic straight from kfake, twice: with
// franz-go (decoded records: Strait's header on each, the secret fields
// ciphertext, every other JSON field as sent) and as the raw bytes of Fetch
// responses (no secret anywhere; the topic must be uncompressed so that a
// clear secret would be visible).
func assertNoPlaintextAtRest(t *testing.T, brokers []string, topic string, sent []encRecord) {
	t.Helper()
	byKey := map[string]encRecord{}
	for _, r := range sent {
		byKey[string(r.Key)] = r
	}
	stored := readDirect(t, brokers, topic, len(sent))
	if len(stored) != len(sent) {
		t.Fatalf("%s holds %d records, %d were sent", topic, len(stored), len(sent))
	}
	for _, g := range stored {
		w, ok := byKey[string(g.Key)]
		if !ok {
			t.Fatalf("%s: unexpected stored key %q", topic, g.Key)
		}
		if !hasHeader(g, encHeader) {
			t.Fatalf("%s: record %q stored without the %s header", topic, g.Key, encHeader)
		}
		for _, s := range w.Secrets {
			if bytes.Contains(g.Value, s) || bytes.Contains(g.Key, s) {
				t.Fatalf("%s: secret %q stored in clear: %s", topic, s, g.Value)
			}
		}
		var got, want map[string]any
		if err := json.Unmarshal(g.Value, &got); err != nil {
			t.Fatalf("%s: stored value of %q is not JSON any more: %v\n%s", topic, g.Key, err, g.Value)
		}
		if err := json.Unmarshal(w.Value, &want); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"ssn_id", "account"} {
			wv, present := want[f]
			gv, gotIt := got[f]
			if present != gotIt {
				t.Fatalf("%s: field %s present %v in the stored record, %v in the sent one", topic, f, gotIt, present)
			}
			if !present {
				continue
			}
			if s, isStr := gv.(string); !isStr || reflect.DeepEqual(gv, wv) || len(s) < 40 {
				t.Fatalf("%s: field %s stored as %v: want a ciphertext string", topic, f, gv)
			}
			delete(got, f)
			delete(want, f)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the clear fields of %q changed at rest:\n got %v\nwant %v", topic, g.Key, got, want)
		}
	}
	raw, n, uncompressed := rawLog(t, brokers, topic)
	if n != len(sent) {
		t.Fatalf("%s: the raw log holds %d records, want %d", topic, n, len(sent))
	}
	if !uncompressed {
		t.Fatalf("%s: the raw log is compressed; the byte search would prove nothing", topic)
	}
	for _, r := range sent {
		for _, s := range r.Secrets {
			if bytes.Contains(raw, s) {
				t.Fatalf("%s: secret %q appears in the raw log bytes", topic, s)
			}
		}
		if !bytes.Contains(raw, r.Key) { // sanity: the search does see clear bytes
			t.Fatalf("%s: key %q not found in the raw log: the byte search is broken", topic, r.Key)
		}
	}
	t.Logf("%s: %d records, %d raw log bytes read directly from kfake: no secret in them", topic, n, len(raw))
}

func hasHeader(r *kgo.Record, key string) bool {
	for _, h := range r.Headers {
		if h.Key == key {
			return true
		}
	}
	return false
}

// assertCrypto checks the Straits' /metrics: the encrypting one sealed at
// least n records, the decrypting one opened at least n, none failed.
func (s *encSetup) assertCrypto(t *testing.T, n int) {
	t.Helper()
	for _, c := range []struct {
		p  *proxy
		op string
	}{{s.enc, "encrypt"}, {s.dec, "decrypt"}} {
		_, body, err := c.p.adminGet("/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		ok, _ := sumCounterWith(body, "strait_crypto_records_total", `op="`+c.op+`",result="ok"`)
		bad, _ := sumCounterWith(body, "strait_crypto_records_total", `op="`+c.op+`",result="error"`)
		if ok < float64(n) || bad != 0 {
			t.Errorf("%s Strait: strait_crypto_records_total ok=%v error=%v, want ok>=%d and no error", c.op, ok, bad, n)
		}
	}
}

// TestEncryptionKcat: kcat (librdkafka) produces JSON records through the
// encrypting Strait (and franz-go adds more), kcat consumes them through the
// decrypting Strait byte for byte; a whole-value topic too. Read directly
// from kfake, the JSON topic holds ciphertext in ssn_id/account and the rest
// intact, and no secret appears in the raw log.
func TestEncryptionKcat(t *testing.T) {
	need(t, "kcat")
	const topic, payTopic, n = "customers-kcat", "payments-kcat", 60
	s := startEncryption(t, topic, payTopic)

	recs := customerRecords("kc", n)
	var in strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&in, "%s|%s\n", r.Key, r.Value)
	}
	mustRun(t, defaultTimeout, in.String(), nil, "kcat", "-b", s.enc.Bootstrap, "-P", "-t", topic, "-K", "|",
		"-z", "none", "-X", "acks=all", "-X", "message.timeout.ms=30000")

	// franz-go adds records through the same Strait, uncompressed.
	more := customerRecords("fg", 20)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.enc.Bootstrap), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range more {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: r.Key, Value: r.Value}).FirstErr(); err != nil {
			t.Fatalf("franz-go produce through the encrypting Strait: %v", err)
		}
	}
	cl.Close()
	recs = append(recs, more...)

	var want []string
	for _, r := range recs {
		want = append(want, fmt.Sprintf("%s|%s", r.Key, r.Value))
	}
	out := mustRun(t, defaultTimeout, "", nil, "kcat", "-b", s.dec.Bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", `%k|%s|%h\n`)
	var got []string
	for _, l := range lines(out.Stdout) {
		i := strings.LastIndexByte(l, '|') // JSON values hold no '|'
		if i < 0 {
			t.Fatalf("kcat output line without '|': %q", l)
		}
		if h := l[i+1:]; h != "" {
			t.Errorf("kcat saw headers %q through the decrypting Strait (none were sent; %s must be removed)", h, encHeader)
		}
		got = append(got, l[:i])
	}
	sameSet(t, "kcat through the decrypting Strait", want, got)

	// Through the encrypting Strait (no decrypt interceptor), or directly,
	// a consumer sees ciphertext.
	enc := mustRun(t, defaultTimeout, "", nil, "kcat", "-b", s.enc.Bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", `%h|%s\n`)
	// Field-encrypted records also carry the binary strait.key header (the
	// wrapped data key), which may hold any byte, newlines included: count
	// headers rather than split lines. This also shows that kcat's %h works,
	// so the check above means something.
	if n := strings.Count(enc.Stdout, encHeader+"="); n != len(recs) {
		t.Fatalf("through the encrypting Strait kcat showed %d %s headers, want %d", n, encHeader, len(recs))
	}
	for _, r := range recs {
		if strings.Contains(enc.Stdout, string(r.Secrets[0])) {
			t.Fatalf("a consumer of the encrypting Strait sees secret %q", r.Secrets[0])
		}
	}

	assertNoPlaintextAtRest(t, s.cluster.ListenAddrs(), topic, recs)

	// Whole-value encryption (rule pay*): kcat round trip, ciphertext at rest.
	pays := make([]string, 40)
	for i := range pays {
		pays[i] = fmt.Sprintf("p%d|4111-1111-1111-%04d exp 12/29", i, i)
	}
	mustRun(t, defaultTimeout, strings.Join(pays, "\n")+"\n", nil, "kcat", "-b", s.enc.Bootstrap, "-P", "-t", payTopic, "-K", "|", "-z", "none")
	r := mustRun(t, defaultTimeout, "", nil, "kcat", "-b", s.dec.Bootstrap, "-C", "-t", payTopic, "-o", "beginning", "-e", "-q", "-f", `%k|%s\n`)
	sameSet(t, "kcat whole-value round trip", pays, lines(r.Stdout))
	raw, nraw, _ := rawLog(t, s.cluster.ListenAddrs(), payTopic)
	if nraw != len(pays) || bytes.Contains(raw, []byte("4111-1111")) {
		t.Fatalf("%s at rest: %d records, clear card number present: %v", payTopic, nraw, bytes.Contains(raw, []byte("4111-1111")))
	}

	s.enc.assertThrough(t, "Produce")
	s.dec.assertThrough(t, "Fetch")
	s.assertCrypto(t, len(recs)+len(pays))
}

// clientEncryptionRoundTrip runs a client script that produces the records
// through the encrypting Strait and consumes them in a group through the
// decrypting one, then checks the bytes and the log at rest.
func clientEncryptionRoundTrip(t *testing.T, tool string, cmd []string, topic string) {
	t.Helper()
	s := startEncryption(t, topic)
	recs := customerRecords(strings.ReplaceAll(topic, "customers-", ""), 80)
	infile := filepath.Join(t.TempDir(), "records.txt")
	want := hexLines(recs)
	if err := os.WriteFile(infile, []byte(strings.Join(want, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(cmd[1:], s.enc.Bootstrap, s.dec.Bootstrap, topic, infile, topic+"-group")
	r := mustRun(t, 2*defaultTimeout, "", nil, cmd[0], args...)
	sameSet(t, tool+" through the encrypting and the decrypting Strait (hex key, hex value)", want, lines(r.Stdout))
	if t.Failed() {
		t.Logf("%s stderr:\n%s", tool, tail(r.Stderr, 4000))
	}
	assertNoPlaintextAtRest(t, s.cluster.ListenAddrs(), topic, recs)
	s.enc.assertThrough(t, "Produce")
	s.dec.assertThrough(t, "Fetch", "FindCoordinator", "JoinGroup", "SyncGroup")
	s.assertCrypto(t, len(recs))
}

func TestEncryptionConfluentKafkaPython(t *testing.T) {
	need(t, "confluent_kafka")
	clientEncryptionRoundTrip(t, "confluent-kafka-python", []string{pythonBin, filepath.Join(interopDir, "py", "confluent_encrypt.py")}, "customers-py")
}

func TestEncryptionKafkaJS(t *testing.T) {
	need(t, "kafkajs")
	clientEncryptionRoundTrip(t, "kafkajs", []string{"node", filepath.Join(interopDir, "js", "encrypt_roundtrip.js")}, "customers-js")
}
