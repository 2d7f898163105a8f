"""An upper bound on the size of every tensor an ONNX graph makes, read from
the file before onnxruntime builds a session for it.

Pass 46 held styler's models to its own operators and their constant
arguments to its own sizes; the graph's structure could still grow a tensor
without end: a chain of Concats of a tensor with itself doubles it at each
node, an Add of the image reshaped to a column and to a row is their outer
product, Resizes by 8 multiply. Here every tensor's shape is followed from
the inputs through the graph, each dimension an upper bound written as a
polynomial in the input's batch N, height H and width W (a dimension not
known is None, and its tensor keeps a bound on its element count only), and
a tensor that may hold more than :data:`MAX_GROWTH` times the input's values
is refused, as is one whose size this walk cannot bound, and a graph whose
tensors together may hold more than :data:`MAX_TOTAL` times (onnxruntime
may keep them all at once).

The bounds are sound (never below the size onnxruntime makes) and loose
only by small constants: a convolution of stride 2 of H rows makes at most
H / 2 + 1 of them. Reshape and Slice never add values, so their arguments
need not be constants: a residual path's crop to ``Shape(image)`` is bounded
by the tensor cropped.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from styler.errors import BadModelError
from styler.metadata import ModelMetadata

if TYPE_CHECKING:
    from styler.onnxsize import Node, _Constants, _Counter

#: Most values a tensor may hold, as a multiple of the image input's values
#: (of a generator's values per image: its noise and labels, or the image
#: its metadata says it makes, whichever is larger), counted at the
#: thinnest image styler feeds. Measured over every zoo export: at most
#: 171 (resnet_6blocks at ngf 64 with resize upsampling: 128 channels
#: resized to full size and padded by 3, at 8 x 8; 43 for large images),
#: 133 for resnet_9blocks, 43 for unet_256, 5.3 for a DCGAN; with one
#: input channel (grey to colour) three times as much, 512. 4096 leaves 8
#: times that for wider networks, and refuses a doubling chain after 12
#: Concats.
MAX_GROWTH = 4096
#: Most values all of a graph's tensors may hold together, as a multiple of
#: the input's (onnxruntime may keep them all at once: 20 chains of Concats,
#: each tensor within :data:`MAX_GROWTH`, each head kept for a last sum, made
#: `apply` of a 64 x 64 image take 2.2 GB). Measured over exports: 882 for
#: the shipped model, 1,172 for its int8 copy, 4,459 for resnet_9blocks at
#: ngf 64 with resize, 11,945 with one input channel: about 30 times their
#: largest tensor, so that this refuses about where MAX_GROWTH would.
MAX_TOTAL = 32 * MAX_GROWTH
#: Values any tensor may hold whatever the input (weights folded when the
#: session is built, the statistics vector): 16 M, or the largest weight.
MAX_FIXED = 1 << 24
#: The thinnest image styler gives a translation model, unless its metadata
#: says more (``ModelMetadata.min_side``: a ResNet's are padded to 8 x 8 at
#: least, a U-Net's to its size multiple, 32 to 256). A bound like
#: 64 (H + 6)(W + 6) is taken at that size: 3.1 x 64 H W at 8 x 8.
MIN_SIDE = 8

#: A monomial: the powers of (N, H, W).
Monomial = tuple[int, int, int]
_ONE: Monomial = (0, 0, 0)
_SYMBOLS = ("N", "H", "W")


class Poly:
    """A polynomial in N, H and W with rational coefficients (an upper bound
    on a dimension or an element count, for N, H, W >= 1)."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, float] | None = None) -> None:
        self.terms = {m: c for m, c in (terms or {}).items() if c != 0}

    @staticmethod
    def const(value: float) -> Poly:
        return Poly({_ONE: float(value)})

    @staticmethod
    def symbol(axis: int) -> Poly:
        powers = [0, 0, 0]
        powers[axis] = 1
        return Poly({(powers[0], powers[1], powers[2]): 1.0})

    def constant(self) -> float | None:
        """The value of a polynomial without symbols; None for others."""
        if not self.terms:
            return 0.0
        if set(self.terms) == {_ONE}:
            return self.terms[_ONE]
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def __add__(self, other: Poly) -> Poly:
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, 0.0) + c
        return Poly(terms)

    def __mul__(self, other: Poly) -> Poly:
        terms: dict[Monomial, float] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = (m1[0] + m2[0], m1[1] + m2[1], m1[2] + m2[2])
                terms[m] = terms.get(m, 0.0) + c1 * c2
        return Poly(terms)

    def scale(self, factor: float) -> Poly:
        return Poly({m: c * factor for m, c in self.terms.items()})

    def upper(self, other: Poly) -> Poly:
        """A bound on max(self, other): the larger coefficient of each term
        (sound as every term is >= 0 for N, H, W >= 0)."""
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = max(terms.get(m, 0.0), c)
        for m in self.terms.keys() - other.terms.keys():
            terms[m] = max(terms[m], 0.0)
        return Poly(terms)

    def positive(self) -> Poly:
        """The terms with positive coefficients (a bound for N, H, W >= 0)."""
        return Poly({m: c for m, c in self.terms.items() if c > 0})

    def __str__(self) -> str:
        parts = []
        for m, c in sorted(self.terms.items(), reverse=True):
            names = [s if p == 1 else f"{s}^{p}" for s, p in zip(_SYMBOLS, m, strict=True) if p]
            number = f"{c:g}"
            parts.append(" x ".join(([number] if c != 1 or not names else []) + names))
        return " + ".join(parts) or "0"


