package proxy

import (
	"fmt"
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

const numKeys = 128

// neverForward lists the APIs Strait drops from its ApiVersions answer:
// broker-to-broker and controller APIs, and those that carry endpoints Strait
// does not rewrite (a client must never learn a real address).
var neverForward = map[int16]string{
	4:  "LeaderAndIsr",
	5:  "StopReplica",
	6:  "UpdateMetadata",
	7:  "ControlledShutdown",
	27: "WriteTxnMarkers",
	52: "Vote",
	53: "BeginQuorumEpoch",
	54: "EndQuorumEpoch",
	55: "DescribeQuorum", // carries controller endpoints
	56: "AlterPartition",
	58: "Envelope",
	59: "FetchSnapshot",
	62: "BrokerRegistration",
	63: "BrokerHeartbeat",
	64: "UnregisterBroker",
	67: "AllocateProducerIDs",
	70: "ControllerRegistration",
	73: "AssignReplicasToDirs",
	80: "AddRaftVoter", // carries listener endpoints
	81: "RemoveRaftVoter",
	82: "UpdateRaftVoter",
}

// versionTable is what Strait knows of every API: the versions kmsg can
// decode, which of them are flexible, and (once the cluster answered
// ApiVersions) the range Strait advertises and accepts.
type versionTable struct {
	kmsgMax   [numKeys]int16 // -1: unknown to kmsg
	flexSince [numKeys]int16 // first flexible version; -1: never
	min, max  [numKeys]int16 // accepted range; max -1: not accepted
}

func newVersionTable() *versionTable {
	vt := new(versionTable)
	for k := range int16(numKeys) {
		vt.kmsgMax[k], vt.flexSince[k], vt.max[k] = -1, -1, -1
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		vt.kmsgMax[k] = req.MaxVersion()
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				vt.flexSince[k] = v
				break
			}
		}
	}
	return vt
}

func (vt *versionTable) flexibleRequest(key, version int16) bool {
	if key < 0 || key >= numKeys {
		return false
	}
	f := vt.flexSince[key]
	return f >= 0 && version >= f
}

// accepts reports whether Strait forwards key at version.
func (vt *versionTable) accepts(key, version int16) bool {
	return key >= 0 && key < numKeys && version >= vt.min[key] && version <= vt.max[key]
}

// versionRules are what narrows or widens the advertised versions beyond
// the broker's and kmsg's ranges: limits.max_versions caps, and the
// interceptors' Requires and Answers (interceptor.Interceptor).
type versionRules struct {
	caps     map[int16]int16    // limits.max_versions, by API key
	requires map[int16][2]int16 // intersected into the range
	answers  map[int16][2]int16 // answered by an interceptor: advertised whatever the broker says
}

// rulesFor collects the Requires and Answers of ics. Two interceptors that
// require disjoint ranges of one API leave it unadvertised; that is a
// configuration no client could use, so New refuses it.
func rulesFor(caps map[int16]int16, ics []*interceptor.Interceptor) (versionRules, error) {
	r := versionRules{caps: caps, requires: map[int16][2]int16{}, answers: map[int16][2]int16{}}
	for _, ic := range ics {
		for _, q := range ic.Requires {
			cur, ok := r.requires[q.Key]
			if !ok {
				cur = [2]int16{0, math.MaxInt16}
			}
			cur = [2]int16{max(cur[0], q.Min), min(cur[1], q.Max)}
			if cur[0] > cur[1] {
				return r, fmt.Errorf("interceptor %s: the versions of %s it requires (%d-%d) exclude every version another interceptor requires", ic.Name, kmsg.NameForKey(q.Key), q.Min, q.Max)
			}
			r.requires[q.Key] = cur
		}
		for _, a := range ic.Answers {
			if prev, ok := r.answers[a.Key]; ok {
				return r, fmt.Errorf("interceptor %s: %s is already answered by another interceptor (versions %d-%d)", ic.Name, kmsg.NameForKey(a.Key), prev[0], prev[1])
			}
			r.answers[a.Key] = [2]int16{a.Min, a.Max}
		}
	}
	return r, nil
}

// clamp computes the advertised ApiVersions from the broker's answer: the
// intersection of the broker's range and kmsg's, minus the APIs Strait must
// not forward, narrowed by rules. It returns the filtered keys and a table
// that accepts exactly them.
func (vt *versionTable) clamp(broker []kmsg.ApiVersionsResponseApiKey, rules versionRules) ([]kmsg.ApiVersionsResponseApiKey, *versionTable) {
	out := *vt
	for k := range out.max {
		out.min[k], out.max[k] = 0, -1
	}
	var keys []kmsg.ApiVersionsResponseApiKey
	seen := make(map[int16]bool, len(rules.answers))
	for _, b := range broker {
		k := b.ApiKey
		if k < 0 || k >= numKeys || vt.kmsgMax[k] < 0 {
			continue
		}
		if _, drop := neverForward[k]; drop {
			continue
		}
		lo, hi := b.MinVersion, min(b.MaxVersion, vt.kmsgMax[k])
		if a, ok := rules.answers[k]; ok {
			// Answered locally: the interceptor's range, not the broker's.
			lo, hi = a[0], min(a[1], vt.kmsgMax[k])
			seen[k] = true
		} else if k == keySaslHandshake && lo < 1 {
			// SaslHandshake v0 switches the connection to raw,
			// unframed SASL tokens: only an interceptor that answers
			// the handshake itself (and follows the tokens) offers it.
			lo = 1
		}
		if c, ok := rules.caps[k]; ok {
			hi = min(hi, c)
		}
		if q, ok := rules.requires[k]; ok {
			lo, hi = max(lo, q[0]), min(hi, q[1])
		}
		if lo > hi {
			continue
		}
		b.MinVersion, b.MaxVersion = lo, hi
		keys = append(keys, b)
		out.min[k], out.max[k] = lo, hi
	}
	for k, a := range rules.answers { // answered APIs the broker does not have
		if seen[k] || k < 0 || k >= numKeys || vt.kmsgMax[k] < 0 {
			continue
		}
		lo, hi := a[0], min(a[1], vt.kmsgMax[k])
		if lo > hi {
			continue
		}
		keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: lo, MaxVersion: hi})
		out.min[k], out.max[k] = lo, hi
	}
	slices.SortFunc(keys, func(a, b kmsg.ApiVersionsResponseApiKey) int { return int(a.ApiKey) - int(b.ApiKey) })
	// ApiVersions itself is always answered by Strait, at any version kmsg
	// knows, so that clients can negotiate even before the cluster answers.
	out.min[18], out.max[18] = 0, vt.kmsgMax[18]
	return keys, &out
}
