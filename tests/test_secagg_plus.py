"""SecAgg+ (sdk/secagg/graph.py): rounds above `plus_above` workers share and mask within random
neighbourhoods of k = 2 ceil(log2 n); the sum stays exact under dropouts at every phase, and a
coordinator cannot hand a worker another neighbourhood than the committed nonces give."""

from __future__ import annotations

import numpy as np
import pytest
from lying_unmask import split_survivors

from sdk.privacy.accounting import fewest_honest
from sdk.secagg import Rule, SecAggClient, SecAggError, SecAggServer, graph
from sdk.secagg.fixedpoint import decode, encode
from sdk.secagg.local import run_local

PRECISION = 6
PLUS = 32
RULE = Rule(2, PLUS)


def inputs(n: int, length: int = 8) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(n)
    return {u: rng.normal(0, 100, length).round(PRECISION) for u in range(n)}


class Spy:
    """A `drop` for run_local that may pick whom to drop from the graph (the nonces it saw)."""

    def __init__(self, n: int, drop: dict, pick=None):
        self.n, self.drop, self.pick, self.nonces = n, drop, pick, {}

    def tamper(self, phase, u, message):
        if phase == "ring":
            self.nonces[u] = message
        return message

    def get(self, phase, default=()):
        if self.pick is not None and phase == self.pick[0]:
            return self.pick[1](graph.neighbourhoods(self.nonces, self.n))
        return self.drop.get(phase, default)


def plus_round(n: int, drop: dict | None = None, pick=None, rule: Rule = RULE):
    xs = inputs(n)
    spy = Spy(n, drop or {}, pick)
    encoded = {u: encode(x, PRECISION, n) for u, x in xs.items()}
    server, total = run_local(encoded, rule, spy, spy.tamper)
    return xs, server, decode(total, PRECISION), spy


def test_k_is_about_twice_log2_n_and_the_graph_is_a_symmetric_random_ring():
    assert [graph.degree(n) for n in (3, 4, 50, 100, 128, 200, 1000)] == [2, 2, 12, 14, 14, 16, 20]
    nonces = {u: bytes([u]) * 32 for u in range(100)}
    hoods = graph.neighbourhoods(nonces, 100)
    assert {len(h) for h in hoods.values()} == {15}
    assert all(u in hoods[v] for u, h in hoods.items() for v in h)
    assert graph.ring(nonces, 100) != sorted(nonces)
    changed = {**nonces, 7: b"\x08" * 32}  # one nonce: another ring
    assert graph.ring(changed, 100) != graph.ring(nonces, 100)


def test_the_threshold_and_the_dp_honest_count_are_a_neighbourhood_majority():
    assert RULE.threshold(100) == 8 and RULE.threshold(32) == 17
    assert fewest_honest(RULE, 100) == 8 and fewest_honest(Rule(2), 100) == 51
    assert Rule(2, 2).threshold(3) == 2 and not graph.uses_plus(100, 0)


@pytest.mark.parametrize("n, drop", [
    (50, {}),
    (50, {"advertise": {1, 20, 33}}),
    (50, {"share": {2, 40}}),
    (50, {"check": {7, 8}}),
    (50, {"mask": {3, 5, 49}}),
    (50, {"unmask": {0, 6, 31}}),
    (200, {"advertise": set(range(0, 200, 23)), "share": {1, 101}, "check": {2},
           "mask": set(range(5, 200, 31)), "unmask": set(range(10, 200, 37))}),
])
def test_sum_is_exact_over_the_inputs_that_arrived_with_dropouts_at_each_phase(n, drop):
    xs, server, total, _ = plus_round(n, drop)
    gone = set().union(*drop.values()) if drop else set()
    included = set(range(n)) - set().union(*(v for p, v in drop.items() if p != "unmask"))
    np.testing.assert_allclose(total, sum(xs[u] for u in included), rtol=0,
                               atol=n * 10**-PRECISION)
    assert server.u3 == included and set(server.dropped) == gone
    for v in server.u2:  # of each worker, the coordinator saw shares of one secret only
        kinds = {kind for r in server._revealed.values() for kind in ("self_mask", "mask_key")
                 if v in getattr(r, kind)}
        assert kinds == ({"self_mask"} if v in included else {"mask_key"})


