"""A librdkafka group consumer (Debian's python3-confluent-kafka) for the
kafkabroker mixed-group tests.

Usage: rdkafka_consumer.py BOOTSTRAP GROUP TOPIC

Joins GROUP with librdkafka's default assignors (range, roundrobin),
reads TOPIC from the committed offsets (the oldest message when none),
commits every message synchronously after printing it, and prints one
line per event on stdout:

    ASSIGNED <p,p,...>        after each assignment ("-" when empty)
    MSG <partition> <offset> <value>
    ERROR <text>

It runs until stdin closes, then closes the consumer (final commit,
LeaveGroup) and prints CLOSED.
"""
import sys
import threading

from confluent_kafka import Consumer


def main():
    bootstrap, group, topic = sys.argv[1:4]
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "rdkafka-test",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
    })

    def on_assign(consumer, partitions):
        ps = ",".join(str(p.partition) for p in sorted(partitions, key=lambda p: p.partition))
        print("ASSIGNED " + (ps or "-"), flush=True)

    c.subscribe([topic], on_assign=on_assign)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        m = c.poll(0.1)
        if m is None:
            continue
        if m.error():
            print("ERROR " + str(m.error()), flush=True)
            continue
        print("MSG %d %d %s" % (m.partition(), m.offset(), m.value().decode()), flush=True)
        try:
            c.commit(message=m, asynchronous=False)
        except Exception as e:  # a rebalance took the partition: the next owner reads it again
            print("ERROR commit: " + str(e), flush=True)
    c.close()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    main()
