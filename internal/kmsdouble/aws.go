package kmsdouble

// AWSKMS is a TEST DOUBLE of the AWS KMS JSON 1.1 wire API (see the AWS KMS
// API Reference, "Common Parameters", "Common Errors" and the operation
// pages), not AWS KMS. It speaks HTTP POST / with
//
//	X-Amz-Target: TrentService.<Operation>
//	Content-Type: application/x-amz-json-1.1
//
// bodies as documented (blobs base64 in JSON, KeyId answered as the key ARN)
// and AWS-shaped errors: HTTP 400/500 with
// {"__type":"NotFoundException","message":"..."}.
//
// Implemented operations: CreateKey, CreateAlias, DescribeKey, EnableKey,
// DisableKey, RotateKeyOnDemand, GenerateDataKey, Encrypt, Decrypt.
//
// Not implemented: SigV4 verification (the Authorization header must be
// present and name a credential, and access keys can be restricted with
// AllowAccessKeys, but the signature is not checked), key policies, grants,
// multi-region keys, asymmetric keys.
//
// CiphertextBlob format of this double (the real one is opaque and
// undocumented; for a 32-byte data key it is 184 bytes):
//
//	0x01 0x02 0x02 0x00     format marker
//	36 bytes                key id (UUID, ASCII)
//	32 bytes                backing key (key material) id
//	52 bytes                zero padding, so that blobs have the size of
//	                        the real service's (184 bytes for 32 bytes)
//	12 bytes                AES-GCM nonce
//	len(plaintext)+16       AES-256-GCM ciphertext and tag
//
// The AES-GCM additional data is the first 124 bytes plus the canonical
// encryption context, so moving a blob to another key, another key material
// or another context fails with InvalidCiphertextException, as on AWS.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// AWSKMS is the AWS KMS test double. Create it with NewAWSKMS.
type AWSKMS struct {
	server
	Region  string
	Account string

	mu         sync.Mutex
	keys       map[string]*awsKey // key id → key
	aliases    map[string]string  // "alias/name" → key id
	allowedAKs map[string]bool
}

type awsKey struct {
	id, arn   string
	state     string // Enabled, Disabled, PendingDeletion
	created   time.Time
	materials []awsMaterial // oldest first; last is current
}

type awsMaterial struct {
	id  [32]byte
	key []byte
}

var awsBlobMagic = []byte{0x01, 0x02, 0x02, 0x00}

const awsBlobHeader = 4 + 36 + 32 + 52

// NewAWSKMS starts an AWS KMS double on 127.0.0.1 (plain HTTP) in region
// us-east-1, account 111122223333.
func NewAWSKMS() *AWSKMS {
	a := &AWSKMS{
		Region:  "us-east-1",
		Account: "111122223333",
		keys:    map[string]*awsKey{},
		aliases: map[string]string{},
	}
	a.handler = http.HandlerFunc(a.handle)
	if err := a.start(nil); err != nil {
		panic(err)
	}
	return a
}

// AllowAccessKeys restricts the access key ids the double accepts; others get
// 400 UnrecognizedClientException. With no call, any access key is accepted.
func (a *AWSKMS) AllowAccessKeys(ids ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.allowedAKs = map[string]bool{}
	for _, id := range ids {
		a.allowedAKs[id] = true
	}
}

// CreateKey creates a symmetric key (and alias, if not empty, e.g.
// "alias/strait") and returns its key id and ARN.
func (a *AWSKMS) CreateKey(alias string) (keyID, arn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := a.newKeyLocked()
	if alias != "" {
		a.aliases[alias] = k.id
	}
	return k.id, k.arn
}

// RotateKey gives the key new key material (as RotateKeyOnDemand does);
// blobs made with older material keep decrypting.
func (a *AWSKMS) RotateKey(keyID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, _, _ := a.lookupLocked(keyID)
	if k == nil {
		return errNotFound
	}
	k.materials = append(k.materials, newAWSMaterial())
	return nil
}

