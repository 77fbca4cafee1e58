package policy

import (
	"context"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// Share groups (KIP-932): a record the policy drops from a ShareFetch
// response was acquired by the consumer, which never sees it. A client
// that acknowledges nothing for it leaves it locked until the acquisition
// lock expires, then it is redelivered (and dropped again) until the
// delivery count limit archives it. (franz-go acknowledges acquired
// offsets it got no record for as GAP, which archives them.) So Strait
// acknowledges dropped records itself, as ACCEPT: the consumer was not
// allowed to see them, and for it they are done, as a consumer group's
// committed offset moves past them.
//
// Per connection and share session (group, member), the dropped offsets
// that were acquired in a response wait in pending; the connection's next
// ShareFetch or ShareAcknowledge of that session carries them, merged into
// the client's own AcknowledgementBatches for the partition: sorted and
// non-overlapping; an offset the client acknowledges itself keeps the
// client's type, except GAP, which becomes ACCEPT. A share session
// cannot take requests from anyone but its client (each request bumps its
// epoch), so piggybacking is the only way. Offsets Strait acknowledged are
// remembered for a while (sent) and removed from later client batches,
// since a second acknowledgement of a record fails the partition's whole
// acknowledgement. A partition the client's request did not name gets an
// entry for Strait's batches, whose acknowledgement error, if any, is not
// shown to the client. A new session (epoch 0), a closed one (-1, after
// its last request) or a session error forgets the session's offsets:
// they then time out as they would without Strait.

// ackAccept is KIP-932's ACCEPT; ackGap its GAP.
const (
	ackGap    int8 = 0
	ackAccept int8 = 1
)

// maxSentRanges bounds the remembered ranges of one partition.
const maxSentRanges = 64

type offRange struct{ first, last int64 }

type ackBatch struct {
	first, last int64
	types       []int8 // one: uniform; else one per offset
}

func (b ackBatch) typeAt(o int64) int8 {
	if len(b.types) == 1 {
		return b.types[0]
	}
	if i := o - b.first; i >= 0 && i < int64(len(b.types)) {
		return b.types[i]
	}
	return ackAccept
}

type shareKey struct{ group, member string }

type sharePart struct {
	topic     [16]byte
	partition int32
}

// shareAcks is one connection's state.
type shareAcks struct {
	mu      sync.Mutex
	pending map[shareKey]map[sharePart][]offRange
	sent    map[shareKey]map[sharePart][]offRange
}

type shareConnKey struct{}

// shareState returns the connection's state, created on first use. Only
// request hooks create it (they run on one goroutine per connection);
// response hooks find it there.
func shareState(c *interceptor.Conn, create bool) *shareAcks {
	if st, ok := c.Value(shareConnKey{}).(*shareAcks); ok {
		return st
	}
	if !create {
		return nil
	}
	st := &shareAcks{pending: map[shareKey]map[sharePart][]offRange{}, sent: map[shareKey]map[sharePart][]offRange{}}
	c.SetValue(shareConnKey{}, st)
	return st
}

func (s *shareAcks) forget(k shareKey) {
	s.mu.Lock()
	delete(s.pending, k)
	delete(s.sent, k)
	s.mu.Unlock()
}

// add remembers dropped, acquired offsets of a partition.
func (s *shareAcks) add(k shareKey, tp sharePart, rs []offRange) {
	if len(rs) == 0 {
		return
	}
	s.mu.Lock()
	m := s.pending[k]
	if m == nil {
		m = map[sharePart][]offRange{}
		s.pending[k] = m
	}
	m[tp] = normalize(append(m[tp], rs...))
	s.mu.Unlock()
}

// shareX is what a request hook did, for its response hook.
type shareX struct {
	key    shareKey
	epoch  int32
	added  map[sharePart]bool // entries made for Strait's batches alone
	sentTo map[sharePart]bool // partitions Strait acknowledged offsets of
}

func (sx *shareX) sent(tp sharePart) {
	if sx.sentTo == nil {
		sx.sentTo = map[sharePart]bool{}
	}
	sx.sentTo[tp] = true
}

// refused forgets what Strait acknowledged in a partition whose
// acknowledgement the broker refused: the client's own later
// acknowledgements of those offsets are then left alone.
func (s *shareAcks) refused(sx *shareX, tp sharePart) {
	if !sx.sentTo[tp] {
		return
	}
	s.mu.Lock()
	if m := s.sent[sx.key]; m != nil {
		delete(m, tp)
	}
	s.mu.Unlock()
}

type shareXKey struct{}

// piggyback merges the session's pending offsets into a request's
// partitions. parts lists the request's partitions with their batches;
// set writes a partition's new batches; addPart adds a partition entry
// (nil: none may be added). It reports whether the request changed.
func (p *Policy) piggyback(st *shareAcks, sx *shareX, parts map[sharePart][]ackBatch, set func(sharePart, []ackBatch), addPart func(sharePart, []ackBatch) bool) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	pending, sent := st.pending[sx.key], st.sent[sx.key]
	if len(pending) == 0 && len(sent) == 0 {
		return false
	}
	if sent == nil {
		sent = map[sharePart][]offRange{}
		st.sent[sx.key] = sent
	}
	changed := false
	n := 0
	for tp, client := range parts {
		ours := pending[tp]
		out, sentNow, stripped, ch := mergeAcks(client, ours, sent[tp])
		delete(pending, tp)
		if len(stripped) > 0 {
			sent[tp] = subtract(sent[tp], stripped)
		}
		if len(sentNow) > 0 {
			sent[tp] = remember(sent[tp], sentNow)
			n += count(sentNow)
			sx.sent(tp)
		}
		if ch {
			set(tp, out)
			changed = true
		}
	}
	for tp, ours := range pending {
		if len(ours) == 0 || addPart == nil {
			continue
		}
		bs := make([]ackBatch, len(ours))
		for i, r := range ours {
			bs[i] = ackBatch{r.first, r.last, []int8{ackAccept}}
		}
		if !addPart(tp, bs) {
			continue
		}
		if sx.added == nil {
			sx.added = map[sharePart]bool{}
		}
		sx.added[tp] = true
		sx.sent(tp)
		delete(pending, tp)
		sent[tp] = remember(sent[tp], ours)
		n += count(ours)
		changed = true
	}
	if n > 0 {
		p.m.shareAcks.Add(float64(n))
	}
	return changed
}

