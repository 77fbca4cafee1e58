// Package interop holds Strait's interoperability tests: the real `strait`
// binary in front of an in-process kfake cluster, driven by clients we did
// not write (kcat/librdkafka, confluent-kafka-python, kafka-python, kafkajs),
// plus TLS, mTLS, a private-link endpoint (HAProxy routing by SNI), the SNI
// listener mode, and bad input on the wire.
//
// The tests run the binary named by STRAIT_BIN (make test sets it), or build
// ./cmd/strait themselves. Tools come from scripts/install-test-deps.sh; a
// missing tool skips the test loudly, or fails it when CI=true.
//
// STRAIT_INTEROP_DIRECT=1 points the clients straight at kfake instead of at
// Strait (Strait-only assertions are skipped): a self-check of the harness and
// the client scripts, useful when a test fails and you want to know whose
// fault it is.
package interop