// SetKeyState sets "Enabled", "Disabled" or "PendingDeletion".
func (a *AWSKMS) SetKeyState(keyID, state string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, _, _ := a.lookupLocked(keyID)
	if k == nil {
		return errNotFound
	}
	k.state = state
	return nil
}

func newAWSMaterial() awsMaterial {
	var m awsMaterial
	m.key = make([]byte, 32)
	_, _ = rand.Read(m.key)
	_, _ = rand.Read(m.id[:])
	return m
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (a *AWSKMS) newKeyLocked() *awsKey {
	id := newUUID()
	k := &awsKey{
		id:        id,
		arn:       fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", a.Region, a.Account, id),
		state:     "Enabled",
		created:   time.Now(),
		materials: []awsMaterial{newAWSMaterial()},
	}
	a.keys[id] = k
	return k
}

var (
	reKeyARN   = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/(.+)$`)
	reAliasARN = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$`)
)

// lookupLocked resolves a KeyId in any documented form: key id, key ARN,
// alias name, alias ARN. It returns the key or the "not found" message AWS
// gives, or an ARN-format problem.
func (a *AWSKMS) lookupLocked(keyID string) (*awsKey, string, string) {
	id := keyID
	if m := reKeyARN.FindStringSubmatch(keyID); m != nil {
		if m[1] != a.Region || m[2] != a.Account {
			return nil, fmt.Sprintf("Key '%s' does not exist", keyID), ""
		}
		id = m[3]
	} else if m := reAliasARN.FindStringSubmatch(keyID); m != nil {
		if m[1] != a.Region || m[2] != a.Account {
			return nil, fmt.Sprintf("Alias '%s' is not found.", keyID), ""
		}
		id = m[3]
	} else if strings.HasPrefix(keyID, "arn:") {
		return nil, "", fmt.Sprintf("Invalid arn %s", keyID)
	}
	if strings.HasPrefix(id, "alias/") {
		kid, ok := a.aliases[id]
		if !ok {
			return nil, fmt.Sprintf("Alias 'arn:aws:kms:%s:%s:%s' is not found.", a.Region, a.Account, id), ""
		}
		id = kid
	}
	k := a.keys[id]
	if k == nil {
		return nil, fmt.Sprintf("Key 'arn:aws:kms:%s:%s:key/%s' does not exist", a.Region, a.Account, id), ""
	}
	return k, "", ""
}

type awsError struct {
	status int
	typ    string
	msg    string
}

func (a *AWSKMS) writeErr(w http.ResponseWriter, e awsError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", newUUID())
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]string{"__type": e.typ, "message": e.msg})
	_, _ = w.Write(b)
}

