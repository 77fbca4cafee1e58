#!/usr/bin/python3
"""Consume a topic with confluent-kafka-python (librdkafka) in
a consumer group over mTLS, until the end of the partition (which lies past
the records the policy dropped: their offsets are skipped); then commit
what was consumed.

usage: confluent_policy.py BOOTSTRAP TOPIC GROUP CA CERT KEY
Prints "offset value" per record, then "eof N" (the highest
end-of-partition offset over the partitions) and "committed N" (the
highest committed offset).
Exit status 0 only if the end of the partition was reached before the
deadline.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError

bs, topic, group, ca, cert, key = sys.argv[1:7]
c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "enable.partition.eof": True,
              "security.protocol": "SSL", "ssl.ca.location": ca,
              "ssl.certificate.location": cert, "ssl.key.location": key})
c.subscribe([topic])
deadline = time.time() + 60
eof = {}
while time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            eof[m.partition()] = m.offset()
            if len(c.assignment()) > 0 and len(eof) == len(c.assignment()):
                break
            continue
        print(f"consumer error: {m.error()}", file=sys.stderr)
        continue
    eof.pop(m.partition(), None)
    print(f"{m.offset()} {m.value().decode()}")
if not eof or len(eof) != len(c.assignment()):
    print("end of the partitions not reached", file=sys.stderr)
    sys.exit(1)
print(f"eof {max(eof.values())}")
c.commit(asynchronous=False)
got = c.committed(c.assignment(), timeout=10)
print(f"committed {max(tp.offset for tp in got)}")
c.close()