def _product(dims: list[Poly]) -> Poly:
    total = Poly.const(1)
    for d in dims:
        total = total * d
    return total


Dims = list[Poly | None]


@dataclass
class Tensor:
    """What the walk knows of one tensor: its dimensions (None: the rank is
    not known), a bound on its element count, and for a small 1-D integer
    tensor (a shape, axes, indices) bounds on its values."""

    dims: Dims | None
    count: Poly
    values: list[Poly] | None = None
    #: Whether ``values`` are the exact values (constants of the file).
    exact: bool = False

    @staticmethod
    def of(dims: Dims) -> Tensor:
        known = [d for d in dims if d is not None]
        if len(known) != len(dims):
            raise _Unbounded("a dimension is not known")
        return Tensor(list(dims), _product(known))


class _Unbounded(Exception):
    """The size of a node's output cannot be bounded from the file."""


def check_sizes(counter: _Counter, graphs: list[tuple[int, int]]) -> str:
    """Why the model whose graph is ``graphs`` (its ModelProto.graph
    fields) is refused for the size of a tensor ("" if it is not)."""
    from styler.onnxsize import _GRAPH_NODE, _Constants

    if len(graphs) != 1:  # none: onnxruntime says so; more: protobuf merges them
        return "" if not graphs else f"{len(graphs)} graphs (a styler model has one)"
    start, end = graphs[0]
    constants = counter.graph_constants or _Constants(counter, start, end, _GRAPH_NODE)
    bound = ShapeBound(counter, constants, start, end)
    try:
        reason = bound.check()
        counter.growth, counter.together = bound.peak, bound.total
        return reason
    except _Unbounded as exc:
        return f"a tensor's size cannot be bounded from the file ({exc.args[0]})"


