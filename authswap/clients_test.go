package authswap_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	kafka "github.com/segmentio/kafka-go"
	ksasl "github.com/segmentio/kafka-go/sasl"
	kplain "github.com/segmentio/kafka-go/sasl/plain"
	kscram "github.com/segmentio/kafka-go/sasl/scram"
	fscram "github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/xdg-go/scram"
)

// Two more clients nobody here wrote, at their default settings but for
// SASL: sarama and segmentio/kafka-go authenticate downstream with PLAIN and
// SCRAM, and Strait writes upstream as the mapped principal (the broker's
// ACLs prove which one).
func TestOtherGoClients(t *testing.T) {
	s := saslSwap(t)

	type produceFn func(user, pass, mech, value string) error
	clients := map[string]produceFn{
		"sarama": func(user, pass, mech, value string) error {
			return saramaProduce(s.addr, user, pass, mech, value)
		},
		"kafka-go": func(user, pass, mech, value string) error {
			return kafkaGoProduce(s.addr, user, pass, mech, value)
		},
	}
	var sent []string
	for _, name := range []string{"sarama", "kafka-go"} {
		produce := clients[name]
		for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
			v := fmt.Sprintf("order from alice via %s %s", name, mech)
			if err := produce("alice", alicePw, mech, v); err != nil {
				t.Fatalf("%s %s: produce as alice: %v", name, mech, err)
			}
			sent = append(sent, v)
		}
		if err := produce("alice", wrongPw, "SCRAM-SHA-256", "never"); err == nil {
			t.Errorf("%s: a wrong password was accepted", name)
		} else if strings.Contains(err.Error(), wrongPw) {
			t.Errorf("%s: the error carries the password: %v", name, err)
		}
		// bob authenticates, but bob-up has no ACL on orders: the broker
		// itself refuses, which proves Strait wrote as bob-up.
		if err := produce("bob", bobPw, "PLAIN", "order from bob"); err == nil {
			t.Errorf("%s: bob's produce was accepted; bob-up has no ACL", name)
		} else if e := strings.ToLower(err.Error()); !strings.Contains(e, "authoriz") && !strings.Contains(e, "unknown topic") {
			// kafka-go asks for metadata first, in which the broker
			// hides the topic from a principal without ACLs on it
			// (alice, through the same client, wrote to it above).
			t.Errorf("%s: bob's produce: %v, want the broker's refusal (authorization failure or a hidden topic)", name, err)
		}
	}
	got := consumeAll(t, s.addr, fscram.Auth{User: "alice", Pass: alicePw}.AsSha512Mechanism(), len(sent))
	if strings.Join(got, "|") != strings.Join(sent, "|") {
		t.Fatalf("consumed %q, want %q", got, sent)
	}
	s.checkNoSecrets(t, alicePw, bobPw, aliceUpPw, bobUpPw, wrongPw)
}

// saramaProduce sends one record with a sarama SyncProducer at sarama's
// defaults (its default protocol version, acks WaitForLocal) plus SASL.
func saramaProduce(addr, user, pass, mech, value string) error {
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Retry.Max = 1
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.User, cfg.Net.SASL.Password = user, pass
	cfg.Net.SASL.Mechanism = sarama.SASLMechanism(mech)
	switch mech {
	case "SCRAM-SHA-256":
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &xdgClient{hash: scram.SHA256} }
	case "SCRAM-SHA-512":
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &xdgClient{hash: scram.SHA512} }
	}
	p, err := sarama.NewSyncProducer([]string{addr}, cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	_, _, err = p.SendMessage(&sarama.ProducerMessage{Topic: "orders", Value: sarama.StringEncoder(value)})
	return err
}

// xdgClient is sarama's SCRAMClient over github.com/xdg-go/scram, as
// sarama's own examples do.
type xdgClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (x *xdgClient) Begin(user, pass, authzID string) error {
	c, err := x.hash.NewClient(user, pass, authzID)
	if err != nil {
		return err
	}
	x.conv = c.NewConversation()
	return nil
}
func (x *xdgClient) Step(challenge string) (string, error) { return x.conv.Step(challenge) }
func (x *xdgClient) Done() bool                            { return x.conv.Done() }

// kafkaGoProduce sends one record with a kafka-go Writer at its defaults
// plus SASL.
func kafkaGoProduce(addr, user, pass, mech, value string) error {
	var m ksasl.Mechanism
	var err error
	switch mech {
	case "PLAIN":
		m = kplain.Mechanism{Username: user, Password: pass}
	case "SCRAM-SHA-256":
		m, err = kscram.Mechanism(kscram.SHA256, user, pass)
	case "SCRAM-SHA-512":
		m, err = kscram.Mechanism(kscram.SHA512, user, pass)
	default:
		err = errors.New("no mechanism " + mech)
	}
	if err != nil {
		return err
	}
	tr := &kafka.Transport{SASL: m}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: "orders", Transport: tr, MaxAttempts: 2, BatchTimeout: 10 * time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return w.WriteMessages(ctx, kafka.Message{Value: []byte(value)})
}
