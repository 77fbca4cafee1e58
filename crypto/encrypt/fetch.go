package encrypt

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// openFetch decrypts the encrypted records of the topics a rule covers in a
// Fetch response. Records of topics no rule matches pass untouched, still
// encrypted if they were (a rule is what authorizes decryption); so do
// records of a covered topic without Strait's header (a record written
// before encryption was turned on is readable as it was written).
func (e *engine) openFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.FetchResponse)
	changed := false
	ar := newArena(x)
	if x.Version >= 13 {
		var unknown [][16]byte
		for ti := range resp.Topics {
			unknown = e.unknown(unknown, resp.Topics[ti].TopicID)
		}
		e.prefetch(ctx, unknown)
	}
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name, nameErr := t.Topic, error(nil)
		if x.Version >= 13 {
			name, nameErr = e.resolve(ctx, t.TopicID)
		}
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			out, ch, err := e.openPartition(ctx, ar, name, nameErr, p.RecordBatches)
			if err != nil {
				c, _ := code(err)
				p.ErrorCode, p.RecordBatches = c, nil
				changed = true
				e.m.partitionsFailedClosed.Inc()
				e.burst.Error("fetch partition refused: records could not be decrypted", "topic", name, "partition", p.Partition,
					"client_id", x.Conn.ClientID(), "error_code", c, "err", err)
				continue
			}
			if ch {
				p.RecordBatches, changed = out, true
			}
		}
	}
	if changed {
		x.MarkModified()
	}
	return nil
}

// openShareFetch is openFetch for share groups (KIP-932), which name topics
// by id only.
func (e *engine) openShareFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.ShareFetchResponse)
	changed := false
	ar := newArena(x)
	var unknown [][16]byte
	for ti := range resp.Topics {
		unknown = e.unknown(unknown, resp.Topics[ti].TopicID)
	}
	e.prefetch(ctx, unknown)
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name, nameErr := e.resolve(ctx, t.TopicID)
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			out, ch, err := e.openPartition(ctx, ar, name, nameErr, p.Records)
			if err != nil {
				c, _ := code(err)
				msg := "strait: " + err.Error()
				p.ErrorCode, p.ErrorMessage, p.Records, p.AcquiredRecords = c, &msg, nil, nil
				changed = true
				e.m.partitionsFailedClosed.Inc()
				e.burst.Error("share fetch partition refused: records could not be decrypted", "topic", name, "partition", p.Partition, "err", err)
				continue
			}
			if ch {
				p.Records, changed = out, true
			}
		}
	}
	if changed {
		x.MarkModified()
	}
	return nil
}

// unknown appends id to ids if no Metadata response has named it: the ids
// of one request that need a lookup, gathered so that they cost one.
func (e *engine) unknown(ids [][16]byte, id [16]byte) [][16]byte {
	if _, ok := e.topics.Name(id); !ok {
		ids = append(ids, id)
	}
	return ids
}

// prefetch looks up the unknown ids of a request together (one upstream
// Metadata request), so that resolve then answers from the caches.
func (e *engine) prefetch(ctx context.Context, ids [][16]byte) {
	if len(ids) > 0 {
		e.topics.Prefetch(ctx, ids)
	}
}

func (e *engine) resolve(ctx context.Context, id [16]byte) (string, error) {
	n, err := e.topics.Resolve(ctx, id)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUnknownTopic, err)
	}
	return n, nil
}

// openPartition decrypts the records of one partition's batches, if a rule
// covers topic; otherwise they pass untouched. A topic whose name could not
// be resolved (so no rule can be told to cover it or not) fails only if it
// holds encrypted records: the AAD binds the name, so they could not be
// opened.
//
// With on_decrypt_error: error, a batch that cannot be read (corrupt, over
// a limit, unknown codec) fails the partition like a record that cannot be
// decrypted: the client never gets error code 0 with ciphertext in it.
func (e *engine) openPartition(ctx context.Context, ar *arena, topic string, nameErr error, batches []byte) ([]byte, bool, error) {
	if len(batches) == 0 {
		return batches, false, nil
	}
	r := e.ruleFor(topic)
	if r == nil && nameErr == nil {
		return batches, false, nil
	}
	aad := e.aadTopic(r, topic)
	var arena, valBuf []byte
	var ref []byte // the record's key reference, when its fields are detached envelopes
	open := func(path string, ct []byte) ([]byte, error) {
		start := len(arena)
		var err error
		a := envelope.AAD{Topic: aad, Path: path}
		if ref != nil && path != envelope.PathKey && path != envelope.PathValue {
			arena, err = e.opener.OpenDetached(ctx, arena, ref, ct, a)
		} else {
			arena, err = e.opener.Open(ctx, arena, ct, a)
		}
		if err != nil {
			return nil, err
		}
		return arena[start:len(arena):len(arena)], nil
	}
	n := 0
	out, changed, err := e.rw.Rewrite(ar.buf(), batches, func(rec *records.Record) (bool, error) {
		parts, err := envelope.EncryptedParts(headers(rec.Headers))
		if err == nil && parts == 0 {
			return false, nil // not encrypted by Strait
		}
		if err == nil && nameErr != nil {
			err = nameErr
		}
		arena = arena[:0]
		ref = nil
		if r, ok := rec.Header(envelope.KeyRefHeader); ok {
			ref = r
		}
		key, value := rec.Key, rec.Value
		if err == nil && parts&envelope.PartKey != 0 && key != nil {
			key, err = open(envelope.PathKey, key)
		}
		if err == nil && value != nil {
			switch {
			case parts&envelope.PartValue != 0:
				value, err = open(envelope.PathValue, value)
			case parts&envelope.PartFields != 0:
				if r == nil || r.walker == nil {
					err = errNoFieldRule
				} else if valBuf, err = r.walker.Open(valBuf[:0], value, open); err == nil {
					value = valBuf
				}
			}
		}
		if err != nil {
			if _, isKMS := code(err); isKMS && !errors.Is(err, envelope.ErrThrottled) {
				e.m.kmsErrors.WithLabelValues("decrypt").Inc()
			}
			if e.leaveEnc {
				e.m.leftEncrypted.Inc()
				e.burst.Error("record left encrypted: it could not be decrypted", "topic", topic, "offset", rec.Offset(), "err", err)
				return false, nil
			}
			e.m.openFail.Inc()
			return false, fmt.Errorf("offset %d: %w", rec.Offset(), err)
		}
		rec.Key, rec.Value = key, value
		rec.DeleteHeader(envelope.HeaderKey)
		rec.DeleteHeader(envelope.KeyRefHeader)
		n++
		return true, nil
	})
	if err != nil {
		var be *records.BatchError
		if e.leaveEnc && errors.As(err, &be) {
			// A batch Strait cannot read, and the configuration asks for
			// undecryptable records to be delivered as they are: hand the
			// partition on as the broker sent it (still encrypted, if it
			// was); the client reports any corruption itself.
			e.m.leftEncrypted.Inc()
			e.burst.Error("fetch batch left encrypted: it could not be read", "topic", topic, "err", err)
			return batches, false, nil
		}
		return nil, false, err
	}
	e.m.opened.Add(float64(n))
	if changed {
		out = ar.keep(out)
	}
	return out, changed, nil
}

// headers adapts record headers to what envelope.EncryptedParts reads.
func headers(hs []kmsg.Header) func(yield func(string, []byte) bool) {
	return func(yield func(string, []byte) bool) {
		for _, h := range hs {
			if !yield(h.Key, h.Value) {
				return
			}
		}
	}
}