func (a *AWSKMS) handle(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op := strings.TrimPrefix(target, "TrentService.")
	a.count(op)
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	f, release := a.currentFault()
	switch f {
	case FaultDeny:
		a.writeErr(w, awsError{400, "AccessDeniedException", fmt.Sprintf("User: arn:aws:iam::%s:user/strait is not authorized to perform: kms:%s on this resource because no identity-based policy allows the kms:%s action", a.Account, op, op)})
		return
	case FaultThrottle:
		a.writeErr(w, awsError{400, "ThrottlingException", "Rate exceeded"})
		return
	case Fault5xx:
		a.writeErr(w, awsError{500, "KMSInternalException", "An internal error occurred."})
		return
	case FaultHang:
		hang(r, release)
		panic(http.ErrAbortHandler)
	}

	if r.Method != http.MethodPost || r.URL.Path != "/" {
		a.writeErr(w, awsError{404, "UnknownOperationException", ""})
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		a.writeErr(w, awsError{400, "MissingAuthenticationTokenException", "Missing Authentication Token"})
		return
	}
	ak := ""
	if i := strings.Index(auth, "Credential="); i >= 0 {
		ak = auth[i+len("Credential="):]
		if j := strings.IndexByte(ak, '/'); j >= 0 {
			ak = ak[:j]
		}
	}
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") || ak == "" {
		a.writeErr(w, awsError{400, "IncompleteSignatureException", "Authorization header requires 'Credential' parameter."})
		return
	}
	a.mu.Lock()
	allowed := a.allowedAKs == nil || a.allowedAKs[ak]
	a.mu.Unlock()
	if !allowed {
		a.writeErr(w, awsError{400, "com.amazon.coral.service#UnrecognizedClientException", "The security token included in the request is invalid."})
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-amz-json-1.1") {
		a.writeErr(w, awsError{400, "SerializationException", "Content-Type must be application/x-amz-json-1.1"})
		return
	}
	if !strings.HasPrefix(target, "TrentService.") {
		a.writeErr(w, awsError{400, "UnknownOperationException", ""})
		return
	}

	var req map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, &req); err != nil {
		a.writeErr(w, awsError{400, "SerializationException", "Start of structure or map found where not expected."})
		return
	}
	var resp any
	var aerr *awsError
	a.mu.Lock()
	switch op {
	case "CreateKey":
		resp, aerr = a.opCreateKey(req)
	case "CreateAlias":
		resp, aerr = a.opCreateAlias(req)
	case "DescribeKey":
		resp, aerr = a.opDescribeKey(req)
	case "EnableKey", "DisableKey":
		resp, aerr = a.opSetEnabled(req, op == "EnableKey")
	case "RotateKeyOnDemand":
		resp, aerr = a.opRotate(req)
	case "GenerateDataKey":
		resp, aerr = a.opGenerateDataKey(req)
	case "Encrypt":
		resp, aerr = a.opEncrypt(req)
	case "Decrypt":
		resp, aerr = a.opDecrypt(req)
	default:
		aerr = &awsError{400, "UnknownOperationException", ""}
	}
	a.mu.Unlock()
	if aerr != nil {
		a.writeErr(w, *aerr)
		return
	}
	out, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", newUUID())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func strField(req map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := req[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func blobField(req map[string]json.RawMessage, name string) ([]byte, bool) {
	raw, ok := req[name]
	if !ok {
		return nil, false
	}
	var b []byte // encoding/json decodes base64 into []byte
	if json.Unmarshal(raw, &b) != nil {
		return nil, false
	}
	return b, true
}

func validation(msg string) *awsError { return &awsError{400, "ValidationException", msg} }

