package records

import (
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSarama is TestKfake with Sarama as the producer: it writes snappy in
// the xerial framing (as the Java client does) and lz4 with 64 KiB blocks.
func TestSarama(t *testing.T) {
	codecs := []struct {
		name string
		c    sarama.CompressionCodec
		attr int16
	}{
		{"none", sarama.CompressionNone, 0},
		{"gzip", sarama.CompressionGZIP, 1},
		{"snappy", sarama.CompressionSnappy, 2},
		{"lz4", sarama.CompressionLZ4, 3},
		{"zstd", sarama.CompressionZSTD, 4},
	}
	var topics []string
	for _, c := range codecs {
		for _, m := range []string{"plain", "idempotent"} {
			topics = append(topics, "sarama-"+c.name+"-"+m, "rt-sarama-"+c.name+"-"+m)
		}
	}
	_, addrs := newCluster(t, topics...)
	admin, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	for _, c := range codecs {
		for _, mode := range []string{"plain", "idempotent"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				topic := "sarama-" + c.name + "-" + mode
				cfg := sarama.NewConfig()
				cfg.Version = sarama.V3_0_0_0
				cfg.Producer.Compression = c.c
				cfg.Producer.Return.Successes = true
				cfg.Producer.RequiredAcks = sarama.WaitForAll
				if mode == "idempotent" {
					cfg.Producer.Idempotent = true
					cfg.Net.MaxOpenRequests = 1
				}
				p, err := sarama.NewSyncProducer(addrs, cfg)
				if err != nil {
					t.Fatal(err)
				}
				for round := range rounds {
					var msgs []*sarama.ProducerMessage
					for i := round * perRound; i < (round+1)*perRound; i++ {
						r := testRecord(topic, i)
						m := &sarama.ProducerMessage{Topic: topic, Partition: 0}
						if r.Key != nil {
							m.Key = sarama.ByteEncoder(r.Key)
						}
						if r.Value != nil {
							m.Value = sarama.ByteEncoder(r.Value)
						}
						for _, h := range r.Headers {
							m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
						}
						msgs = append(msgs, m)
					}
					if err := p.SendMessages(msgs); err != nil {
						t.Fatal(err)
					}
				}
				p.Close()

				in := fetchRaw(t, admin, topic)
				if c.name == "snappy" {
					Walk(in, func(b *Batch) error {
						if !isXerial(b.Header.Records) {
							t.Fatal("sarama did not write xerial snappy")
						}
						return nil
					})
				}
				out, changed, err := Rewrite(nil, in, testFn)
				if err != nil || !changed {
					t.Fatal(changed, err)
				}
				if c.name == "snappy" {
					Walk(out, func(b *Batch) error {
						if !isXerial(b.Header.Records) {
							t.Fatal("rewritten snappy batch lost the xerial framing")
						}
						return nil
					})
				}
				checkRewritten(t, in, out, c.attr, mode)
				roundTrip(t, addrs, admin, "rt-"+topic, out)
			})
		}
	}
}
