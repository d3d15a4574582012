"""The operation graph that `execute()` records on lazy proxies, and its protobuf form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdk import values
from sdk.proto import task_pb2


@dataclass(frozen=True)
class Node:
    id: int
    op: str
    inputs: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)


class Graph:
    """An append-only list of nodes; a node's inputs always come before it."""

    def __init__(self, nodes: list[Node] | None = None) -> None:
        self.nodes: list[Node] = nodes or []

    def add(self, operation: str, inputs: tuple[int, ...] = (), **params: Any) -> int:
        node = Node(len(self.nodes), operation, inputs, params)
        self.nodes.append(node)
        return node.id

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def to_proto(self, output: Any) -> task_pb2.AnalyticsPlan:
        """The plan message; `output` is a node id or a tuple/list/dict nest of node ids."""
        return task_pb2.AnalyticsPlan(
            nodes=[
                task_pb2.Node(
                    id=n.id,
                    op=n.op,
                    inputs=n.inputs,
                    params={k: values.encode(v) for k, v in n.params.items()},
                )
                for n in self.nodes
            ],
            output=_encode_output(output),
        )

    @classmethod
    def from_proto(cls, plan: task_pb2.AnalyticsPlan) -> tuple[Graph, Any]:
        """The graph and output nest of a plan, checking that every input names an earlier node."""
        nodes = []
        for position, message in enumerate(plan.nodes):
            if message.id != position:
                raise ValueError(f"node {position} has id {message.id}; ids must count up from 0")
            if any(i >= position for i in message.inputs):
                raise ValueError(f"node {position} ({message.op}) uses a node that comes after it")
            params = {k: values.decode(v) for k, v in message.params.items()}
            nodes.append(Node(message.id, message.op, tuple(message.inputs), params))
        graph = cls(nodes)
        output = _decode_output(plan.output)
        for node_id in output_nodes(output):
            if node_id >= len(nodes):
                raise ValueError(f"the output names node {node_id}, which does not exist")
        return graph, output


def output_nodes(output: Any) -> list[int]:
    """Every node id in an output nest."""
    if isinstance(output, int):
        return [output]
    items = output.values() if isinstance(output, dict) else output
    return [node_id for item in items for node_id in output_nodes(item)]


def map_output(output: Any, value_of: Any) -> Any:
    """The output nest with each node id replaced by `value_of(node_id)`."""
    if isinstance(output, int):
        return value_of(output)
    if isinstance(output, dict):
        return {k: map_output(v, value_of) for k, v in output.items()}
    return type(output)(map_output(v, value_of) for v in output)


def _encode_output(output: Any) -> task_pb2.Output:
    if isinstance(output, int):
        return task_pb2.Output(node=output)
    if isinstance(output, tuple):
        return task_pb2.Output(tuple=task_pb2.OutputList(items=[_encode_output(o) for o in output]))
    if isinstance(output, list):
        return task_pb2.Output(list=task_pb2.OutputList(items=[_encode_output(o) for o in output]))
    return task_pb2.Output(
        dict=task_pb2.OutputDict(
            keys=[values.encode_scalar(k) for k in output],
            values=[_encode_output(o) for o in output.values()],
        )
    )


def _decode_output(message: task_pb2.Output) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "node":
        return message.node
    if kind == "tuple":
        return tuple(_decode_output(o) for o in message.tuple.items)
    if kind == "list":
        return [_decode_output(o) for o in message.list.items]
    if kind == "dict":
        return {
            values.decode_scalar(k): _decode_output(o)
            for k, o in zip(message.dict.keys, message.dict.values)
        }
    raise ValueError("the plan has no output")
