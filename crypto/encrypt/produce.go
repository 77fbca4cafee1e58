package encrypt

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/refused"
	"github.com/strait-proxy/strait/records"
)

// refusedKey keeps a request's refused partitions for the response hook.
type refusedKey struct{}

// sealProduce encrypts the records of every partition a rule covers. A
// partition that cannot be encrypted is taken out of the request and
// answered with an error (mergeProduceFailures); if none is left, Strait
// answers the whole request itself. Plaintext of a covered topic is never
// forwarded.
func (e *encrypter) sealProduce(ctx context.Context, x *interceptor.Exchange) error {
	req := x.Request.(*kmsg.ProduceRequest)
	var fails refused.Produce
	var splits []split
	changed := false
	ar := rules.NewArena(x)
	if x.Version >= 13 {
		e.PrefetchIDs(ctx, len(req.Topics), func(i int) [16]byte { return req.Topics[i].TopicID })
	}
	keptTopics := req.Topics[:0]
	for _, t := range req.Topics {
		name := t.Topic
		if x.Version >= 13 {
			n, err := e.Topics.Resolve(ctx, t.TopicID)
			if err != nil {
				// Cannot tell whether a rule covers it: refuse.
				for _, p := range t.Partitions {
					fails.Add(&t, p.Partition, kerr.UnknownTopicID.Code, "strait: "+err.Error())
				}
				changed = true
				continue
			}
			name = n
		}
		r := e.For(name)
		if r != nil && r.ByField() && r.WalkerFor(name) == nil {
			r = nil // classifications the catalog gives no field of this topic: nothing to encrypt
		}
		if r == nil {
			keptTopics = append(keptTopics, t)
			continue
		}
		changed = true
		limit := e.limits.limit(ctx, name)
		kept := t.Partitions[:0]
		for _, p := range t.Partitions {
			out, err := e.sealRecords(ctx, r, name, ar.Buf(), p.Records, limit)
			if err != nil {
				c, isKMS := rules.Code(err)
				if isKMS {
					e.Metrics.KMSErrors.WithLabelValues("encrypt").Inc()
				}
				e.Metrics.PartitionsFailedClosed.Inc()
				e.Burst.Error("produce refused: records could not be encrypted", "topic", name, "partition", p.Partition,
					"client_id", x.Conn.ClientID(), "error_code", c, "err", err)
				fails.Add(&t, p.Partition, c, "strait: "+err.Error())
				continue
			}
			p.Records = ar.Keep(out)
			if sp, ok := e.splitOf(t, name, p); ok {
				p.Records = sp.batches[0]
				splits = append(splits, sp)
			}
			kept = append(kept, p)
		}
		if t.Partitions = kept; len(kept) > 0 {
			keptTopics = append(keptTopics, t)
		}
	}
	req.Topics = keptTopics
	if !changed {
		return nil
	}
	x.MarkModified()
	if len(splits) > 0 && len(req.Topics) > 0 {
		e.Metrics.BatchesSplit.Add(float64(len(splits)))
		x.Split(splitRequests(req, splits), mergeSplit(splits, e.lastSequence))
	}
	return fails.Finish(x, req, refusedKey{}, "could not be encrypted")
}

// mergeProduceFailures adds the partitions Strait refused to the broker's
// answer for the rest.
func (e *encrypter) mergeProduceFailures(_ context.Context, x *interceptor.Exchange) error {
	refused.Merge(x, refusedKey{})
	return nil
}

// sealRecords appends to dst the batches with every record encrypted.
// A batch that may exceed limit once encrypted comes out as several.
func (e *encrypter) sealRecords(ctx context.Context, r *rules.Compiled, topic string, dst, batches []byte, limit int) ([]byte, error) {
	s := r.Sealer
	aad := e.AADTopic(r, topic)
	walker := r.WalkerFor(topic) // nil: the whole value
	// arena holds this record's ciphertexts: the records package reads what
	// the callback assigns before the next record, so it is reused.
	var arena []byte
	seal := func(path string, plaintext []byte) ([]byte, error) {
		start := len(arena)
		var err error
		arena, err = s.Seal(ctx, arena, r.KeyID, envelope.AAD{Topic: aad, Path: path}, plaintext)
		if err != nil {
			return nil, err
		}
		return arena[start:len(arena):len(arena)], nil
	}
	// The fields of one record are sealed as detached envelopes under one
	// data key, whose key reference (the wrapped DEK) the record carries
	// once, in the KeyRefHeader header.
	var key envelope.DataKey
	fields := 0
	sealField := func(path string, plaintext []byte) ([]byte, error) {
		start := len(arena)
		var err error
		if arena, err = key.Seal(arena, envelope.AAD{Topic: aad, Path: path}, plaintext); err != nil {
			return nil, err
		}
		fields++
		return arena[start:len(arena):len(arena)], nil
	}
	var valBuf []byte
	n := 0
	rw := e.rws[r.Index]
	rw.SplitBytes = limit
	out, changed, err := rw.Rewrite(dst, batches, func(rec *records.Record) (bool, error) {
		if _, ok := rec.Header(envelope.HeaderKey); ok {
			return false, errAlreadyEncrypted
		}
		if _, ok := rec.Header(envelope.KeyRefHeader); ok {
			return false, errAlreadyEncrypted
		}
		arena = arena[:0]
		var got envelope.Parts
		if r.EncryptKey && rec.Key != nil {
			k, err := seal(envelope.PathKey, rec.Key)
			if err != nil {
				return false, fmt.Errorf("key of offset delta %d: %w", rec.OffsetDelta(), err)
			}
			rec.Key = k
			got |= envelope.PartKey
		}
		if rec.Value != nil { // a null value (tombstone) has nothing to hide
			if walker == nil {
				v, err := seal(envelope.PathValue, rec.Value)
				if err != nil {
					return false, fmt.Errorf("value of offset delta %d: %w", rec.OffsetDelta(), err)
				}
				rec.Value = v
				got |= envelope.PartValue
			} else {
				var err error
				if key, err = s.DataKey(ctx, r.KeyID, aad != ""); err != nil {
					return false, fmt.Errorf("fields of offset delta %d: %w", rec.OffsetDelta(), err)
				}
				fields = 0
				v, err := walker.Seal(valBuf[:0], rec.Value, sealField)
				if err != nil {
					return false, fmt.Errorf("fields of offset delta %d: %w", rec.OffsetDelta(), err)
				}
				if fields > 0 { // a record without the fields stays as it was
					valBuf, rec.Value = v, v
					got |= envelope.PartFields
					rec.SetHeader(envelope.KeyRefHeader, key.Ref())
				}
			}
		}
		if got == 0 {
			return false, nil
		}
		rec.SetHeader(envelope.HeaderKey, headerValues[got])
		n++
		return true, nil
	})
	if err != nil {
		e.Metrics.SealFail.Inc()
		return dst, err
	}
	e.Metrics.Sealed.Add(float64(n))
	if !changed { // nothing to encrypt (tombstones only): forward as is
		return append(dst, batches...), nil
	}
	return out, nil
}

// headerValues are the strait.enc header values by parts, built once.
var headerValues = func() (v [8][]byte) {
	for p := range v {
		v[p] = envelope.Parts(p).HeaderValue()
	}
	return v
}()
