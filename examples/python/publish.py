"""Publishes an event to Herald from Python and reads it back.

The stubs come from Herald's own protos, which are self-contained (they
import only Google's well-known types, bundled with grpcio-tools):

    pip install grpcio grpcio-tools
    python3 -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \
        proto/herald/v1/*.proto
    HERALD_TOKEN=hk_... PYTHONPATH=gen python3 examples/python/publish.py

HERALD_ADDR defaults to 127.0.0.1:50051 (plaintext). It prints the event
as one JSON line. Publishing twice is safe: the idempotency key makes the
second call return the first event.
"""

import json
import os
import sys

import grpc

from herald.v1 import events_pb2, events_pb2_grpc
from herald.v1 import subscriptions_pb2, subscriptions_pb2_grpc


def main() -> int:
    address = os.environ.get("HERALD_ADDR", "127.0.0.1:50051")
    token = os.environ.get("HERALD_TOKEN")
    if not token:
        print("set HERALD_TOKEN to an API key (hk_...)", file=sys.stderr)
        return 2
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        subscriptions = subscriptions_pb2_grpc.SubscriptionsStub(channel)
        events = events_pb2_grpc.EventsStub(channel)
        try:
            subscriptions.CreateConsumer(
                subscriptions_pb2.CreateConsumerRequest(uid="py-demo", name="Python demo"),
                metadata=metadata,
            )
        except grpc.RpcError as error:
            # Made by an earlier run.
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        published = events.Publish(
            events_pb2.PublishRequest(
                consumer_id="py-demo",
                event_type="order.created",
                payload=json.dumps({"order": 42}),
                idempotency_key="py-demo-order-42",
            ),
            metadata=metadata,
        )
        event = events.GetEvent(
            events_pb2.GetEventRequest(id=published.event.id), metadata=metadata
        )
        refused = None
        # A refused call carries a precise status and a message naming the
        # field and the rule.
        try:
            events.Publish(
                events_pb2.PublishRequest(
                    consumer_id="py-demo", event_type="order.created", payload="not json"
                ),
                metadata=metadata,
            )
        except grpc.RpcError as error:
            refused = {"code": error.code().name, "message": error.details()}
    print(
        json.dumps(
            {
                "id": event.id,
                "consumer_id": event.consumer_id,
                "type": event.event_type,
                "payload": json.loads(event.payload),
                "duplicate": published.duplicate,
                "refused": refused,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
