package rules

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/records"
)

// ErrUnknownTopic: a topic id that neither the map nor a lookup could name,
// so no rule can be told to cover it or not.
var ErrUnknownTopic = errors.New("topic id unknown")

// Code maps a failure of either interceptor to the Kafka error code the
// client gets, and whether it is a key-store failure (counted and logged as
// such).
//
// KMS unreachable or throttling → KAFKA_STORAGE_ERROR: retriable in every
// client; an idempotent producer retries the same sequence numbers, which is
// correct because nothing was forwarded. Key missing or access denied →
// POLICY_VIOLATION: not retriable, a configuration problem someone must fix.
// Malformed input → CORRUPT_MESSAGE or INVALID_RECORD, not retriable; a batch
// over a limit (records.ErrTooLarge) → INVALID_RECORD; a record too large
// for the topic's max.message.bytes even alone once encrypted
// (records.ErrRecordTooLarge) → MESSAGE_TOO_LARGE, what the broker answers.
// Anything else (a record already carrying strait.enc on Produce, encrypted
// fields no field rule covers on Fetch) → INVALID_RECORD.
func Code(err error) (int16, bool) {
	switch {
	case errors.Is(err, records.ErrRecordTooLarge):
		return kerr.MessageTooLarge.Code, false
	case errors.Is(err, kms.ErrUnavailable):
		return kerr.KafkaStorageError.Code, true
	case errors.Is(err, kms.ErrAccessDenied), errors.Is(err, kms.ErrKeyNotFound):
		return kerr.PolicyViolation.Code, true
	case errors.Is(err, kms.ErrInvalidCiphertext), errors.Is(err, envelope.ErrTampered), errors.Is(err, envelope.ErrBadHeader):
		return kerr.CorruptMessage.Code, false
	case errors.Is(err, ErrUnknownTopic):
		return kerr.UnknownTopicID.Code, false
	case errors.Is(err, records.ErrCorrupt), errors.Is(err, records.ErrUnknownCodec):
		return kerr.CorruptMessage.Code, false
	case errors.Is(err, fields.ErrMalformed):
		return kerr.InvalidRecord.Code, false
	default:
		return kerr.InvalidRecord.Code, false
	}
}
