package envelope

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/local"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json and the FuzzOpen seed corpus")

const vectorsPath = "testdata/vectors.json"

type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

type vector struct {
	Name       string `json:"name"`
	Provider   string `json:"provider"`
	KeyID      string `json:"key_id"`
	KEKVersion uint32 `json:"kek_version"`
	KEK        string `json:"kek"`
	WrapNonce  string `json:"wrap_nonce"`
	WrapAAD    string `json:"wrap_aad"`
	DEK        string `json:"dek"`
	WrappedDEK string `json:"wrapped_dek"`
	Topic      string `json:"topic"`
	TopicBound bool   `json:"topic_bound"`
	Path       string `json:"path"`
	Counter    uint64 `json:"counter"`
	Nonce      string `json:"nonce"`
	AAD        string `json:"aad"`
	Plaintext  string `json:"plaintext"`
	PlainUTF8  string `json:"plaintext_utf8"`
	Envelope   string `json:"envelope"`
	// KeyRef, when set, makes Envelope a detached (version 2) envelope
	// whose data key is in this key reference (the strait.key header).
	KeyRef    string `json:"key_ref,omitempty"`
	HeaderKey string `json:"record_header_key,omitempty"`
	HeaderVal string `json:"record_header_value,omitempty"`
}

type vectorSpec struct {
	name       string
	keyID      string
	kekVersion uint32
	kek        []byte
	topic      string
	path       string
	counter    uint64
	plaintext  string
	parts      Parts
	detached   bool
}

// vectorSpecs lists the vectors; KEKs are those of testProvider.
func vectorSpecs() []vectorSpec {
	return []vectorSpec{
		{"whole value, topic bound", "payments", 1, kekBytes(0x40), "payments", PathValue, 0,
			`{"order":"A-1001","amount":"12.50","card":"4111111111111111"}`, PartValue, false},
		{"field $.ssn_id, topic bound", "customers", 1, kekBytes(0x00), "customers", "$.ssn_id", 1,
			`"123-45-6789"`, 0, false},
		{"field $.account, topic not bound (mirror-friendly)", "customers", 1, kekBytes(0x00), "", "$.account", 300,
			`"678900000234"`, 0, false},
		{"record key, KEK version 2, 3-byte counter", "customers", 2, kekBytes(0x20), "customers", PathKey, 1<<20 - 1,
			`customer-42`, PartKey, false},
		{"whole value, empty plaintext", "payments", 1, kekBytes(0x40), "payments", PathValue, 7, ``, PartValue, false},
		{"detached field $.ssn_id, topic bound (key reference in strait.key)", "customers", 1, kekBytes(0x00), "customers", "$.ssn_id", 5,
			`"123-45-6789"`, PartFields, true},
	}
}

// wrapLocal is an independent implementation of the local provider's wrapped
// DEK format (docs/encryption.md), used to build deterministic vectors.
func wrapLocal(kek []byte, keyID string, version uint32, nonce, dek []byte) (wrapped, aad []byte) {
	block, _ := aes.NewCipher(kek)
	aead, _ := cipher.NewGCM(block)
	hdr := binary.AppendUvarint([]byte{0x01}, uint64(version))
	aad = append(bytes.Clone(hdr), keyID...)
	return aead.Seal(append(bytes.Clone(hdr), nonce...), nonce, dek, aad), aad
}

func derive(label string, n int) []byte {
	h := sha256.Sum256([]byte("strait test vector " + label))
	return h[:n]
}

