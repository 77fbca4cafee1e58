package policy

import (
	"errors"
	goruntime "runtime"
	"sync"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// A consumer's fetches of one partition are serial: while Strait decides
// a response, the client and the broker wait. A large partition (at least
// parallelMinBytes of batches) is therefore split at batch boundaries into
// up to p.workers runs decided at once, each with its own scratch, and
// joined in order. Decisions, caches, metrics and the tokenizer are safe
// for concurrent use; the audit line and counters are summed, so the
// result is the same as one run's, batch for batch.

// parallelMinBytes is the smallest partition rewritten in parallel.
const parallelMinBytes = 256 << 10

// maxWorkers bounds the runs of one partition.
const maxWorkers = 4

func defaultWorkers() int { return min(goruntime.GOMAXPROCS(0), maxWorkers) }

// chunks splits batches at the batch ends bounds into up to p.workers
// runs of similar size; nil or one run: decide sequentially.
func (p *Policy) chunks(batches []byte, bounds []int) [][]byte {
	k := min(p.workers, len(bounds))
	if k < 2 || len(batches) < parallelMinBytes {
		return nil
	}
	out := make([][]byte, 0, k)
	start := 0
	for _, end := range bounds {
		if end-start >= len(batches)/k || end == len(batches) {
			out = append(out, batches[start:end])
			start = end
		}
	}
	if start < len(batches) { // not reached: bounds end at len(batches)
		out = append(out, batches[start:])
	}
	return out
}

var chunkBufs = sync.Pool{New: func() any { return new([]byte) }}

// filterParallel runs f's decisions over chunks at once: chunk 0 on this
// goroutine with f, the others with copies of f (own applier and key
// buffer). The result is written to the exchange's arena.
func (p *Policy) filterParallel(f *filterRun, ar *arena, x *interceptor.Exchange, batches []byte, chunks [][]byte) ([]byte, bool, error) {
	type result struct {
		out     []byte
		ref     *[]byte
		changed bool
		err     error
		run     *filterRun
	}
	res := make([]result, len(chunks))
	var wg sync.WaitGroup
	for i := range chunks {
		r := &res[i]
		r.run = f
		if i > 0 {
			c := *f
			c.ap = newApplier(p.tok)
			c.origIdx, c.origW = nil, nil // built by each run
			if c.orig != nil {
				c.ap.orig = c.origField
			}
			c.b = batchAudit{first: -1, last: -1}
			c.key = append([]byte(nil), f.pc.key...)
			c.prevDropped = false
			pc := *f.pc // its own memo
			pc.memo = &memo{}
			c.pc = &pc
			if f.dropped != nil {
				c.dropped = new([]offRange)
			}
			r.run = &c
		}
		r.ref = chunkBufs.Get().(*[]byte)
		if i == 0 {
			continue // this goroutine's, below
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.out, r.changed, r.err = p.rw.Filter((*r.ref)[:0], chunks[i], r.run.record)
		}()
	}
	r0 := &res[0]
	r0.out, r0.changed, r0.err = p.rw.Filter((*r0.ref)[:0], chunks[0], f.record)
	wg.Wait()

	defer func() {
		for i := range res {
			r := &res[i]
			if r.changed && cap(r.out) <= 16<<20 {
				*r.ref = r.out[:0]
			}
			chunkBufs.Put(r.ref)
		}
	}()
	pos, changed := 0, false
	for i := range res {
		r := &res[i]
		if r.err != nil {
			var be *records.BatchError
			if errors.As(r.err, &be) {
				be.Pos += pos // positions in the partition, as one run reports them
			}
			return nil, false, r.err
		}
		pos += len(chunks[i])
		changed = changed || r.changed
		if i > 0 {
			r.run.pc.memo.flush(p)
			f.b.merge(&r.run.b)
			if f.dropped != nil {
				*f.dropped = append(*f.dropped, *r.run.dropped...)
			}
		}
	}
	if !changed {
		return batches, false, nil
	}
	out := ar.buf(x)
	for i := range res {
		if res[i].changed {
			out = append(out, res[i].out...)
		} else {
			out = append(out, chunks[i]...)
		}
	}
	return ar.keep(out), true, nil
}

// merge adds o's counts to b.
func (b *batchAudit) merge(o *batchAudit) {
	if o.first >= 0 {
		b.span(o.first, o.last)
	}
	b.delivered += o.delivered
	b.dropped += o.dropped
	b.failed += o.failed
	b.redacted += o.redacted
	b.masked += o.masked
	b.tokenized += o.tokenized
	b.encrypted += o.encrypted
}
