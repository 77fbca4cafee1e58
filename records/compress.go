package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec numbers, the low three bits of a batch's attributes.
const (
	codecNone   = 0
	codecGzip   = 1
	codecSnappy = 2
	codecLz4    = 3
	codecZstd   = 4
)

// Codec names the compression codec of a record batch from its attributes:
// "none", "gzip", "snappy", "lz4", "zstd", or "unknown(N)" for the reserved
// values 5 to 7.
func Codec(attrs int16) string {
	switch c := attrs & 0x07; c {
	case codecNone:
		return "none"
	case codecGzip:
		return "gzip"
	case codecSnappy:
		return "snappy"
	case codecLz4:
		return "lz4"
	case codecZstd:
		return "zstd"
	default:
		return fmt.Sprintf("unknown(%d)", c)
	}
}

// appendWriter is an io.Writer that appends to a slice, so the stream
// compressors (gzip, lz4) write straight into the output.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Decoders. The gzip and lz4 ones are pooled with the bytes.Reader they read
// from, as kgo does, so a decompress allocates neither.

type gzipDecoder struct {
	inner gzip.Reader
	src   bytes.Reader
}

type lz4Decoder struct {
	inner *lz4.Reader
	src   bytes.Reader
}

type zstdDecoder struct{ inner *zstd.Decoder }

var (
	gzipDecoders = sync.Pool{New: func() any { return new(gzipDecoder) }}
	lz4Decoders  = sync.Pool{New: func() any { return &lz4Decoder{inner: lz4.NewReader(nil)} }}
	// zstd decoders bound their output with WithDecoderMaxMemory, so there
	// is one pool per limit (in practice one).
	zstdDecoderPools sync.Map // int -> *sync.Pool
)

func zstdDecoders(limit int) *sync.Pool {
	if p, ok := zstdDecoderPools.Load(limit); ok {
		return p.(*sync.Pool)
	}
	p := &sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil,
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(uint64(limit)),
		)
		r := &zstdDecoder{d}
		runtime.SetFinalizer(r, func(r *zstdDecoder) { r.inner.Close() })
		return r
	}}
	actual, _ := zstdDecoderPools.LoadOrStore(limit, p)
	return actual.(*sync.Pool)
}

// decompress appends the decompressed form of src to dst (usually a pooled
// slice of length 0), refusing output larger than max bytes.
func decompress(dst, src []byte, codec int16, limit int) ([]byte, error) {
	switch codec {
	case codecNone:
		return append(dst, src...), nil
	case codecGzip:
		d := gzipDecoders.Get().(*gzipDecoder)
		defer gzipDecoders.Put(d)
		d.src.Reset(src)
		if err := d.inner.Reset(&d.src); err != nil {
			return dst, err
		}
		return readAllLimit(dst, &d.inner, limit)
	case codecLz4:
		d := lz4Decoders.Get().(*lz4Decoder)
		defer lz4Decoders.Put(d)
		d.src.Reset(src)
		d.inner.Reset(&d.src)
		return readAllLimit(dst, d.inner, limit)
	case codecSnappy:
		return decompressSnappy(dst, src, limit)
	case codecZstd:
		pool := zstdDecoders(limit)
		d := pool.Get().(*zstdDecoder)
		defer pool.Put(d)
		out, err := d.inner.DecodeAll(src, dst)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return dst, fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return out, err
	default:
		return dst, fmt.Errorf("%w: codec %d", ErrUnknownCodec, codec)
	}
}

