"""What binds a round's masks to what every worker was told."""

from __future__ import annotations

import hashlib
import struct

from sdk.proto import services_pb2, values_pb2


def round_context(task_id: int, round_number: int, stage: int, opening: values_pb2.Value,
                  masked: values_pb2.Value, request: services_pb2.SecAggRequest) -> bytes:
    """A digest of the round's inputs (those of its opening phase and of its masked-input phase)
    and of the masked-input request (peers, analytics layout), which every worker receives
    alike. It goes into every pairwise mask seed: a coordinator that tells workers different
    things, say a layout that only one worker's labels fill, gets masks that do not cancel."""
    digest = hashlib.sha256(struct.pack(">QII", task_id, round_number, stage))
    for message in (opening, masked, request):
        data = message.SerializeToString(deterministic=True)
        digest.update(struct.pack(">Q", len(data)) + data)
    return digest.digest()


def keys_payload(task_key: bytes, round_number: int, stage: int, index: int, selected: int,
                 keys: services_pb2.SecAggKeys) -> bytes:
    """What a worker signs when it advertises its keys: the keys, its seed's commitment and
    (SecAgg+) its ring nonce's commitment, for
    this task (its signed nonce), round, step and place among the selected. Peers check it, so a
    coordinator can neither make up workers nor swap one's keys for its own."""
    digest = hashlib.sha256(b"deltaflow secure aggregation keys v1\0" + task_key)
    digest.update(struct.pack(">IIII", round_number, stage, index, selected))
    for part in (keys.c_pk, keys.s_pk, keys.commitment, keys.ring_commitment):
        digest.update(struct.pack(">Q", len(part)) + part)
    return digest.digest()
