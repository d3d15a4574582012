"""The rerun rule and signed keys, on the workers' side of secure aggregation: a hostile
coordinator cannot sum one input of a worker twice over different peers, nor make up peers."""

from __future__ import annotations

import pytest
from tasks import WageAvg

from sdk.proto import services_pb2 as pb
from sdk.secagg import Rule, SecAggError, graph
from sdk.trust import Kit, Verifier
from sdk.trust.provision import create_federation
from worker.contributions import ContributionLedger, RerunRefused
from worker.secure import Contribution, SecureRounds

TASK_KEY = b"\x07" * 16


@pytest.fixture
def federation(tmp_path):
    create_federation(tmp_path / "fed", ["127.0.0.1:6700"], ["a", "b", "c"], [("alice", "analyst")])
    return tmp_path / "fed"


def worker(federation, name: str, ledger_dir) -> SecureRounds:
    kit = Kit.load(federation / "workers" / name)
    verifier = Verifier(kit.ca_pem, (federation / "ca" / "revoked.crl").read_bytes())
    return SecureRounds(ContributionLedger(ledger_dir / f"{name}.sqlite3"), kit, verifier)


def run_round(workers: dict[str, SecureRounds], round_number: int, stage: int = 0,
              step: str = "step 1", tamper=None, rule: Rule = Rule(2)) -> dict[str, object]:
    """Opens a round of a task of `rule` over `workers` (numbered in order), relays their keys
    (through `tamper`, as a lying coordinator could), and asks each for its masks with all of
    them; what each worker said: its mask seeds, or the SecAggError it refused with."""
    names = list(workers)
    keys = {}
    for u, name in enumerate(names):
        opening = pb.Assignment(task_id=1, round=round_number, stage=stage, phase="compute",
                                secagg=pb.SecAggRequest(index=u, selected=len(names)))
        response = pb.SecAggResponse.FromString(
            workers[name].open(opening, Contribution(TASK_KEY, step, rule)))
        keys[u] = response.keys
    if tamper is not None:
        tamper(keys)
    outcome: dict[str, object] = {}
    routed: dict[int, dict[int, bytes]] = {u: {} for u in range(len(names))}
    for u, name in enumerate(names):
        share = pb.Assignment(task_id=1, round=round_number, stage=stage, phase="secagg_share",
                              secagg=pb.SecAggRequest(public_keys=keys))
        try:
            shares = pb.SecAggResponse.FromString(workers[name].answer(share)).shares
        except SecAggError as error:
            outcome[name] = error
            continue
        for v, ciphertext in shares.items():
            routed[v][u] = ciphertext
    for u, name in enumerate(names):
        if name in outcome:
            continue
        check = pb.Assignment(task_id=1, round=round_number, stage=stage, phase="secagg_check",
                              secagg=pb.SecAggRequest(shares=routed[u]))
        masked = pb.Assignment(task_id=1, round=round_number, stage=stage, phase="secagg_masked",
                               secagg=pb.SecAggRequest(peers=list(range(len(names)))))
        workers[name].answer(check)
        try:
            outcome[name] = workers[name].mask_seeds(masked)
        except SecAggError as error:
            outcome[name] = error
    return outcome


def test_a_step_summed_again_over_other_peers_is_refused_even_after_a_restart(federation,
                                                                             tmp_path):
    workers = {name: worker(federation, name, tmp_path) for name in "abc"}
    first = run_round(workers, 1)
    assert all(isinstance(seeds, list) for seeds in first.values())
    again = run_round(workers, 2)  # the same step over the same peers: nothing new is learnt
    assert all(isinstance(seeds, list) for seeds in again.values())

    fewer = run_round({name: workers[name] for name in "ab"}, 3)  # "c dropped", says it
    for name in "ab":
        assert isinstance(fewer[name], SecAggError)
        assert str(fewer[name]) == (
            "step 1 of this task was already masked with a, b, c; the same input is not "
            "masked with another set of workers (a, b), since the difference of the two sums "
            "would reveal inputs")
    restarted = {name: worker(federation, name, tmp_path) for name in "ab"}
    assert all(isinstance(e, SecAggError) for e in run_round(restarted, 4).values())
    other_step = run_round({name: workers[name] for name in "ab"}, 5, stage=1, step="step 2")
    assert all(isinstance(seeds, list) for seeds in other_step.values())


def test_unmasking_over_another_set_of_survivors_is_refused(federation, tmp_path):
    workers = {name: worker(federation, name, tmp_path) for name in "abc"}
    run_round(workers, 1)
    unmask = pb.Assignment(task_id=1, round=1, stage=0, phase="secagg_unmask",
                           secagg=pb.SecAggRequest(survivors=[0, 1, 2]))
    workers["a"].answer(unmask)
    run_round(workers, 2)
    fewer = pb.Assignment(task_id=1, round=2, stage=0, phase="secagg_unmask",
                          secagg=pb.SecAggRequest(survivors=[0, 1]))
    with pytest.raises(SecAggError, match="already summed with a, b, c"):
        workers["a"].answer(fewer)


