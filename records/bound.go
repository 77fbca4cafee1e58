package records

// Every length and count this package reads from a batch (record lengths,
// record counts, snappy decoded lengths, xerial block sizes) goes through
// bounded before anything is sized by it: the wire says how much to expect,
// never how much to allocate.

// minRecordLen is the smallest encoded record: a length varint, attributes,
// timestamp delta, offset delta, key length, value length and header count,
// one byte each.
const minRecordLen = 7

// bounded converts v, a length or count read from the input, to an int if
// it lies in [0, limit], so that a hostile value can neither go negative
// nor reserve more than the input can fill.
func bounded(v int64, limit int) (int, bool) {
	if v < 0 || v > int64(limit) {
		return 0, false
	}
	return int(v), true
}

// maxRecords is the most records n bytes of (decompressed) records can hold.
func maxRecords(n int) int { return n / minRecordLen }