// mergeAcks merges ours (ACCEPT) into the client's batches and removes
// from them the offsets Strait already acknowledged (strip). It returns
// the batches, the offsets of ours it sent, the offsets of strip it
// removed, and whether anything changed. Offsets of ours that the client
// acknowledges itself keep the client's type, GAP becoming ACCEPT.
func mergeAcks(client []ackBatch, ours, strip []offRange) (out []ackBatch, sentNow, stripped []offRange, changed bool) {
	in := func(rs []offRange, o int64) bool {
		i, found := slices.BinarySearchFunc(rs, o, func(r offRange, o int64) int {
			switch {
			case r.last < o:
				return -1
			case r.first > o:
				return 1
			}
			return 0
		})
		_ = i
		return found
	}
	overlaps := func(rs []offRange, b ackBatch) bool {
		for _, r := range rs {
			if r.first <= b.last && r.last >= b.first {
				return true
			}
		}
		return false
	}
	var covered []offRange
	for _, b := range client {
		covered = append(covered, offRange{b.first, b.last})
		if !overlaps(ours, b) && !overlaps(strip, b) {
			out = append(out, b)
			continue
		}
		changed = true
		// Rewrite b offset by offset, cutting it where offsets are
		// removed.
		var cur *ackBatch
		for o := b.first; o <= b.last; o++ {
			if in(strip, o) {
				stripped = append(stripped, offRange{o, o})
				cur = nil
				continue
			}
			t := b.typeAt(o)
			if t == ackGap && in(ours, o) {
				t = ackAccept
				sentNow = append(sentNow, offRange{o, o})
			}
			if cur == nil {
				out = append(out, ackBatch{first: o, last: o - 1})
				cur = &out[len(out)-1]
			}
			cur.last = o
			cur.types = append(cur.types, t)
		}
	}
	covered = normalize(covered)
	for _, r := range ours {
		for _, g := range subtract([]offRange{r}, covered) {
			out = append(out, ackBatch{g.first, g.last, []int8{ackAccept}})
			sentNow = append(sentNow, g)
			changed = true
		}
	}
	if !changed {
		return client, nil, nil, false
	}
	for i := range out {
		out[i].types = compact(out[i].types)
	}
	slices.SortFunc(out, func(a, b ackBatch) int { return cmpInt64(a.first, b.first) })
	return out, normalize(sentNow), normalize(stripped), true
}

