// Command strait-demo (make demo) tells Strait's story in one run: an
// embedded 3-broker Kafka-protocol cluster (franz-go kfake), Strait in front
// of it, and a real Kafka client that only ever talks to Strait.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"

	"github.com/strait-proxy/strait/internal/freeport"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	step("1. An embedded Kafka-protocol cluster: 3 brokers (franz-go kfake)")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "orders", "customers", "orders-pii"))
	if err != nil {
		return err
	}
	defer cluster.Close()
	direct, err := brokers(ctx, cluster.ListenAddrs()[0])
	if err != nil {
		return err
	}
	fmt.Println("   what the cluster advertises (clients must never see these):")
	printBrokers(direct)

	step("2. Strait in front of it: a bootstrap port plus one port per broker")
	s, stop, err := startStrait(ctx, cluster.ListenAddrs(), nil, nil)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("   bootstrap %s, broker n on port %d+n\n", s.Addr(), portBase(s))
	through, err := brokers(ctx, s.Addr())
	if err != nil {
		return err
	}
	fmt.Println("   what a client asking Strait is told:")
	printBrokers(through)

	step("3. A real client (franz-go) produces and consumes through Strait only")
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr()), kgo.DefaultProduceTopic("orders"),
		kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	in := []string{`{"order":1,"item":"book"}`, `{"order":2,"item":"lamp"}`, `{"order":3,"item":"desk"}`}
	for _, v := range in {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte(v)}).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		fmt.Printf("   produced  %s\n", v)
	}
	for got := 0; got < len(in); {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			fmt.Printf("   consumed  %s  (partition %d, offset %d)\n", r.Value, r.Partition, r.Offset)
		})
	}
	fmt.Println("   every byte went through Strait; the client never learned a real broker address")

	if err := encryption(ctx, cluster); err != nil {
		return err
	}
	return policyAct(ctx, cluster)
}

// encryption is the second act: a producer-side Strait seals two fields of
// a customer record, the broker stores ciphertext, and a consumer-side
// Strait gives cleared consumers the original bytes back.
func encryption(ctx context.Context, cluster *kfake.Cluster) error {
	step("4. Field-level envelope encryption: a producer-side and a consumer-side Strait")
	dir, err := os.MkdirTemp("", "strait-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	keyring := filepath.Join(dir, "keys.json")
	if err := local.Generate(keyring, "customers-kek"); err != nil {
		return err
	}
	fmt.Printf("   local keyring %s with key customers-kek (the embedded default KMS)\n", keyring)
	cfg := rules.Config{
		KMS:   rules.KMS{Local: &rules.LocalKMS{Keyring: keyring}},
		Rules: []rules.Rule{{Topics: []string{"customers"}, KeyID: "customers-kek", Format: "json", Fields: []string{"$.ssn_id", "$.account"}}},
	}
	fmt.Println("   rule: topic customers, format json, encrypt $.ssn_id and $.account")
	topics := topicid.New()
	enc, err := encrypt.New(cfg, rules.Env{Topics: topics})
	if err != nil {
		return err
	}
	producerSide, stopP, err := startStrait(ctx, cluster.ListenAddrs(), []*interceptor.Interceptor{enc}, topics)
	if err != nil {
		return err
	}
	defer stopP()
	rtopics := topicid.New()
	dec, err := decrypt.New(cfg, rules.Env{Topics: rtopics})
	if err != nil {
		return err
	}
	consumerSide, stopC, err := startStrait(ctx, cluster.ListenAddrs(), []*interceptor.Interceptor{dec}, rtopics)
	if err != nil {
		return err
	}
	defer stopC()

	record := `{"name":"Joe Example","address":"123 Main St","ssn_id":"123-45-6789","account":"678900000234","balance":1234.56}`
	p, err := kgo.NewClient(kgo.SeedBrokers(producerSide.Addr()), kgo.DefaultProduceTopic("customers"))
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.ProduceSync(ctx, kgo.StringRecord(record)).FirstErr(); err != nil {
		return fmt.Errorf("produce through the encrypting Strait: %w", err)
	}
	fmt.Printf("\n   the producer sent (through Strait %s):\n     %s\n", producerSide.Addr(), record)

	stored, err := readOne(ctx, cluster.ListenAddrs()[0], "customers")
	if err != nil {
		return err
	}
	fmt.Printf("\n   stored on the broker (read directly, no Strait): %d bytes, header %s\n     %s\n",
		len(stored.Value), headerNames(stored), stored.Value)
	for _, secret := range []string{"123-45-6789", "678900000234"} {
		if strings.Contains(string(stored.Value), secret) {
			return fmt.Errorf("secret %q stored in clear", secret)
		}
	}
	fmt.Println("     -> ssn_id and account are ciphertext; every other field is intact")

	back, err := readOne(ctx, consumerSide.Addr(), "customers")
	if err != nil {
		return err
	}
	fmt.Printf("\n   read through the consumer-side Strait %s:\n     %s\n", consumerSide.Addr(), back.Value)
	if string(back.Value) != record {
		return fmt.Errorf("decrypted record differs from what was produced")
	}
	fmt.Println("     -> byte for byte what the producer sent")
	fmt.Println()
	return nil
}

func readOne(ctx context.Context, seed, topic string) (*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, err
		}
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0], nil
		}
	}
}

func headerNames(r *kgo.Record) string {
	var out []string
	for _, h := range r.Headers {
		out = append(out, h.Key)
	}
	return strings.Join(out, ",")
}

// startStrait runs an in-process Strait with a port-mapped listener on
// 127.0.0.1 and waits until it is ready.
func startStrait(ctx context.Context, upstream []string, ics []*interceptor.Interceptor, topics *topicid.Names) (*proxy.Server, func(), error) {
	base, err := freeport.Base(11)
	if err != nil {
		return nil, nil, err
	}
	cfg := config.Default()
	cfg.Upstream.Bootstrap = upstream
	cfg.Listen.Bootstrap = "127.0.0.1:" + strconv.Itoa(base+10)
	cfg.Listen.BrokerPortBase = base
	s, err := proxy.New(cfg, proxy.Options{
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer:   prometheus.NewRegistry(),
		Interceptors: ics,
		Topics:       topics,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := s.Listen(); err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(rctx) }()
	stop := func() { cancel(); <-done }
	for !s.Ready() {
		if ctx.Err() != nil {
			stop()
			return nil, nil, fmt.Errorf("strait not ready: %w", ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, stop, nil
}

func portBase(s *proxy.Server) int {
	_, p, _ := net.SplitHostPort(s.Addr())
	n, _ := strconv.Atoi(p)
	return n - 10
}

func brokers(ctx context.Context, seed string) ([]kmsg.MetadataResponseBroker, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	r, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	return r.Brokers, nil
}

func printBrokers(bs []kmsg.MetadataResponseBroker) {
	for _, b := range bs {
		fmt.Printf("     broker %d  %s:%d\n", b.NodeID, b.Host, b.Port)
	}
}

func step(s string) { fmt.Printf("\n== %s\n", s) }