func generateVectors(t *testing.T) vectorFile {
	vf := vectorFile{Comment: "Strait envelope test vectors (format 1, and detached format 2 where key_ref is set); see docs/encryption.md. All binary fields are lowercase hex. Regenerate with: go test ./crypto/envelope -run TestVectors -update"}
	for _, sp := range vectorSpecs() {
		dek := derive("DEK "+sp.name, 32)
		wrapNonce := derive("wrap nonce "+sp.name, 12)
		wrapped, wrapAAD := wrapLocal(sp.kek, sp.keyID, sp.kekVersion, wrapNonce, dek)
		d, err := newDEK(KindLocal, sp.keyID, dek, wrapped, MaxDEKUses)
		if err != nil {
			t.Fatal(err)
		}
		aad := AAD{Topic: sp.topic, Path: sp.path}
		bound := sp.topic != ""
		var env, header, ref []byte
		if sp.detached {
			ref = d.prefix
			if bound {
				ref = d.prefixT
			}
			env = d.sealDetached(nil, sp.counter, ref, aad, bound, []byte(sp.plaintext))
			de, err := ParseDetached(env)
			if err != nil {
				t.Fatal(err)
			}
			header = append(bytes.Clone(ref), de.Header...)
		} else {
			env = d.seal(nil, sp.counter, aad, bound, []byte(sp.plaintext))
			e, err := Parse(env)
			if err != nil {
				t.Fatal(err)
			}
			header = e.Header
		}
		nonce := nonceFor(sp.counter)
		v := vector{
			Name: sp.name, Provider: "local", KeyID: sp.keyID, KEKVersion: sp.kekVersion,
			KEK: hex.EncodeToString(sp.kek), WrapNonce: hex.EncodeToString(wrapNonce), WrapAAD: hex.EncodeToString(wrapAAD),
			DEK: hex.EncodeToString(dek), WrappedDEK: hex.EncodeToString(wrapped),
			Topic: sp.topic, TopicBound: bound, Path: sp.path, Counter: sp.counter,
			Nonce:     hex.EncodeToString(nonce[:]),
			AAD:       hex.EncodeToString(appendContext(bytes.Clone(header), bound, aad)),
			Plaintext: hex.EncodeToString([]byte(sp.plaintext)), PlainUTF8: sp.plaintext,
			Envelope: hex.EncodeToString(env),
		}
		if sp.detached {
			v.KeyRef = hex.EncodeToString(ref)
		}
		if sp.parts != 0 {
			v.HeaderKey, v.HeaderVal = HeaderKey, string(sp.parts.HeaderValue())
		}
		vf.Vectors = append(vf.Vectors, v)
	}
	return vf
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	generated := generateVectors(t)
	want, err := json.MarshalIndent(generated, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(vectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		writeFuzzSeeds(t, generated)
	}
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(raw, want) {
		t.Errorf("%s differs from the generator (run with -update after a deliberate format change)", vectorsPath)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	ctx := context.Background()
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			kek, dek, wrapped := mustHex(t, v.KEK), mustHex(t, v.DEK), mustHex(t, v.WrappedDEK)
			env, pt := mustHex(t, v.Envelope), mustHex(t, v.Plaintext)
			// 1. The local provider unwraps the wrapped DEK with the KEK.
			p, err := local.New(local.KEK{ID: v.KeyID, Current: v.KEKVersion, Versions: map[uint32][]byte{v.KEKVersion: kek}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Decrypt(ctx, v.KeyID, wrapped)
			if err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("unwrap: %v", err)
			}
			aad := AAD{Topic: v.Topic, Path: v.Path}
			o, _ := NewOpener([]kms.Provider{p}, OpenerOptions{})
			d, err := newDEK(KindLocal, v.KeyID, dek, wrapped, MaxDEKUses)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := aes.NewCipher(dek)
			gcm, _ := cipher.NewGCM(block)
			nonce := nonceFor(v.Counter)
			if hex.EncodeToString(nonce[:]) != v.Nonce {
				t.Fatalf("nonce %x, want %s", nonce, v.Nonce)
			}
			if v.KeyRef != "" { // detached: the data key is in the key reference
				ref := mustHex(t, v.KeyRef)
				k, err := ParseKeyRef(ref)
				if err != nil || k.Kind != KindLocal || string(k.KeyID) != v.KeyID || !bytes.Equal(k.Wrapped, wrapped) || k.TopicBound != v.TopicBound {
					t.Fatalf("key reference %+v: %v", k, err)
				}
				de, err := ParseDetached(env)
				if err != nil || de.Counter != v.Counter {
					t.Fatalf("detached %+v: %v", de, err)
				}
				fullAAD := appendContext(append(bytes.Clone(ref), de.Header...), k.TopicBound, aad)
				if hex.EncodeToString(fullAAD) != v.AAD {
					t.Fatalf("aad %x, want %s", fullAAD, v.AAD)
				}
				if raw, err := gcm.Open(nil, nonce[:], de.Ciphertext, fullAAD); err != nil || !bytes.Equal(raw, pt) {
					t.Fatalf("raw GCM open: %v", err)
				}
				if got, err := o.OpenDetached(ctx, nil, ref, env, aad); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("open: %v", err)
				}
				if again := d.sealDetached(nil, v.Counter, ref, aad, v.TopicBound, pt); !bytes.Equal(again, env) {
					t.Fatalf("re-seal:\n got %x\nwant %x", again, env)
				}
			} else {
				// 2. The envelope parses to the vector's fields.
				e, err := Parse(env)
				if err != nil {
					t.Fatal(err)
				}
				if e.Kind != KindLocal || string(e.KeyID) != v.KeyID || !bytes.Equal(e.Wrapped, wrapped) ||
					e.Counter != v.Counter || e.TopicBound != v.TopicBound {
					t.Fatalf("parsed %+v", e)
				}
				if fullAAD := appendContext(bytes.Clone(e.Header), e.TopicBound, aad); hex.EncodeToString(fullAAD) != v.AAD {
					t.Fatalf("aad %x, want %s", fullAAD, v.AAD)
				}
				// 3. Raw AES-256-GCM with the vector's DEK, nonce and AAD opens
				// it (what another implementation would do).
				if raw, err := gcm.Open(nil, nonce[:], e.Ciphertext, mustHex(t, v.AAD)); err != nil || !bytes.Equal(raw, pt) {
					t.Fatalf("raw GCM open: %v", err)
				}
				// 4. The Opener opens it.
				got, err = o.Open(ctx, nil, env, aad)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("open: %v", err)
				}
				// 5. Re-sealing deterministically reproduces the envelope.
				if again := d.seal(nil, v.Counter, aad, v.TopicBound, pt); !bytes.Equal(again, env) {
					t.Fatalf("re-seal:\n got %x\nwant %x", again, env)
				}
			}
			if v.HeaderKey != "" {
				if parts, err := ParseHeaderValue([]byte(v.HeaderVal)); err != nil || v.HeaderKey != HeaderKey ||
					(parts&PartValue != 0) != (v.Path == PathValue) || (parts&PartKey != 0) != (v.Path == PathKey) {
					t.Fatalf("record header %q=%q: %v", v.HeaderKey, v.HeaderVal, err)
				}
			}
		})
	}
}