def test_each_worker_shares_with_its_k_neighbours_only():
    n = 128
    _, server, _, spy = plus_round(n)
    hoods = graph.neighbourhoods(spy.nonces, n)
    assert {len(c) for c in server._ciphertexts.values()} == {graph.degree(n)}
    assert all(set(c) == hoods[u] - {u} for u, c in server._ciphertexts.items())
    assert max(len(r.self_mask) for r in server._revealed.values()) == graph.degree(n) + 1


def test_a_neighbourhood_that_loses_its_majority_at_unmasking_fails_the_round_clearly():
    def neighbours_of_worker_0(hoods):
        return set(sorted(hoods[0] - {0})[:7])  # 6 of its 13 are left: 7 needed

    with pytest.raises(SecAggError, match="6 shares of worker 0's self mask, at least 7 needed"):
        plus_round(50, pick=("unmask", neighbours_of_worker_0))


@pytest.mark.parametrize("fraction, colluders, rebuilt", [
    (0.5, 2, (True, True)),  # t = 7 of a neighbourhood of 13: 2t - (k + 1) = 1 colluder
    (2 / 3, 2, (True, False)),  # t = 9: 5 colluding neighbours needed
    (2 / 3, 5, (True, True)),
])
def test_a_lying_coordinator_needs_2t_minus_k_plus_1_colluding_neighbours(fraction, colluders,
                                                                          rebuilt):
    """Worker 0's neighbours told different survivor lists (tests/lying_unmask.py), with
    `colluders` of its neighbours handing over both shares they hold of its secrets."""
    rule = Rule(2, PLUS, fraction)
    assert rule.size(40) == 13 and rule.colluders(40) == (1 if fraction == 0.5 else 5)
    assert split_survivors(rule, 40, colluders) == rebuilt


def test_a_two_thirds_threshold_keeps_a_neighbourhood_through_k_plus_1_minus_t_dropouts():
    rule = Rule(2, PLUS, 2 / 3)  # 50 workers: k = 12, t = floor(2/3 x 13) + 1 = 9

    def neighbours_of_worker_0(count):
        return lambda hoods: set(sorted(hoods[0] - {0})[:count])

    xs, server, total, _ = plus_round(50, pick=("unmask", neighbours_of_worker_0(4)), rule=rule)
    np.testing.assert_allclose(total, sum(xs.values()), rtol=0, atol=50 * 10**-PRECISION)
    assert server.threshold == 9 and len(server.dropped) == 4
    with pytest.raises(SecAggError, match="8 shares of worker 0's self mask, at least 9 needed"):
        plus_round(50, pick=("unmask", neighbours_of_worker_0(5)), rule=rule)


def test_a_worker_that_keeps_its_ring_nonce_fails_the_round_by_name():
    """Leaving out a nonce would let the coordinator choose among rings: it fails the round."""
    with pytest.raises(SecAggError, match="failed at ring: worker 4 did not reveal the ring nonce"):
        plus_round(50, {"ring": {4}})


def keyed(n: int):
    clients = {u: SecAggClient(u, RULE, n) for u in range(n)}
    server = SecAggServer(n, RULE, 8)
    for u, c in clients.items():
        server.receive_keys(u, *c.advertise(), c.commitment, c.ring_commitment)
    server.public_keys()
    commitments = server.ring_commitments()
    for u, c in clients.items():
        server.receive_nonce(u, c.reveal(commitments))
    return clients, server, commitments, server.ring_nonces()


def shared(n: int):
    """Keys and shares of a SecAgg+ round of n, relayed faithfully."""
    clients, server, _, nonces = keyed(n)
    for u, c in clients.items():
        server.receive_shares(u, c.share_keys(server.keys_for(u), nonces))
    return clients, server


