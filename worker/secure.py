"""A worker's side of secure aggregation: its protocol state per task, one round at a time.

The coordinator relays every message; what this worker sends it is public keys, shares
encrypted to the other workers, and its input under masks that only the sum removes. With
identities a worker signs the keys it advertises and checks every peer's signature, so it
knows by name whom it masks with; the rerun rule (`worker.contributions`) is kept on those names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sdk import values
from sdk.analytics import secure
from sdk.analytics.plan import Parts
from sdk.privacy.accounting import fewest_honest
from sdk.proto import services_pb2 as pb
from sdk.proto import values_pb2
from sdk.secagg import Rule, SecAggClient, SecAggError, accumulate
from sdk.secagg.binding import keys_payload, round_context
from sdk.secagg.shamir import SHARE_BYTES
from sdk.trust import Kit, TrustError, Verifier
from worker.contributions import ContributionLedger, RerunRefused


@dataclass(frozen=True)
class Contribution:
    """Which input of which task a round's protocol carries: the task's key (its signature's
    nonce, or its spec's digest), the step ("step 2", "round 3"), and the signed task's
    secure-aggregation rule (min_clients, secagg_plus_above, secagg_threshold)."""

    task_key: bytes
    step: str
    rule: Rule


@dataclass
class _Round:
    number: tuple[int, int]  # (round, stage)
    client: SecAggClient
    contribution: Contribution
    parts: Parts | None  # analytics: the parts computed in the opening phase
    opening_inputs: values_pb2.Value  # the inputs the opening phase came with
    names: dict[int, str] = field(default_factory=dict)  # peers by number, from their keys
    listed: dict[int, pb.SecAggListed] = field(default_factory=dict)  # SecAgg+: U1 at the ring


class SecureRounds:
    """The protocol state of each task this worker is in a round of. With `kit` and `verifier`
    (identities) keys are signed and peers checked; `ledger` keeps the rerun rule."""

    def __init__(self, ledger: ContributionLedger, kit: Kit | None = None,
                 verifier: Verifier | None = None) -> None:
        self._rounds: dict[int, _Round] = {}
        self.ledger = ledger
        self.kit = kit
        self.verifier = verifier

    def open(self, assignment: pb.Assignment, contribution: Contribution,
             parts: Parts | None = None) -> bytes:
        """Starts the round's protocol: this worker's public keys, and the layout of `parts`
        (analytics) for the coordinator to lay every worker's parts on. The threshold comes
        from the signed task's rule (`Contribution.rule`), never from the coordinator."""
        request = assignment.secagg
        client = SecAggClient(request.index, contribution.rule, request.selected)
        self._rounds[assignment.task_id] = _Round(_number(assignment), client, contribution,
                                                  parts, assignment.inputs)
        c_pk, s_pk = client.advertise()
        keys = pb.SecAggKeys(c_pk=c_pk, s_pk=s_pk, commitment=client.commitment,
                             ring_commitment=client.ring_commitment)
        if self.kit is not None:
            keys.signature = self.kit.sign(keys_payload(
                contribution.task_key, assignment.round, assignment.stage, request.index,
                request.selected, keys))
            keys.certificate = self.kit.certificate_der
            keys.worker = self.kit.name
        response = pb.SecAggResponse(keys=keys)
        if parts is not None:
            response.layout.CopyFrom(values.encode(secure.layout(parts)))
        return response.SerializeToString()

    def answer(self, assignment: pb.Assignment) -> bytes:
        """The answer to a protocol phase: the ring's nonce (SecAgg+), shares, the check of
        shares, or the unmasking."""
        state, request = self._current(assignment), assignment.secagg
        response = pb.SecAggResponse()
        keys = {u: (k.c_pk, k.s_pk) for u, k in request.public_keys.items()}
        if assignment.phase == "secagg_ring":
            state.listed = dict(request.listed)
            state.names = _distinct({u: listed.worker or f"worker number {u}"
                                     for u, listed in state.listed.items()})
            response.ring_nonce = state.client.reveal(
                {u: listed.ring_commitment for u, listed in state.listed.items()})
        elif assignment.phase == "secagg_share":
            names = self._peer_names(assignment, state)
            if state.client.plus:
                _check_listed(request.public_keys, names, state.listed)
            state.names.update(names)
            response.shares.update(state.client.share_keys(keys, dict(request.ring_nonces)))
        elif assignment.phase == "secagg_check":
            response.malformed.extend(state.client.check_shares(dict(request.shares)))
        elif assignment.phase == "secagg_unmask":
            self._record(state, "summed with", request.survivors)
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
        self._record(state, "masked with", assignment.secagg.peers)
        context = round_context(assignment.task_id, assignment.round, assignment.stage,
                                state.opening_inputs, assignment.inputs, assignment.secagg)
        return state.client.mask_seeds(list(assignment.secagg.peers), context)

    def selected(self, assignment: pb.Assignment) -> int:
        """How many workers the round's keys phase said were selected (the threshold's n)."""
        return self._current(assignment).client.selected

    def masked_parts(self, assignment: pb.Assignment, precision: int, max_clients: int,
                     noise: Callable[[int], secure.NoiseHook | None] | None = None) -> bytes:
        """Analytics: the opening phase's parts on the union layout, encoded and masked.
        `noise(shares)` gives differential privacy's hook: this worker adds 1/shares of the
        noise, shares being the fewest workers any sum it is in holds (the protocol's
        threshold, a neighbourhood's under SecAgg+), and the union must then be its own layout, which the task alone decides
        (another could encode a count in a float's units, where its noise would be lost)."""
        state = self._current(assignment)
        if state.parts is None:
            raise SecAggError(f"task {assignment.task_id}: no parts were computed this round")
        shares = fewest_honest(state.contribution.rule, state.client.selected)
        hook = noise(shares) if noise is not None else None
        union = values.decode(assignment.secagg.layout)
        if hook is not None and not secure.same_layout(union, secure.layout(state.parts)):
            raise SecAggError(f"task {assignment.task_id}: under differential privacy every "
                              "worker's parts have the task's own layout, and the coordinator "
                              "sent another: refused")
        vector = secure.encode(state.parts, union, precision, max_clients, hook)
        accumulate(vector, [], self.mask_seeds(assignment))
        return vector.astype("<u8", copy=False).tobytes()

    def release(self, task_id: int) -> None:
        self._rounds.pop(task_id, None)

    def _peer_names(self, assignment: pb.Assignment, state: _Round) -> dict[int, str]:
        """The name of every worker whose keys came, by number (under SecAgg+ its
        neighbourhood's). With identities each name is that of a certificate of this
        federation's CA, not revoked, whose key signed these keys for this very task, round,
        step and number: no two numbers may share a name."""
        request, contribution = assignment.secagg, state.contribution
        names: dict[int, str] = {}
        for u, keys in request.public_keys.items():
            if self.verifier is None:
                names[u] = keys.worker or f"worker number {u}"
                continue
            payload = keys_payload(contribution.task_key, assignment.round, assignment.stage,
                                   u, state.client.selected, keys)
            try:
                names[u] = self.verifier.verify(payload, keys.signature, keys.certificate,
                                                roles={"worker"}).name
            except TrustError as error:
                raise SecAggError(f"the keys of worker number {u} ({keys.worker or 'unnamed'}) "
                                  f"are refused: {error}") from None
        return _distinct(names)

    def _record(self, state: _Round, kind: str, peers: list[int]) -> None:
        """Keeps the rerun rule for the round's input (see worker.contributions)."""
        unknown = [u for u in peers if u not in state.names]
        if unknown:
            raise SecAggError(f"the coordinator named workers {unknown}, whose keys this "
                              "worker never saw")
        try:
            self.ledger.record(state.contribution.task_key.hex(), state.contribution.step,
                               kind, [state.names[u] for u in peers])
        except RerunRefused as error:
            raise SecAggError(str(error)) from None

    def _current(self, assignment: pb.Assignment) -> _Round:
        state = self._rounds.get(assignment.task_id)
        if state is None or state.number != _number(assignment):
            raise SecAggError(f"task {assignment.task_id}: {assignment.phase} of round "
                              f"{assignment.round}, step {assignment.stage + 1}, which this "
                              "worker did not open")
        return state


def _distinct(names: dict[int, str]) -> dict[int, str]:
    """`names`, where no two numbers share a name."""
    if len(set(names.values())) != len(names):
        raise SecAggError("two of the round's key sets belong to the same worker: the "
                          "coordinator may not count one worker twice")
    return names


def _check_listed(keys: Mapping[int, pb.SecAggKeys], names: dict[int, str],
                  listed: dict[int, pb.SecAggListed]) -> None:
    """SecAgg+: each neighbour's signed keys carry the ring commitment and the name the list
    before the ring gave it, so the ring this worker revealed its nonce for is the one they
    signed for."""
    for u, signed in keys.items():
        entry = listed.get(u)
        if entry is None or (entry.ring_commitment, entry.worker or f"worker number {u}") != (
                signed.ring_commitment, names[u]):
            raise SecAggError(f"the keys of worker number {u} ({names[u]}) differ from what "
                              "the list before the ring said of it: refused")


def _number(assignment: pb.Assignment) -> tuple[int, int]:
    return assignment.round, assignment.stage


def _share_bytes(shares: dict[int, int]) -> dict[int, bytes]:
    return {u: share.to_bytes(SHARE_BYTES, "big") for u, share in shares.items()}

