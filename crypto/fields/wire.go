package fields

import (
	"encoding/binary"
)

// ParseWire splits a value in the Confluent Schema Registry wire format:
//
//	byte 0      magic, always 0
//	bytes 1..4  schema id, big-endian int32
//	Protobuf only: the message-index array, a zig-zag varint count followed
//	by that many zig-zag varint indexes; the single byte 0 stands for [0].
//
// The header does not say which schema type follows, so the caller tells:
// with protobuf false (Avro, JSON Schema) msgIndexes is nil and payload starts
// right after the schema id; with protobuf true the message-index array is
// parsed and msgIndexes is never empty ([0] for the shortcut; read-only).
// payload aliases value.
func ParseWire(value []byte, protobuf bool) (schemaID int32, msgIndexes []int, payload []byte, err error) {
	if len(value) < 5 {
		return 0, nil, nil, malformed("wire: %d bytes, need at least 5", len(value))
	}
	if value[0] != 0 {
		return 0, nil, nil, malformed("wire: magic byte %d, want 0", value[0])
	}
	schemaID = int32(binary.BigEndian.Uint32(value[1:5]))
	payload = value[5:]
	if !protobuf {
		return schemaID, nil, payload, nil
	}
	n, k := binary.Varint(payload)
	if k <= 0 {
		return 0, nil, nil, malformed("wire: bad message-index count")
	}
	payload = payload[k:]
	if n == 0 {
		return schemaID, indexZero[:1:1], payload, nil
	}
	// every index takes at least one byte
	if n < 0 || n > int64(len(payload)) || n > 1024 {
		return 0, nil, nil, malformed("wire: bad message-index count %d", n)
	}
	msgIndexes = make([]int, n)
	for i := range msgIndexes {
		v, k := binary.Varint(payload)
		if k <= 0 || v < 0 || v > 1<<30 {
			return 0, nil, nil, malformed("wire: bad message index")
		}
		msgIndexes[i] = int(v)
		payload = payload[k:]
	}
	return schemaID, msgIndexes, payload, nil
}

// indexZero backs the [0] returned for the shortcut (no allocation); callers
// must not modify a returned msgIndexes.
var indexZero = [1]int{0}

// AppendWire is the inverse of ParseWire: it appends the magic byte, the
// schema id and, when msgIndexes is not nil, the Protobuf message-index array
// (using the single 0 byte for [0], as Confluent serializers do). The payload
// itself is not appended.
func AppendWire(dst []byte, schemaID int32, msgIndexes []int) []byte {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(schemaID))
	if msgIndexes == nil {
		return dst
	}
	if len(msgIndexes) == 1 && msgIndexes[0] == 0 {
		return append(dst, 0)
	}
	dst = binary.AppendVarint(dst, int64(len(msgIndexes)))
	for _, i := range msgIndexes {
		dst = binary.AppendVarint(dst, int64(i))
	}
	return dst
}
