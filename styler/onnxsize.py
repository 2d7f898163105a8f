"""How many nodes an ONNX model's graphs hold, and which operators, read
from the file's protobuf encoding before onnxruntime builds a session for it.

onnxruntime's session costs time and memory by the node: a 16 MB chain of
400,000 Relu nodes took 56 s and 1.9 GB to open, where a styler model has a
few hundred. Counting needs neither the ``onnx`` package (applying a model
needs onnxruntime and numpy only) nor reading the weights: the walk skips
every field but the graph's nodes and the subgraphs inside their attributes.

The same walk refuses an operator styler's exporter and quantiser never
write (:data:`ALLOWED_OPS`): a 1 KB graph of Expand, Tile or
ConstantOfShape made onnxruntime allocate 2 GB in ``styler apply``, the
shapes being checked only after the call. Of the operators allowed, those
whose output size comes from a constant argument or attribute (Resize's
scales, Pad's pads, a convolution's strides and pads) are held to the
small values styler's networks use.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

from styler.errors import BadModelError
from styler.onnxshapes import check_sizes

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

#: Every (domain, operator) styler writes: what ``styler export``, the
#: exports at the end of ``styler train`` and ``styler import`` emit for every
#: zoo generator and option (resnet_N and unet_N presets; instance, batch or
#: no norm; reflect, replicate or zero padding; transposed or resize
#: upsampling; residual output; colour MLP; fp32 and fp16; with and without
#: the norm-statistics inputs), ``styler quantize``'s int8 copies, and the
#: MLP and DCGAN generators from noise, conditional or not; collected by
#: exporting them all with torch 2 (the dynamo exporter at opset 20), and
#: tested in tests/test_safety_pass46.py. "" is the ONNX domain.
ALLOWED_OPS: dict[tuple[str, str], str] = {
    # Convolutions and their upsampling: every generator.
    ("", "Conv"): "convolution",
    ("", "ConvTranspose"): "transposed-convolution upsampling (upsample transpose)",
    ("", "Resize"): "nearest 2x upsampling (upsample resize)",
    ("", "Pad"): "reflect and replicate padding",
    ("", "DepthToSpace"): "int8 and older fp32 files: transposed convolutions in sub-pixel form",
    # Normalisation.
    ("", "InstanceNormalization"): "instance norm (without the statistics inputs)",
    ("", "BatchNormalization"): "batch norm (generators from noise)",
    ("", "GlobalAveragePool"): "a spatial mean (instance-norm statistics)",
    ("", "ReduceMean"): "a spatial mean in files written before the GlobalAveragePool rewrite",
    ("", "Flatten"): "statistics packed in one vector",
    ("", "Unsqueeze"): "statistics unpacked to N x C x 1 x 1",
    ("", "Slice"): "norm statistics out of the vector; the residual crop; Kuwahara windows",
    ("", "Concat"): "the statistics vector; U-Net skip connections; the smoothing path's blurs",
    ("", "Shape"): "the residual path's crop to the input's size",
    # Arithmetic and activations.
    ("", "Add"): "arithmetic",
    ("", "Sub"): "arithmetic",
    ("", "Mul"): "arithmetic",
    ("", "Pow"): "a square, in files written before the Mul rewrite",
    ("", "Sqrt"): "a standard deviation",
    ("", "Reciprocal"): "one over the standard deviation; the smoothing path's Kuwahara weights",
    ("", "Relu"): "activation",
    ("", "LeakyRelu"): "activation (U-Net down path, MLP generator)",
    ("", "Tanh"): "the output activation",
    ("", "Sigmoid"): "the colour MLP (color_mlp); SiLU in the smoothing path (smooth)",
    ("", "Clip"): "a residual output clipped to [-1, 1]; the smoothing path's weights",
    ("", "Cast"): "fp16 inside, fp32 in and out",
    ("", "Identity"): "an output under another name (the exporter may write one); a copy at most",
    # Generators from noise.
    ("", "Gemm"): "fully connected layers (MLP generator)",
    ("", "MatMul"): "a fully connected layer as other exporters write it (not seen from torch 2)",
    ("", "Reshape"): "the MLP's vector to an image (as many values out as in)",
    ("", "Gather"): "class embeddings: rows of a constant picked by the labels input",
    # int8 copies (QOperator format).
    ("", "QuantizeLinear"): "int8",
    ("", "DequantizeLinear"): "int8",
    ("", "QLinearConv"): "int8 convolution",
}
#: Largest Resize scale and convolution stride: styler's networks use 2.
MAX_SCALE = 8
#: Largest padding of a Pad or a convolution: styler's networks use at most 6
#: (the smoothing path's widest blur; 3 elsewhere).
MAX_PAD = 16

# Field numbers of onnx.proto: ModelProto.graph and .functions, the node
# lists of GraphProto and FunctionProto, NodeProto.attribute,
# AttributeProto.g and AttributeProto.graphs.
_MODEL_GRAPH, _MODEL_FUNCTIONS, _MODEL_METADATA = 7, 25, 14
_GRAPH_NODE, _FUNCTION_NODE = 1, 7
_NODE_ATTRIBUTE, _ATTR_GRAPH, _ATTR_GRAPHS = 5, 6, 11
# AttributeProto.ref_attr_name, and the GRAPH and GRAPHS values of its type.
_ATTR_REF, _GRAPH_TYPE, _GRAPHS_TYPE = 21, 5, 10


ORT_FORMAT = "an ORT-format model; styler takes ONNX model files"


@dataclasses.dataclass
class Node:
    """One node as the walk reads it."""

    op: str = ""
    domain: str = ""
    overload: str = ""
    inputs: list[str] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=list)
    #: Integer and integer-list attributes, and string ones.
    ints: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    strings: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Whether an attribute names one of its function's (``ref_attr_name``).
    refers: bool = False


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


def growth(model: bytes) -> float:
    """The bound on ``model``'s largest tensor as a multiple of its input's
    values (of a generator's per image): at most :data:`MAX_GROWTH`."""
    return _bounds(model)[0]


def together(model: bytes) -> float:
    """The bound on all of ``model``'s tensors together, as a multiple of
    its input's values: at most :data:`MAX_TOTAL`."""
    return _bounds(model)[1]


def _bounds(model: bytes) -> tuple[float, float]:
    counter = _Counter(memoryview(model), "<model>")
    counter.total()
    return counter.growth, counter.together


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
        #: Why the model is refused, for the first node found at fault.
        self.refused = ""
        #: The nodes of the model's graph, for :func:`check_sizes`.
        self.graph_nodes: list[Node] = []
        self.graph_constants: _Constants | None = None
        #: The model's styler metadata (JSON), if it has any.
        self.metadata = ""
        #: Its largest tensor's bound over the input's values (0 if not walked).
        self.growth = 0.0
        #: The bound on all its tensors together, as such a multiple.
        self.together = 0.0

    def _fields(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        return _fields(self.data, start, end, self.budget)

    def total(self) -> int:
        graphs = []
        for field, start, end in self._fields(0, len(self.data)):
            if field == _MODEL_GRAPH:
                graphs.append((start, end))
            elif field == _MODEL_METADATA:
                entry = self._strings(start, end, {1: "key", 2: "value"})
                if entry["key"] == "styler":
                    self.metadata = entry["value"]
            elif field == _MODEL_FUNCTIONS:
                strings = self._strings(start, end, {1: "name", 10: "domain", 13: "overload"})
                key = (strings["domain"], strings["name"], strings["overload"])
                self.functions[key] = (start, end)
                if _operator_domain(key[0]) and not self.refused:
                    name = _printable(f"{key[0]}.{key[1]}" if key[0] else key[1])
                    self.refused = (
                        f"declares a function {name} in a domain of operators: onnxruntime "
                        "runs its operator of that name, not the function (styler's models "
                        "have no functions)"
                    )
        for start, end in graphs:
            self.nodes += self._cost(start, end, _GRAPH_NODE, 0)
            self._check(self.nodes)
        if not self.refused:
            self.refused = check_sizes(self, graphs)
        if self.refused:  # (after the walk: a model too big to walk is said so first)
            raise BadModelError(self.refused, self.source)
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
        constants: _Constants | None = None
        for field, node_start, node_end in self._fields(start, end):
            if field != node_field:
                continue
            node = self.parse_node(node_start, node_end)
            key = (node.domain, node.op, node.overload)
            if depth == 0:  # the model's graph: its nodes are walked again for sizes
                self.graph_nodes.append(node)
            if key not in self.functions and not self.refused:
                if node.op in _CONSTANT_ARGUMENTS and constants is None:
                    constants = _Constants(self, start, end, node_field)
                    if depth == 0:
                        self.graph_constants = constants
                self.refused = self._fault(node, constants)
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

    def _fault(self, node: Node, constants: _Constants | None) -> str:
        """Why ``node`` is refused ("" if it is not): an operator styler
        never writes, or one whose constant arguments or attributes would
        make a larger tensor than styler's networks do."""
        op, domain = node.op, node.domain
        if domain == "ai.onnx":
            domain = ""
        if (domain, op) not in ALLOWED_OPS:
            name = f"{domain}.{op}" if domain else op
            return f"uses operator {_printable(name)}, which styler's models never do"
        attributes = node.ints
        if op in ("Conv", "ConvTranspose", "QLinearConv"):
            strides = max(attributes.get("strides", [1]), default=1)
            pads = max(attributes.get("pads", [0]), default=0)
            if "output_shape" in attributes:
                return f"a {op} with an output_shape, which styler's models never have"
            if strides > MAX_SCALE or pads > MAX_PAD:
                return (
                    f"a {op} of stride {strides} and padding {pads} (styler's models use at "
                    f"most {MAX_SCALE} and {MAX_PAD})"
                )
        inputs = node.inputs
        if op == "Pad":
            pads = constants.ints(inputs[1]) if constants and len(inputs) > 1 else None
            if pads is None:
                return "a Pad whose pads are not a constant of the file"
            if any(p > MAX_PAD for p in pads):
                return f"pads by {max(pads)} (styler's models pad by at most {MAX_PAD})"
        if op == "Gather":  # class embeddings: rows of a constant, picked by the labels
            picked = (
                constants is not None
                and len(inputs) == 2
                and constants.has(inputs[0])
                and inputs[1] in constants.inputs
                and not constants.has(inputs[1])
            )
            if not picked:
                return "a Gather other than rows of a constant picked by an input"
        if op == "Resize":
            if len(inputs) > 3 and inputs[3]:
                return "a Resize to given sizes, which styler's models never do"
            scales = constants.floats(inputs[2]) if constants and len(inputs) > 2 else None
            if scales is None:
                return "a Resize whose scales are not a constant of the file"
            if not all(0 < x <= MAX_SCALE for x in scales):
                worst = max(scales, key=lambda x: x if x > 0 else float("inf"))
                return f"a Resize by {worst:g} (styler's models resize by at most {MAX_SCALE})"
        return ""

    def parse_node(self, start: int, end: int) -> Node:
        """The node at ``data[start:end]``: its operator, inputs, outputs
        and integer and string attributes."""
        node = Node()
        for field, s, e in self._fields(start, end):
            if field in (1, 2, 4, 7, 8):
                text = bytes(self.data[s:e]).decode("utf-8", "replace")
                if field == 1:
                    node.inputs.append(text)
                elif field == 2:
                    node.outputs.append(text)
                elif field == 4:
                    node.op = text
                elif field == 7:
                    node.domain = text
                else:
                    node.overload = text
            elif field == _NODE_ATTRIBUTE:
                name = self._strings(s, e, {1: "name", 4: "s", _ATTR_REF: "ref"})
                node.refers = node.refers or bool(name["ref"])
                values = _numbers(self.data, s, e, self.budget, {3: "i", 8: "i"})
                node.ints.setdefault(name["name"], []).extend(int(v) for v in values)
                if name["s"]:
                    node.strings[name["name"]] = name["s"]
        return node

    def function_body(self, start: int, end: int) -> tuple[list[str], list[str], list[Node]]:
        """The inputs, outputs and nodes of the function at ``data[start:end]``."""
        inputs, outputs, nodes = [], [], []
        for field, s, e in self._fields(start, end):
            if field in (4, 5):
                name = bytes(self.data[s:e]).decode("utf-8", "replace")
                (inputs if field == 4 else outputs).append(name)
            elif field == _FUNCTION_NODE:
                nodes.append(self.parse_node(s, e))
        return inputs, outputs, nodes

    def _refers_to_graph(self, start: int, end: int) -> bool:
        """Whether the node at ``data[start:end]`` has a graph attribute
        that names its function's attribute (``ref_attr_name``)."""
        for field, a_start, a_end in self._fields(start, end):
            if field != _NODE_ATTRIBUTE:
                continue
            refers = any(f == _ATTR_REF for f, _, _ in self._fields(a_start, a_end))
            kind = _attr_type(self.data, a_start, a_end, self.budget) if refers else 0
            if kind in (_GRAPH_TYPE, _GRAPHS_TYPE):
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


#: Operators whose size-setting arguments must be constants of the file.
_CONSTANT_ARGUMENTS = frozenset({"Pad", "Resize", "Gather"})
#: Most values read from one constant (a Pad's pads: two per axis).
_MOST_VALUES = 64
# TensorProto: dims, data_type, float_data, int64_data, name, raw_data, data_location.
_T_DIMS, _T_TYPE, _T_FLOATS, _T_INTS, _T_NAME, _T_RAW, _T_LOCATION = 1, 2, 4, 7, 8, 9, 14
_FLOAT, _INT64 = 1, 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _NODE_OUTPUT, _ATTR_TENSOR = 5, 11, 2, 5
_GRAPH_OUTPUT = 12


class _Constants:
    """The small constants of one graph or function body, by name: its
    initializers and the ``value`` tensors of its Constant nodes. A name
    found nowhere (a graph input, a node's output, an outer graph's
    constant) has no value here."""

    def __init__(self, counter: _Counter, start: int, end: int, node_field: int) -> None:
        self.counter = counter
        self.tensors: dict[str, tuple[int, int]] = {}
        #: Names given twice: which one onnxruntime takes is not for this walk to guess.
        self.twice: set[str] = set()
        #: The graph's inputs (a function body has none here).
        self.inputs: set[str] = set()
        for field, s, e in counter._fields(start, end):
            if field == _GRAPH_INPUT and node_field == _GRAPH_NODE:
                self.inputs.add(counter._strings(s, e, {1: "name"})["name"])
            elif field == _GRAPH_INITIALIZER and node_field == _GRAPH_NODE:
                name = counter._strings(s, e, {_T_NAME: "name"})["name"]
                self._add(name, s, e)
            elif field == node_field:
                if counter._strings(s, e, {4: "op"})["op"] != "Constant":
                    continue
                outputs = [f for f in counter._fields(s, e) if f[0] == _NODE_OUTPUT]
                for f, a_start, a_end in counter._fields(s, e):
                    if f != _NODE_ATTRIBUTE or len(outputs) != 1:
                        continue
                    if counter._strings(a_start, a_end, {1: "name"})["name"] != "value":
                        continue
                    for g, t_start, t_end in counter._fields(a_start, a_end):
                        if g == _ATTR_TENSOR:
                            _, o_start, o_end = outputs[0]
                            name = bytes(counter.data[o_start:o_end]).decode("utf-8", "replace")
                            self._add(name, t_start, t_end)

    def _add(self, name: str, start: int, end: int) -> None:
        if name in self.tensors:
            self.twice.add(name)
        self.tensors[name] = (start, end)

    def has(self, name: str) -> bool:
        """Whether ``name`` is one constant of this graph."""
        return name in self.tensors and name not in self.twice

    def ints(self, name: str) -> list[int] | None:
        """The values of the int64 constant ``name``; None if it is none."""
        values = self._values(name, _INT64)
        return None if values is None else [int(v) for v in values]

    def floats(self, name: str) -> list[float] | None:
        """The values of the float constant ``name``; None if it is none."""
        values = self._values(name, _FLOAT)
        return None if values is None else [float(v) for v in values]

    def _values(self, name: str, kind: int) -> list[int | float] | None:
        if name not in self.tensors or name in self.twice:
            return None
        data, budget = self.counter.data, self.counter.budget
        start, end = self.tensors[name]
        header = _numbers(data, start, end, budget, {_T_TYPE: "i", _T_LOCATION: "i"})
        if header[:1] != [kind] or header[1:] not in ([], [0]):
            return None  # another type, or data in an external file
        dims = _numbers(data, start, end, budget, {_T_DIMS: "i"})
        count = 1
        for d in dims:
            count *= d
        if count > _MOST_VALUES:
            return None
        raw = [bytes(data[s:e]) for f, s, e in _fields(data, start, end, budget) if f == _T_RAW]
        if raw:
            size = 8 if kind == _INT64 else 4
            if len(raw[-1]) != count * size:
                return None
            code = "<q" if kind == _INT64 else "<f"
            return [v for (v,) in struct.iter_unpack(code, raw[-1])]
        field = {_INT64: {_T_INTS: "i"}, _FLOAT: {_T_FLOATS: "f"}}[kind]
        values = _numbers(data, start, end, budget, field)
        return values if len(values) == count else None


def _numbers(
    data: memoryview, pos: int, end: int, budget: _Budget, fields: dict[int, str]
) -> list[int | float]:
    """The values of the numeric ``fields`` of the message at ``data[pos:end]``
    ("i": int64 varints, "f": floats), packed or not, in order; at most
    :data:`_MOST_VALUES` + 1 of them."""
    values: list[int | float] = []
    for field, wire, first, last in _entries(data, pos, end, budget):
        if len(values) > _MOST_VALUES:
            break
        kind = fields.get(field)
        if kind == "i" and wire == 0:
            values.append(_signed(first))
        elif kind == "i" and wire == 2:
            values += _numbers_packed_ints(data, first, last, budget)
        elif kind == "f" and wire == 5:
            values.append(struct.unpack_from("<f", data, first)[0])
        elif kind == "f" and wire == 2:
            length = last - first
            if length % 4 == 0 and length <= 4 * (_MOST_VALUES + 1):
                values += [v for (v,) in struct.iter_unpack("<f", data[first:last])]
    return values


def _numbers_packed_ints(data: memoryview, pos: int, end: int, budget: _Budget) -> list[int]:
    values = []
    while pos < end and len(values) <= _MOST_VALUES:
        budget.left -= 1
        if budget.left < 0:
            raise _TooMany
        value, pos = _varint(data, pos, end)
        values.append(_signed(value))
    return values


def _signed(value: int) -> int:
    """An int64 read as a varint (two's complement in 64 bits)."""
    return value - (1 << 64) if value >> 63 else value


def _operator_domain(domain: str) -> bool:
    """Whether ``domain`` is one of the operator sets of ONNX or onnxruntime,
    where a model-local function does not take the place of an operator of
    the same name (a function named Expand: onnxruntime ran the Expand)."""
    return domain == "" or domain.startswith(_OPERATOR_DOMAINS)


#: Prefixes of the domains of ONNX's and onnxruntime's operators (ai.onnx,
#: ai.onnx.ml, ai.onnx.preview.training, com.microsoft, com.microsoft.nchwc,
#: com.ms.internal.nhwc, org.pytorch.aten).
_OPERATOR_DOMAINS = ("ai.onnx", "com.microsoft", "com.ms.", "org.pytorch.")


def _printable(text: str) -> str:
    """An operator name as it may be printed: at most 60 printable characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:60])
    return shown + ("..." if len(text) > 60 else "")


def _attr_type(data: memoryview, pos: int, end: int, budget: _Budget) -> int:
    """AttributeProto.type (field 20, a varint) of the attribute at ``data[pos:end]``."""
    for field, wire, value, _ in _entries(data, pos, end, budget):
        if field == 20 and wire == 0:
            return value
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
    (field number, start, end) each; other fields are skipped."""
    for field, wire, start, stop in _entries(data, pos, end, budget):
        if wire == 2:
            yield field, start, stop


def _entries(
    data: memoryview, pos: int, end: int, budget: _Budget
) -> Iterator[tuple[int, int, int, int]]:
    """Every field of the message at ``data[pos:end]`` outside groups (wire
    types 3 and 4: skipped, as protobuf does), as (field number, wire type,
    a, b): a varint's value (b unused), or the start and end of a fixed-size
    or length-delimited value. Each field walked is taken from ``budget``."""
    groups = 0
    while pos < end:
        budget.left -= 1
        if budget.left < 0:
            raise _TooMany
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        start = pos
        if wire == 3:
            groups += 1
            continue
        if wire == 4:
            if groups == 0:
                raise _Malformed
            groups -= 1
            continue
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if groups == 0:
                yield field, wire, value, 0
            continue
        if wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, start = _varint(data, pos, end)
            pos = start + length
        else:
            raise _Malformed
        if pos > end:
            raise _Malformed
        if groups == 0:
            yield field, wire, start, pos


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