class ShapeBound:
    """Bounds on a graph's tensors, walked in the order of its nodes."""

    def __init__(self, counter: _Counter, constants: _Constants, start: int, end: int) -> None:
        self.counter, self.constants = counter, constants
        self.start, self.end = start, end
        self.tensors: dict[str, Tensor] = {}
        #: Tensors whose size is not bounded (an input's, and what is made
        #: from it), with why: refused if used, once the metadata is valid.
        self.tainted: dict[str, str] = {}
        #: Why the first node taking such a tensor is refused.
        self.deferred = ""
        self.allowance, self.fixed = Poly(), MAX_FIXED
        self.largest_weight = 0
        self.min_side = MIN_SIDE
        #: Function bodies by key: their inputs, outputs and nodes.
        self.bodies: dict[tuple[str, str, str], tuple[list[str], list[str], list[Node]]] = {}
        #: The largest tensor's bound, as a multiple of the input's values.
        self.peak = 0.0
        #: The sum of every tensor's bound, as a multiple of the input's values.
        self.total = 0.0
        #: A generator's image per image: as its metadata says, at most as
        #: large as its graph's outputs may be (``made``); 0 for translation.
        self.image, self.made = 0.0, math.inf

    def check(self) -> str:
        """Why the graph is refused ("" if it is not)."""
        from styler.onnxsize import _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT

        inputs: list[tuple[str, int, int]] = []
        outputs: list[str] = []
        for field, s, e in self.counter._fields(self.start, self.end):
            if field == _GRAPH_INITIALIZER:
                self._initializer(s, e)
            elif field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                name = self.counter._strings(s, e, {1: "name"})["name"]
                if field == _GRAPH_INPUT:
                    inputs.append((name, s, e))
                else:
                    outputs.append(name)
        meta = self._metadata()
        if meta is not None and meta.task == "translate":  # apply pads to its min_side
            self.min_side = max(MIN_SIDE, meta.min_side)
        reason = self._inputs(inputs) or self._walk(self.counter.graph_nodes)
        made = self._made(outputs)
        if not reason and made < self.image:
            # A generator whose graph cannot make the image its metadata
            # claims: the claim allowed 4,096 times an image it never makes
            # (a 4 x 4 one claiming 3 x 4096 x 4096); walked again, allowed
            # only what its outputs may hold.
            again = ShapeBound(self.counter, self.constants, self.start, self.end)
            again.made = made
            reason = again.check()
            self.peak, self.total = again.peak, again.total
            return reason
        if not reason and self.total > MAX_TOTAL:
            reason = (
                f"its tensors may hold {self.total:,.0f} times the input's values together "
                f"(styler's models at most {MAX_TOTAL:,})"
            )
        if reason or not self.deferred:
            return reason
        # (without valid metadata the model is refused before any run)
        return "" if meta is None else self.deferred

    def _metadata(self) -> ModelMetadata | None:
        """The model's metadata, if it is valid styler metadata."""
        try:
            return ModelMetadata.from_json(self.counter.metadata)
        except (BadModelError, ValueError, TypeError, RecursionError):
            return None

    # -- the graph's inputs and weights ------------------------------------

    def _initializer(self, start: int, end: int) -> None:
        from styler.onnxsize import _MOST_VALUES, _T_DIMS, _T_NAME, _numbers

        name = self.counter._strings(start, end, {_T_NAME: "name"})["name"]
        dims = _numbers(self.counter.data, start, end, self.counter.budget, {_T_DIMS: "i"})
        if len(dims) > _MOST_VALUES:  # (read no further: the rest would be dropped)
            raise _Unbounded(f"weight {name!r} has more than {_MOST_VALUES} dimensions")
        if any(d < 0 for d in dims):
            raise _Unbounded(f"weight {name!r} has a negative dimension")
        tensor = Tensor.of([Poly.const(int(d)) for d in dims])
        self.largest_weight = max(self.largest_weight, math.prod(int(d) for d in dims))
        if len(dims) <= 1:
            ints = self.constants.ints(name)
            if ints is not None:
                tensor.values, tensor.exact = [Poly.const(v) for v in ints], True
        self.tensors[name] = tensor

    def _inputs(self, inputs: list[tuple[str, int, int]]) -> str:
        """Bounds of the graph's inputs (a weight given as an input too is
        taken for a weight if it declares the weight's shape: a value fed
        for it must have that shape); the allowance of each tensor follows
        from the image's. "" or why refused."""
        shapes: dict[str, list[int | str | None]] = {}
        # (an input that is a weight too runs on its weight: styler never feeds
        # one but the statistics, so it never sets the allowance)
        weights = set(self.tensors)
        for name, s, e in inputs:
            declared = self._declared(s, e)
            weight = self.tensors.get(name)
            if (
                weight is not None
                and weight.dims == [Poly.const(d) for d in declared if isinstance(d, int)]
                and len(weight.dims) == len(declared)
            ):
                continue
            shapes[name] = declared
        # the image: N x C x H x W (of another rank, the signature check names it)
        images = [n for n, d in shapes.items() if d and len(d) >= 3 and n not in weights]
        params: dict[str, Poly] = {}
        if images:
            image = shapes[images[0]] or []
            if not all(isinstance(d, int) for d in image[1:-2]):
                return f"input {images[0]!r} has no fixed number of channels"
            for axis, dim in ((0, image[0]), (1, image[-2]), (2, image[-1])):
                if isinstance(dim, str):
                    params[dim] = Poly.symbol(axis)
        if not images:  # a generator: the noise is N x its metadata's latent_dim
            latent = self._network("latent_dim", 65536)
            if latent:
                params.update(
                    {
                        d: Poly.const(latent)
                        for s in shapes.values()
                        for d in (s or [])[1:2]
                        if isinstance(d, str)
                    }
                )
        for name, dims in shapes.items():
            self.tensors.pop(name, None)
            bound = self._input(name, dims, params, name in images[:1])
            if isinstance(bound, str):
                self.tainted[name] = bound
            else:
                self.tensors[name] = Tensor.of(bound)
        if images:
            self.allowance = self.tensors[images[0]].count.scale(float(MAX_GROWTH))
        else:  # a generator: per image, its inputs or the image of its metadata
            fed = shapes.keys() - weights
            per_image = sum(
                (t.count for n, t in self.tensors.items() if n in fed), Poly.const(0)
            ).positive()
            self.image = min(self._image_size(), self.made)
            base = max(sum(per_image.terms.values(), 0.0), float(self.image))
            self.allowance = Poly({(1, 0, 0): base * MAX_GROWTH})
        # (a weight's values are in the file: no more than two a byte)
        self.fixed = max(MAX_FIXED, min(self.largest_weight, 2 * len(self.counter.data)))
        return ""

    @staticmethod
    def _input(
        name: str, dims: list[int | str | None] | None, params: dict[str, Poly], image: bool
    ) -> list[Poly | None] | str:
        """Bounds of the dimensions of one input, or why it has none."""
        if dims is None:
            return f"input {name!r} declares no shape"
        bound: list[Poly | None] = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                if dim < 0:
                    return f"input {name!r} has a negative dimension"
                bound.append(Poly.const(dim))
            elif image and axis in (0, len(dims) - 2, len(dims) - 1):
                bound.append(Poly.symbol({0: 0, len(dims) - 2: 1, len(dims) - 1: 2}[axis]))
            elif dim in params:
                bound.append(params[dim])
            elif axis == 0:  # a batch: N
                bound.append(Poly.symbol(0))
            else:
                return f"input {name!r} has a dimension of no fixed size"
        return bound

    def _declared(self, start: int, end: int) -> list[int | str | None] | None:
        """The dimensions a graph input declares (ValueInfoProto.type's
        tensor shape): an int, a parameter's name, or None."""
        from styler.onnxsize import _numbers

        c = self.counter
        dims: list[int | str | None] = []
        for f1, s1, e1 in c._fields(start, end):  # ValueInfoProto.type
            if f1 != 2:
                continue
            for f2, s2, e2 in c._fields(s1, e1):  # TypeProto.tensor_type
                if f2 != 1:
                    continue
                for f3, s3, e3 in c._fields(s2, e2):  # TypeProto.Tensor.shape
                    if f3 != 2:
                        continue
                    for f4, s4, e4 in c._fields(s3, e3):  # TensorShapeProto.dim
                        if f4 != 1:
                            continue
                        value = _numbers(c.data, s4, e4, c.budget, {1: "i"})
                        param = c._strings(s4, e4, {2: "p"})["p"]
                        dims.append(int(value[-1]) if value else param or None)
                    return dims
        return None

    def _made(self, outputs: list[str]) -> float:
        """Values per image the graph's outputs may hold together (infinite
        if one is not bounded)."""
        if any(name not in self.tensors for name in outputs):
            return math.inf
        counts = (self.tensors[name].count.positive().terms.values() for name in outputs)
        return sum((sum(c, 0.0) for c in counts), 0.0)

    def _image_size(self) -> int:
        """Values per image a generator's metadata says it makes (0 if none)."""
        return self._network("size", 4096) ** 2 * self._network("out_channels", 16)

    def _network(self, key: str, most: int) -> int:
        """A number of the metadata's network (0 if none, or above ``most``)."""
        try:
            network = json.loads(self.counter.metadata or "{}").get("network", {})
            value = network.get(key, 0)
        except (ValueError, TypeError, AttributeError, RecursionError):
            return 0
        return value if type(value) is int and 0 < value <= most else 0

    def _walk(self, nodes: list[Node]) -> str:
        """Each node once its inputs are known (in the file's order where it
        allows: onnxruntime sorts the nodes itself)."""
        for node in nodes:
            if node.refers:
                return f"{_name(node)} has an attribute its function's caller gives"
        waiting: dict[str, list[int]] = {}  # tensor -> the nodes waiting for it
        missing = []
        for i, node in enumerate(nodes):
            unknown = {x for x in node.inputs if x and x not in self.tensors}
            unknown -= self.tainted.keys()
            for x in unknown:
                waiting.setdefault(x, []).append(i)
            missing.append(len(unknown))
        ready = [i for i, n in enumerate(missing) if n == 0]  # (a heap: the first first)
        done = 0
        while ready:
            i = heapq.heappop(ready)
            done += 1
            node = nodes[i]
            reason = self._node(node)
            if reason:
                return f"{_name(node)} {reason}"
            for output in node.outputs:
                for j in waiting.pop(output, []):
                    missing[j] -= 1
                    if missing[j] == 0:
                        heapq.heappush(ready, j)
        if done < len(nodes):
            first = next(nodes[i] for i, n in enumerate(missing) if n)
            return f"{_name(first)} takes a tensor no node makes"
        return ""

    def _node(self, node: Node) -> str:
        """Bound the outputs of ``node``; why it is refused ("" if it is not)."""
        for x in node.inputs:
            if x in self.tainted:  # not followed; the rest of the graph is
                self.deferred = self.deferred or f"{_name(node)} takes {self.tainted[x]}"
                self.tainted.update(dict.fromkeys(node.outputs, self.tainted[x]))
                return ""
        try:
            onnx = node.domain in ("", "ai.onnx") and node.op in _RULES
            results = _RULES[node.op](self, node) if onnx else self._call(node)
        except _Unbounded as exc:
            return f"has an output whose size cannot be bounded from the file ({exc.args[0]})"
        except (KeyError, IndexError, ValueError, TypeError, ArithmeticError):
            return "has an output whose size cannot be bounded from the file (its arguments)"
        for output, tensor in zip(node.outputs, results, strict=False):
            reason = self._limit(tensor.count)
            if reason:
                return reason
            if output:
                self.tensors[output] = tensor
        return ""

    def _call(self, node: Node) -> list[Tensor]:
        """The outputs of a call of a model-local function: its body walked
        with the call's arguments (onnxruntime inlines it at each call)."""
        from styler.onnxsize import _FUNCTION_NODE, _Constants

        key = (node.domain, node.op, node.overload)  # (a function's call)
        if key not in self.counter.functions:
            raise _Unbounded("an operator without a rule")
        if key not in self.bodies:
            start, end = self.counter.functions[key]
            self.bodies[key] = self.counter.function_body(start, end)
        formal, results, nodes = self.bodies[key]
        start, end = self.counter.functions[key]
        inner = ShapeBound(
            self.counter, _Constants(self.counter, start, end, _FUNCTION_NODE), start, end
        )
        inner.allowance, inner.fixed, inner.bodies = self.allowance, self.fixed, self.bodies
        inner.min_side = self.min_side
        for name, given in zip(formal, node.inputs, strict=False):
            if given:
                inner.tensors[name] = self.tensors[given]
        reason = inner._walk(nodes)
        self.peak = max(self.peak, inner.peak)
        self.total += inner.total
        if reason or inner.deferred:
            raise _Unbounded(f"its body: {reason or inner.deferred}")
        return [inner.tensors[name] for name in results]

    def _limit(self, count: Poly) -> str:
        """Why a tensor of at most ``count`` values is refused ("" if it is
        not). A term short of the reference's H or W is divided by
        :attr:`min_side` for each (styler feeds no thinner image), the
        constant term is allowed :attr:`fixed` values."""
        if len(self.allowance.terms) != 1:
            return "takes an input that holds no values"
        (reference, allowed), *_ = self.allowance.terms.items()
        if not all(math.isfinite(c) for c in count.terms.values()):
            return "may hold more values than can be counted"
        over = 0.0
        for m, c in count.positive().terms.items():
            if any(p > r for p, r in zip(m, reference, strict=True)):
                wider = any(p > r for p, r in zip(m[1:], reference[1:], strict=True))
                kind = "the image's size" if wider else "the batch"
                return f"grows faster than {kind} (an outer product or a copy of copies)"
            if m == _ONE:
                c = max(0.0, c - self.fixed)
            over += c / self.min_side ** (reference[1] + reference[2] - m[1] - m[2])
        times = over / allowed * MAX_GROWTH
        self.peak = max(self.peak, times)
        self.total += times
        if over > allowed:
            return (
                f"may hold {times:,.0f} times the input's values "
                f"(styler's models at most {MAX_GROWTH:,})"
            )
        return ""


