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

This module holds the limits and the walk (:class:`ShapeBound`, :func:`check_sizes`);
the polynomials and tensors it follows are in :mod:`styler.onnxpoly`, the
rule of each operator in :mod:`styler.onnxrules`.
"""

from __future__ import annotations

import heapq
import json
import math
from typing import TYPE_CHECKING

from styler.errors import BadModelError
from styler.metadata import ModelMetadata
from styler.onnxpoly import _ONE, Poly, Tensor, _Unbounded
from styler.onnxrules import _RULES

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


def _name(node: Node) -> str:
    """The node's operator, with its domain unless it is ONNX's, and its first output."""
    from styler.onnxsize import _printable

    op = node.op if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op}"
    return f"{_printable(op)} {_printable(node.outputs[0] if node.outputs else '')!r}"
