package decrypt

import "github.com/strait-proxy/strait/interceptor"

// Originals, for the response hooks that run after decrypt (responses run
// last to first, so an interceptor listed before decrypt): the policy
// interceptor's "encrypted" action leaves a field as the broker sent it,
// which on a record decrypt opened means its original ciphertext. So for
// every partition it changes, decrypt leaves on the Exchange the record
// batches as they were before decryption. They alias the broker's
// response: read them during the response hooks, never after the exchange
// is done, never change them.

type originalsKey struct{}

type topicPartition struct {
	topic     string
	partition int32
}

// keepOriginal records a partition's batches before decryption.
func keepOriginal(x *interceptor.Exchange, topic string, partition int32, batches []byte) {
	m, _ := x.Value(originalsKey{}).(map[topicPartition][]byte)
	if m == nil {
		m = map[topicPartition][]byte{}
		x.SetValue(originalsKey{}, m)
	}
	m[topicPartition{topic, partition}] = batches
}

// Original returns the record batches of topic's partition as the broker
// sent them in this exchange's Fetch or ShareFetch response, if decrypt
// changed them (nil otherwise). Read-only, valid during the response hooks.
func Original(x *interceptor.Exchange, topic string, partition int32) []byte {
	m, _ := x.Value(originalsKey{}).(map[topicPartition][]byte)
	return m[topicPartition{topic, partition}]
}
