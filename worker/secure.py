"""A worker's side of secure aggregation: its protocol state per task, one round at a time.

The coordinator relays every message; what this worker sends it is public keys, shares
encrypted to the other workers, and its input under masks that only the sum removes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk import values
from sdk.analytics import secure
from sdk.analytics.plan import Parts
from sdk.proto import services_pb2 as pb
from sdk.proto import values_pb2
from sdk.secagg import SecAggClient, SecAggError, accumulate
from sdk.secagg.binding import round_context
from sdk.secagg.shamir import SHARE_BYTES


@dataclass
class _Round:
    number: tuple[int, int]  # (round, stage)
    client: SecAggClient
    parts: Parts | None  # analytics: the parts computed in the opening phase
    opening_inputs: values_pb2.Value  # the inputs the opening phase came with


class SecureRounds:
    """The protocol state of each task this worker is in a round of."""

    def __init__(self) -> None:
        self._rounds: dict[int, _Round] = {}

    def open(self, assignment: pb.Assignment, min_clients: int,
             parts: Parts | None = None) -> bytes:
        """Starts the round's protocol: this worker's public keys, and the layout of `parts`
        (analytics) for the coordinator to lay every worker's parts on. The threshold comes
        from the task's own `min_clients`, never from the coordinator."""
        request = assignment.secagg
        client = SecAggClient(request.index, min_clients, request.selected)
        self._rounds[assignment.task_id] = _Round(_number(assignment), client, parts,
                                                  assignment.inputs)
        c_pk, s_pk = client.advertise()
        response = pb.SecAggResponse(keys=pb.SecAggKeys(c_pk=c_pk, s_pk=s_pk,
                                                        commitment=client.commitment))
        if parts is not None:
            response.layout.CopyFrom(values.encode(secure.layout(parts)))
        return response.SerializeToString()

    def answer(self, assignment: pb.Assignment) -> bytes:
        """The answer to a protocol phase: shares, the check of shares, or the unmasking."""
        state, request = self._current(assignment), assignment.secagg
        response = pb.SecAggResponse()
        if assignment.phase == "secagg_share":
            keys = {u: (k.c_pk, k.s_pk) for u, k in request.public_keys.items()}
            response.shares.update(state.client.share_keys(keys))
        elif assignment.phase == "secagg_check":
            response.malformed.extend(state.client.check_shares(dict(request.shares)))
        elif assignment.phase == "secagg_unmask":
            revealed = state.client.unmask(list(request.survivors))
            response.self_mask_shares.update(_share_bytes(revealed.self_mask))
            response.mask_key_shares.update(_share_bytes(revealed.mask_key))
            del self._rounds[assignment.task_id]  # nothing more to say this round
        else:
            raise ValueError(f"no secure aggregation phase {assignment.phase!r}")
        return response.SerializeToString()

    def mask_seeds(self, assignment: pb.Assignment) -> list[tuple[bytes, int]]:
        """The seeds and signs of this worker's masks for the round's masked input, bound to
        what this worker was told this round."""
        state = self._current(assignment)
        context = round_context(assignment.task_id, assignment.round, assignment.stage,
                                state.opening_inputs, assignment.inputs, assignment.secagg)
        return state.client.mask_seeds(list(assignment.secagg.peers), context)

    def masked_parts(self, assignment: pb.Assignment, precision: int, max_clients: int) -> bytes:
        """Analytics: the opening phase's parts on the union layout, encoded and masked."""
        state = self._current(assignment)
        if state.parts is None:
            raise SecAggError(f"task {assignment.task_id}: no parts were computed this round")
        union = values.decode(assignment.secagg.layout)
        vector = secure.encode(state.parts, union, precision, max_clients)
        accumulate(vector, [], self.mask_seeds(assignment))
        return vector.astype("<u8", copy=False).tobytes()

    def release(self, task_id: int) -> None:
        self._rounds.pop(task_id, None)

    def _current(self, assignment: pb.Assignment) -> _Round:
        state = self._rounds.get(assignment.task_id)
        if state is None or state.number != _number(assignment):
            raise SecAggError(f"task {assignment.task_id}: {assignment.phase} of round "
                              f"{assignment.round}, step {assignment.stage + 1}, which this "
                              "worker did not open")
        return state


def _number(assignment: pb.Assignment) -> tuple[int, int]:
    return assignment.round, assignment.stage


def _share_bytes(shares: dict[int, int]) -> dict[int, bytes]:
    return {u: share.to_bytes(SHARE_BYTES, "big") for u, share in shares.items()}

