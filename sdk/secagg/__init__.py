"""Secure aggregation (Bonawitz et al., CCS 2017): the coordinator learns the sum of the workers'
vectors and nothing about any one of them. Transport-free state machines: `SecAggClient` per
worker, `SecAggServer` on the coordinator; the daemons carry their messages."""

from .client import MaskedInput, Revealed, SecAggClient, SecAggError, threshold
from .server import SecAggServer

__all__ = ["MaskedInput", "Revealed", "SecAggClient", "SecAggError", "SecAggServer", "threshold"]
