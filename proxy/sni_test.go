package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/freeport"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

// TestSNIAndPortModesTogether: one Strait serves mapped ports and an SNI
// listener at once; each client is told the addresses of the way it came in.
func TestSNIAndPortModesTogether(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(3, "both"))
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1", "bootstrap.strait.test", "*.strait.test")
	sniPort, err := freeport.Base(1)
	straittest.Must(t, err, "port")
	sniAddr := "127.0.0.1:" + strconv.Itoa(sniPort)
	s := straittest.Start(t, c.ListenAddrs(), nil, func(cfg *config.Config) {
		cfg.Listen.TLS = config.ServerTLS{CertFile: cert, KeyFile: key}
		cfg.SNI.Listen, cfg.SNI.HostTemplate = sniAddr, "b{node}.strait.test"
	})
	ctx := ctxT(t, 30*time.Second)

	// Port mode, TLS to 127.0.0.1.
	portTLS := ca.ClientTLSConfig()
	portTLS.ServerName = "127.0.0.1"
	portClient, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DialTLSConfig(portTLS), kgo.DefaultProduceTopic("both"))
	straittest.Must(t, err, "port client")
	defer portClient.Close()

	// SNI mode: every name resolves to the SNI listener; TLS carries the name.
	sniClient, err := kgo.NewClient(kgo.SeedBrokers("bootstrap.strait.test:"+strconv.Itoa(sniPort)), kgo.DefaultProduceTopic("both"),
		kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			name, _, _ := net.SplitHostPort(host)
			cfg := ca.ClientTLSConfig()
			cfg.ServerName = name
			d := tls.Dialer{Config: cfg}
			return d.DialContext(ctx, network, sniAddr)
		}))
	straittest.Must(t, err, "sni client")
	defer sniClient.Close()

	for name, cl := range map[string]*kgo.Client{"port": portClient, "sni": sniClient} {
		md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		straittest.Must(t, err, "%s metadata", name)
		for _, b := range md.Brokers {
			want := fmt.Sprintf("127.0.0.1:%d", s.PortBase+int(b.NodeID))
			if name == "sni" {
				want = fmt.Sprintf("b%d.strait.test:%d", b.NodeID, sniPort)
			}
			if got := fmt.Sprintf("%s:%d", b.Host, b.Port); got != want {
				t.Fatalf("%s client told broker %d is at %s, want %s", name, b.NodeID, got, want)
			}
		}
		for i := range 10 {
			straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord(fmt.Sprintf("%s-%d", name, i))).FirstErr(), "%s produce", name)
		}
	}
	if got := len(consumeN(t, ctx, s.Bootstrap, "both", 20, kgo.DialTLSConfig(portTLS))); got != 20 {
		t.Fatalf("consumed %d", got)
	}
	if straittest.Counter(t, s.Registry, "strait_connections_total", "listener", "sni") == 0 {
		t.Fatal("the SNI client did not come through the SNI listener")
	}
}
