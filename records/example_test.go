package records_test

import (
	"fmt"

	"github.com/strait-proxy/strait/records"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// An interceptor replaces values in a Produce request, partition by
// partition. The rewritten bytes replace the partition's Records; on a
// corrupt batch the partition is answered with CORRUPT_MESSAGE.
func ExampleRewrite() {
	seal := func(v []byte) []byte { return append([]byte("sealed:"), v...) } // stands in for encryption

	req := kmsg.NewPtrProduceRequest()
	// ... req decoded from the client's frame ...
	rw := &records.Rewriter{Strict: true} // Produce: no record may pass unseen
	for ti := range req.Topics {
		for pi := range req.Topics[ti].Partitions {
			p := &req.Topics[ti].Partitions[pi]
			out, changed, err := rw.Rewrite(nil, p.Records, func(r *records.Record) (bool, error) {
				if r.Value == nil { // tombstone: stays null
					return false, nil
				}
				r.Value = seal(r.Value)
				r.AddHeader("strait.enc", []byte("v1"))
				return true, nil
			})
			if err != nil {
				fmt.Println("answer CORRUPT_MESSAGE or a retriable error:", err)
				continue
			}
			if changed {
				p.Records = out
			}
		}
	}
	fmt.Println("ok")
	// Output: ok
}
