package decrypt_test

import "github.com/strait-proxy/strait/crypto/internal/cryptotest"

// The helpers both interceptors' tests share (crypto/internal/cryptotest).
var (
	newKeys = cryptotest.NewKeys
	batch   = cryptotest.Batch
	fixCRC  = cryptotest.FixCRC
	bomb    = cryptotest.Bomb
	seal    = cryptotest.Seal
	fetch   = cryptotest.Fetch
	values  = cryptotest.Values
	newRig  = cryptotest.NewRig
	client  = cryptotest.Client
)