def test_each_worker_receives_the_keys_of_its_neighbourhood_only():
    """Before the ring a worker sees U1 as ring commitments (32 bytes each); once it is drawn,
    only its k neighbours' keys: a 1,000-worker round relays 21 key sets to each, not 1,000."""
    n = 1000
    clients, server, _, nonces = keyed(n)
    for u in (0, 500, 999):
        assert set(server.keys_for(u)) == server.neighbours(u)
        assert len(server.keys_for(u)) == graph.degree(n) + 1 == 21
        assert clients[u].share_keys(server.keys_for(u), nonces).keys() == (
            server.neighbours(u) - {u})


def test_a_coordinator_cannot_hand_a_worker_another_ring():
    """The ring is fixed by nonces committed before any is revealed: a worker refuses a
    commitment list without its own, with one twice or with more than were selected, a nonce
    that is not the one committed to, a nonce list with one left out, a second reveal, and
    keys of workers other than its ring neighbours (every worker's, or a stranger's)."""
    n = 40
    clients, server, commitments, nonces = keyed(n)
    fresh = SecAggClient(0, RULE, n)
    with pytest.raises(SecAggError, match="lack this worker's own"):
        fresh.reveal(commitments)  # the list a coordinator kept from another round
    own = {**commitments, 0: fresh.ring_commitment}
    with pytest.raises(SecAggError, match="not all distinct"):
        fresh.reveal({**own, 1: own[2]})
    with pytest.raises(SecAggError, match="41 workers advertised keys in a round of 40"):
        fresh.reveal({**own, 40: b"\x28" * 32})
    with pytest.raises(SecAggError, match="1 workers advertised keys, at least 7 needed"):
        fresh.reveal({0: fresh.ring_commitment})
    mine = server.keys_for(0)
    with pytest.raises(SecAggError, match=r"ring nonces of workers \[5\] are missing or do not"):
        clients[0].share_keys(mine, {**nonces, 5: b"\x05" * 32})
    with pytest.raises(SecAggError, match=r"ring nonces of workers \[39\] are missing"):
        clients[0].share_keys(mine, {u: n for u, n in nonces.items() if u != 39})
    with pytest.raises(SecAggError, match="already revealed"):
        clients[0].reveal(commitments)
    everyone = server.public_keys()
    with pytest.raises(SecAggError, match="where its neighbourhood on the ring is"):
        clients[0].share_keys(everyone, nonces)
    stranger = next(v for v in range(n) if v not in server.neighbours(0))
    neighbour = max(server.neighbours(0) - {0})
    swapped = {**{u: k for u, k in mine.items() if u != neighbour}, stranger: everyone[stranger]}
    with pytest.raises(SecAggError, match="where its neighbourhood on the ring is"):
        clients[0].share_keys(swapped, nonces)
    lying = SecAggServer(n, RULE, 8)
    for u, c in clients.items():
        lying.receive_keys(u, *c.advertise(), c.commitment, c.ring_commitment)
    lying.public_keys()
    lying.receive_nonce(3, b"\x03" * 32)  # a worker (or a relay) that lies about its nonce
    assert lying.dropped == {3: "revealed a ring nonce that is not the one it committed to"}
    assert clients[0].share_keys(mine, nonces).keys() == server.neighbours(0) - {0}


def test_a_worker_refuses_shares_from_outside_its_neighbourhood_and_thin_unmasking():
    clients, server = shared(40)
    routed = server.routed_shares()
    stranger = next(v for v in range(40) if v not in clients[0].neighbours)
    forged = {**routed[0], stranger: next(iter(routed[stranger].values()))}
    with pytest.raises(SecAggError, match=rf"shares from workers \[{stranger}\], which are not"):
        clients[0].check_shares(forged)
    for u, c in clients.items():
        server.receive_check(u, c.check_shares(routed[u]))
    peers = server.masking_peers()
    clients[0].mask_seeds(peers)
    far = [u for u in peers if u == 0 or u not in clients[0].neighbours]
    with pytest.raises(SecAggError, match="1 of them of its neighbourhood; at least 7, and 7 of its neighbourhood, needed"):
        clients[0].unmask(far)  # enough workers, too few of its own neighbourhood
