package sasl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"

	"github.com/xdg-go/scram"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/internal/secfile"
)

// Users is the parsed credentials file of the clients Strait authenticates:
//
//	users:
//	  alice:
//	    plain: "$2y$10$..."                  # bcrypt (htpasswd -nbBC 10 alice pw)
//	    scram-sha-256: {salt: <base64>, iterations: 4096, stored_key: <base64>, server_key: <base64>}
//	    scram-sha-512: {...}
//
// The file holds no password, only hashes and SCRAM's salted keys (the same
// values Kafka keeps in ZooKeeper or KRaft for SCRAM users).
type Users struct {
	m map[string]User
}

// User is one client's stored credentials.
type User struct {
	Plain       string     `json:"plain,omitempty"`
	ScramSHA256 *ScramCred `json:"scram-sha-256,omitempty"`
	ScramSHA512 *ScramCred `json:"scram-sha-512,omitempty"`
}

// ScramCred is one SCRAM stored credential, byte values in standard base64.
type ScramCred struct {
	Salt       string `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  string `json:"stored_key"`
	ServerKey  string `json:"server_key"`
}

type usersFile struct {
	Users map[string]User `json:"users"`
}

// ParseUsers decodes a users file strictly, checking every hash.
func ParseUsers(b []byte) (Users, error) {
	var f usersFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return Users{}, err
	}
	var errs []string
	names := make([]string, 0, len(f.Users))
	for n := range f.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := f.Users[n]
		if n == "" {
			errs = append(errs, "users: empty user name")
		}
		if u.Plain != "" {
			if _, err := bcrypt.Cost([]byte(u.Plain)); err != nil {
				errs = append(errs, fmt.Sprintf("users.%s.plain: not a bcrypt hash ($2a$, $2b$ or $2y$): %v", n, err))
			}
		}
		for mech, c := range map[string]*ScramCred{"scram-sha-256": u.ScramSHA256, "scram-sha-512": u.ScramSHA512} {
			if c == nil {
				continue
			}
			if _, err := c.stored(); err != nil {
				errs = append(errs, fmt.Sprintf("users.%s.%s: %v", n, mech, err))
			}
		}
		if u.Plain == "" && u.ScramSHA256 == nil && u.ScramSHA512 == nil {
			errs = append(errs, fmt.Sprintf("users.%s: no credentials (plain, scram-sha-256, scram-sha-512)", n))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return Users{}, errors.New(strings.Join(errs, "\n"))
	}
	return Users{m: f.Users}, nil
}

func (c *ScramCred) stored() (scram.StoredCredentials, error) {
	salt, err1 := base64.StdEncoding.DecodeString(c.Salt)
	sk, err2 := base64.StdEncoding.DecodeString(c.StoredKey)
	svk, err3 := base64.StdEncoding.DecodeString(c.ServerKey)
	if err := errors.Join(err1, err2, err3); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("salt, stored_key and server_key must be standard base64: %v", err)
	}
	if len(salt) == 0 || len(sk) == 0 || len(svk) == 0 {
		return scram.StoredCredentials{}, errors.New("salt, stored_key and server_key are required")
	}
	if c.Iterations < 4096 {
		return scram.StoredCredentials{}, fmt.Errorf("iterations %d: at least 4096 (RFC 7677, and Kafka's minimum)", c.Iterations)
	}
	return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: c.Iterations}, StoredKey: sk, ServerKey: svk}, nil
}

// Lookup returns a user's stored credentials.
func (u Users) Lookup(name string) (User, bool) {
	x, ok := u.m[name]
	return x, ok
}

// UserSource gives the current users (a file watched for changes, or a
// fixed set in tests).
type UserSource func() Users

// Static is a UserSource that never changes.
func Static(u Users) UserSource { return func() Users { return u } }

// WatchUsersFile loads a users file (mode-checked) and reloads it when it
// changes; a bad new version keeps the old one and is reported to onError.
func WatchUsersFile(path string, onError func(error)) (UserSource, error) {
	w, err := secfile.Watch(path, ParseUsers, onError)
	if err != nil {
		return nil, err
	}
	return w.Get, nil
}

// NewScramCred derives the stored credential for password with a fresh
// random salt, for users files and tests. mech is "SCRAM-SHA-256" or
// "SCRAM-SHA-512"; iterations below 4096 become 4096.
func NewScramCred(mech, username, password string, iterations int) (*ScramCred, error) {
	h, err := scramHash(mech)
	if err != nil {
		return nil, err
	}
	if iterations < 4096 {
		iterations = 4096
	}
	salt := make([]byte, 24)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	cl, err := h.NewClient(username, password, "")
	if err != nil {
		return nil, err
	}
	sc, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString
	return &ScramCred{Salt: enc(salt), Iterations: iterations, StoredKey: enc(sc.StoredKey), ServerKey: enc(sc.ServerKey)}, nil
}

func scramHash(mech string) (scram.HashGeneratorFcn, error) {
	switch mech {
	case "SCRAM-SHA-256":
		return scram.HashGeneratorFcn(func() hash.Hash { return sha256.New() }), nil
	case "SCRAM-SHA-512":
		return scram.HashGeneratorFcn(func() hash.Hash { return sha512.New() }), nil
	}
	return nil, fmt.Errorf("unknown SCRAM mechanism %q", mech)
}
