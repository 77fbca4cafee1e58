package kmsdouble

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Wire-level checks of the doubles with plain net/http: the shapes the
// official clients rely on (their own tests live with the providers).

func post(t *testing.T, url string, hdr map[string]string, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("non-JSON body %q", b)
		}
	}
	return resp.StatusCode, m, resp.Header
}

func awsHdr(op string) map[string]string {
	return map[string]string{
		"X-Amz-Target":  "TrentService." + op,
		"Content-Type":  "application/x-amz-json-1.1",
		"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
	}
}

func TestAWSWire(t *testing.T) {
	a := NewAWSKMS()
	defer a.Close()
	id, arn := a.CreateKey("alias/x")

	st, m, h := post(t, a.URL()+"/", awsHdr("GenerateDataKey"), `{"KeyId":"alias/x","KeySpec":"AES_256"}`)
	if st != 200 || m["KeyId"] != arn || h.Get("Content-Type") != "application/x-amz-json-1.1" || h.Get("x-amzn-RequestId") == "" {
		t.Fatalf("GenerateDataKey: %d %v %v", st, m, h)
	}
	blob, _ := base64.StdEncoding.DecodeString(m["CiphertextBlob"].(string))
	pt, _ := base64.StdEncoding.DecodeString(m["Plaintext"].(string))
	if len(blob) != 184 || len(pt) != 32 || !bytes.Contains(blob, []byte(id)) {
		t.Fatalf("blob %d bytes, plaintext %d", len(blob), len(pt))
	}
	st, m, _ = post(t, a.URL()+"/", awsHdr("Decrypt"), `{"CiphertextBlob":"`+base64.StdEncoding.EncodeToString(blob)+`"}`)
	if st != 200 || m["Plaintext"] != base64.StdEncoding.EncodeToString(pt) || m["EncryptionAlgorithm"] != "SYMMETRIC_DEFAULT" {
		t.Fatalf("Decrypt without KeyId: %d %v", st, m)
	}

	errCases := []struct {
		name   string
		hdr    func(map[string]string)
		body   string
		status int
		typ    string
	}{
		{"no auth", func(h map[string]string) { delete(h, "Authorization") }, `{}`, 400, "MissingAuthenticationTokenException"},
		{"bad content type", func(h map[string]string) { h["Content-Type"] = "application/json" }, `{}`, 400, "SerializationException"},
		{"unknown op", func(h map[string]string) { h["X-Amz-Target"] = "TrentService.Nope" }, `{}`, 400, "UnknownOperationException"},
		{"not found", nil, `{"KeyId":"alias/nope","KeySpec":"AES_256"}`, 400, "NotFoundException"},
		{"no key spec", nil, `{"KeyId":"alias/x"}`, 400, "ValidationException"},
	}
	for _, c := range errCases {
		h := awsHdr("GenerateDataKey")
		if c.hdr != nil {
			c.hdr(h)
		}
		st, m, _ := post(t, a.URL()+"/", h, c.body)
		if st != c.status || m["__type"] != c.typ {
			t.Fatalf("%s: %d %v", c.name, st, m)
		}
	}
	for f, want := range map[Fault][2]any{FaultDeny: {400, "AccessDeniedException"}, FaultThrottle: {400, "ThrottlingException"}, Fault5xx: {500, "KMSInternalException"}} {
		a.FailNext(f, 1)
		st, m, _ := post(t, a.URL()+"/", awsHdr("GenerateDataKey"), `{"KeyId":"alias/x","KeySpec":"AES_256"}`)
		if st != want[0] || m["__type"] != want[1] {
			t.Fatalf("%v: %d %v", f, st, m)
		}
	}
	a.SetFault(FaultDown)
	if _, err := http.Post(a.URL()+"/", "application/x-amz-json-1.1", nil); err == nil {
		t.Fatal("down double answered")
	}
	a.SetFault(FaultHang)
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, err := c.Post(a.URL()+"/", "application/x-amz-json-1.1", nil); err == nil {
		t.Fatal("hanging double answered")
	}
	a.SetFault(FaultNone)
	if st, _, _ := post(t, a.URL()+"/", awsHdr("DescribeKey"), `{"KeyId":"`+id+`"}`); st != 200 {
		t.Fatal("not back up")
	}
}

func TestVaultWire(t *testing.T) {
	v := NewVault(VaultOptions{})
	defer v.Close()
	tok := map[string]string{"X-Vault-Token": v.RootToken}

	st, m, _ := post(t, v.URL()+"/v1/transit/datakey/plaintext/k", tok, `{"bits":256}`)
	if st != 400 || m["errors"].([]any)[0] != "encryption key not found" {
		t.Fatalf("missing key: %d %v", st, m)
	}
	post(t, v.URL()+"/v1/transit/keys/k", tok, `{}`)
	st, m, _ = post(t, v.URL()+"/v1/transit/datakey/plaintext/k", tok, `{"bits":256}`)
	data := m["data"].(map[string]any)
	if st != 200 || !strings.HasPrefix(data["ciphertext"].(string), "vault:v1:") || data["key_version"].(float64) != 1 {
		t.Fatalf("datakey: %d %v", st, m)
	}
	if st, _, _ := post(t, v.URL()+"/v1/transit/datakey/plaintext/k", nil, `{}`); st != 403 {
		t.Fatalf("no token: %d", st)
	}
	post(t, v.URL()+"/v1/transit/keys/k/rotate", tok, ``)
	_, m, _ = post(t, v.URL()+"/v1/transit/encrypt/k", tok, `{"plaintext":"aGVsbG8="}`)
	ct := m["data"].(map[string]any)["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v2:") {
		t.Fatalf("after rotate: %s", ct)
	}
	st, m, _ = post(t, v.URL()+"/v1/transit/decrypt/k", tok, `{"ciphertext":"`+ct+`"}`)
	if st != 200 || m["data"].(map[string]any)["plaintext"] != "aGVsbG8=" {
		t.Fatalf("decrypt: %d %v", st, m)
	}

	// KV v2 read shape, namespace as header and as path prefix.
	v.CreateNamespace("ns1")
	v.Mount("ns1", "secret", KindKVv2)
	v.PutKV("ns1", "secret", "app/db", map[string]any{"user": "u"})
	for _, c := range []struct{ hdr, path string }{{"ns1", "/v1/secret/data/app/db"}, {"", "/v1/ns1/secret/data/app/db"}} {
		req, _ := http.NewRequest(http.MethodGet, v.URL()+c.path, nil)
		req.Header.Set("X-Vault-Token", v.RootToken)
		if c.hdr != "" {
			req.Header.Set("X-Vault-Namespace", c.hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Data struct {
				Data     map[string]any `json:"data"`
				Metadata map[string]any `json:"metadata"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != 200 || out.Data.Data["user"] != "u" || out.Data.Metadata["version"].(float64) != 1 {
			t.Fatalf("kv read %+v: %d %+v", c, resp.StatusCode, out)
		}
	}

	for f, want := range map[Fault]int{FaultDeny: 403, FaultThrottle: 429, Fault5xx: 503} {
		v.FailNext(f, 1)
		st, m, _ := post(t, v.URL()+"/v1/transit/decrypt/k", tok, `{"ciphertext":"`+ct+`"}`)
		if st != want || len(m["errors"].([]any)) != 1 {
			t.Fatalf("%v: %d %v", f, st, m)
		}
	}
}
