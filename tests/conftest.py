import os
import random
from types import SimpleNamespace

import pytest
from cluster import LocalCluster, served_cluster
from hypothesis import settings

from sdk.privacy import noise

# CI draws the same examples on every run (a submission lands or not on its code, not on the
# draw); elsewhere each run draws new ones, and what fails is kept in .hypothesis to replay.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """One cluster shared by the dashboard's and the metrics' tests: see `served_cluster`."""
    c, ids = served_cluster(tmp_path_factory.mktemp("served"))
    yield c, ids
    c.stop()


@pytest.fixture
def seeded_noise(monkeypatch, request):
    """Differential privacy's noise drawn in this process from generators seeded by the test's
    name: a statistical test gives the same verdict on every run. (Noise that daemons draw stays
    unseeded: a hook to seed it would make a deployment's noise predictable.)"""
    draws = random.Random(request.node.nodeid)
    monkeypatch.setattr(noise, "secrets", SimpleNamespace(randbits=draws.getrandbits))
