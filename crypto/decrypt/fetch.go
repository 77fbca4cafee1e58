package decrypt

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// openFetch decrypts the encrypted records of the topics a rule covers in a
// Fetch response. Records of topics no rule matches pass untouched, still
// encrypted if they were (a rule is what authorizes decryption); so do
// records of a covered topic without Strait's header (a record written
// before encryption was turned on is readable as it was written).
func (e *decrypter) openFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.FetchResponse)
	changed := false
	ar := rules.NewArena(x)
	if x.Version >= 13 {
		e.PrefetchIDs(ctx, len(resp.Topics), func(i int) [16]byte { return resp.Topics[i].TopicID })
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
				c, _ := rules.Code(err)
				p.ErrorCode, p.RecordBatches = c, nil
				changed = true
				e.Metrics.PartitionsFailedClosed.Inc()
				e.Burst.Error("fetch partition refused: records could not be decrypted", "topic", name, "partition", p.Partition,
					"client_id", x.Conn.ClientID(), "error_code", c, "err", err)
				continue
			}
			if ch {
				keepOriginal(x, name, p.Partition, p.RecordBatches) // original.go
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
func (e *decrypter) openShareFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.ShareFetchResponse)
	changed := false
	ar := rules.NewArena(x)
	e.PrefetchIDs(ctx, len(resp.Topics), func(i int) [16]byte { return resp.Topics[i].TopicID })
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name, nameErr := e.resolve(ctx, t.TopicID)
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			out, ch, err := e.openPartition(ctx, ar, name, nameErr, p.Records)
			if err != nil {
				c, _ := rules.Code(err)
				msg := "strait: " + err.Error()
				p.ErrorCode, p.ErrorMessage, p.Records, p.AcquiredRecords = c, &msg, nil, nil
				changed = true
				e.Metrics.PartitionsFailedClosed.Inc()
				e.Burst.Error("share fetch partition refused: records could not be decrypted", "topic", name, "partition", p.Partition, "err", err)
				continue
			}
			if ch {
				keepOriginal(x, name, p.Partition, p.Records) // original.go
				p.Records, changed = out, true
			}
		}
	}
	if changed {
		x.MarkModified()
	}
	return nil
}

func (e *decrypter) resolve(ctx context.Context, id [16]byte) (string, error) {
	n, err := e.Topics.Resolve(ctx, id)
	if err != nil {
		return "", fmt.Errorf("%w: %v", rules.ErrUnknownTopic, err)
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
func (e *decrypter) openPartition(ctx context.Context, ar *rules.Arena, topic string, nameErr error, batches []byte) ([]byte, bool, error) {
	if len(batches) == 0 {
		return batches, false, nil
	}
	r := e.For(topic)
	if r == nil && nameErr == nil {
		return batches, false, nil
	}
	aad := e.AADTopic(r, topic)
	var walker fields.Walker // the fields of topic's values, if a field rule covers it
	if r != nil {
		walker = r.WalkerFor(topic)
	}
	var arena, valBuf []byte
	var ref []byte // the record's key reference, when its fields are detached envelopes
	open := func(path string, ct []byte) ([]byte, error) {
		start := len(arena)
		var err error
		a := envelope.AAD{Topic: aad, Path: path}
		if ref != nil && path != envelope.PathKey && path != envelope.PathValue {
			arena, err = e.Opener.OpenDetached(ctx, arena, ref, ct, a)
		} else {
			arena, err = e.Opener.Open(ctx, arena, ct, a)
		}
		if err != nil {
			return nil, err
		}
		return arena[start:len(arena):len(arena)], nil
	}
	n := 0
	out, changed, err := e.rw.Rewrite(ar.Buf(), batches, func(rec *records.Record) (bool, error) {
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
				if walker == nil {
					err = errNoFieldRule
				} else if valBuf, err = walker.Open(valBuf[:0], value, open); err == nil {
					value = valBuf
				}
			}
		}
		if err != nil {
			if _, isKMS := rules.Code(err); isKMS && !errors.Is(err, envelope.ErrThrottled) {
				e.Metrics.KMSErrors.WithLabelValues("decrypt").Inc()
			}
			if e.LeaveEncrypted {
				e.Metrics.LeftEncrypted.Inc()
				e.Burst.Error("record left encrypted: it could not be decrypted", "topic", topic, "offset", rec.Offset(), "err", err)
				return false, nil
			}
			e.Metrics.OpenFail.Inc()
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
		if e.LeaveEncrypted && errors.As(err, &be) {
			// A batch Strait cannot read, and the configuration asks for
			// undecryptable records to be delivered as they are: hand the
			// partition on as the broker sent it (still encrypted, if it
			// was); the client reports any corruption itself.
			e.Metrics.LeftEncrypted.Inc()
			e.Burst.Error("fetch batch left encrypted: it could not be read", "topic", topic, "err", err)
			return batches, false, nil
		}
		return nil, false, err
	}
	e.Metrics.Opened.Add(float64(n))
	if changed {
		out = ar.Keep(out)
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
