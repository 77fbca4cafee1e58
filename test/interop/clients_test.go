package interop

import (
	"fmt"
	"path/filepath"
	"testing"
)

// roundTrip runs one of the client scripts (produce n, consume them back in
// a group, print key=value lines) through Strait and checks the records.
func roundTrip(t *testing.T, tool string, cmd []string, topic string) {
	t.Helper()
	const n = 100
	c := kfakeCluster(t, []string{topic})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs()})
	prefix := topic + "-v"
	args := append(cmd[1:], p.Bootstrap, topic, fmt.Sprint(n), prefix, topic+"-group")
	r := mustRun(t, 2*defaultTimeout, "", nil, cmd[0], args...)
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, fmt.Sprintf("k%d=%s-%d", i, prefix, i))
	}
	sameSet(t, tool+" round trip", want, lines(r.Stdout))
	p.assertThrough(t, "Produce", "Fetch", "FindCoordinator", "JoinGroup", "SyncGroup", "OffsetCommit")
	if t.Failed() {
		t.Logf("%s stderr:\n%s", tool, tail(r.Stderr, 4000))
	}
}

func TestConfluentKafkaPython(t *testing.T) {
	need(t, "confluent_kafka")
	roundTrip(t, "confluent-kafka-python", []string{pythonBin, filepath.Join(interopDir, "py", "confluent_roundtrip.py")}, "py-confluent")
}

func TestKafkaPython(t *testing.T) {
	need(t, "kafka")
	roundTrip(t, "kafka-python", []string{pythonBin, filepath.Join(interopDir, "py", "kafkapython_roundtrip.py")}, "py-kafka")
}

func TestKafkaJS(t *testing.T) {
	need(t, "kafkajs")
	roundTrip(t, "kafkajs", []string{"node", filepath.Join(interopDir, "js", "roundtrip.js")}, "js-kafkajs")
}