// writeFuzzSeeds writes the FuzzOpen seed corpus: every vector, plus
// truncated and bit-flipped variants.
func writeFuzzSeeds(t *testing.T, vf vectorFile) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, env []byte, topic, path string) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nstring(%q)\nstring(%q)\n", env, topic, path)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range vf.Vectors {
		env := mustHex(t, v.Envelope)
		write(fmt.Sprintf("vector-%d", i), env, v.Topic, v.Path)
		write(fmt.Sprintf("vector-%d-truncated", i), env[:len(env)/2], v.Topic, v.Path)
		flipped := bytes.Clone(env)
		flipped[len(flipped)-1] ^= 0x01
		write(fmt.Sprintf("vector-%d-flipped", i), flipped, v.Topic, v.Path)
	}
	write("empty", nil, "", "")
	write("long-varints", []byte{0xE1, 0x01, 0x01, 'k', 0xff, 0xff, 0xff, 0xff, 0x0f}, "", "$")
	write("non-minimal-varint", []byte{0xE1, 0x11, 0x01, 'k', 0x80, 0x00}, "t", "$")
}

// TestVectorsPython decrypts the vectors with testdata/decrypt_vectors.py, an
// independent implementation written from docs/encryption.md, when python3
// with the "cryptography" package is available.
func TestVectorsPython(t *testing.T) {
	// Debian's python3 with python3-cryptography (scripts/install-test-deps.sh);
	// any python3 with the package will do locally.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			skipOrFail(t, "no python3")
		}
	}
	if err := exec.Command(py, "-c", "import cryptography").Run(); err != nil {
		skipOrFail(t, py+" has no cryptography package (apt-get install python3-cryptography)")
	}
	out, err := exec.Command(py, filepath.Join("testdata", "decrypt_vectors.py"), vectorsPath).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// skipOrFail skips loudly, or fails under CI=true where every tool must be
// installed.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("required for CI: " + why)
	}
	t.Skip("!!! SKIPPED, NOT TESTED: " + why)
}
