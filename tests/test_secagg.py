"""Secure aggregation: exact sums under dropouts, masked inputs that look uniform, a coordinator
that can read nothing it relays, refusals with clear messages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lying_unmask import split_survivors

from sdk.secagg import Rule, SecAggClient, SecAggError, SecAggServer, graph, shamir
from sdk.secagg import client as secagg_client
from sdk.secagg.client import NONCE_BYTES
from sdk.secagg.fixedpoint import (
    FixedPointOverflow,
    decode,
    decode_wide,
    encode,
    encode_into,
    encode_wide,
)
from sdk.secagg.local import run_local
from sdk.secagg.masks import CHUNK, accumulate

PRECISION = 6


def make_round(n: int, min_clients: int, length: int = 16):
    clients = {u: SecAggClient(u, Rule(min_clients), n) for u in range(n)}
    return clients, SecAggServer(n, Rule(min_clients), length)


def run_round(xs: dict[int, np.ndarray], min_clients: int,
              drop: dict[str, set[int]] | None = None, tamper=None):
    """One whole round over the encoded `xs`; returns the server and the decoded sum."""
    encoded = {u: encode(x, PRECISION, len(xs)) for u, x in xs.items()}
    server, total = run_local(encoded, Rule(min_clients), drop, tamper)
    return server, decode(total, PRECISION)


def inputs(n: int, length: int = 16, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.normal(0, 100, length).round(PRECISION) for u in range(n)}


def expected(xs, included) -> np.ndarray:
    return sum(xs[u] for u in included)


@pytest.mark.parametrize("n", [3, 7])
def test_sum_is_exact_without_dropouts(n):
    xs = inputs(n)
    server, total = run_round(xs, min_clients=2)
    np.testing.assert_allclose(total, expected(xs, range(n)), rtol=0, atol=n * 10**-PRECISION)
    assert server.u3 == set(range(n)) and not server.dropped


@pytest.mark.parametrize("drop, included", [
    ({"advertise": {1}}, {0, 2, 3, 4, 5, 6, 7, 8}),
    ({"share": {2}}, {0, 1, 3, 4, 5, 6, 7, 8}),
    ({"mask": {3, 5}}, {0, 1, 2, 4, 6, 7, 8}),
    ({"unmask": {0, 6}}, {0, 1, 2, 3, 4, 5, 6, 7, 8}),
    ({"check": {7}}, {0, 1, 2, 3, 4, 5, 6, 8}),
    ({"advertise": {6}, "share": {0}, "check": {2}, "mask": {4}},
     {1, 3, 5, 7, 8}),
])
def test_sum_is_exact_over_the_inputs_that_arrived(drop, included):
    xs = inputs(9)  # threshold 5
    server, total = run_round(xs, min_clients=3, drop=drop)
    np.testing.assert_allclose(total, expected(xs, included), rtol=0, atol=9 * 10**-PRECISION)
    assert server.u3 == included
    assert set(server.dropped) == set().union(*drop.values())  # named even if input summed
    for v in server.u2:  # of each worker, the coordinator saw shares of one secret only
        kinds = {kind for r in server._revealed.values() for kind in ("self_mask", "mask_key")
                 if v in getattr(r, kind)}
        assert kinds == ({"self_mask"} if v in included else {"mask_key"})


@pytest.mark.parametrize("phase, message", [
    ("advertise", "failed at advertise: 3 of 7 selected workers remain, at least 4 needed"),
    ("share", "failed at share keys: 3 of 7"),
    ("check", "failed at check shares: 3 of 7"),
    ("mask", "failed at masked input: 3 of 7"),
    ("unmask", "failed at unmasking: 3 of 7"),
])
def test_fewer_than_the_threshold_fails_the_round(phase, message):
    with pytest.raises(SecAggError, match=message) as raised:
        run_round(inputs(7), min_clients=2, drop={phase: {0, 1, 2, 3}})
    assert "4 workers (worker 0, worker 1, worker 2, worker 3): " in str(raised.value)


def test_a_round_that_fails_names_its_dropped_workers_grouped_by_why_in_one_short_line():
    with pytest.raises(SecAggError) as raised:
        run_round(inputs(60), min_clients=2, drop={"advertise": set(range(40))})
    message = str(raised.value)
    assert "40 workers (worker 0, worker 1, worker 2, worker 3, worker 4 and 35 more): " \
        in message
    assert len(message) < 400


def test_threshold_is_min_clients_and_a_majority():
    assert Rule(2).threshold(7) == 4 and Rule(5).threshold(7) == 5 and Rule(2).threshold(3) == 2
    with pytest.raises(ValueError):
        Rule(4).threshold(3)


def test_a_threshold_fraction_of_one_half_gives_the_majority_thresholds_of_before():
    for n in range(2, 80):
        for min_clients in range(2, n + 1, 3):
            assert Rule(min_clients).threshold(n) == max(min_clients, n // 2 + 1)
        assert Rule(2, plus_above=1).threshold(n) == graph.degree(n) // 2 + 1  # SecAgg+
    assert Rule(2, 0, 0.9).threshold(10) == 10 and Rule(9, 0, 0.6).threshold(10) == 9


@pytest.mark.parametrize("fraction, colluders, rebuilt", [
    (0.5, 1, (True, True)),  # t = 5 of 9: 2t - n = 1 colluder gives the coordinator both
    (0.5, 2, (True, True)),
    (2 / 3, 2, (True, False)),  # t = 7 of 9: 2t - n = 5 colluders needed
    (2 / 3, 4, (True, False)),
    (2 / 3, 5, (True, True)),
])
def test_a_coordinator_lying_about_who_dropped_needs_2t_minus_n_colluders(fraction, colluders,
                                                                          rebuilt):
    """It tells some workers that worker 0 survived and the others that it dropped: with
    enough colluders it rebuilds both worker 0's self-mask seed and its mask key, hence its
    input from its masked vector. Raising secagg_threshold raises the colluders it needs."""
    rule = Rule(2, 0, fraction)
    assert split_survivors(rule, 9, colluders) == rebuilt
    assert rule.colluders(9) == (1 if fraction == 0.5 else 5)


@pytest.mark.parametrize("phase", ["mask", "unmask"])
def test_a_two_thirds_threshold_sums_with_n_minus_t_dropouts_and_fails_clearly_past_them(phase):
    xs = inputs(9)
    encoded = {u: encode(x, PRECISION, 9) for u, x in xs.items()}
    rule = Rule(2, 0, 2 / 3)  # t = 7 of 9: 2 may drop
    server, total = run_local(encoded, rule, {phase: {1, 2}})
    included = set(range(9)) - ({1, 2} if phase == "mask" else set())
    np.testing.assert_allclose(decode(total, PRECISION), expected(xs, included), rtol=0,
                               atol=9 * 10**-PRECISION)
    assert server.threshold == 7 and server.u3 == included
    at = "masked input" if phase == "mask" else "unmasking"
    with pytest.raises(SecAggError, match=f"failed at {at}: 6 of 9 selected workers remain, at "
                       r"least 7 needed \(min_clients, and more than secagg_threshold 0.666667 "
                       "of those selected"):
        run_local(encoded, rule, {phase: {1, 2, 3}})


def test_a_million_values_sum_exactly():
    xs = inputs(3, 1_000_000)
    _, total = run_round(xs, min_clients=2, drop={"mask": {1}})
    np.testing.assert_allclose(total, xs[0] + xs[2], rtol=0, atol=3 * 10**-PRECISION)


@pytest.fixture
def seeded_secrets(monkeypatch):
    """Workers' keys and self-mask seeds drawn from a seeded generator: a statistical test of
    their masks gives the same verdict on every run."""
    rng = np.random.default_rng(20261130)

    class SeededKeys:
        @staticmethod
        def generate() -> X25519PrivateKey:
            return X25519PrivateKey.from_private_bytes(rng.bytes(32))

    monkeypatch.setattr(secagg_client, "X25519PrivateKey", SeededKeys)
    monkeypatch.setattr(secagg_client, "os", SimpleNamespace(urandom=rng.bytes))


def test_masked_input_looks_uniform_and_hides_the_plain_vector(seeded_secrets):
    length = 1 << 16
    clients, _ = make_round(3, 2, length)
    x = np.zeros(length)  # the most structured input there is
    keys = {u: c.advertise() for u, c in clients.items()}
    sent = {u: c.share_keys(keys) for u, c in clients.items()}
    assert clients[0].check_shares({u: sent[u][0] for u in (1, 2)}) == []
    y = encode(x, PRECISION, 3)
    accumulate(y, [], clients[0].mask_seeds([0, 1, 2]))
    assert not np.array_equal(y, encode(x, PRECISION, 3))
    counts = np.bincount(y.view(np.uint8), minlength=256)
    expected_count = counts.sum() / 256
    chi2 = ((counts - expected_count) ** 2 / expected_count).sum()
    assert chi2 < 350  # 255 degrees of freedom: p < 1e-4 above 350
    top = np.bincount((y >> np.uint64(60)).astype(np.int64), minlength=16)  # high bits too
    assert ((top - length / 16) ** 2 / (length / 16)).sum() < 40  # 15 dof, p < 1e-3


def share(clients, server):
    """Keys advertised and shares sent by every worker: the public keys and routed shares."""
    for u, c in clients.items():
        server.receive_keys(u, *c.advertise(), c.commitment)
    keys = server.public_keys()
    for u, c in clients.items():
        server.receive_shares(u, c.share_keys(keys))
    return keys, server.routed_shares()


def test_the_coordinator_cannot_read_what_it_relays():
    clients, server = make_round(5, 3)
    keys, routed = share(clients, server)
    # Every key it could derive from what it saw: the public keys themselves.
    guesses = [AESGCM(k) for pair in keys.values() for k in pair]
    for shares in routed.values():
        for ciphertext in shares.values():
            for aead in guesses:
                with pytest.raises(InvalidTag):
                    aead.decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], None)


def test_fewer_than_threshold_shares_reveal_nothing():
    secret = bytes(range(32))
    shares = shamir.split(secret, list(range(7)), 4)
    assert shamir.combine({u: shares[u] for u in (0, 3, 5, 6)}) == secret
    for partial in ((0, 3, 5), (1, 2, 4), (2, 6, 5)):  # t-1 shares: a random field element
        guess = shamir.interpolate({u: shares[u] for u in partial})
        assert guess != int.from_bytes(secret, "big")
        with pytest.raises(ValueError, match="expected size"):
            shamir.combine({u: shares[u] for u in partial})


def test_a_worker_masks_once_and_reveals_one_kind_of_share_per_worker_once():
    clients, server = make_round(4, 3)
    keys = {u: c.advertise() for u, c in clients.items()}
    sent = {u: c.share_keys(keys) for u, c in clients.items()}
    clients[0].check_shares({u: sent[u][0] for u in (1, 2, 3)})
    clients[0].mask_seeds([0, 1, 2, 3])
    with pytest.raises(SecAggError, match="already sent"):
        clients[0].mask_seeds([0, 1, 2])
    revealed = clients[0].unmask([0, 1, 2])
    assert set(revealed.self_mask) == {0, 1, 2} and set(revealed.mask_key) == {3}
    with pytest.raises(SecAggError, match="already revealed"):
        clients[0].unmask([0, 1, 2, 3])


def test_overflowing_inputs_are_refused():
    clients, _ = make_round(3, 2, 4)
    with pytest.raises(FixedPointOverflow, match="a value does not fit") as refused:
        encode(np.array([0.0, 1.0, 1e13, 2.0]), PRECISION, 3)
    assert refused.value.index == 2 and "1e" not in str(refused.value)  # no value is quoted
    with pytest.raises(FixedPointOverflow) as refused:
        encode(np.array([0.0, np.nan]), PRECISION, 3)
    assert refused.value.index == 1
    assert encode(np.array([-1.5]), PRECISION, 3).view(np.int64)[0] == -1_500_000


def flip_last_bit_of_share_to_1(phase, u, msg):  # right length, fails to decrypt
    if phase == "share" and u == 3:
        msg[1] = msg[1][:-1] + bytes([msg[1][-1] ^ 1])
    return msg


def truncate_shares_of_2(phase, u, msg):
    return {v: c[:-1] for v, c in msg.items()} if phase == "share" and u == 2 else msg


def shorten_vector_of_4(phase, u, msg):
    return msg[:-1] if phase == "mask" and u == 4 else msg


@pytest.mark.parametrize("tamper, dropped", [
    (flip_last_bit_of_share_to_1, {3: "sent malformed shares to worker 1"}),
    (truncate_shares_of_2, {2: "malformed shares for workers [0, 1, 3, 4]"}),
    (shorten_vector_of_4, {4: "sent a masked vector of 15 words, expected 16"}),
])
def test_a_malformed_message_drops_and_names_its_sender(tamper, dropped):
    xs = inputs(5)
    server, total = run_round(xs, min_clients=3, tamper=tamper)
    assert server.dropped == dropped
    np.testing.assert_allclose(total, expected(xs, set(xs) - set(dropped)), rtol=0, atol=1e-5)


def test_late_or_repeated_messages_are_refused():
    clients, server = make_round(3, 2)
    server.receive_keys(0, *clients[0].advertise(), clients[0].commitment)
    with pytest.raises(ValueError, match="already answered"):
        server.receive_keys(0, *clients[0].advertise(), clients[0].commitment)
    server.receive_keys(1, *clients[1].advertise(), clients[1].commitment)
    server.public_keys()
    with pytest.raises(ValueError, match="not in the round"):
        server.receive_keys(2, *clients[2].advertise(), clients[2].commitment)
    assert server.dropped == {2: "sent no keys (left at advertise)"}
    with pytest.raises(ValueError, match="worker 7 is not in the round"):
        server.receive_shares(7, {})


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_masks_are_one_aes_ctr_keystream_across_chunks_and_threads(threads):
    seed, length = bytes(range(32)), 3 * CHUNK + 5
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = np.frombuffer(encryptor.update(bytes(8 * length)), dtype=np.uint64)
    out = np.arange(length, dtype=np.uint64)
    accumulate(out, [out.copy()], [(seed, 1), (bytes(32), 1), (bytes(32), -1)], threads)
    np.testing.assert_array_equal(out, 2 * np.arange(length, dtype=np.uint64) + stream)


def test_masks_stop_between_chunks_once_told():
    import threading

    stop = threading.Event()
    stop.set()
    out = np.zeros(4 * CHUNK, dtype=np.uint64)
    accumulate(out, [], [(bytes(range(32)), 1)], threads=2, stop=stop)
    assert not out.any()  # nothing made: every slice saw the stop before its first chunk


def encode32(x: np.ndarray, precision: int, max_clients: int) -> np.ndarray:
    out = np.empty(x.size, dtype=np.uint32)
    encode_into(out, x, 10.0**precision, precision, max_clients, piece=1000)
    return out


@pytest.mark.parametrize("drop", [{}, {"mask": {1, 4}}, {"unmask": {2}}])
def test_32_bit_words_sum_exactly_what_64_bit_words_sum(drop):
    """The same inputs, encoded in 32-bit words and in 64-bit ones, masked through the whole
    protocol (dropouts' masks taken off, in slices of several chunks): the same integer sum."""
    rng = np.random.default_rng(5)
    n, length = 6, 3 * CHUNK + 7
    bound = 2.0**31 / n / 10**PRECISION  # the largest |x| that 32-bit words take from n workers
    xs = {u: rng.uniform(-bound, bound, length) for u in range(n)}
    xs[0][:3] = [bound * 0.999999, -bound * 0.999999, 0.0]
    _, wide = run_local({u: encode(x, PRECISION, n) for u, x in xs.items()}, Rule(4), drop)
    server, narrow = run_local({u: encode32(x, PRECISION, n) for u, x in xs.items()}, Rule(4), drop)
    assert narrow.dtype == np.uint32 and server.dropped.keys() == set().union(*drop.values())
    np.testing.assert_array_equal(narrow.view(np.int32).astype(np.int64), wide.view(np.int64))
    summed = sorted(server.u3)
    np.testing.assert_allclose(decode(narrow, PRECISION), sum(xs[u] for u in summed), rtol=0,
                               atol=n * 10**-PRECISION)


def test_a_value_whose_32_bit_sum_could_wrap_is_refused_not_wrapped():
    """|x| * 10^precision * max_clients must stay below 2^31: at the edge a value is refused
    (its sum over max_clients workers could wrap into a wrong answer), just below it sums."""
    edge = 2.0**31 / 3 / 10**PRECISION
    with pytest.raises(FixedPointOverflow, match=r"^a value does not fit.*below 2\^31") as refused:
        encode32(np.array([0.0, 1.0, -edge, 2.0]), PRECISION, 3)
    assert refused.value.index == 2 and "715" not in str(refused.value)  # no value is quoted
    just_below = np.array([edge - 1e-3, -(edge - 1e-3)])
    total = sum(encode32(just_below, PRECISION, 3) for _ in range(3))
    np.testing.assert_allclose(decode(total, PRECISION), 3 * just_below, atol=3e-6)
    with pytest.raises(FixedPointOverflow, match=r"below 2\^47"):  # wide pairs of 32-bit words
        encode_wide(np.array([1.0, 2.0**46]), 0, 3, bits=32)
    largest = 2**47 // 3 - 2**16  # its high part, times 3 workers, stays below 2^31
    pairs = encode_wide(np.array([largest, -5.5]), 0, 3, bits=32)
    assert pairs.dtype == np.uint32
    assert decode_wide(pairs * np.uint32(3)) == [3 * largest, -18]  # rint(-5.5) = -6


def test_encoding_into_a_vector_piece_by_piece_equals_encode():
    x = np.random.default_rng(1).normal(0, 50, 200_003).astype(np.float32)
    out = np.empty(x.size, dtype=np.uint64)
    encode_into(out, x, 7 * 10.0**PRECISION, PRECISION, 3, piece=1000)
    np.testing.assert_array_equal(out, encode(x.astype(np.float64) * 7, PRECISION, 3))
    masks = np.random.default_rng(2).integers(0, 2**64, x.size, dtype=np.uint64)
    added = masks.copy()  # a worker's masks, made first, take its encoded values in place
    encode_into(added, x, 7 * 10.0**PRECISION, PRECISION, 3, piece=1000, add=True)
    np.testing.assert_array_equal(added, masks + out)
    x[150_000] = 1e13
    with pytest.raises(FixedPointOverflow) as refused:
        encode_into(out, x, 10.0**PRECISION, PRECISION, 3, piece=1000)
    assert refused.value.index == 150_000


def test_a_worker_shares_once_with_at_most_the_workers_selected_under_its_own_threshold():
    """A coordinator cannot pick the threshold, nor pad the key list, nor ask for shares twice:
    each would let it collect both secrets of one worker from fewer than a majority."""
    clients, _ = make_round(3, 2)
    assert clients[0].threshold == 2
    keys = {u: c.advertise() for u, c in clients.items()}
    extra = SecAggClient(3, Rule(2), 4)
    with pytest.raises(SecAggError, match="4 workers advertised keys in a round of 3"):
        clients[0].share_keys({**keys, 3: extra.advertise()})
    clients[0].share_keys(keys)
    with pytest.raises(SecAggError, match="already sent"):
        clients[0].share_keys(keys)
    with pytest.raises(SecAggError, match="worker number 3 of 3"):
        SecAggClient(3, Rule(2), 3)


def test_a_worker_refuses_a_round_larger_than_its_tasks_max_clients():
    """A coordinator claiming more workers than the signed task allows would move the round
    to SecAgg+ (t within a neighbourhood of k + 1, not of all selected): 11 colluders instead
    of 16 unmask one input of a 30-worker task at secagg_threshold 0.75."""
    rule = Rule(2, 32, 0.75, max_clients=30)
    assert SecAggClient(0, rule, 30).threshold == 23 and rule.colluders(30) == 16
    assert rule.colluders(1000) == 11
    with pytest.raises(SecAggError, match="put 1000 workers in a round of a task whose "
                                          "max_clients is 30"):
        SecAggClient(0, rule, 1000)
    assert SecAggClient(0, Rule(2, 32, 0.75), 1000).plus  # max_clients 0: no bound


def test_false_claims_and_wrong_shares_are_caught():
    xs = inputs(5)
    accuse_everyone = lambda phase, u, msg: [1, 2, 3] if phase == "check" and u == 0 else msg  # noqa: E731
    server, total = run_round(xs, min_clients=3, tamper=accuse_everyone)
    assert server.dropped == {0: "claimed that 3 workers sent it malformed shares; one such "
                                 "claim is believed a round"}
    np.testing.assert_allclose(total, expected(xs, {1, 2, 3, 4}), rtol=0, atol=1e-5)

    def off_by_one(phase, u, msg):  # a share nudged: the seed rebuilt from it is wrong
        if phase == "unmask" and u == 1:
            msg.self_mask[2] += 1
        return msg

    with pytest.raises(SecAggError, match="worker 2's self mask do not rebuild the seed it committed"):
        run_round(inputs(3), min_clients=2, tamper=off_by_one)


def test_masks_cancel_only_when_every_worker_was_told_the_same():
    """Pairwise seeds are bound to the round's context: a coordinator that shows one worker a
    different layout or inputs than the others gets a sum that is noise, not that worker's x."""
    xs = inputs(3)
    clients, server = make_round(3, 2)
    _, routed = share(clients, server)
    for u, c in clients.items():
        server.receive_check(u, c.check_shares(routed[u]))
    peers = server.masking_peers()
    server.context = b"what the others saw"
    for u, c in clients.items():
        y = encode(xs[u], PRECISION, 3)
        seen = b"what worker 0 saw" if u == 0 else server.context
        accumulate(y, [], c.mask_seeds(peers, seen))
        server.receive_masked(u, y.size, [y])
    for u in server.unmask_request():
        server.receive_unmask(u, clients[u].unmask(list(peers)))
    total = decode(server.unmasked_total(), PRECISION)
    assert not np.allclose(total, expected(xs, {0, 1, 2}), atol=1)
    assert not np.allclose(total, xs[0], atol=1) and np.abs(total).max() > 1e9
