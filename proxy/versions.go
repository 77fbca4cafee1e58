package proxy

import (
	"github.com/twmb/franz-go/pkg/kmsg"
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

// clamp computes the advertised ApiVersions from the broker's answer: the
// intersection of the broker's range and kmsg's, minus the APIs Strait must
// not forward. It returns the filtered keys and a table that accepts exactly
// them.
// caps (by API key) lower the advertised maximum further (limits.max_versions).
func (vt *versionTable) clamp(broker []kmsg.ApiVersionsResponseApiKey, caps map[int16]int16) ([]kmsg.ApiVersionsResponseApiKey, *versionTable) {
	out := *vt
	for k := range out.max {
		out.min[k], out.max[k] = 0, -1
	}
	var keys []kmsg.ApiVersionsResponseApiKey
	for _, b := range broker {
		k := b.ApiKey
		if k < 0 || k >= numKeys || vt.kmsgMax[k] < 0 {
			continue
		}
		if _, drop := neverForward[k]; drop {
			continue
		}
		lo, hi := b.MinVersion, min(b.MaxVersion, vt.kmsgMax[k])
		if c, ok := caps[k]; ok {
			hi = min(hi, c)
		}
		if k == 17 && lo < 1 {
			// SaslHandshake v0 switches the connection to raw,
			// unframed SASL tokens that a frame-aware proxy cannot
			// follow; v1 wraps them in SaslAuthenticate.
			lo = 1
		}
		if lo > hi {
			continue
		}
		b.MinVersion, b.MaxVersion = lo, hi
		keys = append(keys, b)
		out.min[k], out.max[k] = lo, hi
	}
	// ApiVersions itself is always answered by Strait, at any version kmsg
	// knows, so that clients can negotiate even before the cluster answers.
	out.min[18], out.max[18] = 0, vt.kmsgMax[18]
	return keys, &out
}
