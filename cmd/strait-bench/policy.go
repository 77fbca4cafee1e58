package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The policy workload (issue 7): consume through a Strait whose policy
// interceptor redacts one JSON field of every record for the consumer's
// principal, against the same consumer direct. Its kfake child serves JSON
// orders instead of opaque values (a second cluster: kfake has one
// synthetic batch per cluster), each padded to about -record-bytes.

// policyRego redacts the Protected field (ssn_id) of the US orders for the
// bench's consumer, which connects without TLS or SASL: the anonymous
// principal. It reads one value field, so decisions are cached by
// (principal, country) and every record is walked once.
const policyRego = `package strait

default decision := {"drop": true}

decision := {"classifications": {"Protected": "redact"}} if {
	input.principal.name == ""
	input.value.country == "usa"
}
`

const policyCatalog = `classifications:
  Protected: {description: "government identifiers"}
topics:
  - topics: [%q]
    fields:
      $.ssn_id: [Protected]
`

// policyConfig writes the policy, the catalog and a Strait config that
// runs the policy interceptor, and returns the config's path.
func policyConfig() (string, func(), error) {
	dir, err := os.MkdirTemp("", "strait-bench-policy-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	rego, cat := filepath.Join(dir, "policy.rego"), filepath.Join(dir, "catalog.yaml")
	cfg := fmt.Sprintf(`interceptors:
  - name: policy
    config:
      policies: [%q]
      catalog: %q
`, rego, cat)
	path := filepath.Join(dir, "strait.yaml")
	for _, f := range []struct{ name, body string }{
		{rego, policyRego}, {cat, fmt.Sprintf(policyCatalog, benchTopic)}, {path, cfg},
	} {
		if err := os.WriteFile(f.name, []byte(f.body), 0o600); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	return path, cleanup, nil
}

// ordersBatch is one uncompressed batch of n JSON orders from the US, each
// value padded with a note to about size bytes.
func ordersBatch(n, size int) []byte {
	var body []byte
	for i := 0; i < n; i++ {
		v := fmt.Sprintf(`{"name":"Person %d","address":"%d Main St","country":"usa","ssn_id":"123-45-%04d","account":"6789%08d","Order_time":"2024-03-01T10:%02d:00Z","itemid":"I-%d","note":"`,
			i, i, i%10000, i, i%60, i)
		v += strings.Repeat("x", max(0, size-len(v)-2)) + `"}`
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	b := kmsg.RecordBatch{Magic: 2, LastOffsetDelta: int32(n - 1), FirstTimestamp: 1, MaxTimestamp: 1,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(n), Records: body}
	b.Length = int32(49 + len(body))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}