// usableKeyLocked resolves KeyId and checks the key state.
func (a *AWSKMS) usableKeyLocked(req map[string]json.RawMessage) (*awsKey, *awsError) {
	keyID, ok := strField(req, "KeyId")
	if !ok || keyID == "" {
		return nil, validation("1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
	}
	k, nf, bad := a.lookupLocked(keyID)
	if bad != "" {
		return nil, &awsError{400, "InvalidArnException", bad}
	}
	if k == nil {
		return nil, &awsError{400, "NotFoundException", nf}
	}
	switch k.state {
	case "Disabled":
		return nil, &awsError{400, "DisabledException", k.arn + " is disabled."}
	case "PendingDeletion":
		return nil, &awsError{400, "KMSInvalidStateException", k.arn + " is pending deletion."}
	}
	return k, nil
}

func (k *awsKey) metadata(a *AWSKMS) map[string]any {
	return map[string]any{
		"AWSAccountId":          a.Account,
		"Arn":                   k.arn,
		"CreationDate":          float64(k.created.Unix()),
		"CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
		"Description":           "",
		"Enabled":               k.state == "Enabled",
		"EncryptionAlgorithms":  []string{"SYMMETRIC_DEFAULT"},
		"KeyId":                 k.id,
		"KeyManager":            "CUSTOMER",
		"KeySpec":               "SYMMETRIC_DEFAULT",
		"KeyState":              k.state,
		"KeyUsage":              "ENCRYPT_DECRYPT",
		"MultiRegion":           false,
		"Origin":                "AWS_KMS",
	}
}

func (a *AWSKMS) opCreateKey(req map[string]json.RawMessage) (any, *awsError) {
	if s, ok := strField(req, "KeySpec"); ok && s != "SYMMETRIC_DEFAULT" {
		return nil, validation("this double only creates SYMMETRIC_DEFAULT keys")
	}
	k := a.newKeyLocked()
	return map[string]any{"KeyMetadata": k.metadata(a)}, nil
}

func (a *AWSKMS) opCreateAlias(req map[string]json.RawMessage) (any, *awsError) {
	name, _ := strField(req, "AliasName")
	if !strings.HasPrefix(name, "alias/") || strings.HasPrefix(name, "alias/aws/") {
		return nil, validation("Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html")
	}
	if _, dup := a.aliases[name]; dup {
		return nil, &awsError{400, "AlreadyExistsException", fmt.Sprintf("An alias with the name arn:aws:kms:%s:%s:%s already exists", a.Region, a.Account, name)}
	}
	target, _ := strField(req, "TargetKeyId")
	k, nf, bad := a.lookupLocked(target)
	if bad != "" {
		return nil, &awsError{400, "InvalidArnException", bad}
	}
	if k == nil {
		return nil, &awsError{400, "NotFoundException", nf}
	}
	a.aliases[name] = k.id
	return struct{}{}, nil
}

func (a *AWSKMS) opDescribeKey(req map[string]json.RawMessage) (any, *awsError) {
	keyID, _ := strField(req, "KeyId")
	k, nf, bad := a.lookupLocked(keyID)
	if bad != "" {
		return nil, &awsError{400, "InvalidArnException", bad}
	}
	if k == nil {
		return nil, &awsError{400, "NotFoundException", nf}
	}
	return map[string]any{"KeyMetadata": k.metadata(a)}, nil
}

func (a *AWSKMS) opSetEnabled(req map[string]json.RawMessage, enable bool) (any, *awsError) {
	keyID, _ := strField(req, "KeyId")
	k, nf, bad := a.lookupLocked(keyID)
	if bad != "" {
		return nil, &awsError{400, "InvalidArnException", bad}
	}
	if k == nil {
		return nil, &awsError{400, "NotFoundException", nf}
	}
	if k.state == "PendingDeletion" {
		return nil, &awsError{400, "KMSInvalidStateException", k.arn + " is pending deletion."}
	}
	if enable {
		k.state = "Enabled"
	} else {
		k.state = "Disabled"
	}
	return struct{}{}, nil
}

func (a *AWSKMS) opRotate(req map[string]json.RawMessage) (any, *awsError) {
	k, err := a.usableKeyLocked(req)
	if err != nil {
		return nil, err
	}
	k.materials = append(k.materials, newAWSMaterial())
	return map[string]any{"KeyId": k.arn}, nil
}

func encContext(req map[string]json.RawMessage) ([]byte, *awsError) {
	raw, ok := req["EncryptionContext"]
	if !ok {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, &awsError{400, "SerializationException", "EncryptionContext must be a map of strings"}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%d:%s%d:%s", len(k), k, len(m[k]), m[k])
	}
	return b.Bytes(), nil
}

func (a *AWSKMS) seal(k *awsKey, plaintext, ctx []byte) []byte {
	m := k.materials[len(k.materials)-1]
	blob := make([]byte, 0, awsBlobHeader+12+len(plaintext)+16)
	blob = append(blob, awsBlobMagic...)
	blob = append(blob, k.id...)
	blob = append(blob, m.id[:]...)
	blob = append(blob, make([]byte, 52)...)
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	aad := append(append([]byte{}, blob...), ctx...)
	blk, _ := aes.NewCipher(m.key)
	g, _ := cipher.NewGCM(blk)
	blob = append(blob, nonce...)
	return g.Seal(blob, nonce, plaintext, aad)
}

func (a *AWSKMS) opGenerateDataKey(req map[string]json.RawMessage) (any, *awsError) {
	k, aerr := a.usableKeyLocked(req)
	if aerr != nil {
		return nil, aerr
	}
	n := 0
	spec, hasSpec := strField(req, "KeySpec")
	var nb int
	if raw, ok := req["NumberOfBytes"]; ok {
		if json.Unmarshal(raw, &nb) != nil || nb < 1 || nb > 1024 {
			return nil, validation("1 validation error detected: Value at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024")
		}
	}
	switch {
	case hasSpec && nb != 0:
		return nil, validation("Please specify either number of bytes or key spec.")
	case hasSpec && spec == "AES_256":
		n = 32
	case hasSpec && spec == "AES_128":
		n = 16
	case hasSpec:
		return nil, validation("1 validation error detected: Value '" + spec + "' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]")
	case nb != 0:
		n = nb
	default:
		return nil, validation("Please specify either number of bytes or key spec.")
	}
	ctx, aerr := encContext(req)
	if aerr != nil {
		return nil, aerr
	}
	pt := make([]byte, n)
	_, _ = rand.Read(pt)
	blob := a.seal(k, pt, ctx)
	return map[string]any{
		"CiphertextBlob": blob,
		"KeyId":          k.arn,
		"KeyMaterialId":  hex.EncodeToString(k.materials[len(k.materials)-1].id[:]),
		"Plaintext":      pt,
	}, nil
}

func (a *AWSKMS) opEncrypt(req map[string]json.RawMessage) (any, *awsError) {
	k, aerr := a.usableKeyLocked(req)
	if aerr != nil {
		return nil, aerr
	}
	pt, ok := blobField(req, "Plaintext")
	if !ok || len(pt) == 0 || len(pt) > 4096 {
		return nil, validation("1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length between 1 and 4096")
	}
	ctx, aerr := encContext(req)
	if aerr != nil {
		return nil, aerr
	}
	return map[string]any{
		"CiphertextBlob":      a.seal(k, pt, ctx),
		"KeyId":               k.arn,
		"EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
	}, nil
}

func (a *AWSKMS) opDecrypt(req map[string]json.RawMessage) (any, *awsError) {
	blob, ok := blobField(req, "CiphertextBlob")
	if !ok || len(blob) == 0 || len(blob) > 6144 {
		return nil, validation("1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length between 1 and 6144")
	}
	if alg, ok := strField(req, "EncryptionAlgorithm"); ok && alg != "SYMMETRIC_DEFAULT" {
		return nil, &awsError{400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation."}
	}
	invalid := &awsError{400, "InvalidCiphertextException", ""}
	if len(blob) < awsBlobHeader+12+16 || !bytes.Equal(blob[:4], awsBlobMagic) {
		return nil, invalid
	}
	k := a.keys[string(blob[4:40])]
	if k == nil {
		// AWS cannot tell a blob of a deleted key from garbage.
		return nil, invalid
	}
	if keyID, ok := strField(req, "KeyId"); ok && keyID != "" {
		want, nf, bad := a.lookupLocked(keyID)
		if bad != "" {
			return nil, &awsError{400, "InvalidArnException", bad}
		}
		if want == nil {
			return nil, &awsError{400, "NotFoundException", nf}
		}
		if want != k {
			return nil, &awsError{400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation."}
		}
	}
	switch k.state {
	case "Disabled":
		return nil, &awsError{400, "DisabledException", k.arn + " is disabled."}
	case "PendingDeletion":
		return nil, &awsError{400, "KMSInvalidStateException", k.arn + " is pending deletion."}
	}
	var m *awsMaterial
	for i := range k.materials {
		if bytes.Equal(k.materials[i].id[:], blob[40:72]) {
			m = &k.materials[i]
		}
	}
	if m == nil {
		return nil, invalid
	}
	ctx, aerr := encContext(req)
	if aerr != nil {
		return nil, aerr
	}
	aad := append(append([]byte{}, blob[:awsBlobHeader]...), ctx...)
	blk, _ := aes.NewCipher(m.key)
	g, _ := cipher.NewGCM(blk)
	pt, err := g.Open(nil, blob[awsBlobHeader:awsBlobHeader+12], blob[awsBlobHeader+12:], aad)
	if err != nil {
		return nil, invalid
	}
	return map[string]any{
		"KeyId":               k.arn,
		"KeyMaterialId":       hex.EncodeToString(m.id[:]),
		"Plaintext":           pt,
		"EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
	}, nil
}
