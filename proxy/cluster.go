package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/secfile"
)

// apiVersions is the cluster's ApiVersions answer and the clamped key list
// Strait advertises in its place.
type apiVersions struct {
	broker *kmsg.ApiVersionsResponse
	keys   []kmsg.ApiVersionsResponseApiKey
}

// newClusterClient is Strait's own client to the cluster: for its view of
// the brokers and for topic-id lookups. It dials as sessions do (TLS,
// private-link endpoint) and connects only when first used.
func (s *Server) newClusterClient() (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Upstream.Bootstrap...),
		kgo.Dialer(func(ctx context.Context, _, host string) (net.Conn, error) { return s.dialer.dial(ctx, host) }),
		kgo.ClientID("strait"),
		kgo.MetadataMinAge(time.Second),
		kgo.RequestTimeoutOverhead(s.cfg.Upstream.DialTimeout.D()),
	}
	if c := s.cfg.Upstream.SASL; c != nil {
		m, err := upstreamSASL(*c)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return kgo.NewClient(opts...)
}

// upstreamSASL is the mechanism of upstream.sasl, its password read now.
func upstreamSASL(c config.UpstreamSASL) (sasl.Mechanism, error) {
	var pass string
	if c.PasswordFile != "" {
		b, err := secfile.Read(c.PasswordFile, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("upstream.sasl.password_file: %w", err)
		}
		pass = strings.TrimSpace(string(b))
	} else if pass = os.Getenv(c.PasswordEnv); pass == "" {
		return nil, fmt.Errorf("upstream.sasl.password_env: $%s is empty or unset", c.PasswordEnv)
	}
	switch c.Mechanism {
	case "PLAIN":
		return plain.Auth{User: c.Username, Pass: pass}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: c.Username, Pass: pass}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: c.Username, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("upstream.sasl.mechanism: %q", c.Mechanism) // validated before
}

// watchCluster keeps Strait's view of the cluster fresh: ApiVersions (what to
// advertise and accept) and the broker list (which listeners to open). The
// first success makes Strait ready.
func (s *Server) watchCluster(ctx context.Context) {
	cl := s.cluster
	defer cl.Close()
	backoff := time.Second
	failing := false
	for {
		err := s.refresh(ctx, cl)
		wait := s.cfg.Upstream.MetadataRefresh.D()
		switch {
		case err == nil:
			if failing {
				s.log.Info("upstream metadata fetch recovered")
			}
			failing, backoff = false, time.Second
		case ctx.Err() != nil:
			return
		default:
			if !failing { // log once per burst of failures
				s.log.Warn("upstream metadata fetch failed; retrying", "err", err)
			}
			failing = true
			wait = min(backoff, wait)
			backoff *= 2
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *Server) refresh(ctx context.Context, cl *kgo.Client) error {
	rctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Upstream.DialTimeout.D())
	defer cancel()
	av := kmsg.NewPtrApiVersionsRequest()
	av.ClientSoftwareName, av.ClientSoftwareVersion = "strait", "1"
	r, err := cl.Request(rctx, av)
	if err != nil {
		return fmt.Errorf("api versions: %w", err)
	}
	avr := r.(*kmsg.ApiVersionsResponse)
	if avr.ErrorCode != 0 {
		return fmt.Errorf("api versions: error code %d", avr.ErrorCode)
	}
	keys, vt := newVersionTable().clamp(avr.ApiKeys, s.chain.Load().rules)
	s.apis.Store(&apiVersions{broker: avr, keys: keys})
	s.vt.Store(vt)

	md := kmsg.NewPtrMetadataRequest()
	md.Topics = []kmsg.MetadataRequestTopic{} // brokers only
	r, err = cl.Request(rctx, md)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	mdr := r.(*kmsg.MetadataResponse)
	if len(mdr.Brokers) == 0 {
		return errors.New("metadata: the cluster named no brokers")
	}
	present := make(map[int32]bool, len(mdr.Brokers))
	for _, b := range mdr.Brokers {
		present[b.NodeID] = true
		if _, _, err := s.Advertise(nil, b.NodeID, b.Host, b.Port); err != nil {
			return err
		}
	}
	s.forget(present)
	if !s.ready.Swap(true) {
		s.metrics.ready.Set(1)
		s.log.Info("ready: upstream metadata fetched", "brokers", len(mdr.Brokers), "apis", len(keys))
	}
	return nil
}

// answerApiVersions encodes Strait's ApiVersions answer: the cluster's, with
// every API clamped to what Strait decodes and forwards. A version newer than
// Strait knows gets UNSUPPORTED_VERSION at v0, as a broker answers, so the
// client retries with one it supports.
func (s *Server) answerApiVersions(ctx context.Context, h reqHeader) ([]byte, error) {
	a := s.apis.Load()
	deadline := time.Now().Add(s.cfg.Upstream.DialTimeout.D())
	for a == nil { // not ready yet: wait briefly for the first cluster answer
		if time.Now().After(deadline) {
			return nil, errors.New("upstream cluster has not answered ApiVersions yet")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		a = s.apis.Load()
	}
	resp := *a.broker
	resp.ApiKeys = a.keys
	resp.SetVersion(h.version)
	if h.version > s.vt.Load().kmsgMax[18] {
		resp.SetVersion(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
	}
	return appendResponseFrame(nil, h.corr, &resp), nil
}
