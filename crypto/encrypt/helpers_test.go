package encrypt_test

import "github.com/strait-proxy/strait/crypto/internal/cryptotest"

// The helpers both interceptors' tests share (crypto/internal/cryptotest).
var (
	newKeys        = cryptotest.NewKeys
	batch          = cryptotest.Batch
	bomb           = cryptotest.Bomb
	produceRequest = cryptotest.ProduceRequest
	seal           = cryptotest.Seal
	fetch          = cryptotest.Fetch
	values         = cryptotest.Values
	keyring        = cryptotest.Keyring
	newRig         = cryptotest.NewRig
	client         = cryptotest.Client
	consume        = cryptotest.Consume
	customer       = cryptotest.Customer
)
