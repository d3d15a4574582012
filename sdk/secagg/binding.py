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
