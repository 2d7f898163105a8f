"""How many nodes an ONNX model's graphs hold, counted from the file's
protobuf encoding before onnxruntime builds a session for it.

onnxruntime's session costs time and memory by the node: a 16 MB chain of
400,000 Relu nodes took 56 s and 1.9 GB to open, where a styler model has a
few hundred. Counting needs neither the ``onnx`` package (applying a model
needs onnxruntime and numpy only) nor reading the weights: the walk skips
every field but the graph's nodes and the subgraphs inside their attributes.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

from styler.errors import BadModelError

#: Most nodes a model may hold, subgraphs included: styler's generators have
#: a few hundred (the shipped one 430), int8 copies some thousands; opening
#: 30,000 takes a few seconds on a laptop's core.
MAX_NODES = 30_000
#: Deepest nesting of subgraphs walked (If and Loop bodies inside bodies).
MAX_DEPTH = 32
#: Most protobuf fields walked (weights are skipped whole): the shipped model
#: has 10,084 (23 a node), a chain of 29,000 Relus 203,006. A field costs
#: about half a microsecond in Python: 16 MB of 2-byte fields took 3.5 s.
MAX_FIELDS = 2_000_000

# Field numbers of onnx.proto: ModelProto.graph and .functions, the node
# lists of GraphProto and FunctionProto, NodeProto.attribute,
# AttributeProto.g and AttributeProto.graphs.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _FUNCTION_NODE = 1, 7
_NODE_ATTRIBUTE, _ATTR_GRAPH, _ATTR_GRAPHS = 5, 6, 11
# AttributeProto.ref_attr_name, and the GRAPH and GRAPHS values of its type.
_ATTR_REF, _GRAPH_TYPE, _GRAPHS_TYPE = 21, 5, 10


ORT_FORMAT = "an ORT-format model; styler takes ONNX model files"


class _Malformed(Exception):
    """The bytes are not protobuf as onnx.proto lays it out."""


class _Budget:
    """The fields left to walk (:data:`MAX_FIELDS` at first)."""

    def __init__(self) -> None:
        self.left = MAX_FIELDS


def check_nodes(model: Path | bytes, source: str | Path) -> int:
    """The number of nodes of ``model`` (a file or its bytes); a model with
    more than :data:`MAX_NODES` is refused. Bytes that are not the protobuf
    an ONNX model is are left to onnxruntime to name (0 is returned)."""
    if not isinstance(model, bytes) and model.suffix.lower() == ".ort":
        raise BadModelError(ORT_FORMAT, source)
    if isinstance(model, bytes):
        return _count(memoryview(model), source)
    try:
        with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            view = memoryview(data)
            try:
                return _count(view, source)
            finally:
                view.release()
    except (OSError, ValueError):  # empty, unmappable: onnxruntime says why
        return 0


def _count(data: memoryview, source: str | Path) -> int:
    if data[4:8] == b"ORTM":  # onnxruntime's flatbuffer format, not protobuf
        raise BadModelError(ORT_FORMAT, source)
    try:
        return _Counter(data, source).total()
    except _Malformed:
        return 0
    except _TooMany:
        raise BadModelError(
            f"more than {MAX_FIELDS:,} protobuf fields outside its weights (a styler model "
            "has thousands); too costly to read",
            source,
        ) from None


class _TooMany(Exception):
    """More than :data:`MAX_FIELDS` fields."""


class _Counter:
    """The nodes a session would build: each graph's nodes, those of the
    subgraphs in their attributes, and for a call of a model-local function
    the nodes of its body (onnxruntime inlines it at every call)."""

    def __init__(self, data: memoryview, source: str | Path) -> None:
        self.data, self.source = data, source
        self.nodes = 0
        #: Model-local functions by (domain, name, overload): their node lists.
        self.functions: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.sizes: dict[tuple[str, str, str], int] = {}
        self.calling: set[tuple[str, str, str]] = set()
        self.budget = _Budget()

    def _fields(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        return _fields(self.data, start, end, self.budget)

    def total(self) -> int:
        graphs = []
        for field, start, end in self._fields(0, len(self.data)):
            if field == _MODEL_GRAPH:
                graphs.append((start, end))
            elif field == _MODEL_FUNCTIONS:
                strings = self._strings(start, end, {1: "name", 10: "domain", 13: "overload"})
                key = (strings["domain"], strings["name"], strings["overload"])
                self.functions[key] = (start, end)
        for start, end in graphs:
            self.nodes += self._cost(start, end, _GRAPH_NODE, 0)
            self._check(self.nodes)
        return self.nodes

    def _check(self, nodes: int) -> None:
        if nodes > MAX_NODES:
            raise BadModelError(
                f"more than {MAX_NODES:,} nodes (a styler model has hundreds); too costly to open",
                self.source,
            )

    def _strings(self, start: int, end: int, names: dict[int, str]) -> dict[str, str]:
        found = dict.fromkeys(names.values(), "")
        for field, s, e in self._fields(start, end):
            if field in names:
                found[names[field]] = bytes(self.data[s:e]).decode("utf-8", "replace")
        return found

    def _cost(self, start: int, end: int, node_field: int, depth: int) -> int:
        """The nodes built for the node list ``node_field`` of the message
        at ``data[start:end]`` (a graph or a function's body)."""
        if depth > MAX_DEPTH:
            raise BadModelError(
                f"subgraphs or functions nested deeper than {MAX_DEPTH}", self.source
            )
        cost = 0
        for field, node_start, node_end in self._fields(start, end):
            if field != node_field:
                continue
            names = {4: "op", 7: "domain", 8: "overload"}
            node = self._strings(node_start, node_end, names)
            key = (node["domain"], node["op"], node["overload"])
            if node_field == _FUNCTION_NODE and self._refers_to_graph(node_start, node_end):
                raise BadModelError(
                    "a function uses a graph its caller passes in (built again at every use; "
                    "styler models have none)",
                    self.source,
                )
            cost += self._function(key, depth) if key in self.functions else 1
            for s, e in _subgraphs(self.data, node_start, node_end, self.budget):
                cost += self._cost(s, e, _GRAPH_NODE, depth + 1)
            self._check(self.nodes + cost)
        return cost

    def _refers_to_graph(self, start: int, end: int) -> bool:
        """Whether the node at ``data[start:end]`` has a graph attribute
        that names its function's attribute (``ref_attr_name``)."""
        for field, a_start, a_end in self._fields(start, end):
            if field != _NODE_ATTRIBUTE:
                continue
            refers = any(f == _ATTR_REF for f, _, _ in self._fields(a_start, a_end))
            if refers and _attr_type(self.data, a_start, a_end) in (_GRAPH_TYPE, _GRAPHS_TYPE):
                return True
        return False

    def _function(self, key: tuple[str, str, str], depth: int) -> int:
        if key not in self.sizes:
            if key in self.calling:
                raise BadModelError(f"function {key[1]!r} calls itself", self.source)
            self.calling.add(key)
            start, end = self.functions[key]
            self.sizes[key] = self._cost(start, end, _FUNCTION_NODE, depth + 1)
            self.calling.discard(key)
        return self.sizes[key]


def _attr_type(data: memoryview, pos: int, end: int) -> int:
    """AttributeProto.type (field 20, a varint) of the attribute at ``data[pos:end]``."""
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if field == 20:
                return value
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Malformed
    return 0


def _subgraphs(data: memoryview, start: int, end: int, budget: _Budget) -> list[tuple[int, int]]:
    """The graphs held by the attributes of the node at ``data[start:end]``."""
    found = []
    for field, a_start, a_end in _fields(data, start, end, budget):
        if field == _NODE_ATTRIBUTE:
            found += [
                (s, e)
                for f, s, e in _fields(data, a_start, a_end, budget)
                if f in (_ATTR_GRAPH, _ATTR_GRAPHS)
            ]
    return found


def _fields(
    data: memoryview, pos: int, end: int, budget: _Budget
) -> Iterator[tuple[int, int, int]]:
    """The length-delimited fields of the message at ``data[pos:end]``:
    (field number, start, end) each; other fields are skipped. Each field
    walked is taken from ``budget``."""
    groups = 0  # inside a group (wire types 3 and 4): skipped, as protobuf does
    while pos < end:
        budget.left -= 1
        if budget.left < 0:
            raise _TooMany
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 3:
            groups += 1
        elif wire == 4:
            if groups == 0:
                raise _Malformed
            groups -= 1
        elif wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Malformed
            if groups == 0:
                yield field, pos, pos + length
            pos += length
        else:
            raise _Malformed
        if pos > end:
            raise _Malformed


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