# -- the operators ----------------------------------------------------------


def _name(node: Node) -> str:
    """The node's operator, with its domain unless it is ONNX's, and its first output."""
    from styler.onnxsize import _printable

    op = node.op if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op}"
    return f"{_printable(op)} {_printable(node.outputs[0] if node.outputs else '')!r}"


def _get(bound: ShapeBound, name: str) -> Tensor:
    return bound.tensors[name]


def _dims(tensor: Tensor) -> Dims:
    if tensor.dims is None:
        raise _Unbounded("a tensor of unknown rank")
    return tensor.dims


def _known(dims: Dims) -> list[Poly]:
    if any(d is None for d in dims):
        raise _Unbounded("a dimension is not known")
    return [d for d in dims if d is not None]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise _Unbounded(f"axis {axis} of a tensor of rank {rank}")
    return axis % rank


def _same(bound: ShapeBound, node: Node) -> list[Tensor]:
    """Elementwise of one tensor (activations, casts, norms, quantisation)."""
    x = _get(bound, node.inputs[0])
    keep = node.op in ("Identity", "Cast")
    return [Tensor(x.dims, x.count, x.values if keep else None, x.exact and keep)]


def _broadcast(bound: ShapeBound, node: Node) -> list[Tensor]:
    """Add, Sub, Mul, Pow: numpy broadcasting of two tensors."""
    a, b = _get(bound, node.inputs[0]), _get(bound, node.inputs[1])
    if a.dims is None or b.dims is None:
        return [Tensor(None, a.count * b.count)]
    rank = max(len(a.dims), len(b.dims))
    da = [Poly.const(1)] * (rank - len(a.dims)) + list(a.dims)
    db = [Poly.const(1)] * (rank - len(b.dims)) + list(b.dims)
    dims: Dims = []
    one = Poly.const(1)
    for x, y in zip(da, db, strict=True):
        if x is None or y is None:
            dims.append(None)
        elif x == y or y == one:
            dims.append(x)
        elif x == one:
            dims.append(y)
        else:
            dims.append(x.upper(y))
    # (a dimension not known: each is at most the product of the two)
    unknown = any(d is None for d in dims)
    count = a.count * b.count if unknown else _product(_known(dims))
    values = None
    if a.exact and b.exact and a.values is not None and b.values is not None:
        values = _arithmetic(node.op, a.values, b.values)
    return [Tensor(dims, count, values, values is not None)]


