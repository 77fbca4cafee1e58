# Independent decryption of testdata/vectors.json following docs/encryption.md only
# (no Strait code). Usage: python3 decrypt_vectors.py vectors.json  (needs the
# "cryptography" package). TestVectorsPython runs it when Python has that package.
import json, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def uvarint(b, i):
    v = shift = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7f) << shift; shift += 7
        if c < 0x80: return v, i

def enc_uvarint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80); v >>= 7
    out.append(v); return bytes(out)

vf = json.load(open(sys.argv[1]))
def parse_key_part(b):
    """The key part of a format-1 envelope, which is all of a key reference."""
    assert b[0] == 0xE1
    flags = b[1]; kind = flags & 0x0F; topic_bound = bool(flags & 0x10)
    klen = b[2]; key_id = b[3:3+klen].decode(); i = 3 + klen
    wlen, i = uvarint(b, i); wrapped = b[i:i+wlen]; i += wlen
    return kind, topic_bound, key_id, wrapped, i

for v in vf["vectors"]:
    env = bytes.fromhex(v["envelope"]); kek = bytes.fromhex(v["kek"])
    if "key_ref" in v:  # detached (format 2): the data key is in the key reference
        ref = bytes.fromhex(v["key_ref"])
        kind, topic_bound, key_id, wrapped, i = parse_key_part(ref)
        assert i == len(ref) and env[0] == 0xE2
        counter, i = uvarint(env, 1)
        header, ct = ref + env[:i], env[i:]
    else:
        kind, topic_bound, key_id, wrapped, i = parse_key_part(env)
        counter, i = uvarint(env, i)
        header, ct = env[:i], env[i:]
    # unwrap the DEK (local provider)
    assert wrapped[0] == 0x01
    version, j = uvarint(wrapped, 1)
    wnonce, wct = wrapped[j:j+12], wrapped[j+12:]
    dek = AESGCM(kek).decrypt(wnonce, wct, wrapped[:j] + key_id.encode())
    nonce = bytes(4) + counter.to_bytes(8, "big")
    aad = header
    if topic_bound:
        aad += enc_uvarint(len(v["topic"].encode())) + v["topic"].encode()
    aad += enc_uvarint(len(v["path"].encode())) + v["path"].encode()
    pt = AESGCM(dek).decrypt(nonce, ct, aad)
    assert pt.hex() == v["plaintext"] and dek.hex() == v["dek"] and aad.hex() == v["aad"]
    print("ok", v["name"], "kind", kind, "key", key_id, "kek v", version, "counter", counter, "->", pt.decode())