// compact turns per-offset types that are all the same into one.
func compact(ts []int8) []int8 {
	for _, t := range ts[1:] {
		if t != ts[0] {
			return ts
		}
	}
	return ts[:1]
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// normalize sorts ranges and merges overlapping and adjacent ones.
func normalize(rs []offRange) []offRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b offRange) int { return cmpInt64(a.first, b.first) })
	out := rs[:1]
	for _, r := range rs[1:] {
		l := &out[len(out)-1]
		if r.first <= l.last+1 {
			l.last = max(l.last, r.last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtract returns rs minus minus (both normalized).
func subtract(rs, minus []offRange) []offRange {
	var out []offRange
	for _, r := range rs {
		cur := r
		ok := true
		for _, m := range minus {
			if m.last < cur.first || m.first > cur.last {
				continue
			}
			if m.first > cur.first {
				out = append(out, offRange{cur.first, m.first - 1})
			}
			if m.last >= cur.last {
				ok = false
				break
			}
			cur.first = m.last + 1
		}
		if ok {
			out = append(out, cur)
		}
	}
	return out
}

// remember adds rs to the sent ranges, keeping the newest maxSentRanges.
func remember(sent, rs []offRange) []offRange {
	sent = normalize(append(sent, rs...))
	if len(sent) > maxSentRanges {
		sent = append(sent[:0:0], sent[len(sent)-maxSentRanges:]...)
	}
	return sent
}

func count(rs []offRange) int {
	n := 0
	for _, r := range rs {
		n += int(r.last - r.first + 1)
	}
	return n
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// sessionError reports a top-level error that ends the share session.
func sessionError(code int16) bool {
	return code == kerr.ShareSessionNotFound.Code || code == kerr.InvalidShareSessionEpoch.Code ||
		code == kerr.UnknownMemberID.Code || code == kerr.FencedMemberEpoch.Code
}

func (p *Policy) onShareFetchRequest(_ context.Context, x *interceptor.Exchange) error {
	req := x.Request.(*kmsg.ShareFetchRequest)
	sx := &shareX{key: shareKey{deref(req.GroupID), deref(req.MemberID)}, epoch: req.ShareSessionEpoch}
	x.SetValue(shareXKey{}, sx)
	st := shareState(x.Conn, true)
	if req.ShareSessionEpoch == 0 {
		st.forget(sx.key) // a new session: the old one's acquisitions are gone
		return nil
	}
	forgotten := map[sharePart]bool{}
	for _, f := range req.ForgottenTopicsData {
		for _, pt := range f.Partitions {
			forgotten[sharePart{f.TopicID, pt}] = true
		}
	}
	parts := map[sharePart][]ackBatch{}
	for _, t := range req.Topics {
		for _, pt := range t.Partitions {
			parts[sharePart{t.TopicID, pt.Partition}] = fetchBatches(pt.AcknowledgementBatches)
		}
	}
	set := func(tp sharePart, bs []ackBatch) {
		for ti := range req.Topics {
			t := &req.Topics[ti]
			for pi := range t.Partitions {
				if t.TopicID == tp.topic && t.Partitions[pi].Partition == tp.partition {
					t.Partitions[pi].AcknowledgementBatches = toFetchBatches(bs)
				}
			}
		}
	}
	add := func(tp sharePart, bs []ackBatch) bool {
		// A forgotten partition would be added back to the session; v0
		// entries need a byte limit Strait cannot choose.
		if forgotten[tp] || req.Version < 1 {
			return false
		}
		e := kmsg.NewShareFetchRequestTopicPartition()
		e.Partition = tp.partition
		e.AcknowledgementBatches = toFetchBatches(bs)
		for ti := range req.Topics {
			if req.Topics[ti].TopicID == tp.topic {
				req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, e)
				return true
			}
		}
		t := kmsg.NewShareFetchRequestTopic()
		t.TopicID = tp.topic
		t.Partitions = []kmsg.ShareFetchRequestTopicPartition{e}
		req.Topics = append(req.Topics, t)
		return true
	}
	if p.piggyback(st, sx, parts, set, add) {
		x.MarkModified()
	}
	return nil
}

func (p *Policy) onShareAcknowledgeRequest(_ context.Context, x *interceptor.Exchange) error {
	req := x.Request.(*kmsg.ShareAcknowledgeRequest)
	sx := &shareX{key: shareKey{deref(req.GroupID), deref(req.MemberID)}, epoch: req.ShareSessionEpoch}
	x.SetValue(shareXKey{}, sx)
	st := shareState(x.Conn, true)
	if req.ShareSessionEpoch == 0 {
		st.forget(sx.key)
		return nil
	}
	parts := map[sharePart][]ackBatch{}
	for _, t := range req.Topics {
		for _, pt := range t.Partitions {
			parts[sharePart{t.TopicID, pt.Partition}] = ackBatches(pt.AcknowledgementBatches)
		}
	}
	set := func(tp sharePart, bs []ackBatch) {
		for ti := range req.Topics {
			t := &req.Topics[ti]
			for pi := range t.Partitions {
				if t.TopicID == tp.topic && t.Partitions[pi].Partition == tp.partition {
					t.Partitions[pi].AcknowledgementBatches = toAckBatches(bs)
				}
			}
		}
	}
	add := func(tp sharePart, bs []ackBatch) bool {
		e := kmsg.NewShareAcknowledgeRequestTopicPartition()
		e.Partition = tp.partition
		e.AcknowledgementBatches = toAckBatches(bs)
		for ti := range req.Topics {
			if req.Topics[ti].TopicID == tp.topic {
				req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, e)
				return true
			}
		}
		t := kmsg.NewShareAcknowledgeRequestTopic()
		t.TopicID = tp.topic
		t.Partitions = []kmsg.ShareAcknowledgeRequestTopicPartition{e}
		req.Topics = append(req.Topics, t)
		return true
	}
	if p.piggyback(st, sx, parts, set, add) {
		x.MarkModified()
	}
	return nil
}

// onShareAcknowledge hides the partitions Strait added from the client
// and ends the session's state with the session.
func (p *Policy) onShareAcknowledge(_ context.Context, x *interceptor.Exchange) error {
	sx, _ := x.Value(shareXKey{}).(*shareX)
	if sx == nil {
		return nil
	}
	resp := x.Response.(*kmsg.ShareAcknowledgeResponse)
	st := shareState(x.Conn, false)
	if st == nil {
		return nil
	}
	if sx.epoch == -1 || sessionError(resp.ErrorCode) {
		st.forget(sx.key)
	}
	for _, t := range resp.Topics {
		for _, pt := range t.Partitions {
			if pt.ErrorCode != 0 {
				st.refused(sx, sharePart{t.TopicID, pt.Partition})
			}
		}
	}
	if len(sx.added) == 0 {
		return nil
	}
	topics := resp.Topics[:0]
	for _, t := range resp.Topics {
		parts := t.Partitions[:0]
		for _, pt := range t.Partitions {
			if sx.added[sharePart{t.TopicID, pt.Partition}] {
				if pt.ErrorCode != 0 {
					p.m.shareAckErrors.Inc()
				}
				continue
			}
			parts = append(parts, pt)
		}
		t.Partitions = parts
		if len(parts) > 0 {
			topics = append(topics, t)
		}
	}
	resp.Topics = topics
	x.MarkModified()
	return nil
}

// shareFetchDone is the ShareFetch part of the response hook: it hides
// acknowledgement errors of partitions only Strait acknowledged, and
// remembers the offsets dropped from acquired records (drops, by
// partition).
func (p *Policy) shareFetchDone(x *interceptor.Exchange, resp *kmsg.ShareFetchResponse, drops map[sharePart][]offRange) bool {
	sx, _ := x.Value(shareXKey{}).(*shareX)
	if sx == nil {
		return false
	}
	st := shareState(x.Conn, false)
	if st == nil {
		return false
	}
	changed := false
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		for pi := range t.Partitions {
			pt := &t.Partitions[pi]
			if pt.AcknowledgeErrorCode != 0 {
				st.refused(sx, sharePart{t.TopicID, pt.Partition})
			}
			if sx.added[sharePart{t.TopicID, pt.Partition}] && pt.AcknowledgeErrorCode != 0 {
				p.m.shareAckErrors.Inc()
				pt.AcknowledgeErrorCode, pt.AcknowledgeErrorMessage = 0, nil
				changed = true
			}
		}
	}
	if sx.epoch == -1 || sessionError(resp.ErrorCode) {
		st.forget(sx.key)
		return changed
	}
	if resp.ErrorCode != 0 {
		return changed
	}
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		for pi := range t.Partitions {
			pt := &t.Partitions[pi]
			tp := sharePart{t.TopicID, pt.Partition}
			d := drops[tp]
			if len(d) == 0 || pt.ErrorCode != 0 {
				continue
			}
			var acq []offRange
			for _, a := range pt.AcquiredRecords {
				acq = append(acq, offRange{a.FirstOffset, a.LastOffset})
			}
			acq = normalize(acq)
			st.add(sx.key, tp, intersect(normalize(d), acq))
		}
	}
	return changed
}

