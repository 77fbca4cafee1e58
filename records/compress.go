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

type zstdDecoder struct {
	inner *zstd.Decoder
	src   bytes.Reader
}

var (
	gzipDecoders = sync.Pool{New: func() any { return new(gzipDecoder) }}
	lz4Decoders  = sync.Pool{New: func() any { return &lz4Decoder{inner: lz4.NewReader(nil)} }}
	// zstd decoders bound their output with WithDecoderMaxMemory and their
	// window with WithDecoderMaxWindow, so there is one pool per limit (in
	// practice one).
	zstdDecoderPools sync.Map // int -> *sync.Pool
)

// maxZstdWindow bounds the window a zstd frame may declare (a streaming
// decoder allocates its window up front, whatever the frame holds): 8 MiB
// is the window of zstd level 19, the highest level outside the "ultra"
// range, and far above what Kafka clients use (kgo: 64 KiB; the Java client
// and librdkafka at their default levels: at most 2 MiB). A batch whose
// frame declares more is refused as too large.
const maxZstdWindow = 8 << 20

// maxSnappyRatio bounds the output of snappy-compressed bytes: the densest
// snappy element is a 3-byte copy of 64 bytes (21.3x), so a block that
// declares more than 22 bytes out per byte in cannot be honest and is
// refused before its declared size is allocated.
const maxSnappyRatio = 22

func zstdDecoders(limit int) *sync.Pool {
	if p, ok := zstdDecoderPools.Load(limit); ok {
		return p.(*sync.Pool)
	}
	p := &sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil,
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(uint64(limit)),
			zstd.WithDecoderMaxWindow(uint64(max(min(limit, maxZstdWindow), zstd.MinWindowSize))),
		)
		r := &zstdDecoder{inner: d}
		runtime.SetFinalizer(r, func(r *zstdDecoder) { r.inner.Close() })
		return r
	}}
	actual, _ := zstdDecoderPools.LoadOrStore(limit, p)
	return actual.(*sync.Pool)
}

// decompress appends the decompressed form of src to dst (usually a pooled
// slice of length 0), refusing output larger than limit bytes. Every codec
// is read as a stream into dst, which grows as output arrives: no size a
// frame declares (zstd's frame content size, snappy's decoded length) is
// allocated on trust. (Snappy's block format cannot stream; its declared
// length is allocated only when the input could produce it.)
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
		// Not DecodeAll: it allocates the frame content size a frame
		// declares (up to the limit) before decoding a byte. The stream
		// decoder is fed a bytes.Reader, which zstd does not turn back into
		// a DecodeAll (it does that only for readers with a Bytes method).
		pool := zstdDecoders(limit)
		d := pool.Get().(*zstdDecoder)
		defer pool.Put(d)
		d.src.Reset(src)
		if err := d.inner.Reset(&d.src); err != nil {
			return dst, err
		}
		out, err := readAllLimit(dst, d.inner, limit)
		d.src.Reset(nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return dst, fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return out, err
	default:
		return dst, fmt.Errorf("%w: codec %d", ErrUnknownCodec, codec)
	}
}

// readAllLimit reads r to EOF, appending to dst, and fails once more than
// limit bytes have been produced. dst grows with the output (doubling, from
// 4 KiB), never past limit+1 bytes of output: enough to see the overflow.
func readAllLimit(dst []byte, r io.Reader, limit int) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			room := limit + 1 - (len(dst) - start) // >= 1: checked below
			dst = slices.Grow(dst, min(max(4096, cap(dst)), room))
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
	l, err := snappyDecodedLen(src, limit)
	if err != nil {
		return dst, err
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
		size, ok := bounded(int64(int32(binary.BigEndian.Uint32(rem))), len(rem)-4)
		rem = rem[4:]
		if !ok {
			return dst, errMalformedXerial
		}
		l, err := snappyDecodedLen(rem[:size], limit)
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

// snappyDecodedLen is the decoded length a raw snappy block declares,
// refused (ErrTooLarge) above limit and (corrupt) above what the block's
// bytes could produce.
func snappyDecodedLen(block []byte, limit int) (int, error) {
	l, err := s2.DecodedLen(block)
	if err != nil {
		return 0, err
	}
	if l > limit {
		return 0, ErrTooLarge
	}
	if _, ok := bounded(int64(l), maxSnappyRatio*len(block)); !ok {
		return 0, fmt.Errorf("snappy block of %d bytes declares %d bytes decoded", len(block), l)
	}
	return l, nil
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
