package metadata

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/topicid"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz/FuzzRewrite")

// fuzzSeeds are valid encodings of every rewrite case at its lowest and
// highest version.
func fuzzSeeds() []struct {
	name         string
	key, version int16
	data         []byte
} {
	var seeds []struct {
		name         string
		key, version int16
		data         []byte
	}
	for _, tc := range rewriteCases() {
		for _, v := range []int16{tc.lo, tc.hi} {
			seeds = append(seeds, struct {
				name         string
				key, version int16
				data         []byte
			}{fmt.Sprintf("%02d-%s-v%d", tc.key, sanitize(tc.name), v), tc.key, v, encode(tc.build(), v)})
		}
	}
	return seeds
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}

// TestWriteFuzzCorpus writes the seeds in the "go test fuzz v1" format with
// -update-corpus, so the corpus follows kmsg upgrades.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz/FuzzRewrite")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRewrite")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nint16(%d)\nint16(%d)\n[]byte(%q)\n", s.key, s.version, s.data)
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzRewrite decodes arbitrary bytes as the response of key at version and
// runs the metadata hooks on it: they must never panic, the result must
// encode, and a second pass must change nothing (MarkModified only on change).
func FuzzRewrite(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.key, s.version, s.data)
	}
	f.Add(int16(3), int16(0), []byte{})
	f.Add(int16(10), int16(4), []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add(int16(1), int16(16), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0})

	chain, err := interceptor.NewChain(New(&fakeMapper{}, topicid.New()))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, version int16, data []byte) {
		if _, hooked := chain.Hooked(key, version); !hooked {
			return
		}
		resp := kmsg.ResponseForKey(key)
		if resp == nil || version > resp.MaxVersion() {
			return // the proxy never advertises versions kmsg cannot decode
		}
		resp.SetVersion(version)
		if resp.ReadFrom(data) != nil {
			return
		}
		names := topicid.New()
		x, err := runChain(t, &fakeMapper{}, names, key, version, resp)
		if err != nil {
			return // e.g. DescribeCluster controller endpoints: refused, not forwarded
		}
		wire := resp.AppendTo(nil)
		if x.ResponseModified() {
			// Rewriting what is already rewritten changes nothing.
			x2, err := runChain(t, &fakeMapper{}, names, key, version, resp)
			if err != nil {
				t.Fatalf("second pass: %v", err)
			}
			if x2.ResponseModified() {
				t.Fatal("second pass over a rewritten response marked it modified")
			}
		}
		if again := resp.AppendTo(nil); string(again) != string(wire) {
			t.Fatal("encoding is not stable")
		}
	})
}