// readAllLimit reads r to EOF, appending to dst, and fails once more than
// max bytes have been produced.
func readAllLimit(dst []byte, r io.Reader, limit int) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, max(4096, cap(dst)))
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst)-start > limit {
			return dst, ErrTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// xerialPfx starts a snappy stream in the xerial framing that the Java
// client (snappy-java's SnappyOutputStream) writes; raw snappy (librdkafka,
// and franz-go for plain batches) has no header. Both are valid in a Kafka
// batch, so the decoder accepts both, exactly as kgo's does.
var xerialPfx = []byte{130, 83, 78, 65, 80, 80, 89, 0}

// xerialHeader is the prefix followed by the version and the minimum
// compatible version, both 1: the Java reader rejects a lower version.
var xerialHeader = append(append([]byte{}, xerialPfx...), 0, 0, 0, 1, 0, 0, 0, 1)

// xerialBlockSize is the block size snappy-java writes (and kgo mirrors).
const xerialBlockSize = 32 << 10

var errMalformedXerial = errors.New("malformed xerial snappy framing")

func isXerial(src []byte) bool { return len(src) > 16 && bytes.HasPrefix(src, xerialPfx) }

func decompressSnappy(dst, src []byte, limit int) ([]byte, error) {
	if isXerial(src) {
		return xerialDecode(dst, src, limit)
	}
	l, err := s2.DecodedLen(src)
	if err != nil {
		return dst, err
	}
	if l > limit {
		return dst, ErrTooLarge
	}
	dst = slices.Grow(dst, l)
	if _, err := s2.Decode(dst[len(dst):len(dst)+l], src); err != nil {
		return dst, err
	}
	return dst[:len(dst)+l], nil
}

// xerialDecode mirrors kgo's: after the 16 byte header, a sequence of
// (big-endian uint32 length, raw snappy block).
func xerialDecode(dst, src []byte, limit int) ([]byte, error) {
	src = src[16:]
	var total int64
	for rem := src; len(rem) > 0; {
		if len(rem) < 4 {
			return dst, errMalformedXerial
		}
		size := int32(binary.BigEndian.Uint32(rem))
		rem = rem[4:]
		if size < 0 || len(rem) < int(size) {
			return dst, errMalformedXerial
		}
		l, err := s2.DecodedLen(rem[:size])
		if err != nil {
			return dst, err
		}
		total += int64(l)
		if total > int64(limit) {
			return dst, ErrTooLarge
		}
		rem = rem[size:]
	}
	dst = slices.Grow(dst, int(total))
	for len(src) > 0 {
		size := int(binary.BigEndian.Uint32(src))
		src = src[4:]
		l, _ := s2.DecodedLen(src[:size])
		if _, err := s2.Decode(dst[len(dst):len(dst)+l], src[:size]); err != nil {
			return dst, err
		}
		dst = dst[:len(dst)+l]
		src = src[size:]
	}
	return dst, nil
}

// Encoders, with kgo's settings: gzip at the default level, lz4 frames at the
// fastest level, zstd at the default level with a 64 KiB window.

type gzipEncoder struct {
	inner *gzip.Writer
	w     appendWriter
}

type lz4Encoder struct {
	inner *lz4.Writer
	w     appendWriter
}

type zstdEncoder struct{ inner *zstd.Encoder }

var (
	gzipEncoders = sync.Pool{New: func() any {
		e := new(gzipEncoder)
		e.inner, _ = gzip.NewWriterLevel(&e.w, gzip.DefaultCompression)
		return e
	}}
	lz4Encoders = sync.Pool{New: func() any {
		e := new(lz4Encoder)
		e.inner = lz4.NewWriter(&e.w)
		return e
	}}
	zstdEncoders = sync.Pool{New: func() any {
		enc, _ := zstd.NewWriter(nil,
			zstd.WithWindowSize(64<<10),
			zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true),
		)
		r := &zstdEncoder{enc}
		runtime.SetFinalizer(r, func(r *zstdEncoder) { r.inner.Close() })
		return r
	}}
)

// compress appends src compressed with codec to dst. For snappy, xerial
// selects the xerial framing (used when the input batch had it), otherwise
// a raw snappy block is written.
func compress(dst, src []byte, codec int16, xerial bool) ([]byte, error) {
	switch codec {
	case codecNone:
		return append(dst, src...), nil
	case codecGzip:
		e := gzipEncoders.Get().(*gzipEncoder)
		defer gzipEncoders.Put(e)
		e.w.b = dst
		e.inner.Reset(&e.w)
		_, err := e.inner.Write(src)
		if err == nil {
			err = e.inner.Close()
		}
		out := e.w.b
		e.w.b = nil
		return out, err
	case codecLz4:
		e := lz4Encoders.Get().(*lz4Encoder)
		defer lz4Encoders.Put(e)
		e.w.b = dst
		e.inner.Reset(&e.w)
		_, err := e.inner.Write(src)
		if err == nil {
			err = e.inner.Close()
		}
		out := e.w.b
		e.w.b = nil
		return out, err
	case codecSnappy:
		if xerial {
			dst = append(dst, xerialHeader...)
			return appendXerialBlocks(dst, src, xerialBlockSize), nil
		}
		return appendSnappy(dst, src), nil
	case codecZstd:
		e := zstdEncoders.Get().(*zstdEncoder)
		defer zstdEncoders.Put(e)
		return e.inner.EncodeAll(src, dst), nil
	default:
		return dst, fmt.Errorf("%w: codec %d", ErrUnknownCodec, codec)
	}
}

// appendSnappy appends one raw snappy block; s2 encodes in place when
// given the room.
func appendSnappy(dst, src []byte) []byte {
	dst = slices.Grow(dst, s2.MaxEncodedLen(len(src)))
	at := len(dst)
	block := s2.EncodeSnappy(dst[at:cap(dst)], src)
	return dst[:at+len(block)]
}

// appendXerialBlocks appends in as xerial framed blocks of at most
// chunkSize bytes: a big endian length, then a raw snappy block.
func appendXerialBlocks(dst, in []byte, chunkSize int) []byte {
	for len(in) > 0 {
		n := min(chunkSize, len(in))
		dst = slices.Grow(dst, 4+s2.MaxEncodedLen(n))
		at := len(dst)
		block := s2.EncodeSnappy(dst[at+4:cap(dst)], in[:n])
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(block)))
		dst = dst[:at+4+len(block)]
		in = in[n:]
	}
	return dst
}