def _arithmetic(op: str, a: list[Poly], b: list[Poly]) -> list[Poly] | None:
    if len(a) != len(b) and min(len(a), len(b)) != 1:
        return None
    n = max(len(a), len(b))
    pairs = [(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]) for i in range(n)]
    if op == "Add":
        return [x + y for x, y in pairs]
    if op == "Sub":
        return [x + y.scale(-1.0) for x, y in pairs]
    if op == "Mul":
        return [x * y for x, y in pairs]
    return None


def _conv(bound: ShapeBound, node: Node) -> list[Tensor]:
    """Conv, ConvTranspose, QLinearConv: N x M x the spatial sizes."""
    weight = node.inputs[3] if node.op == "QLinearConv" else node.inputs[1]
    x, w = _dims(_get(bound, node.inputs[0])), _known(_dims(_get(bound, weight)))
    if len(x) != len(w) or len(x) < 3:
        raise _Unbounded("weights of another rank than the input")
    group = node.ints.get("group", [1])[-1]
    channels = w[1].scale(float(group)) if node.op == "ConvTranspose" else w[0]
    kernel = [k.constant() for k in w[2:]]
    if any(k is None for k in kernel) or channels.constant() is None:
        raise _Unbounded("weights of unknown size")
    spatial = len(x) - 2
    strides = node.ints.get("strides") or [1] * spatial
    dilations = node.ints.get("dilations") or [1] * spatial
    pads = node.ints.get("pads") or [0] * (2 * spatial)
    extra = node.ints.get("output_padding") or [0] * spatial
    auto = node.strings.get("auto_pad", "NOTSET")
    if len(strides) != spatial or len(dilations) != spatial or len(pads) != 2 * spatial:
        raise _Unbounded("attributes of another rank than the input")
    dims: Dims = [x[0], channels]
    for i, size in enumerate(x[2:]):
        if size is None:
            dims.append(None)
            continue
        s, d, k = float(strides[i]), dilations[i], float(kernel[i] or 0)
        if s < 1 or d < 1:
            raise _Unbounded("a stride or dilation below 1")
        span = (k - 1) * d + 1
        if node.op == "ConvTranspose":
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                dims.append(size.scale(s))
            else:
                tail = span + extra[i] - s - (0 if auto == "VALID" else pads[i] + pads[i + spatial])
                dims.append(size.scale(s) + Poly.const(tail))
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(size.scale(1 / s) + Poly.const(1 - 1 / s))
        else:
            total = 0 if auto == "VALID" else pads[i] + pads[i + spatial]
            if s == 1:
                dims.append(size + Poly.const(total - span + 1))
            else:  # (size + pads - span) // s + 1, where onnxruntime's // truncates
                # towards 0: a size short of the kernel still gives 1, so at
                # most (size + pads - span + s - 1) / s + 1
                dims.append(size.scale(1 / s) + Poly.const((total - span + s - 1) / s + 1))
    return [Tensor.of([_floor(d) for d in dims])]


