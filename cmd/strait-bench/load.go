package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// meter counts what a workload moved. Workloads count all the time; the
// runner reads it before and after the measured window, so warm-up traffic
// (connection setup, metadata, the first fetches) is not measured.
type meter struct {
	records atomic.Int64
	bytes   atomic.Int64 // record value bytes: the payload the user moved

	// Produce latencies, kept only while recording is set.
	recording atomic.Bool
	latN      atomic.Int64
	lat       []time.Duration

	err    atomic.Pointer[error]
	failed atomic.Int64 // records the client reported failed
}

func (m *meter) add(records, bytes int) {
	m.records.Add(int64(records))
	m.bytes.Add(int64(bytes))
}

// fail remembers the first real error of a workload: a run that lost records
// measures nothing, and the bench must exit non-zero.
func (m *meter) fail(err error) {
	m.failed.Add(1)
	m.err.CompareAndSwap(nil, &err)
}

// firstErr is the error fail remembered, if any.
func (m *meter) firstErr() error {
	if p := m.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (m *meter) observe(d time.Duration) {
	if !m.recording.Load() {
		return
	}
	if i := m.latN.Add(1) - 1; i < int64(len(m.lat)) {
		m.lat[i] = d
	}
}

// latencies returns the recorded latencies (capped at the slice's size).
func (m *meter) latencies() []time.Duration {
	return m.lat[:min(m.latN.Load(), int64(len(m.lat)))]
}

// producerOpts is the one producer configuration every produce run uses,
// direct or through Strait: tuned for throughput, no compression (so Strait
// moves exactly the bytes the producer made), no idempotence (so several
// requests may be in flight per broker), acks=all (kfake acknowledges a
// blackholed batch at once, so this costs nothing but keeps the response on
// the path).
func producerOpts(seeds []string, o options, linger time.Duration) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerLinger(linger),
		kgo.ProducerBatchMaxBytes(o.batchMaxBytes()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxProduceRequestsInflightPerBroker(o.inflight),
		kgo.MaxBufferedRecords(64 << 10),
		// Round robin keeps all three brokers (and so three proxied
		// connections) busy at once.
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	}
}

// produceMax produces as fast as the client's buffer allows; kgo blocks
// Produce when MaxBufferedRecords are waiting, which is the back pressure
// that makes this measure the path's throughput.
func produceMax(ctx context.Context, seeds []string, o options, m *meter) error {
	cl, err := kgo.NewClient(producerOpts(seeds, o, o.linger)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	value := make([]byte, o.recordBytes) // shared: kgo only reads it
	done := func(r *kgo.Record, err error) {
		switch {
		case err == nil:
			m.add(1, len(r.Value))
		case ctx.Err() == nil:
			m.fail(fmt.Errorf("produce: %w", err))
		}
	}
	for ctx.Err() == nil {
		cl.Produce(ctx, &kgo.Record{Value: value}, done)
	}
	return nil
}

// producePaced produces rate records per second and records each record's
// latency from the Produce call to its acknowledgement. Linger is 0 here:
// a linger timer would add the same constant to both paths and hide what
// Strait adds. If the path cannot keep up, records queue in the client and
// the latency shows it.
func producePaced(ctx context.Context, seeds []string, o options, rate float64, m *meter) error {
	cl, err := kgo.NewClient(producerOpts(seeds, o, 0)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	value := make([]byte, o.recordBytes)
	done := func(r *kgo.Record, err error) {
		switch {
		case err == nil:
			// r.Timestamp is the time we set at Produce and still carries
			// the monotonic clock reading, so this is immune to wall
			// clock steps.
			m.observe(time.Since(r.Timestamp))
			m.add(1, len(r.Value))
		case ctx.Err() == nil:
			m.fail(fmt.Errorf("produce: %w", err))
		}
	}
	// Send whatever is due every millisecond: a per-record timer would cost
	// more CPU than the records themselves at these rates.
	start := time.Now()
	var sent int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * rate)
		for ; sent < due && ctx.Err() == nil; sent++ {
			cl.Produce(ctx, &kgo.Record{Value: value, Timestamp: time.Now()}, done)
		}
	}
}

// consumeMax fetches from the synthetic cluster as fast as it can. kfake
// answers every fetch at once from a canned batch, so the only limits are
// the consumer, Strait and the network path.
func consumeMax(ctx context.Context, seeds []string, o options, m *meter) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(benchTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(16<<20),
		kgo.FetchMaxPartitionBytes(1<<20),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil && ctx.Err() == nil {
			return ferr
		}
		n, b := 0, 0
		fs.EachRecord(func(r *kgo.Record) { n, b = n+1, b+len(r.Value) })
		m.add(n, b)
	}
	return nil
}

// batchMaxBytes is the producer's batch limit. The encrypt workload uses
// franz-go's default, 1,000,012 bytes, as a user who changed nothing does:
// encryption then grows full batches past the broker's message.max.bytes
// (1,048,588) and Strait splits them, which is part of what is measured.
// The other workloads use 1 MiB. The same limit is used direct and through
// Strait.
func (o options) batchMaxBytes() int32 {
	if o.batchBytes > 0 {
		return int32(o.batchBytes)
	}
	if o.encrypting {
		return franzGoDefaultBatchMaxBytes
	}
	return 1 << 20
}

// franzGoDefaultBatchMaxBytes is kgo's default ProducerBatchMaxBytes.
const franzGoDefaultBatchMaxBytes = 1000012