def test_a_worker_unmasks_only_with_the_signed_tasks_threshold_of_survivors(federation,
                                                                            tmp_path):
    """The threshold is the signed task's (secagg_threshold 0.75: t = 3 of 3), which nothing
    the coordinator sends carries: asked to unmask with 2 survivors, the threshold under the
    default, a worker of that task refuses; one of a default task reveals."""
    task = WageAvg()
    task.secagg_threshold = 0.75
    signed = Rule.of(task.build().spec)  # as the worker's job takes it from the checked spec
    two_survivors = pb.Assignment(task_id=1, round=1, stage=0, phase="secagg_unmask",
                                  secagg=pb.SecAggRequest(survivors=[0, 1]))
    for rule, refusal in ((signed, "2 survivors, 2 of them of its neighbourhood; at least 3, "
                                   "and 3 of its neighbourhood, needed"), (Rule(2), None)):
        workers = {name: worker(federation, name, tmp_path / str(rule.fraction))
                   for name in "abc"}
        run_round(workers, 1, rule=rule)
        if refusal is None:
            revealed = pb.SecAggResponse.FromString(workers["a"].answer(two_survivors))
            assert set(revealed.self_mask_shares) == {0, 1}
            continue
        with pytest.raises(SecAggError, match=refusal):
            workers["a"].answer(two_survivors)


def test_peers_the_coordinator_made_up_or_doubled_are_refused(federation, tmp_path):
    create_federation(tmp_path / "other", ["127.0.0.1:6700"], ["c"], [])
    strangers = {"a": worker(federation, "a", tmp_path), "b": worker(federation, "b", tmp_path),
                 "c": worker(tmp_path / "other", "c", tmp_path / "other")}

    def swap_keys(keys):  # the coordinator puts its own key in b's place
        keys[1].s_pk = keys[2].s_pk

    def double(keys):  # one worker counted twice
        keys[2].CopyFrom(keys[1])

    def unsigned(keys):
        keys[2].ClearField("signature")

    cases = [
        (strangers, None, "the keys of worker number 2 (c) are refused: the certificate of c "
                          "is not issued by this federation's CA"),
        (None, swap_keys, "the keys of worker number 1 (b) are refused: the signature of b "
                          "does not match what it signs"),
        (None, double, "the keys of worker number 2 (b) are refused"),
        (None, unsigned, "the keys of worker number 2 (c) are refused"),
    ]
    for index, (workers, tamper, refusal) in enumerate(cases):
        workers = workers or {name: worker(federation, name, tmp_path / str(index))
                              for name in "abc"}
        outcome = run_round(workers, 1, tamper=tamper)
        assert isinstance(outcome["a"], SecAggError), outcome
        assert refusal in str(outcome["a"])


def run_plus_round(workers: dict[str, SecureRounds], tamper=None) -> dict[str, object]:
    """A SecAgg+ round's keys, ring and shares over `workers` (plus_above 2), relayed as the
    coordinator does (to each worker its neighbourhood's signed keys only); `tamper(phase, u,
    request, keys)` may rewrite what worker u is sent, knowing every worker's signed keys. What each worker said at sharing: the
    recipients of its shares, or the SecAggError it refused with."""
    names, tamper = list(workers), tamper or (lambda phase, u, request, keys: None)
    keys = {}
    for u, name in enumerate(names):
        opening = pb.Assignment(task_id=1, round=1, phase="compute",
                                secagg=pb.SecAggRequest(index=u, selected=len(names)))
        keys[u] = pb.SecAggResponse.FromString(workers[name].open(
            opening, Contribution(TASK_KEY, "step 1", Rule(2, plus_above=2)))).keys
    listed = {u: pb.SecAggListed(ring_commitment=k.ring_commitment, worker=k.worker)
              for u, k in keys.items()}
    nonces = {}
    for u, name in enumerate(names):
        ring = pb.Assignment(task_id=1, round=1, phase="secagg_ring",
                             secagg=pb.SecAggRequest(listed=listed))
        tamper("ring", u, ring.secagg, keys)
        nonces[u] = pb.SecAggResponse.FromString(workers[name].answer(ring)).ring_nonce
    hoods = graph.neighbourhoods(nonces, len(names))
    outcome: dict[str, object] = {}
    for u, name in enumerate(names):
        share = pb.Assignment(task_id=1, round=1, phase="secagg_share", secagg=pb.SecAggRequest(
            public_keys={v: keys[v] for v in hoods[u]}, ring_nonces=nonces))
        tamper("share", u, share.secagg, keys)
        try:
            outcome[name] = set(pb.SecAggResponse.FromString(workers[name].answer(share)).shares)
        except SecAggError as error:
            outcome[name] = error
    return outcome, hoods


