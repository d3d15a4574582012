"""Secure aggregation (Bonawitz et al., CCS 2017): the coordinator learns the sum of the workers'
vectors and nothing about any one of them; large rounds use SecAgg+ (Bell et al., CCS 2020,
`graph`). Transport-free state machines: `SecAggClient` per worker, `SecAggServer` on the
coordinator; the daemons carry their messages. `Rule` holds the task's threshold."""

from .client import Revealed, SecAggClient, SecAggError
from .masks import accumulate
from .rule import Rule
from .server import SecAggServer

__all__ = ["Revealed", "Rule", "SecAggClient", "SecAggError", "SecAggServer", "accumulate"]
