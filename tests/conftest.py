import pytest
from cluster import LocalCluster, served_cluster


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