def test_secagg_plus_checks_the_signed_keys_of_its_neighbourhood_against_the_ring_list(tmp_path):
    """Under SecAgg+ a worker receives the signed keys of its neighbours only, having seen
    the others as a list of names and ring commitments: a coordinator that hands one worker
    a list of its own making (commitments to nonces it chose, so that it can give that worker
    another ring than its peers') is caught by the neighbours' signed keys."""
    create_federation(tmp_path / "fed", ["127.0.0.1:6700"], list("abcd"), [])
    workers = {name: worker(tmp_path / "fed", name, tmp_path / "honest") for name in "abcd"}
    outcome, hoods = run_plus_round(workers)
    for u, name in enumerate("abcd"):  # k = 2 of 4: each shares with two, not three
        assert outcome[name] == hoods[u] - {u} and len(outcome[name]) == 2

    chosen = {v: bytes([v]) * 32 for v in range(1, 4)}

    def own_list_for_a(phase, u, request, keys):
        if u != 0:
            return
        if phase == "ring":
            for v, nonce in chosen.items():
                request.listed[v].ring_commitment = graph.commit(nonce)
        else:  # the nonces it chose, and the genuine signed keys of a's ring of them
            request.ring_nonces.update(chosen)
            request.ClearField("public_keys")
            for v in graph.neighbourhoods(dict(request.ring_nonces), 4)[0]:
                request.public_keys[v].CopyFrom(keys[v])

    workers = {name: worker(tmp_path / "fed", name, tmp_path / "lied") for name in "abcd"}
    outcome, _ = run_plus_round(workers, own_list_for_a)
    assert isinstance(outcome["a"], SecAggError)
    assert "differ from what the list before the ring said of it: refused" in str(outcome["a"])

    def renamed(phase, u, request, keys):
        if phase == "ring" and u == 0:
            for v in range(1, 4):
                request.listed[v].worker = f"mallory{v}"

    workers = {name: worker(tmp_path / "fed", name, tmp_path / "renamed") for name in "abcd"}
    outcome, _ = run_plus_round(workers, renamed)
    assert isinstance(outcome["a"], SecAggError)
    assert "differ from what the list before the ring said of it: refused" in str(outcome["a"])


def test_learning_rounds_only_go_forward_up_to_the_signed_max_rounds(tmp_path):
    ledger = ContributionLedger(tmp_path / "ledger.sqlite3")
    ledger.advance("task", 1, max_rounds=3)
    ledger.advance("task", 1, max_rounds=3)  # a retry of the same round: the peers decide
    ledger.advance("task", 3, max_rounds=3)
    with pytest.raises(RerunRefused, match="round 2 comes after round 3, which this worker "
                                           "already trained: rounds only go forward"):
        ledger.advance("task", 2, max_rounds=3)
    for renumbered in (0, 4, 999_999):
        with pytest.raises(RerunRefused, match=f"round {renumbered} is not one of the task's "
                                               r"rounds \(its submitter signed max_rounds=3\)"):
            ledger.advance("task", renumbered, max_rounds=3)
    restarted = ContributionLedger(tmp_path / "ledger.sqlite3")
    with pytest.raises(RerunRefused, match="rounds only go forward"):
        restarted.advance("task", 1, max_rounds=3)
    restarted.advance("another task", 1, max_rounds=3)


def test_a_coordinator_claiming_more_workers_than_the_task_allows_gets_no_keys(federation,
                                                                             tmp_path):
    """Claiming 1,000 selected in a task of at most 3 would run SecAgg+ (plus_above 2) and its
    neighbourhood threshold: the worker answers with nothing, not even its public keys."""
    a = worker(federation, "a", tmp_path)
    lying = pb.Assignment(task_id=1, round=1, phase="compute",
                          secagg=pb.SecAggRequest(index=0, selected=1000))
    rule = Rule(2, plus_above=2, max_clients=3)
    with pytest.raises(SecAggError, match="put 1000 workers in a round of a task whose "
                                          "max_clients is 3"):
        a.open(lying, Contribution(TASK_KEY, "step 1", rule))
    honest = pb.Assignment(task_id=1, round=1, phase="compute",
                           secagg=pb.SecAggRequest(index=0, selected=3))
    assert pb.SecAggResponse.FromString(
        a.open(honest, Contribution(TASK_KEY, "step 1", rule))).keys.signature
