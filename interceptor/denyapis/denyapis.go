// Package denyapis is the built-in interceptor that refuses configured Kafka
// APIs: each request of a denied API is answered by Strait with an
// authorization error, as a broker would answer a client its ACLs do not
// allow, and is never forwarded.
package denyapis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/errresp"
)

// Name is the name configs use for this interceptor.
const Name = "deny-apis"

// Config is the deny-apis configuration.
type Config struct {
	// APIs to refuse, as kmsg.NameForKey spells them ("DeleteTopics") or
	// as decimal keys ("20"); case-insensitive. ApiVersions cannot be
	// denied: clients need it to talk at all.
	APIs []string `json:"apis"`
	// ErrorCode overrides the error every denied request gets, as a Kafka
	// error name ("POLICY_VIOLATION"). By default each API gets the
	// authorization error a broker would return for it (see defaultCode).
	ErrorCode string `json:"error_code,omitempty"`
}

// apiVersionsKey is never deniable.
const apiVersionsKey = 18

// maxKey bounds the keys New looks names up in; kmsg knows fewer.
const maxKey = 128

// New builds the deny-apis interceptor from cfg. Every request of a denied
// API is answered with interceptor.ErrorResponse; when no response can carry
// the error (for example Produce with acks=0), the connection is closed
// instead, as a broker does.
func New(cfg Config, log *slog.Logger) (*interceptor.Interceptor, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.APIs) == 0 {
		return nil, errors.New("apis: name at least one Kafka API to deny")
	}
	d := &denier{log: log}
	if cfg.ErrorCode != "" {
		code, err := codeByName(cfg.ErrorCode)
		if err != nil {
			return nil, fmt.Errorf("error_code: %w", err)
		}
		d.override = code
	}
	ic := &interceptor.Interceptor{Name: Name}
	seen := make(map[int16]bool)
	for i, name := range cfg.APIs {
		key, err := keyByName(name)
		if err != nil {
			return nil, fmt.Errorf("apis[%d]: %w", i, err)
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		ic.Hooks = append(ic.Hooks, interceptor.Hook{Key: key, MaxVersion: interceptor.Latest, Request: d.deny})
	}
	return ic, nil
}

// keyByName resolves an API name or decimal key.
func keyByName(name string) (int16, error) {
	s := strings.TrimSpace(name)
	key := int16(-1)
	if n, err := strconv.ParseInt(s, 10, 16); err == nil {
		if kmsg.RequestForKey(int16(n)) != nil {
			key = int16(n)
		}
	} else {
		for k := range int16(maxKey) {
			if kmsg.RequestForKey(k) != nil && strings.EqualFold(kmsg.NameForKey(k), s) {
				key = k
				break
			}
		}
	}
	switch key {
	case -1:
		return 0, fmt.Errorf("unknown Kafka API %q", name)
	case apiVersionsKey:
		return 0, fmt.Errorf("%q: ApiVersions cannot be denied: clients need it to connect", name)
	}
	return key, nil
}

// codeByName resolves a Kafka error name such as POLICY_VIOLATION. Kafka's
// codes run from -1 (UNKNOWN_SERVER_ERROR) up, and stay far below 1024.
func codeByName(name string) (int16, error) {
	s := strings.TrimSpace(name)
	if strings.EqualFold(s, "NONE") {
		return 0, errors.New("NONE is not an error")
	}
	for c := int16(-1); c < 1024; c++ {
		if e := kerr.TypedErrorForCode(c); e != nil && e.Code == c && strings.EqualFold(e.Message, s) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown Kafka error %q", name)
}

type denier struct {
	log      *slog.Logger
	override int16 // 0: per-API default
}

// deny answers x with an error response.
func (d *denier) deny(ctx context.Context, x *interceptor.Exchange) error {
	api := kmsg.NameForKey(x.Key)
	if x.Request == nil {
		return fmt.Errorf("deny %s: request not decoded", api)
	}
	code := d.override
	if code == 0 {
		code = defaultCode(x.Request)
	}
	resp, respErr := errresp.For(x.Request, code)
	attrs := []slog.Attr{
		slog.String("api", api),
		slog.Int("version", int(x.Version)),
		slog.String("error", kerr.TypedErrorForCode(code).Message),
	}
	if x.Conn != nil {
		attrs = append(attrs,
			slog.String("client_id", x.Conn.ClientID()),
			slog.String("principal", x.Conn.Principal().String()),
			slog.Uint64("conn", x.Conn.ID))
	}
	if respErr != nil {
		// The denial is logged here, once; ErrClose tells the proxy not to
		// log the close as a failure.
		d.log.LogAttrs(ctx, slog.LevelInfo, "denied request, closing the connection: no response can carry the error",
			append(attrs, slog.String("reason", respErr.Error()))...)
		return fmt.Errorf("deny %s: %w: %w", api, interceptor.ErrClose, respErr)
	}
	d.log.LogAttrs(ctx, slog.LevelInfo, "denied request", attrs...)
	x.Respond(resp)
	return nil
}

// defaultCode is the authorization error a broker returns when its ACLs
// refuse req: topic-scoped APIs fail on the topic, group APIs on the group,
// transactional APIs on the transactional id, and the rest on the cluster.
func defaultCode(req kmsg.Request) int16 {
	switch r := req.(type) {
	case *kmsg.ProduceRequest, *kmsg.FetchRequest, *kmsg.ListOffsetsRequest,
		*kmsg.MetadataRequest, *kmsg.CreateTopicsRequest, *kmsg.DeleteTopicsRequest,
		*kmsg.DeleteRecordsRequest, *kmsg.OffsetForLeaderEpochRequest,
		*kmsg.CreatePartitionsRequest, *kmsg.DescribeProducersRequest,
		*kmsg.DescribeTopicPartitionsRequest:
		return kerr.TopicAuthorizationFailed.Code
	case *kmsg.InitProducerIDRequest, *kmsg.AddPartitionsToTxnRequest,
		*kmsg.AddOffsetsToTxnRequest, *kmsg.EndTxnRequest, *kmsg.TxnOffsetCommitRequest,
		*kmsg.DescribeTransactionsRequest:
		return kerr.TransactionalIDAuthorizationFailed.Code
	case *kmsg.FindCoordinatorRequest:
		if r.CoordinatorType == 1 { // transaction coordinator
			return kerr.TransactionalIDAuthorizationFailed.Code
		}
		return kerr.GroupAuthorizationFailed.Code
	case *kmsg.OffsetCommitRequest, *kmsg.OffsetFetchRequest, *kmsg.JoinGroupRequest,
		*kmsg.HeartbeatRequest, *kmsg.LeaveGroupRequest, *kmsg.SyncGroupRequest,
		*kmsg.DescribeGroupsRequest, *kmsg.DeleteGroupsRequest, *kmsg.OffsetDeleteRequest,
		*kmsg.ConsumerGroupHeartbeatRequest, *kmsg.ConsumerGroupDescribeRequest,
		*kmsg.ShareGroupHeartbeatRequest, *kmsg.ShareGroupDescribeRequest,
		*kmsg.ShareFetchRequest, *kmsg.ShareAcknowledgeRequest,
		*kmsg.StreamsGroupHeartbeatRequest, *kmsg.StreamsGroupDescribeRequest,
		*kmsg.StreamsGroupTopologyDescriptionUpdateRequest,
		*kmsg.DescribeShareGroupOffsetsRequest, *kmsg.AlterShareGroupOffsetsRequest,
		*kmsg.DeleteShareGroupOffsetsRequest:
		return kerr.GroupAuthorizationFailed.Code
	}
	return kerr.ClusterAuthorizationFailed.Code
}