def _floor(dim: Poly | None) -> Poly | None:
    """A dimension known to be a number: that number, at least 0."""
    value = dim.constant() if dim is not None else None
    if value is None:
        return dim
    return Poly.const(max(0, math.floor(value)))


def _resize(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _dims(_get(bound, node.inputs[0]))
    if node.strings.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise _Unbounded("a region of interest")  # (its size is the region's, scaled)
    scales = bound.constants.floats(node.inputs[2])
    if scales is None or len(scales) != len(x):
        raise _Unbounded("scales not one per axis")
    dims = [None if d is None else d.scale(float(s)) for d, s in zip(x, scales, strict=True)]
    return [Tensor.of([_floor(d) for d in dims])]


def _pad(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _dims(_get(bound, node.inputs[0]))
    pads = bound.constants.ints(node.inputs[1])
    axes = list(range(len(x)))
    if len(node.inputs) > 3 and node.inputs[3]:
        given = bound.constants.ints(node.inputs[3])
        if given is None:
            raise _Unbounded("axes not a constant")
        axes = [_axis(a, len(x)) for a in given]
    if pads is None or len(pads) != 2 * len(axes):
        raise _Unbounded("pads not two per axis")
    dims = list(x)
    for i, a in enumerate(axes):
        d = dims[a]
        dims[a] = None if d is None else d + Poly.const(pads[i] + pads[i + len(axes)])
    return [Tensor.of([_floor(d) for d in dims])]


def _depth_to_space(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _dims(_get(bound, node.inputs[0]))
    b = float(node.ints["blocksize"][-1])
    if len(x) != 4 or b < 1:
        raise _Unbounded("not 4-D")
    n, c, h, w = x
    return [
        Tensor.of(
            [n, None if c is None else c.scale(1 / (b * b))]
            + [None if d is None else d.scale(b) for d in (h, w)]
        )
    ]


def _pool(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _dims(_get(bound, node.inputs[0]))
    return [Tensor.of(x[:2] + [Poly.const(1)] * (len(x) - 2))]


def _reduce(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _get(bound, node.inputs[0])
    dims = _dims(x)
    keep = node.ints.get("keepdims", [1])[-1]
    given = node.ints.get("axes")
    if given is None and len(node.inputs) > 1 and node.inputs[1]:
        given = bound.constants.ints(node.inputs[1])
        if given is None:  # never more values than the input
            return [Tensor(list(dims) if keep else None, x.count)]
    if not given and node.ints.get("noop_with_empty_axes", [0])[-1]:
        return [Tensor(list(dims), x.count)]  # no axes: the input as it is
    axes = {_axis(a, len(dims)) for a in given} if given else set(range(len(dims)))
    out: Dims = []
    for i, d in enumerate(dims):
        if i not in axes:
            out.append(d)
        elif keep:
            out.append(Poly.const(1))
    return [Tensor(out, x.count if any(d is None for d in out) else _product(_known(out)))]


def _flatten(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _get(bound, node.inputs[0])
    dims = _dims(x)
    axis = node.ints.get("axis", [1])[-1]
    axis = axis + len(dims) if axis < 0 else axis
    if not 0 <= axis <= len(dims):
        raise _Unbounded(f"axis {axis} of a tensor of rank {len(dims)}")
    head, tail = dims[:axis], dims[axis:]
    out: Dims = [
        _product(_known(part)) if all(d is not None for d in part) else None
        for part in (head, tail)
    ]
    return [Tensor(out, x.count)]


def _unsqueeze(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _get(bound, node.inputs[0])
    dims = _dims(x)
    given = node.ints.get("axes")
    if given is None:
        given = bound.constants.ints(node.inputs[1]) if len(node.inputs) > 1 else None
    if given is None:  # as many values as before, in some shape
        return [Tensor(None, x.count)]
    rank = len(dims) + len(given)
    axes = {_axis(a, rank) for a in given}
    rest = iter(dims)
    out: Dims = [Poly.const(1) if i in axes else next(rest) for i in range(rank)]
    values = x.values if len(dims) == 0 and x.values else None
    return [Tensor(out, x.count, values, x.exact and values is not None)]


def _slice_of(size: int, start: int, end: int, step: int) -> int:
    return len(range(size)[slice(start, end, step)])


def _slice(bound: ShapeBound, node: Node) -> list[Tensor]:
    """A Slice never makes a dimension larger: where its arguments are
    constants the exact size of a known dimension, else the input's."""
    x = _get(bound, node.inputs[0])
    dims = _dims(x)
    args = [
        _get(bound, node.inputs[i]) if len(node.inputs) > i and node.inputs[i] else None
        for i in range(1, 5)
    ]
    known = [None if a is None or not a.exact else _ints(a.values) for a in args]
    starts, ends, axes, steps = known
    out = list(dims)
    if starts is None or ends is None or len(starts) != len(ends):
        return [Tensor(out, x.count)]
    if (args[2] is not None and axes is None) or (args[3] is not None and steps is None):
        return [Tensor(out, x.count)]
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if not len(axes) == len(steps) == len(starts) or 0 in steps:
        raise _Unbounded("arguments of different lengths")
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        a = _axis(axis, len(dims))
        dim = out[a]
        size = dim.constant() if dim is not None else None
        if size is not None:
            out[a] = Poly.const(_slice_of(int(size), start, end, step))
        elif step == 1 and 0 <= start <= end < 2**31:
            out[a] = Poly.const(end - start)
    values = None
    if x.values is not None and len(dims) == 1 and len(axes) == 1:
        picked = range(len(x.values))[slice(starts[0], ends[0], steps[0])]
        values = [x.values[i] for i in picked]
    if any(d is None for d in out):
        return [Tensor(out, x.count)]
    return [Tensor(out, _product(_known(out)), values, x.exact and values is not None)]


def _ints(values: list[Poly] | None) -> list[int] | None:
    if values is None:
        return None
    numbers = [v.constant() for v in values]
    if any(n is None or not n.is_integer() for n in numbers):
        return None
    return [int(n) for n in numbers if n is not None]


def _concat(bound: ShapeBound, node: Node) -> list[Tensor]:
    parts = [_get(bound, n) for n in node.inputs if n]
    count = sum((p.count for p in parts), Poly.const(0))
    if any(p.dims is None for p in parts) or len({len(p.dims or []) for p in parts}) != 1:
        return [Tensor(None, count)]
    rank = len(parts[0].dims or [])
    axis = _axis(node.ints.get("axis", [0])[-1], rank)
    dims: Dims = []
    for i in range(rank):
        column = [(p.dims or [])[i] for p in parts]
        if any(d is None for d in column):
            dims.append(None)
        elif i == axis:
            dims.append(sum(_known(column), Poly.const(0)))
        else:
            first = column[0]
            for d in column[1:]:
                first = first.upper(d) if first != d and first is not None and d else first
            dims.append(first)
    values = None
    if rank == 1 and all(p.values is not None for p in parts):
        values = [v for p in parts for v in (p.values or [])]
    exact = values is not None and all(p.exact for p in parts)
    if any(d is None for d in dims):
        return [Tensor(dims, count, values, exact)]
    return [Tensor(dims, _product(_known(dims)), values, exact)]


def _shape(bound: ShapeBound, node: Node) -> list[Tensor]:
    dims = _dims(_get(bound, node.inputs[0]))
    rank = len(dims)
    start = node.ints.get("start", [0])[-1]
    end = node.ints.get("end", [rank])[-1]
    picked = dims[slice(start, end)]
    values = [Poly.const(0) if d is None else d for d in picked]
    if any(d is None for d in picked):
        return [Tensor.of([Poly.const(len(picked))])]
    tensor = Tensor.of([Poly.const(len(picked))])
    tensor.values = [_floor(v) or v for v in values]
    return [tensor]


def _gemm(bound: ShapeBound, node: Node) -> list[Tensor]:
    a, b = _dims(_get(bound, node.inputs[0])), _dims(_get(bound, node.inputs[1]))
    if len(a) != 2 or len(b) != 2:
        raise _Unbounded("not 2-D")
    m = a[1] if node.ints.get("transA", [0])[-1] else a[0]
    n = b[0] if node.ints.get("transB", [0])[-1] else b[1]
    return [Tensor.of([m, n])]


def _matmul(bound: ShapeBound, node: Node) -> list[Tensor]:
    a, b = _get(bound, node.inputs[0]), _get(bound, node.inputs[1])
    if a.dims is None or b.dims is None or len(a.dims) < 2 or len(b.dims) < 2:
        return [Tensor(None, a.count * b.count)]
    batch_a, batch_b = a.dims[:-2], b.dims[:-2]
    rank = max(len(batch_a), len(batch_b))
    one = Poly.const(1)
    ba = [one] * (rank - len(batch_a)) + list(batch_a)
    bb = [one] * (rank - len(batch_b)) + list(batch_b)
    dims: Dims = []
    for x, y in zip(ba, bb, strict=True):
        if x is None or y is None:
            dims.append(None)
        else:
            dims.append(x if x == y or y == one else y if x == one else x.upper(y))
    dims += [a.dims[-2], b.dims[-1]]
    if any(d is None for d in dims):
        return [Tensor(dims, a.count * b.count)]
    return [Tensor.of(dims)]


def _reshape(bound: ShapeBound, node: Node) -> list[Tensor]:
    """As many values out as in, whatever the shape given; its dimensions
    where the shape is known (a constant, or a shape of the graph's)."""
    x, shape = _get(bound, node.inputs[0]), _get(bound, node.inputs[1])
    if shape.values is None:
        length = _dims(shape)[0] if shape.dims and len(shape.dims) == 1 else None
        rank = length.constant() if length is not None else None
        return [Tensor(None if rank is None else [None] * int(rank), x.count)]
    dims: Dims = []
    source = x.dims or []
    copy = not node.ints.get("allowzero", [0])[-1]  # a 0 copies the input's dimension
    for i, v in enumerate(shape.values):
        value = v.constant()  # (a computed value is >= 0: a negative one is a constant)
        given = source[i] if i < len(source) else None
        if value == -1:
            dims.append(None)  # what is left
        elif value is not None and value < 0:
            raise _Unbounded("a negative dimension")
        elif value == 0 and copy:
            dims.append(given)
        elif shape.exact or not copy:
            dims.append(v)
        else:  # a computed value at most v, or 0 for the input's
            dims.append(None if given is None else v.upper(given))
    if dims.count(None) == 1 and shape.exact:
        divisor = _product(_known([d for d in dims if d is not None])).constant()
        if divisor:  # the rest: the count over the others
            dims[dims.index(None)] = x.count.scale(1 / divisor)
    return [Tensor(dims, x.count)]


def _gather(bound: ShapeBound, node: Node) -> list[Tensor]:
    data, indices = _get(bound, node.inputs[0]), _get(bound, node.inputs[1])
    dims, picked = _dims(data), _dims(indices)
    axis = _axis(node.ints.get("axis", [0])[-1], len(dims))
    out = dims[:axis] + picked + dims[axis + 1 :]
    values = None
    if data.values is not None and len(dims) == 1 and indices.exact and indices.values:
        n = len(data.values)
        chosen = [int(i.constant() or 0) for i in indices.values]
        if all(-n <= i < n for i in chosen):
            values = [data.values[i] for i in chosen]
    tensor = Tensor.of(out)
    tensor.values, tensor.exact = values, data.exact and values is not None
    return [tensor]


def _batch_norm(bound: ShapeBound, node: Node) -> list[Tensor]:
    x = _get(bound, node.inputs[0])
    scale = _get(bound, node.inputs[1])
    return [Tensor(x.dims, x.count), scale, scale]


_RULES: dict[str, Callable[[ShapeBound, Node], list[Tensor]]] = {
    **dict.fromkeys(
        (
            "Relu",
            "LeakyRelu",
            "Tanh",
            "Sigmoid",
            "Sqrt",
            "Reciprocal",
            "Cast",
            "Identity",
            "Clip",
            "InstanceNormalization",
            "QuantizeLinear",
            "DequantizeLinear",
        ),
        _same,
    ),
    **dict.fromkeys(("Add", "Sub", "Mul", "Pow"), _broadcast),
    **dict.fromkeys(("Conv", "ConvTranspose", "QLinearConv"), _conv),
    "BatchNormalization": _batch_norm,
    "Resize": _resize,
    "Pad": _pad,
    "DepthToSpace": _depth_to_space,
    "GlobalAveragePool": _pool,
    "ReduceMean": _reduce,
    "Flatten": _flatten,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Concat": _concat,
    "Shape": _shape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Reshape": _reshape,
    "Gather": _gather,
}
