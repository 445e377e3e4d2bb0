"""An independent client of msgmesh's gRPC API, in Python (grpcio), for
TestGRPCPythonClient: it registers an app, publishes N messages on
PublishStream (sending again whatever was not acknowledged when a stream
broke) and consumes them on a Subscribe stream with acks (subscribing again
when a stream breaks), while the test SIGKILLs and restarts the sidecar.

usage: grpc_client.py STUBS_DIR HOST:PORT N

It prints "acked K" as publishes are acknowledged, and at the end one JSON
line: acked (distinct bodies the sidecar acknowledged), consumed (distinct
bodies delivered), deliveries, duplicates and missing (acked, never
delivered). It exits non-zero on an error it does not expect.
"""

import json
import queue
import sys
import threading
import time

import grpc

sys.path.insert(0, sys.argv[1])
from msgmesh.v1 import msgmesh_pb2 as pb  # noqa: E402
from msgmesh.v1 import msgmesh_pb2_grpc as rpc  # noqa: E402

ADDR, N = sys.argv[2], int(sys.argv[3])
APP, TOPIC, GROUP = "pyapp", "py.orders", "g1"
MD = (("msgmesh-app", APP),)
# While the sidecar is down or restarting, calls fail with these.
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)

stub = rpc.MeshStub(grpc.insecure_channel(ADDR))
lock = threading.Lock()
acked = set()    # bodies whose publish the sidecar acknowledged
consumed = {}    # body -> deliveries
done = threading.Event()
errors = []


def body(i):
    return b"m-%d" % i


def register():
    deadline = time.time() + 30
    while True:
        try:
            stub.Register(pb.RegisterRequest(registration=pb.Registration(
                app=APP, produce=[pb.Binding(group="p1", topic=TOPIC)],
                consume=[pb.Binding(group=GROUP, topic=TOPIC)])), metadata=MD, timeout=10)
            return
        except grpc.RpcError as e:
            if e.code() not in TRANSIENT or time.time() > deadline:
                raise
            time.sleep(0.1)


def produce():
    pending = list(range(N))
    last = 0
    while pending:
        def requests(todo=pending):
            for i in todo:
                yield pb.PublishStreamRequest(id=i + 1, message=pb.PublishRequest(topic=TOPIC, body=body(i)))
        try:
            for ack in stub.PublishStream(requests(), metadata=MD):
                if ack.HasField("error"):
                    if not ack.error.retryable:
                        raise RuntimeError("publish %d: %s %s" % (ack.id, ack.error.code, ack.error.message))
                    continue  # sent again below
                with lock:
                    acked.add(body(ack.id - 1))
                    k = len(acked)
                if k - last >= 250:
                    last = k
                    print("acked %d" % k, flush=True)
        except grpc.RpcError as e:
            if e.code() not in TRANSIENT:
                raise
            time.sleep(0.1)
        with lock:
            pending = [i for i in pending if body(i) not in acked]
    print("acked %d" % len(acked), flush=True)


class Consumer:
    """Subscribes, acks every delivery, and subscribes again when the
    stream ends before done."""

    def __init__(self):
        self.call = None

    def run(self):
        while not done.is_set():
            reqs = queue.Queue()
            reqs.put(pb.SubscribeRequest(subscribe=pb.Subscribe(
                subscriptions=[pb.Subscription(group=GROUP, topic=TOPIC)], window=256)))

            def requests():
                while True:
                    r = reqs.get()
                    if r is None:
                        return
                    yield r
            try:
                self.call = stub.Subscribe(requests(), metadata=MD)
                if done.is_set():
                    self.call.cancel()
                for resp in self.call:
                    if resp.HasField("delivery"):
                        d = resp.delivery
                        with lock:
                            consumed[d.body] = consumed.get(d.body, 0) + 1
                        reqs.put(pb.SubscribeRequest(ack=pb.Settle(delivery_ids=[d.delivery_id])))
            except grpc.RpcError as e:
                if e.code() not in TRANSIENT:
                    errors.append("subscribe: %s %s" % (e.code(), e.details()))
                    done.set()
                time.sleep(0.1)
            finally:
                reqs.put(None)

    def stop(self):
        done.set()
        if self.call is not None:
            self.call.cancel()


def main():
    register()
    print("registered", flush=True)
    c = Consumer()
    t = threading.Thread(target=c.run)
    t.start()
    try:
        produce()
        deadline = time.time() + 45
        while time.time() < deadline and not done.is_set():
            with lock:
                if acked <= consumed.keys():
                    break
            time.sleep(0.05)
    finally:
        c.stop()
        t.join()
    with lock:
        deliveries = sum(consumed.values())
        print(json.dumps({"acked": len(acked), "consumed": len(consumed), "deliveries": deliveries,
                          "duplicates": deliveries - len(consumed),
                          "missing": len(acked - consumed.keys()), "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