// intersect returns the offsets in both a and b (normalized).
func intersect(a, b []offRange) []offRange {
	var out []offRange
	for _, x := range a {
		for _, y := range b {
			lo, hi := max(x.first, y.first), min(x.last, y.last)
			if lo <= hi {
				out = append(out, offRange{lo, hi})
			}
		}
	}
	return normalize(out)
}

func fetchBatches(in []kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch) []ackBatch {
	out := make([]ackBatch, len(in))
	for i, b := range in {
		out[i] = ackBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
	}
	return out
}

func toFetchBatches(in []ackBatch) []kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch {
	out := make([]kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch, len(in))
	for i, b := range in {
		out[i] = kmsg.NewShareFetchRequestTopicPartitionAcknowledgementBatch()
		out[i].FirstOffset, out[i].LastOffset, out[i].AcknowledgeTypes = b.first, b.last, b.types
	}
	return out
}

func ackBatches(in []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch) []ackBatch {
	out := make([]ackBatch, len(in))
	for i, b := range in {
		out[i] = ackBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
	}
	return out
}

func toAckBatches(in []ackBatch) []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch {
	out := make([]kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch, len(in))
	for i, b := range in {
		out[i] = kmsg.NewShareAcknowledgeRequestTopicPartitionAcknowledgementBatch()
		out[i].FirstOffset, out[i].LastOffset, out[i].AcknowledgeTypes = b.first, b.last, b.types
	}
	return out
}
