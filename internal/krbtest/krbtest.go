// Package krbtest runs a throwaway MIT Kerberos KDC for tests: a realm in
// t.TempDir(), krb5kdc listening on a free 127.0.0.1 port, principals and
// keytabs made with kadmin.local. The KDC is stopped when the test ends.
//
//	kdc := krbtest.Start(t)                       // realm STRAIT.TEST
//	kdc.AddPrincipal(t, "kafka/localhost")
//	kt := kdc.Keytab(t, "kafka.keytab", "kafka/localhost")
//	cmd.Env = append(os.Environ(), kdc.Env()...)  // KRB5_CONFIG, KRB5_KDC_PROFILE
//
// When the MIT binaries are missing, Start skips the test with a loud message,
// except under CI=true, where it fails: CI installs them
// (scripts/install-test-deps.sh).
package krbtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/freeport"
)

// Realm is the realm every KDC started here serves.
const Realm = "STRAIT.TEST"

// KDC is a running MIT krb5kdc.
type KDC struct {
	Dir        string // temp dir holding the database, config files and ccache
	Port       int    // TCP and UDP port on 127.0.0.1
	Config     string // krb5.conf path (KRB5_CONFIG)
	KDCProfile string // kdc.conf path (KRB5_KDC_PROFILE)
	Ccache     string // default credential cache (FILE:) named in krb5.conf

	mu sync.Mutex // kadmin.local calls are serialised
}

var binaries = []string{"krb5kdc", "kdb5_util", "kadmin.local"}

// lookPath finds name on PATH or in the sbin directories Debian installs the
// KDC tools into (not on a non-root PATH).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Need skips (or, under CI=true, fails) the test when one of the named tools
// is missing, and returns their paths in order.
func Need(t testing.TB, names ...string) []string {
	t.Helper()
	var paths, missing []string
	for _, n := range names {
		p, err := lookPath(n)
		if err != nil {
			missing = append(missing, n)
			continue
		}
		paths = append(paths, p)
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("!!! KERBEROS TEST NOT RUN: %s missing; install them with scripts/install-test-deps.sh !!!", strings.Join(missing, ", "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return paths
}

// Start creates a realm and starts krb5kdc for it. The KDC is killed at test
// cleanup.
func Start(t testing.TB) *KDC {
	t.Helper()
	bins := Need(t, binaries...)
	krb5kdc, kdb5util := bins[0], bins[1]

	dir := t.TempDir()
	port, err := freeport.Base(1)
	if err != nil {
		t.Fatal(err)
	}
	k := &KDC{
		Dir:        dir,
		Port:       port,
		Config:     filepath.Join(dir, "krb5.conf"),
		KDCProfile: filepath.Join(dir, "kdc.conf"),
		Ccache:     filepath.Join(dir, "ccache"),
	}
	krb5conf := fmt.Sprintf(`[libdefaults]
  default_realm = %[1]s
  dns_lookup_kdc = false
  dns_lookup_realm = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
  default_ccache_name = FILE:%[3]s
  ticket_lifetime = 1h
  forwardable = false

[realms]
  %[1]s = {
    kdc = 127.0.0.1:%[2]d
    admin_server = 127.0.0.1:%[2]d
  }

[domain_realm]
  localhost = %[1]s
  .localhost = %[1]s
`, Realm, port, k.Ccache)
	kdcconf := fmt.Sprintf(`[kdcdefaults]
  kdc_listen = 127.0.0.1:%[2]d
  kdc_tcp_listen = 127.0.0.1:%[2]d

[realms]
  %[1]s = {
    database_name = %[3]s/principal
    acl_file = %[3]s/kadm5.acl
    key_stash_file = %[3]s/stash
    kdc_listen = 127.0.0.1:%[2]d
    kdc_tcp_listen = 127.0.0.1:%[2]d
    max_life = 10h
    max_renewable_life = 0
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }

[logging]
  kdc = FILE:%[3]s/kdc.log
  admin_server = FILE:%[3]s/kadmin.log
  default = FILE:%[3]s/krb5lib.log
`, Realm, port, dir)
	for path, body := range map[string]string{
		k.Config:                        krb5conf,
		k.KDCProfile:                    kdcconf,
		filepath.Join(dir, "kadm5.acl"): "",
	} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	k.run(t, kdb5util, "create", "-s", "-r", Realm, "-P", "strait-test-master-key")

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, krb5kdc, "-n", "-r", Realm)
	cmd.Env = append(os.Environ(), k.Env()...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("krb5kdc: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	// Wait until the KDC accepts TCP connections (or died).
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "kdc.log"))
			t.Fatalf("krb5kdc exited before listening: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "kdc.log"))
			t.Fatalf("krb5kdc not listening on 127.0.0.1:%d: %v\n%s", port, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return k
}

// Env is the environment a Kerberos tool or library needs to use this realm.
func (k *KDC) Env() []string {
	return []string{"KRB5_CONFIG=" + k.Config, "KRB5_KDC_PROFILE=" + k.KDCProfile, "KRB5CCNAME=FILE:" + k.Ccache}
}

// KadminLocal runs one kadmin.local query against the realm's database.
func (k *KDC) KadminLocal(t testing.TB, query string) string {
	t.Helper()
	bins := Need(t, "kadmin.local")
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.run(t, bins[0], "-r", Realm, "-q", query)
}

// AddPrincipal creates principal (without realm) with a random key.
func (k *KDC) AddPrincipal(t testing.TB, principal string) {
	t.Helper()
	k.KadminLocal(t, "addprinc -randkey "+principal)
}

// Keytab exports the current keys of principals (without changing them)
// into the keytab file name in the KDC's directory (mode 0600) and returns
// its path.
func (k *KDC) Keytab(t testing.TB, name string, principals ...string) string {
	t.Helper()
	path := filepath.Join(k.Dir, name)
	for _, p := range principals {
		k.KadminLocal(t, "ktadd -norandkey -k "+path+" "+p)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Rekey gives principal a new random key (a new key version): keytabs
// exported before no longer decrypt its new tickets.
func (k *KDC) Rekey(t testing.TB, principal string) {
	t.Helper()
	k.KadminLocal(t, "cpw -randkey "+principal)
}

func (k *KDC) run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), k.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
