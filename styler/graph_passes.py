"""Rewrites of an exported ONNX graph into faster ops with the same arithmetic.

Each pass takes an ``onnx.ModelProto``, changes it in place and returns how
many nodes it rewrote. The exporter runs :func:`fast_graph` before its parity
check, so a wrong rewrite can never be written to a file; the quantiser runs
it and :func:`transposed_to_subpixel` before quantising, and checks the int8
result against the fp32 model. Train half: needs ``onnx``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Axes over which a mean of an NCHW tensor is a per-channel spatial mean.
_SPATIAL_AXES = ([2, 3], [3, 2], [-2, -1], [-1, -2])


def _small_constants(graph: Any, most: int = 8) -> dict[str, np.ndarray]:
    """Constants of ``graph`` with at most ``most`` elements, by name:
    initializers and the outputs of Constant nodes."""
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [
        (n.output[0], n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    ]
    return {
        name: numpy_helper.to_array(tensor)
        for name, tensor in tensors
        if int(np.prod(tensor.dims)) <= most
    }


def _ranks(graph: Any) -> dict[str, int]:
    ranks = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


def spatial_means_to_pools(model: Any) -> int:
    """ReduceMean over the two spatial axes of a rank-4 tensor becomes
    GlobalAveragePool (then Flatten when the dims are not kept).

    Same arithmetic, much faster kernel: in an int8 resnet_9blocks with the
    norm-statistics graph, ReduceMean took a quarter of the run time on this
    CPU (its input arrives in onnxruntime's channels-last layout there), and
    the whole run went from 1.94 to 1.64 s at 768x512.
    """
    from onnx import helper

    graph = model.graph
    constants = {
        k: v.tolist()
        for k, v in _small_constants(graph).items()
        if v.ndim == 1 and v.dtype.kind == "i"
    }
    ranks = _ranks(graph)
    nodes = []
    count = 0
    for node in graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        axes = constants.get(node.input[1]) if len(node.input) > 1 else None
        if (
            node.op_type == "ReduceMean"
            and axes in _SPATIAL_AXES
            and ranks.get(node.input[0]) == 4
            and not attrs.get("noop_with_empty_axes", 0)
        ):
            out = node.output[0]
            if attrs.get("keepdims", 1):
                nodes.append(
                    helper.make_node("GlobalAveragePool", [node.input[0]], [out], name=node.name)
                )
            else:
                pooled = f"{out}__pooled"
                nodes += [
                    helper.make_node(
                        "GlobalAveragePool", [node.input[0]], [pooled], name=f"{node.name}__pool"
                    ),
                    helper.make_node("Flatten", [pooled], [out], name=node.name, axis=1),
                ]
            count += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def squares_to_products(model: Any) -> int:
    """Pow(x, 2) becomes Mul(x, x): exact, and onnxruntime's Pow is slow (68 ms
    for one 64 x 512 x 768 tensor on this CPU; the int8 resnet_9blocks with
    the norm-statistics graph went from 1.64 to 1.56 s at 768x512). torch
    exports ``square()`` as Pow."""
    graph = model.graph
    scalars = {
        k: float(v.reshape(-1)[0])
        for k, v in _small_constants(graph, most=1).items()
        if v.size == 1 and v.dtype.kind in "fiu"
    }
    count = 0
    for node in graph.node:
        if node.op_type == "Pow" and scalars.get(node.input[1]) == 2.0:
            node.op_type = "Mul"
            node.input[1] = node.input[0]
            del node.attribute[:]
            count += 1
    return count


def fast_graph(model: Any) -> int:
    """Every rewrite above, in order; how many nodes changed."""
    return spatial_means_to_pools(model) + squares_to_products(model)


def _taps(kernel: int, stride: int, padding: int) -> tuple[int, int, list[list[tuple[int, int]]]]:
    """For one spatial axis of a transposed convolution: the input offsets
    (lo, hi) its output phases reach, and for each output phase a the
    (offset - lo, kernel tap) pairs it sums. Output o = s*i + a gets input
    j = i + d through tap t = a + p - s*d when 0 <= t < k (the transposed
    convolution's o = s*j - p + t)."""
    phases: list[list[tuple[int, int]]] = []
    offsets = []
    for a in range(stride):
        pairs = []
        for t in range(kernel):
            d, rem = divmod(a + padding - t, stride)
            if rem == 0:
                pairs.append((d, t))
                offsets.append(d)
        phases.append(pairs)
    lo, hi = min(offsets), max(offsets)
    return lo, hi, [[(d - lo, t) for d, t in pairs] for pairs in phases]


def _subpixel_kernel(
    weight: np.ndarray, stride: int, taps: tuple[int, int, list[list[tuple[int, int]]]]
) -> np.ndarray:
    """The convolution kernel (C_out*s*s, C_in, n, n) that, after zero padding
    by (-lo, hi) and a pixel shuffle (DepthToSpace, CRD), computes the
    transposed convolution with ``weight`` (C_in, C_out, k, k); ``taps`` is
    :func:`_taps` of its kernel size, stride and padding."""
    c_in, c_out = weight.shape[0], weight.shape[1]
    lo, hi, phases = taps
    size = hi - lo + 1
    out = np.zeros((c_out, stride, stride, c_in, size, size), weight.dtype)
    for a, rows in enumerate(phases):
        for b, cols in enumerate(phases):
            for ey, ty in rows:
                for ex, tx in cols:
                    out[:, a, b, :, ey, ex] = weight[:, :, ty, tx].T
    return out.reshape(c_out * stride * stride, c_in, size, size)


def transposed_to_subpixel(model: Any) -> int:
    """Each ConvTranspose whose output is exactly s times its input (one
    stride and kernel for both axes, no dilation or groups, constant weights)
    becomes the same function in sub-pixel form: a zero-padded Conv to s*s
    times the channels, then DepthToSpace (Shi et al., 2016).

    For int8: onnxruntime has no int8 ConvTranspose, while the Conv quantises
    (resnet_9blocks at 768x512: 0.3 s for the two transposed convolutions in
    fp32, about 60 ms as int8 sub-pixel convolutions). Not for fp32 exports:
    the dense kernel does 1.8x (k=3) to 2.25x (k=4) the multiplications, and a
    U-Net ran 36% slower in fp32 with it.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes, dropped, added = [], set(), []
    count = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1]) if node.op_type == "ConvTranspose" else None
        bias_name = node.input[2] if len(node.input) > 2 else ""
        if weight is None or len(weight.dims) != 4 or (bias_name and bias_name not in weights):
            nodes.append(node)
            continue
        k = weight.dims[2]
        strides = list(attrs.get("strides", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        extra = list(attrs.get("output_padding", [0, 0]))
        s, p, op = strides[0], pads[0], extra[0]
        plain = (
            weight.dims[3] == k
            and len(strides) == 2
            and s > 1
            and strides == [s, s]
            and pads == [p] * 4
            and extra == [op, op]
            and list(attrs.get("dilations", [1, 1])) == [1, 1]
            and attrs.get("group", 1) == 1
            and "output_shape" not in attrs
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and k + op - 2 * p == s
        )
        taps = _taps(k, s, p) if plain else (0, 0, [])
        lo, hi, phases = taps
        if not plain or not all(phases) or lo > 0 or hi < 0:
            nodes.append(node)
            continue
        kernel = _subpixel_kernel(numpy_helper.to_array(weight), s, taps)
        name = node.name or node.output[0]
        inputs = [node.input[0], f"{name}__subpixel_weight"]
        added.append(numpy_helper.from_array(kernel, inputs[1]))
        if bias_name:
            bias = numpy_helper.to_array(weights[bias_name])
            inputs.append(f"{name}__subpixel_bias")
            added.append(numpy_helper.from_array(np.repeat(bias, s * s), inputs[2]))
        shuffled = f"{node.output[0]}__subpixel"
        nodes += [
            helper.make_node(
                "Conv",
                inputs,
                [shuffled],
                name=f"{name}__subpixel_conv",
                kernel_shape=[kernel.shape[2], kernel.shape[3]],
                pads=[-lo, -lo, hi, hi],
            ),
            helper.make_node(
                "DepthToSpace",
                [shuffled],
                [node.output[0]],
                name=f"{name}__pixel_shuffle",
                blocksize=s,
                mode="CRD",
            ),
        ]
        for used in node.input[1:]:
            if used and uses.get(used) == 1:
                dropped.add(used)
        count += 1
    if count:
        kept = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend([*kept, *added])
        del graph.node[:]
        graph.node.extend(nodes)
    return count
