"""Reliability, the forty-second pass: checkpoints whose headers claim one
thing and whose reading costs another, ONNX models too costly to open or
that take a fixed batch, and checkpoints a resumed run overwrote. Each test
fails on the code of the pass's start (07c6fa0) for the reason its
docstring gives."""

from __future__ import annotations

import json
import os
import struct
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from test_safety import _lines  # noqa: E402
from test_safety_pass7 import _run  # noqa: E402
from test_training_parts import tiny_cyclegan  # noqa: E402

from styler.errors import BadCheckpointError  # noqa: E402
from styler.importer import load_state_dict  # noqa: E402

SHIPPED = Path(__file__).parent.parent / "weights" / "photo2painting.onnx"
REFERENCE = Path(__file__).parent / "fixtures" / "reference" / "resnet_6blocks_ngf16_instance.pth"


def _rewrite(
    src: Path, dst: Path, pickle: bytes | None = None, method: int = 0, name: str = "data.pkl"
) -> Path:
    """``src`` (a zip checkpoint) written again to ``dst``: its pickle
    replaced by ``pickle`` (named ``name``) and deflated, every entry
    compressed by ``method``."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if pickle is not None and info.filename.endswith("data.pkl"):
                renamed = info.filename.removesuffix("data.pkl") + name
                new.writestr(renamed, pickle, zipfile.ZIP_DEFLATED, compresslevel=9)
            else:
                new.writestr(info.filename, data, method or info.compress_type)
    return dst


def test_checkpoints_that_would_cost_far_more_than_they_hold_are_refused(tmp_path: Path) -> None:
    """Four files of a few KB each that `styler import` read at length:
    a pickle of 20 MB deflated into 21 KB (PyTorch's safe unpickler: 12.8 s
    and 758 MB; one of 200 MB ran over a minute); a central directory that
    Python's zipfile finds before the end record while PyTorch follows the
    record's offset to another (Python checked 4 KB, PyTorch inflated 1.5
    GiB); a tar header claiming 1 GiB over a hole (PyTorch tries every
    non-zip file as a tar: 13 s, 1.6 GB, "pop from empty list"); entries
    compressed with bzip2 (PyTorch's internal text, cut at 200 characters).
    The zip64 and wrapped checkpoints the review tried still load."""
    small = tmp_path / "small.pth"
    torch.save({"model.1.weight": torch.zeros(4)}, small)
    bomb = _rewrite(
        small, tmp_path / "bomb.pth", b"\x80\x02]q\x00(" + b"K\x00" * (10 << 20) + b"e."
    )
    assert bomb.stat().st_size < 64 << 10
    r = _run("import", str(bomb), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and _lines(r) == [
        f"styler: error: {bomb}: its pickle claims 20 MB (a state_dict's pickle is a few KB; "
        "at most 16 MB is read); nothing was loaded"
    ]
    data = small.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    size_cd, offset_cd = struct.unpack("<II", data[end + 12 : end + 20])
    split = tmp_path / "split.pth"  # the directory again, just before the end record
    split.write_bytes(data[:end] + data[offset_cd : offset_cd + size_cd] + data[end:])
    found = r"central directory is at \d+ but the end record says"
    with pytest.raises(BadCheckpointError, match=found):
        load_state_dict(split)
    tar = tmp_path / "tar.pth"
    header = tarfile.TarInfo("././@x")
    header.type, header.size = tarfile.XHDTYPE, (1 << 30) - 2048
    with open(tar, "wb") as f:
        f.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        f.truncate(1 << 30)
    with pytest.raises(BadCheckpointError, match=r"PyTorch's oldest \(tar\) format"):
        load_state_dict(tar)
    bz2 = _rewrite(REFERENCE, tmp_path / "bz2.pth", method=zipfile.ZIP_BZIP2)
    with pytest.raises(BadCheckpointError, match="compressed with bzip2, which PyTorch's reader"):
        load_state_dict(bz2)
    reference = load_state_dict(REFERENCE)
    zip64 = tmp_path / "zip64.pth"
    with zipfile.ZipFile(REFERENCE) as old, zipfile.ZipFile(zip64, "w") as new:
        for info in old.infolist():
            with new.open(info.filename, "w", force_zip64=True) as entry:
                entry.write(old.read(info))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": reference, "epoch": 3}, wrapped)
    for good in (zip64, wrapped):
        loaded = load_state_dict(good)
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def _chain(path: Path, count: int, inside_if: bool = False) -> Path:
    """The shipped model with ``count`` Relu nodes after its output (inside
    one If node's branches when ``inside_if``)."""
    from onnx import TensorProto, helper

    model = onnx.load(str(SHIPPED))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["x0" if o == out else o for o in node.output]
    nodes = [
        helper.make_node("Relu", [f"x{i}"], [f"x{i + 1}" if i < count - 1 else "y"])
        for i in range(count)
    ]
    if inside_if:
        body = helper.make_graph(
            nodes, "body", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        )
        flag = helper.make_tensor("flag", TensorProto.BOOL, [], [True])
        model.graph.initializer.append(flag)
        nodes = [helper.make_node("If", ["flag"], [out], then_branch=body, else_branch=body)]
    else:
        nodes[-1].output[0] = out
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


def test_a_model_with_too_many_nodes_is_refused_before_a_session_is_built(tmp_path: Path) -> None:
    """A 16 MB model of 400,000 Relu nodes took `styler info` 56 s and 1.9
    GB (onnxruntime's session costs by the node; styler's models have
    hundreds). The nodes are counted from the file first, subgraphs
    included, and the counts agree with onnx's own."""
    from styler.onnxsize import MAX_NODES, check_nodes

    assert check_nodes(SHIPPED, "m") == len(onnx.load(str(SHIPPED)).graph.node) == 430
    over = _chain(tmp_path / "chain.onnx", MAX_NODES)
    r = _run("info", str(over))
    assert r.returncode == 2 and _lines(r) == [
        f"styler: error: {over}: more than 30,000 nodes (a styler model has hundreds); "
        "too costly to open"
    ]
    hidden = _chain(tmp_path / "hidden.onnx", MAX_NODES, inside_if=True)
    with pytest.raises(Exception, match="more than 30,000 nodes"):
        check_nodes(hidden, "hidden")
    assert check_nodes(hidden.read_bytes()[: 1 << 10], "cut") == 0  # onnxruntime will say


def test_a_fixed_batch_is_refused_unless_it_is_one(tmp_path: Path) -> None:
    """A model whose input takes a fixed batch of 3 was accepted by `info`
    and `apply`, then every image failed with a cut-off onnxruntime line
    (exit 1); one of a fixed batch of 1 failed whenever two images of one
    size were batched. Now a batch other than 1 is a model error (exit 2),
    and a batch of 1 styles images one at a time, as the shipped model does."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), np.uint8)).save(photos / name)
    models = {}
    for batch in (1, 3):
        model = onnx.load(str(SHIPPED))
        dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = batch
        models[batch] = tmp_path / f"batch{batch}.onnx"
        onnx.save(model, str(models[batch]))
    r = _run("apply", str(photos), "-m", str(models[3]), "-o", str(tmp_path / "out3"))
    assert r.returncode == 2 and _lines(r) == [
        f"styler: error: {models[3]}: input 'image' takes a fixed batch of 3 images; a styler "
        "model takes any number (or one at a time)"
    ]
    for name, model in (("one", models[1]), ("shipped", SHIPPED)):
        r = _run("apply", str(photos), "-m", str(model), "-o", str(tmp_path / name), "-q")
        assert r.returncode == 0, _lines(r)
    for name in ("a.png", "b.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "shipped" / name).read_bytes()


def _newer(path: Path) -> bytes:
    """Make the checkpoint at ``path`` one a newer styler wrote; its bytes."""
    from styler.training.state import HEADER_KEY

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    train = json.loads(header["__metadata__"][HEADER_KEY])
    train["version"] += 1
    header["__metadata__"][HEADER_KEY] = json.dumps(train)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return path.read_bytes()


def test_a_resumed_run_never_overwrites_a_checkpoint_it_passed_over(tmp_path: Path) -> None:
    """`train --resume` said "passing over step_0001500.safetensors: written
    by a newer styler (left as it is)" and then wrote step 1500 over it; a
    damaged checkpoint at a step the run reached again was overwritten too,
    and so was a best.safetensors of a newer styler. Now a newer styler's
    checkpoint is left as it is, and a damaged one (or a best the run
    cannot read) is kept beside, as NAME.kept, before the run writes there."""
    from styler.training import state
    from styler.training.checkpointing import BestKeeper, Checkpointer
    from styler.training.modes import build_trainer

    trainer = build_trainer(tiny_cyclegan(), "cpu")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    first = Checkpointer(folder, every=1, by_steps=True, keep=10)
    for step in (1, 2, 3):
        first.save(trainer, step, {"seconds": float(step)})
    newer = _newer(folder / state.checkpoint_name(2))
    damaged = folder / state.checkpoint_name(3)
    broken = damaged.read_bytes()[:900]
    damaged.write_bytes(broken)
    resumed = Checkpointer(folder, every=1, by_steps=True, keep=10, saved=1)
    for step in (2, 3):
        resumed.save(trainer, step, {"seconds": float(step)})
    assert (folder / state.checkpoint_name(2)).read_bytes() == newer
    assert state.load(folder / state.checkpoint_name(3)).step == 3
    kept = folder / f"{state.checkpoint_name(3)}.kept"
    assert kept.read_bytes() == broken
    best = folder / "best.safetensors"
    state.save(best, trainer, 1, {"kid": 0.5})
    their_best = _newer(best)
    keeper = BestKeeper(best, trainer.config)
    assert keeper.offer(trainer, 4, {"kid": 0.9, "kid_std": 0.0})
    assert (folder / "best.safetensors.kept").read_bytes() == their_best
    assert state.load(best).step == 4
    assert BestKeeper(best, trainer.config).offer(trainer, 5, {"kid": 0.1, "kid_std": 0.0})
    assert not (folder / "best.safetensors.kept-2").exists()  # the run's own best: replaced
    assert [s for s, _ in state.list_checkpoints(folder)] == [1, 2, 3]


def test_a_config_with_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """A config.json giving "generator" twice was read with the last one
    winning, and the error then showed both objects cut to the same first
    60 characters; JSON styler reads (configs, checkpoint headers, model
    metadata) must give each key once."""
    from styler import strictjson
    from styler.training.config import TrainConfig

    with pytest.raises(ValueError, match="the key 'steps' is given twice"):
        strictjson.loads('{"steps": 10, "lr": 1, "steps": 20}')
    text = json.dumps(tiny_cyclegan().to_dict())
    twice = text[:-1] + ', "steps": 99}'
    config = tmp_path / "config.json"
    config.write_text(twice)
    with pytest.raises(BadCheckpointError, match="given twice"):
        TrainConfig.from_json(config.read_bytes(), config)
    assert os.path.exists(config)


# -- the forty-third pass: the forty-second's code ---------------------------------------------


def test_the_pickle_limit_holds_whatever_the_case_of_its_name(tmp_path: Path) -> None:
    """PyTorch's zip reader finds archive/data.pkl whatever the case of the
    name: one called DATA.PKL escaped the 16 MB limit (a 195 KB file: over
    60 s and 1.46 GB). Every entry outside data/ is held to it now."""
    small = tmp_path / "small.pth"
    torch.save({"model.1.weight": torch.zeros(4)}, small)
    pickle = b"\x80\x02]q\x00(" + b"K\x00" * (10 << 20) + b"e."
    upper = _rewrite(small, tmp_path / "upper.pth", pickle, name="DATA.PKL")
    with pytest.raises(BadCheckpointError, match="its pickle claims 20 MB"):
        load_state_dict(upper)


def _relu_chain(count: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    names = ["input", *(f"t{i}" for i in range(1, count)), "output"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(count)]
    shape = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nodes_behind_a_group_or_in_called_functions_are_counted(tmp_path: Path) -> None:
    """A protobuf group after the graph (valid protobuf, which onnxruntime
    skips) made the count give up, and 400,000 nodes opened (36 s, 1.35
    GB); a function's body was counted once while onnxruntime builds it at
    every call (a 6.4 KB file of nested calls: 400,000 nodes, 46 s, 1.34 GB)."""
    from onnx import TensorProto, helper

    from styler.onnxsize import MAX_NODES, check_nodes

    grouped = _relu_chain(MAX_NODES + 1).SerializeToString() + b"\xa3\x06\xa4\x06"
    with pytest.raises(Exception, match="more than 30,000 nodes"):
        check_nodes(grouped, "grouped")
    assert check_nodes(_relu_chain(50).SerializeToString() + b"\xa3\x06\xa4\x06", "g") == 50
    ops = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]

    def chain(op: str, n: int, first: str, last: str, prefix: str, domain: str = "") -> list[Any]:
        names = [first, *(f"{prefix}{k}" for k in range(1, n)), last]
        return [helper.make_node(op, [names[k]], [names[k + 1]], domain=domain) for k in range(n)]

    relus = chain("Relu", 200, "x", "y", "a")
    inner = helper.make_function("local", "F1", ["x"], ["y"], relus, ops)
    outer = helper.make_function(
        "local", "F2", ["x"], ["y"], chain("F1", 40, "x", "y", "b", "local"), ops
    )
    shape = ["N", 3, "H", "W"]

    def nested(calls: int) -> bytes:
        graph = helper.make_graph(
            chain("F2", calls, "input", "output", "t", "local"),
            "g",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=ops, functions=[inner, outer])
        return model.SerializeToString()

    assert check_nodes(nested(3), "three calls") == 3 * 40 * 200
    path = tmp_path / "nested.onnx"
    path.write_bytes(nested(50))  # 400,000 nodes built, 290 written
    r = _run("info", str(path))
    assert r.returncode == 2 and "more than 30,000 nodes" in _lines(r)[0]


def test_generate_holds_a_bounded_number_of_large_images() -> None:
    """`styler generate` ran 256 images per call whatever their size (a 1.1
    KB model of 1024 x 1024 images: 9.5 GB; at 2048 a traceback): a call
    now holds at most 64 MB of output."""
    from styler.generate import CHUNK, images_per_call, noise_chunks

    chunk = images_per_call(3, 1024)
    assert chunk == 5
    assert images_per_call(1, 8) == CHUNK and images_per_call(3, 8192) == 1
    rows = [len(noise) for _, noise in noise_chunks(0, 12, 100, chunk)]
    assert rows == [5, 5, 2]
    whole = np.concatenate([n for _, n in noise_chunks(0, 12, 100, chunk)])
    assert np.array_equal(whole, np.concatenate([n for _, n in noise_chunks(0, 12, 100)]))


def test_a_resume_keeps_the_checkpoints_the_run_was_told_to_keep(tmp_path: Path) -> None:
    """A run started with --keep-checkpoints 10 and resumed without it was
    pruned back to 3 without a word. Without the option a resume keeps as
    many as the folder holds; given, it is obeyed."""
    from styler.training.loop import WatchOptions
    from styler.training.upkeep import _keep

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert _keep(WatchOptions(), folder) == 3
    for step in range(1, 7):
        (folder / f"step_{step:07d}.safetensors").write_bytes(b"x")
    assert _keep(WatchOptions(), folder) == 6
    assert _keep(WatchOptions(keep_checkpoints=2), folder) == 2


def test_checkpoints_kept_aside_are_known_as_styler_s(tmp_path: Path) -> None:
    """A run folder whose checkpoints/ held only a step_N.safetensors.kept
    (moved aside by a resume) was said to hold "files styler did not write"
    on a fresh start there; such files are styler's, set aside like the rest."""
    from styler.training.runfiles import first_files

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    kept = [
        run / "checkpoints" / n
        for n in ("step_0000006.safetensors.kept", "best.safetensors.kept-2")
    ]
    for path in kept:
        path.write_bytes(b"damaged")
    with os.scandir(run) as entries:
        found = first_files(list(entries), frozenset())
    assert found is not None and set(kept) <= set(found)
    (run / "checkpoints" / "notes.txt").write_text("the user's")
    with os.scandir(run) as entries:
        assert first_files(list(entries), frozenset()) is None


# -- the forty-fourth pass ----------------------------------------------------------------------


def test_graphs_passed_into_functions_and_ort_files_are_refused(tmp_path: Path) -> None:
    """A 45 KB model whose function used a graph passed in by its caller
    (``ref_attr_name``) in 100 places: counted 2,053 nodes, built about
    200,000 (41 s, 540 MB). An ORT-format file was not counted at all."""
    from onnx import AttributeProto, TensorProto, helper

    from styler.errors import BadModelError
    from styler.onnxsize import check_nodes

    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    body = [helper.make_node("Constant", [], ["b0"], value=value)]
    body += [helper.make_node("Relu", [f"b{i}"], [f"b{i + 1}"]) for i in range(20)]
    passed = helper.make_graph(
        body, "B", [], [helper.make_tensor_value_info("b20", TensorProto.FLOAT, [1])]
    )

    def ref(name: str) -> AttributeProto:
        attr = AttributeProto(name=name, ref_attr_name="B", type=AttributeProto.GRAPH)
        return attr

    branch = helper.make_node("If", ["c"], ["y"])
    branch.attribute.extend([ref("then_branch"), ref("else_branch")])
    ops = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    function = helper.make_function("local", "F", ["c"], ["y"], [branch], ops[:1], attributes=["B"])
    call = helper.make_node("F", ["c"], ["s"], domain="local", B=passed)
    graph = helper.make_graph([call], "g", [], [helper.make_tensor_value_info("s", 1, [1])])
    model = helper.make_model(graph, opset_imports=ops, functions=[function])
    with pytest.raises(BadModelError, match="a function uses a graph its caller passes in"):
        check_nodes(model.SerializeToString(), "ref")
    ort = tmp_path / "model.ort"
    ort.write_bytes(b"\x00\x00\x00\x00ORTM" + bytes(64))
    r = _run("info", str(ort))
    assert r.returncode == 2 and _lines(r) == [
        f"styler: error: {ort}: an ORT-format model; styler takes ONNX model files"
    ]
    assert check_nodes(SHIPPED, "shipped") == 430
