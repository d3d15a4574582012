"""Secure aggregation over a round's workers: the coordinator relays keys and encrypted shares it
cannot read, adds masked vectors it cannot read either, and learns only their sum.

The phases after the keys are "secagg_ring" (SecAgg+ only: the ring's nonces), "secagg_share",
"secagg_check" and "secagg_unmask", each bounded by `connection_timeout`; the keys and the
masked input ride on phases of the task's kind (see coordinator/analytics.py and
coordinator/learning.py). A worker whose message is malformed is
dropped and named; fewer than the threshold (min_clients, and more than the task's
secagg_threshold fraction of those selected) fails the round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from coordinator.rounds import Round, RoundFailed, listed
from sdk import values, weights
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2
from sdk.secagg import Revealed, Rule, SecAggError, SecAggServer, graph
from sdk.secagg.binding import round_context
from sdk.secagg.shamir import SHARE_BYTES

SecAggRequests = dict[str, pb.SecAggRequest]


def describe_mode(spec: task_pb2.TaskSpec) -> str:
    """The task log's line on how the round's inputs are aggregated."""
    if not spec.secure_aggregation:
        return ("secure aggregation: off (the task switched it off): the coordinator sees what "
                "each worker sends")
    words = ", each worker's update in 32-bit words" if weights.secure_bits(spec) == 32 else ""
    return (f"secure aggregation: on: the coordinator learns only the sum of the workers' "
            f"inputs, in fixed point with {spec.precision} decimal digits{words}")


class SecureRound:
    """One secure sum over the workers of `round_`, numbered in order of name, under the task's
    `rule` (its threshold; SecAgg+ above its plus_above workers); `stage` is the analytics step
    the phases belong to."""

    def __init__(self, round_: Round, rules: task_pb2.RoundRules, rule: Rule,
                 stage: int = 0) -> None:
        self.round = round_
        self.stage = stage
        self.rules = rules
        self.rule = rule
        self.workers = sorted(round_.workers, key=lambda w: w.name)
        self.index = {w.name: u for u, w in enumerate(self.workers)}
        self.server: SecAggServer | None = None
        self.keys: dict[int, pb.SecAggKeys] = {}  # as each worker signed them

    @property
    def names(self) -> list[str]:
        return [w.name for w in self.workers]

    def opening(self, describe: bool = True) -> SecAggRequests:
        """The first phase's requests: each worker's number, and how many were selected. With
        `describe`, the task's log states the round's protocol and threshold at its first
        step."""
        if describe and self.stage == 0:
            self.round.log(f"round {self.round.number}: {self._protocol()}")
        return {w.name: pb.SecAggRequest(index=u, selected=len(self.workers))
                for u, w in enumerate(self.workers)}

    def _protocol(self) -> str:
        """The round's protocol and threshold, in words."""
        n = len(self.workers)
        if self.rule.uses_plus(n):
            return (f"SecAgg+ over {n} workers (more than the task's secagg_plus_above "
                    f"{self.rule.plus_above}): each masks with k = {graph.degree(n)} neighbours "
                    f"on a ring drawn from nonces every worker committed to; threshold "
                    f"{self.rule.describe(n)}")
        return f"secure aggregation over {n} workers; threshold {self.rule.describe(n)}"

    def start(self, responses: dict[str, pb.SecAggResponse], vector_length: int,
              total: np.ndarray | None = None) -> None:
        """Takes the workers' keys from the first phase's parsed answers, once the length of
        the vector to sum is known; `total` is memory to reuse for the sum."""
        self.server = SecAggServer(len(self.workers), self.rule, vector_length, self.names,
                                   total)
        for name, response in responses.items():
            keys = response.keys
            self.server.receive_keys(self.index[name], keys.c_pk, keys.s_pk, keys.commitment,
                                     keys.ring_commitment)
            self.keys[self.index[name]] = pb.SecAggKeys(
                c_pk=keys.c_pk, s_pk=keys.s_pk, commitment=keys.commitment,
                signature=keys.signature, certificate=keys.certificate, worker=name,
                ring_commitment=keys.ring_commitment)

    async def exchange_shares(self) -> list[int]:
        """Relays the public keys (under SecAgg+, then the ring's nonces), then each worker's
        encrypted shares; returns U2, the workers that will mask with one another."""
        server = self._server
        keyed = await self._close("advertise", server.public_keys)
        nonces: dict[int, bytes] = {}
        if server.plus:
            listed = {u: pb.SecAggListed(ring_commitment=self.keys[u].ring_commitment,
                                         worker=self.keys[u].worker) for u in keyed}
            answers = await self._phase("secagg_ring", {
                w.name: pb.SecAggRequest(listed=listed) for w in self.round.workers})
            for name, response in self.parse(answers, "secagg_ring").items():
                server.receive_nonce(self.index[name], response.ring_nonce)
            nonces = await self._close("ring", server.ring_nonces)
        answers = await self._phase("secagg_share", {  # keys with each one's signature
            w.name: pb.SecAggRequest(ring_nonces=nonces, public_keys={
                u: self.keys[u] for u in server.keys_for(self.index[w.name])})
            for w in self.round.workers})
        for name, response in self.parse(answers, "secagg_share").items():
            server.receive_shares(self.index[name], dict(response.shares))
        routed = await self._close("share keys", server.routed_shares)
        answers = await self._phase("secagg_check", {
            w.name: pb.SecAggRequest(shares=routed[self.index[w.name]])
            for w in self.round.workers})
        for name, response in self.parse(answers, "secagg_check").items():
            server.receive_check(self.index[name], list(response.malformed))
        return await self._close("check shares", server.masking_peers)

    def masked_requests(self, peers: list[int], opening_inputs: Any, masked_inputs: Any,
                        **fields: Any) -> SecAggRequests:
        """The masked input's requests: the peers to mask with, and `fields`, the same for
        every worker; the masks are bound to them and to the phases' inputs."""
        request = pb.SecAggRequest(peers=peers, **fields)
        self._server.context = round_context(
            self.round.task_id, self.round.number, self.stage, values.encode(opening_inputs),
            values.encode(masked_inputs), request)
        return {w.name: request for w in self.round.workers}

    def add_masked(self, name: str, length: int, pieces: Iterable[np.ndarray]) -> None:
        """Adds a worker's masked vector (`length` uint64 words) to the running total."""
        self._server.receive_masked(self.index[name], length, pieces)

    def summed_masked(self, name: str) -> None:
        """Records that a worker's whole masked vector was added to the total as it came."""
        self._server.summed_masked(self.index[name])

    async def unmask(self) -> np.ndarray:
        """Closes the masked input, collects the survivors' shares and returns the unmasked
        total: the uint64 sum of the encoded inputs that arrived."""
        server = self._server
        survivors = await self._close("masked input", server.unmask_request)
        answers = await self._phase("secagg_unmask", {
            w.name: pb.SecAggRequest(survivors=survivors) for w in self.round.workers})
        for name, response in self.parse(answers, "secagg_unmask").items():
            try:
                revealed = Revealed(_shares(response.self_mask_shares),
                                    _shares(response.mask_key_shares))
            except ValueError as error:
                self.drop(name, "secagg_unmask", f"sent malformed shares: {error}")
                continue
            server.receive_unmask(self.index[name], revealed)
        total = await self._close("unmasking", server.unmasked_total, in_thread=True)
        if len(server.u3) < len(self.workers):
            summed = listed([self.names[u] for u in sorted(server.u3)], "worker")
            self.round.log(f"round {self.round.number}: the sum covers {len(server.u3)} of "
                           f"{len(self.workers)} selected workers: {summed}")
        return total

    @property
    def summed(self) -> list[str]:
        """The workers whose inputs are in the total."""
        return [self.names[u] for u in sorted(self._server.u3)]

    @property
    def _server(self) -> SecAggServer:
        if self.server is None:
            raise RuntimeError("start() comes first")
        return self.server

    async def _phase(self, name: str, requests: SecAggRequests) -> dict[str, Any]:
        return await self.round.phase(name, self.rules.connection_timeout, self.stage,
                                     secagg=requests)

    async def _close(self, phase: str, close: Callable[[], Any], in_thread: bool = False) -> Any:
        """Closes a phase on the server; the workers it dropped leave the round too."""
        try:
            result = await asyncio.to_thread(close) if in_thread else close()
        except SecAggError as error:
            raise RoundFailed(f"round {self.round.number}: {error}") from None
        finally:
            for u, reason in sorted(self._server.dropped.items()):
                self.drop(self.names[u], phase, reason)
        return result

    def drop(self, name: str, phase: str, reason: str) -> None:
        """Leaves a worker out of the round, if it is still in."""
        worker = next((w for w in self.round.workers if w.name == name), None)
        if worker is not None:
            self.round.drop(worker, phase, reason)

    def parse(self, answers: dict[str, bytes], phase: str) -> dict[str, pb.SecAggResponse]:
        """The answers that parse; a worker whose answer does not is dropped."""
        parsed = {}
        for name, data in answers.items():
            try:
                parsed[name] = pb.SecAggResponse.FromString(data)
            except Exception:  # noqa: BLE001 - whatever a worker sends, the round goes on
                self.drop(name, phase, "its answer is not a SecAggResponse")
        return parsed


def _shares(shares: dict[int, bytes]) -> dict[int, int]:
    if any(len(share) != SHARE_BYTES for share in shares.values()):
        raise ValueError(f"a share is not {SHARE_BYTES} bytes")
    return {u: int.from_bytes(share, "big") for u, share in shares.items()}
