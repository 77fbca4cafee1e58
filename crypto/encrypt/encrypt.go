// Package encrypt is Strait's "encrypt" interceptor: on Produce it seals
// the record values (whole, or chosen JSON/Avro/Protobuf fields) and,
// optionally, keys of the topics a rule covers, and sends a batch that
// encryption grew past the topic's max.message.bytes as several. It fails
// closed: a record a rule covers never reaches the broker in clear. Its
// configuration, key stores and rules are package crypto/rules, shared
// with the "decrypt" interceptor (crypto/decrypt). See README.md.
package encrypt

import (
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// Name is the interceptor's name in a config.
const Name = "encrypt"

// encrypter is the Produce side of a rules.Set.
type encrypter struct {
	*rules.Set
	rws    []records.Rewriter // by rule index: strict (nothing may pass unseen), growth bounded
	limits *sizeLimits        // the batch size each topic takes
}

// New builds the encrypt interceptor (Produce).
func New(cfg rules.Config, env rules.Env) (*interceptor.Interceptor, error) {
	set, err := rules.Open(cfg, env)
	if err != nil {
		return nil, err
	}
	e := &encrypter{Set: set, limits: newSizeLimits(cfg.Limits, set.Topics.Cluster)}
	for _, r := range set.Rules {
		e.rws = append(e.rws, records.Rewriter{
			Strict:               true,
			MaxDecompressedBytes: cfg.Limits.MaxDecompressedBytes,
			MaxBatchBytes:        cfg.Limits.MaxBatchBytes,
			MinGrowth:            minGrowth(r),
		})
	}
	return &interceptor.Interceptor{
		Name:  Name,
		Files: set.Files,
		Hooks: []interceptor.Hook{
			{Key: 0, MaxVersion: interceptor.Latest, Request: e.sealProduce, Response: e.mergeProduceFailures},
		},
		Close: set.Close,
	}, nil
}

// minWrappedDEK is the least a wrapped 256-bit data key takes with any
// provider: AES key wrap adds 8 bytes to the 32 (PKCS#11: 43 bytes, local
// and Vault: 62 and more, AWS: about 184).
const minWrappedDEK = 40

// minGrowth is the least an encrypted record of r grows by: the strait.enc
// header plus one envelope of an empty plaintext (whole value or key), or,
// for fields, the key reference header plus one detached envelope.
func minGrowth(r *rules.Compiled) int {
	whole := envelope.HeaderOverhead(envelope.PartValue) + envelope.Overhead(len(r.KeyID), minWrappedDEK, 0)
	if !r.ByField() {
		return whole
	}
	fieldsGrowth := envelope.HeaderOverhead(envelope.PartFields) +
		1 + len(envelope.KeyRefHeader) + 1 + len(r.KeyID) + minWrappedDEK + envelope.DetachedOverhead(0)
	if r.EncryptKey {
		return min(whole, fieldsGrowth)
	}
	return fieldsGrowth
}
