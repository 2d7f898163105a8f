"""One rule per ONNX operator: bounds of a node's outputs from bounds of its
inputs (:data:`_RULES`, by operator name), for the walk of
:class:`styler.onnxshapes.ShapeBound`.

A rule takes the walk (its tensors so far, and the graph's constants) and
the node, and returns a :class:`~styler.onnxpoly.Tensor` per output, or
raises :class:`~styler.onnxpoly._Unbounded` where the file does not bound
one. Each bound is sound: never below the size onnxruntime makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from styler.onnxpoly import Dims, Poly, Tensor, _product, _Unbounded

if TYPE_CHECKING:
    from styler.onnxshapes import ShapeBound
    from styler.onnxsize import Node

# -- helpers ------------------------------------------------------------------


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


# -- the operators ------------------------------------------------------------


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
    if 0 in steps:
        raise _Unbounded("a step of 0")
    if not len(axes) == len(steps) == len(starts):
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
