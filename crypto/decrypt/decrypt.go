// Package decrypt is Strait's "decrypt" interceptor: on Fetch and
// ShareFetch it opens the records the "encrypt" interceptor (crypto/encrypt)
// sealed, for the topics a rule covers. It fails closed: a record that
// cannot be decrypted is never passed off as plaintext or dropped. Its
// configuration, key stores and rules are package crypto/rules, the same
// YAML as encrypt's. See README.md.
package decrypt

import (
	"errors"
	"math"

	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// Name is the interceptor's name in a config.
const Name = "decrypt"

// errNoFieldRule refuses a record with encrypted fields when the rule for
// its topic names none (rules.Code: INVALID_RECORD).
var errNoFieldRule = errors.New("record has encrypted fields but no field rule covers its topic")

// decrypter is the Fetch side of a rules.Set.
type decrypter struct {
	*rules.Set
	rw records.Rewriter // tolerant of partial batches
}

// New builds the decrypt interceptor (Fetch, ShareFetch).
func New(cfg rules.Config, env rules.Env) (*interceptor.Interceptor, error) {
	set, err := rules.Open(cfg, env)
	if err != nil {
		return nil, err
	}
	e := &decrypter{
		Set: set,
		// Decryption only shrinks records: a rebuilt Fetch batch is never
		// larger than what the broker sent, so max_batch_bytes (a bound on
		// growth) does not apply to it.
		rw: records.Rewriter{MaxDecompressedBytes: cfg.Limits.MaxDecompressedBytes, MaxBatchBytes: math.MaxInt32},
	}
	return &interceptor.Interceptor{
		Name:  Name,
		Files: set.Files,
		Hooks: []interceptor.Hook{
			{Key: 1, MaxVersion: interceptor.Latest, Response: e.openFetch},
			{Key: 78, MaxVersion: interceptor.Latest, Response: e.openShareFetch},
		},
		// Below Fetch v4 a broker down-converts to message sets, which
		// have no headers: strait.enc would vanish and the consumer get
		// envelope bytes with no error. Strait neither advertises nor
		// forwards those versions while decrypt is on.
		Requires: []interceptor.VersionRange{{Key: 1, Min: 4, Max: math.MaxInt16}},
		Close:    set.Close,
	}, nil
}
