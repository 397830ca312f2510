"""Bad input, everywhere: every command and every public entry point refuses it the same way.

The contract (README: "Exit codes"): bad input exits 2 with exactly one line on stderr that starts with
"robustprune: error:" (no traceback, never "internal error"), writes nothing, and is refused *before* any model is
built, loaded, attacked or trained. The Python API raises robustprune.errors.UsageError with a one-line message.

How "before anything ran" is measured: each row runs with torch.nn.Module.__init__ wrapped by a counter and
torch.nn.Module.__call__ replaced by a counter that also aborts the run (ForwardCalled, a BaseException the CLI does
not swallow): a forward pass on bad input is already a failure, and aborting it keeps a row that would otherwise
train for 10^11 epochs or attack for 2^63 steps down to milliseconds. Module constructions must be zero, except in
rows whose bad input is the *content* of a checkpoint (the architecture may be built to read it into).

Rows that could hang or eat the machine in a broken implementation run guarded: a FIFO row runs in a daemon thread
with a deadline (then the FIFO is opened for writing to unblock the reader), /dev/zero rows run under an
address-space limit so that reading the device to the end fails with MemoryError instead of filling RAM.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustprune.cli import main
from robustprune.errors import UsageError

HUGE_SEED = "1180591620717411303424"  # 2**70: fits no RNG
LONG = "x" * 300  # longer than any filesystem's NAME_MAX (255)
FIFO_DEADLINE_S = 10.0
MEMORY_HEADROOM = 2 << 30  # bytes of address space a guarded row may add before MemoryError


# ---------------------------------------------------------------------------------------------------- guards


class ForwardCalled(BaseException):
    """Raised by the patched Module.__call__: a forward pass ran before the bad input was refused."""


@dataclass
class Counters:
    forward: int = 0
    constructed: int = 0
    first_forward: str = ""


def install_counters(monkeypatch: pytest.MonkeyPatch) -> Counters:
    counters = Counters()
    original_init = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        counters.constructed += 1
        return original_init(self, *args, **kwargs)

    def refusing_call(self, *args, **kwargs):
        counters.forward += 1
        if not counters.first_forward:
            counters.first_forward = type(self).__name__
        raise ForwardCalled(f"forward pass of {type(self).__name__} on bad input")

    monkeypatch.setattr(torch.nn.Module, "__init__", counting_init)
    monkeypatch.setattr(torch.nn.Module, "__call__", refusing_call)
    return counters


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def address_space_limit(headroom: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _unblock_fifo(path: Path) -> None:
    """Open the FIFO's write end (non-blocking) and close it: a reader blocked in open() then reads EOF."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody is reading it right now
        return
    os.close(fd)


def call_guarded(fn: Callable[[], Any], row: Row, ctx: Ctx) -> tuple[Any, BaseException | None, bool]:
    """(return value, exception, hung) of fn() under the row's guards."""
    limit = address_space_limit(MEMORY_HEADROOM) if row.memory else contextlib.nullcontext()
    with limit:
        if not row.fifo:
            try:
                return fn(), None, False
            except BaseException as exc:  # noqa: BLE001 - judged by the caller
                return None, exc, False
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001
                box["exc"] = exc

        thread = threading.Thread(target=target, daemon=True, name=f"bad-input-{row.id}")
        thread.start()
        thread.join(FIFO_DEADLINE_S)
        hung = thread.is_alive()
        for _ in range(10):  # let a reader blocked on the FIFO finish, so its output cannot leak into the next row
            if not thread.is_alive():
                break
            _unblock_fifo(ctx.fifo_path)
            thread.join(1.0)
        return box.get("value"), box.get("exc"), hung


# ---------------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def score_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, untrained-MLP) score run whose results.json the check/report rows edit copies of."""
    out = tmp_path_factory.mktemp("valid-score") / "run"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--batch-size", "8"]
    code = main([*args, "--out", str(out)])
    if code != 0 or not (out / "results.json").is_file():
        pytest.fail(f"the reference score run failed (exit {code}); check/report rows need its results.json")
    return out / "results.json"


class Ctx:
    """Where a row builds its bad input: a fresh directory per row."""

    def __init__(self, root: Path, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.root.mkdir()
        self.request = request
        self.fifo_path = root / "data.npz"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def write(self, name: str, content: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def random_bytes(self, name: str, size: int = 512, seed: int = 0) -> Path:
        return self.write(name, random.Random(seed).randbytes(size))

    def battery(self, body: str, name: str = "bad.toml") -> Path:
        return self.write(name, 'name = "bad"\nnorm = "Linf"\neps = 0.1\n' + body)

    def pgd_battery(self, *lines: str) -> Path:
        return self.battery('[[attack]]\nname = "pgd"\n' + "".join(f"{line}\n" for line in lines))

    def sweep_toml(self, **changes: Any) -> Path:
        values: dict[str, Any] = {
            "recipes": ["dense"],
            "sparsities": [0.0],
            "seeds": [0],
            "battery": "quick",
            "n": 10,
            "epochs": 1,
        }
        values.update(changes)
        text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        return self.write("sweep.toml", text)

    def valid_results(self, name: str = "valid/results.json") -> Path:
        source: Path = self.request.getfixturevalue("score_run")
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def edited_results(self, name: str, **changes: Any) -> Path:
        path = self.valid_results(name)
        doc = json.loads(path.read_text())
        doc.update(changes)
        path.write_text(json.dumps(doc))
        return path

    def npz(self, name: str = "data.npz", n: int = 20) -> Path:
        rng = np.random.default_rng(0)
        path = self.root / name
        np.savez(path, x=rng.random((n, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, n))
        return path

    def truncated_npz(self) -> Path:
        path = self.npz("half.npz")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    def mlp_checkpoint(self, name: str, dtype: torch.dtype) -> Path:
        from robustprune.models import build_model

        state = build_model("mlp", 10, (1, 8, 8)).state_dict()
        path = self.root / name
        torch.save({k: v.to(dtype) for k, v in state.items()}, path)
        return path

    def npz_arrays(self, name: str = "odd.npz", **arrays: Any) -> Path:
        path = self.root / name
        np.savez(path, **arrays)
        return path

    def npz_with_header(self, name: str, shape: tuple[int, ...]) -> Path:
        """An .npz whose x header claims `shape` while holding 64 float32 values: sizes lie."""
        import io
        import zipfile

        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
        buffer.write(np.zeros(64, np.float32).tobytes())
        path = self.root / name
        labels = io.BytesIO()
        np.lib.format.write_array(labels, np.zeros(4, np.int64))
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", buffer.getvalue())
            archive.writestr("y.npy", labels.getvalue())
        return path

    def idx_images(self, dims: tuple[int, ...], payload: bytes, gz: bool) -> Path:
        """An MNIST images file (and a labels file beside it) whose header says `dims`."""
        import gzip

        head = (0x00000803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
        name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
        images = self.root / "mnist" / name
        images.parent.mkdir(parents=True, exist_ok=True)
        images.write_bytes(gzip.compress(head + payload, compresslevel=9) if gz else head + payload)
        labels = (0x00000801).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4)
        (images.parent / "t10k-labels-idx1-ubyte").write_bytes(labels)
        return images

    def idx_bomb(self) -> Path:
        """A gzip of a few MB that inflates to gigabytes: the header says 4 images of 8x8, then zeros forever."""
        import zlib

        head = (0x00000803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (4, 8, 8))
        images = self.root / "mnist" / "t10k-images-idx3-ubyte.gz"
        images.parent.mkdir(parents=True, exist_ok=True)
        # One valid gzip member, written without compressing 4 GiB: after a full flush the deflate stream of a
        # block of zeros no longer depends on what came before, so the same compressed block is repeated.
        block = bytes(1 << 24)
        deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        start = deflate.compress(head + bytes(256)) + deflate.flush(zlib.Z_FULL_FLUSH)
        first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
        repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
        assert repeated == deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
        crc = zlib.crc32(head + bytes(256))
        for _ in range(256):  # 4 GiB of zeros, about 4 MB compressed
            crc = zlib.crc32(block, crc)
        size = (len(head) + 256 + 256 * len(block)) % 2**32
        with images.open("wb") as fh:
            fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start + first)
            for _ in range(255):
                fh.write(repeated)
            fh.write(deflate.flush() + crc.to_bytes(4, "little") + size.to_bytes(4, "little"))
        labels = (0x00000801).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4)
        (images.parent / "t10k-labels-idx1-ubyte").write_bytes(labels)
        return images

    def odd_checkpoint(self, kind: str) -> Path:
        from robustprune.models import build_model

        state = build_model("mlp", 10, (1, 8, 8)).state_dict()
        weight = state["fc1.weight"]
        state["fc1.weight"] = {
            "float8": lambda: weight.to(torch.float8_e4m3fn),
            "sparse": lambda: weight.to_sparse(),
            "meta": lambda: weight.to("meta"),
        }[kind]()
        path = self.root / f"{kind}.pt"
        torch.save(state, path)
        return path

    def deep_manifest_checkpoint(self) -> Path:
        """A safetensors whose (hash-proven) manifest nests 100,000 levels deep."""
        import hashlib

        from safetensors.torch import save_file

        from robustprune.models import build_model

        raw = ("[" * 100_000 + "]" * 100_000).encode()
        path = self.root / "deep.safetensors"
        state = {k: v.contiguous() for k, v in build_model("mlp", 10, (1, 8, 8)).state_dict().items()}
        save_file(state, str(path), metadata={"manifest_sha256": hashlib.sha256(raw).hexdigest()})
        (self.root / "deep.manifest.json").write_bytes(raw)
        return path

    def recipe_dir_with_importing_dense(self) -> Path:
        folder = self.root / "recipes"
        folder.mkdir()
        (folder / "dense.toml").write_text('defense = "standard"\narchitecture = "this:s"\n')
        return folder

    def sweep_folder_of_another_sweep(self) -> Path:
        root = self.out
        (root / "cells").mkdir(parents=True)
        (root / "sweep.json").write_text(json.dumps({"spec": {"recipes": ["pgd_at"]}, "cells": ["0123abcd"]}))
        return root

    def parent_folder(self) -> Path:
        """A folder holding a checkpoint to train from (its own --out is the same folder)."""
        from robustprune.models import build_model, save_checkpoint

        folder = self.root / "parent"
        save_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), folder / "model.safetensors")
        return folder / "model.safetensors"

    def edited_text(self, name: str, edit: Callable[[str], str]) -> Path:
        path = self.valid_results(name)
        path.write_text(edit(path.read_text()))
        return path

    def per_sample_all_broken(self, name: str) -> Path:
        """The per-sample table edited to say every example is clean-correct and unbroken, the headline left."""
        path = self.valid_results(name)
        doc = json.loads(path.read_text())
        table = doc["per_sample"]
        table["clean_correct"] = [True] * len(table["clean_correct"])
        table["broken"] = [False] * len(table["broken"])
        path.write_text(json.dumps(doc))
        return path

    def fifo(self) -> Path:
        os.mkfifo(self.fifo_path)
        return self.fifo_path

    def file_then_sub(self) -> Path:
        return self.write("plain-file", "not a directory") / "sub"

    def sweep_dir(self, results: bytes | str) -> Path:
        root = self.root / "sweep"
        (root / "cells").mkdir(parents=True)
        (root / "sweep.json").write_text(json.dumps({"spec": {"recipes": ["dense"]}, "cells": []}))
        if isinstance(results, bytes):
            (root / "results.json").write_bytes(results)
        else:
            (root / "results.json").write_text(results)
        return root


@dataclass(frozen=True)
class Row:
    id: str
    build: Callable[[Ctx], Any]  # CLI: argv; API: a zero-argument callable
    checkpoint_content: bool = False  # the architecture may be built (to read the bad weights into), never run
    memory: bool = False  # run under an address-space limit
    fifo: bool = False  # run in a thread with a deadline, unblocking ctx.fifo_path afterwards


# ---------------------------------------------------------------------------------------------------- CLI rows


def score(ctx: Ctx, *extra: str) -> list[str]:
    """A valid score invocation (untrained mlp, quick battery, 8 digits) with `extra` appended: later flags win."""
    return [
        "score",
        "--model",
        "mlp",
        "--random-init",
        "--battery",
        "quick",
        "--n",
        "8",
        "--batch-size",
        "8",
        "--out",
        str(ctx.out),
        *extra,
    ]


def train(ctx: Ctx, *extra: str) -> list[str]:
    return ["train", "--recipe", "dense", "--threads", "1", "--out", str(ctx.out), *extra]


def sweep(ctx: Ctx, *extra: str) -> list[str]:
    return [
        "sweep",
        "--recipes",
        "dense",
        "--sparsities",
        "0",
        "--seeds",
        "0",
        "--n",
        "10",
        "--epochs",
        "1",
        "--battery",
        "quick",
        "--out",
        str(ctx.out),
        *extra,
    ]


def sweep_config(ctx: Ctx, **changes: Any) -> list[str]:
    return ["sweep", "--config", str(ctx.sweep_toml(**changes)), "--out", str(ctx.out)]


def check(results: Path | str, baseline: Path | str, *extra: str) -> list[str]:
    return ["check", str(results), "--baseline", str(baseline), *extra]


SCORE_ROWS = [
    Row("score-checkpoint-300-char-component", lambda c: score(c, "--checkpoint", str(c.root / LONG / "m.pt"))),
    Row("score-checkpoint-300-char-name", lambda c: score(c, "--checkpoint", str(c.root / (LONG + ".pt")))),
    Row("score-dataset-300-char-component", lambda c: score(c, "--dataset", str(c.root / (LONG + ".npz")))),
    Row("score-out-300-char-component", lambda c: score(c, "--out", str(c.root / LONG / "out"))),
    Row("score-out-under-proc", lambda c: score(c, "--out", "/proc/robustprune_x/out")),
    Row("score-out-under-regular-file", lambda c: score(c, "--out", str(c.file_then_sub()))),
    Row("score-out-is-regular-file", lambda c: score(c, "--out", str(c.write("plain-file", "x")))),
    Row("score-dataset-truncated-npz", lambda c: score(c, "--dataset", str(c.truncated_npz()))),
    Row("score-battery-not-utf8", lambda c: score(c, "--battery", str(c.write("bad.toml", b"\xff\xfe\x00bad")))),
    Row("score-battery-not-toml", lambda c: score(c, "--battery", str(c.write("bad.toml", "eps = = 1\n[[[")))),
    Row("score-battery-attack-array-of-ints", lambda c: score(c, "--battery", str(c.battery("attack = [1, 2]\n")))),
    Row("score-battery-attack-name-int", lambda c: score(c, "--battery", str(c.battery("[[attack]]\nname = 5\n")))),
    Row("score-battery-label-int", lambda c: score(c, "--battery", str(c.pgd_battery("label = 5")))),
    Row("score-battery-norms-not-list", lambda c: score(c, "--battery", str(c.pgd_battery('norms = "Linf"')))),
    Row("score-battery-rel-step-nan", lambda c: score(c, "--battery", str(c.pgd_battery("rel_step = nan")))),
    Row(
        "score-battery-steps-int64-max",
        lambda c: score(c, "--battery", str(c.pgd_battery("steps = 9223372036854775807"))),
    ),
    Row("score-battery-steps-negative", lambda c: score(c, "--battery", str(c.pgd_battery("steps = -3")))),
    Row("score-battery-steps-string", lambda c: score(c, "--battery", str(c.pgd_battery('steps = "many"')))),
    Row(
        "score-battery-unknown-attack",
        lambda c: score(c, "--battery", str(c.battery('[[attack]]\nname = "deepfool9"\n'))),
    ),
    Row("score-battery-unknown-setting", lambda c: score(c, "--battery", str(c.pgd_battery("stepz = 3")))),
    Row(
        "score-battery-eps-nan-in-file",
        lambda c: score(c, "--battery", str(c.write("b.toml", 'eps = nan\n[[attack]]\nname = "pgd"\n'))),
    ),
    Row("score-battery-unknown-name", lambda c: score(c, "--battery", "nonesuch")),
    Row("score-battery-is-directory", lambda c: score(c, "--battery", str(c.root) + os.sep)),
    Row("score-head-battery-unknown-name", lambda c: score(c, "--head-battery", "nonesuch")),
    Row("score-seed-2pow70", lambda c: score(c, "--seed", HUGE_SEED)),
    Row("score-seed-negative", lambda c: score(c, "--seed", "-1")),
    Row("score-model-os-execv", lambda c: score(c, "--model", "os:execv")),
    Row("score-model-os-getcwd", lambda c: score(c, "--model", "os:getcwd")),
    Row("score-model-empty", lambda c: score(c, "--model", "")),
    Row(
        "score-checkpoint-int64-weights",
        lambda c: score(c, "--checkpoint", str(c.mlp_checkpoint("int64.pt", torch.int64))),
        checkpoint_content=True,
    ),
    Row(
        "score-checkpoint-complex-weights",
        lambda c: score(c, "--checkpoint", str(c.mlp_checkpoint("complex.pt", torch.complex64))),
        checkpoint_content=True,
    ),
    Row("score-dataset-dev-zero", lambda c: score(c, "--dataset", "/dev/zero"), memory=True),
    Row("score-dataset-fifo", lambda c: score(c, "--dataset", str(c.fifo())), fifo=True, memory=True),
    Row("score-dataset-directory-without-data", lambda c: score(c, "--dataset", str(c.write("d/x.txt", "").parent))),
    Row("score-dataset-path-with-newline", lambda c: score(c, "--dataset", "a\nb.npz")),
    Row("score-checkpoint-path-with-newline", lambda c: score(c, "--checkpoint", "bad\nname.pt")),
    Row("score-n-zero", lambda c: score(c, "--n", "0")),
    Row("score-n-negative", lambda c: score(c, "--n", "-5")),
    Row("score-batch-size-zero", lambda c: score(c, "--batch-size", "0")),
    Row("score-batch-size-negative", lambda c: score(c, "--batch-size", "-8")),
    Row("score-eps-nan", lambda c: score(c, "--eps", "nan")),
    Row("score-eps-inf", lambda c: score(c, "--eps", "inf")),
    Row("score-eps-negative", lambda c: score(c, "--eps", "-0.1")),
    Row("score-eps-1e309", lambda c: score(c, "--eps", "1e309")),
    Row("score-threads-zero", lambda c: score(c, "--threads", "0")),
    Row("score-threads-negative", lambda c: score(c, "--threads", "-2")),
    Row("score-checkpoint-is-directory", lambda c: score(c, "--checkpoint", str(c.write("ck/x", "").parent))),
    Row("score-checkpoint-empty-file", lambda c: score(c, "--checkpoint", str(c.write("empty.pt", b"")))),
    Row("score-checkpoint-random-bytes", lambda c: score(c, "--checkpoint", str(c.random_bytes("junk.pt")))),
    Row(
        "score-checkpoint-random-bytes-safetensors",
        lambda c: score(c, "--checkpoint", str(c.random_bytes("junk.safetensors"))),
    ),
]

TRAIN_ROWS = [
    Row("train-lr-inf", lambda c: train(c, "--set", "train.lr=inf")),
    Row("train-lr-nan", lambda c: train(c, "--set", "train.lr=nan")),
    Row("train-lr-negative", lambda c: train(c, "--set", "train.lr=-1")),
    Row("train-probe-eps-nan", lambda c: train(c, "--set", "train.probe_eps=nan")),
    Row("train-epochs-override-huge", lambda c: train(c, "--set", "train.epochs=99999999999")),
    Row("train-batch-size-override-zero", lambda c: train(c, "--set", "train.batch_size=0")),
    Row("train-override-without-value", lambda c: train(c, "--set", "train.lr")),
    Row("train-seed-negative", lambda c: train(c, "--seed", "-1")),
    Row("train-seed-2pow70", lambda c: train(c, "--seed", HUGE_SEED)),
    Row("train-sparsity-1.5", lambda c: train(c, "--sparsity", "1.5")),
    Row("train-sparsity-nan", lambda c: train(c, "--sparsity", "nan")),
    Row("train-sparsity-negative", lambda c: train(c, "--sparsity", "-0.1")),
    Row("train-unknown-recipe", lambda c: train(c, "--recipe", "nonesuch")),
    Row("train-override-unknown-section", lambda c: train(c, "--set", "nosuch.key=1")),
    Row("train-epochs-negative", lambda c: train(c, "--epochs", "-1")),
    Row("train-parent-missing-file", lambda c: train(c, "--parent", str(c.root / "missing.safetensors"))),
    Row("train-out-under-regular-file", lambda c: train(c, "--out", str(c.file_then_sub()))),
    Row("train-dataset-dev-zero", lambda c: train(c, "--dataset", "/dev/zero"), memory=True),
    Row("train-recipe-not-utf8", lambda c: train(c, "--recipe", str(c.write("r.toml", b"\xff\xfe\x00bad")))),
    Row("train-threads-zero", lambda c: train(c, "--threads", "0")),
]


def _battery_file(body: str) -> Callable[[Ctx], list[str]]:
    return lambda c: sweep(c, "--battery", str(c.battery(body)))


SWEEP_ROWS = [
    Row("sweep-battery-unknown-attack", _battery_file('[[attack]]\nname = "deepfool9"\n')),
    Row("sweep-battery-unknown-setting", _battery_file('[[attack]]\nname = "pgd"\nstepz = 3\n')),
    Row("sweep-battery-steps-string", _battery_file('[[attack]]\nname = "pgd"\nsteps = "many"\n')),
    Row("sweep-battery-steps-negative", _battery_file('[[attack]]\nname = "pgd"\nsteps = -3\n')),
    Row("sweep-battery-unknown-name", lambda c: sweep(c, "--battery", "nonesuch")),
    Row("sweep-seeds-negative", lambda c: sweep(c, "--seeds", "-1")),
    Row("sweep-seeds-2pow70", lambda c: sweep(c, "--seeds", HUGE_SEED)),
    Row("sweep-sparsities-nan", lambda c: sweep(c, "--sparsities", "nan")),
    Row("sweep-sparsities-one", lambda c: sweep(c, "--sparsities", "1")),
    Row("sweep-eps-nan", lambda c: sweep(c, "--eps", "nan")),
    Row("sweep-n-zero", lambda c: sweep(c, "--n", "0")),
    Row("sweep-epochs-negative", lambda c: sweep(c, "--epochs", "-1")),
    Row("sweep-config-seeds-float", lambda c: sweep_config(c, seeds=[0.5])),
    Row("sweep-config-sparsities-string", lambda c: sweep_config(c, sparsities=["a"])),
    Row("sweep-config-threads-string", lambda c: sweep_config(c, threads="one")),
    Row("sweep-config-recipes-not-list", lambda c: sweep_config(c, recipes="dense")),
    Row("sweep-config-n-negative", lambda c: sweep_config(c, n=-1)),
    Row("sweep-config-unknown-key", lambda c: sweep_config(c, workerz=2)),
    Row(
        "sweep-config-not-utf8",
        lambda c: ["sweep", "--config", str(c.write("s.toml", b"\xff\xfe\x00bad")), "--out", str(c.out)],
    ),
    Row("sweep-config-missing", lambda c: ["sweep", "--config", str(c.root / "missing.toml"), "--out", str(c.out)]),
    Row("sweep-workers-zero", lambda c: sweep(c, "--workers", "0")),
    Row("sweep-threads-zero", lambda c: sweep(c, "--threads", "0")),
    Row("sweep-unknown-recipe", lambda c: sweep(c, "--recipes", "nonesuch")),
    Row("sweep-out-under-regular-file", lambda c: sweep(c, "--out", str(c.file_then_sub()))),
    Row("sweep-out-300-char-component", lambda c: sweep(c, "--out", str(c.root / LONG))),
]

REPORT_ROWS = [
    Row("report-directory-not-a-sweep", lambda c: ["report", str(c.write("notsweep/notes.txt", "hello").parent)]),
    Row("report-directory-missing", lambda c: ["report", str(c.root / "missing")]),
    Row("report-path-is-a-file", lambda c: ["report", str(c.write("file.txt", "hello"))]),
    Row("report-300-char-component", lambda c: ["report", str(c.root / LONG)]),
    Row("report-300-char-inner-component", lambda c: ["report", str(c.root / LONG / "sweep")]),
    Row(
        "report-results-random-bytes",
        lambda c: ["report", str(c.sweep_dir(random.Random(1).randbytes(512)))],
    ),
    Row(
        "report-results-schema-99",
        lambda c: [
            "report",
            str(c.sweep_dir(json.dumps({"schema_version": "99", "kind": "sweep", "spec": {}, "cells": []}))),
        ],
    ),
    Row("report-results-truncated-json", lambda c: ["report", str(c.sweep_dir('{"schema_version": "1.0", "ki'))]),
]

CHECK_ROWS = [
    Row("check-baseline-random-bytes", lambda c: check(c.valid_results(), c.random_bytes("baseline.json"))),
    Row("check-results-missing", lambda c: check(c.root / "missing.json", c.valid_results())),
    Row("check-results-300-char-component", lambda c: check(c.root / LONG, c.valid_results())),
    Row("check-baseline-300-char-component", lambda c: check(c.valid_results(), c.root / LONG / "results.json")),
    Row(
        "check-results-schema-99",
        lambda c: check(c.edited_results("new/results.json", schema_version="99"), c.valid_results()),
    ),
    Row(
        "check-baseline-schema-99",
        lambda c: check(c.valid_results(), c.edited_results("base/results.json", schema_version="99")),
    ),
    Row("check-results-is-json-list", lambda c: check(c.write("list.json", "[1, 2]"), c.valid_results())),
    Row(
        "check-tolerance-nan",
        lambda c: check(c.valid_results(), c.valid_results("b/results.json"), "--tolerance", "nan"),
    ),
    Row(
        "check-tolerance-negative",
        lambda c: check(c.valid_results(), c.valid_results("b/results.json"), "--tolerance", "-1"),
    ),
    Row("check-alpha-2", lambda c: check(c.valid_results(), c.valid_results("b/results.json"), "--alpha", "2")),
    Row("check-alpha-nan", lambda c: check(c.valid_results(), c.valid_results("b/results.json"), "--alpha", "nan")),
    Row(
        "check-nll-tolerance-inf",
        lambda c: check(c.valid_results(), c.valid_results("b/results.json"), "--nll-tolerance", "inf"),
    ),
]

# Files, trust and sizes (issue 21): data files never import code, every size is bounded before it is used, odd
# data and checkpoints are refused naming what is odd, and edited documents are refused for what they claim.
FILES_ROWS = [
    Row(
        "score-battery-names-an-import-path",
        lambda c: score(c, "--battery", str(c.battery('[[attack]]\nname = "os:system"\n'))),
    ),
    Row(
        "score-battery-audit-names-an-import-path",
        lambda c: score(c, "--battery", str(c.battery('[[attack]]\nname = "pgd"\n\n[audit]\nattack = "os:system"\n'))),
    ),
    Row(
        "train-recipe-architecture-is-an-import-path",
        lambda c: train(c, "--recipe", str(c.write("mine.toml", 'defense = "standard"\narchitecture = "this:s"\n'))),
    ),
    Row(
        "train-recipe-dir-shadows-dense-with-an-import",
        lambda c: train(c, "--recipe-dir", str(c.recipe_dir_with_importing_dense())),
    ),
    Row(
        "score-torchattacks-spsa-nb-iter-int32-max",
        lambda c: score(
            c, "--battery", str(c.battery('[[attack]]\nname = "torchattacks:SPSA"\nnb_iter = 2147483647\n'))
        ),
    ),
    Row(
        "score-torchattacks-sinifgsm-m-200000",
        lambda c: score(c, "--battery", str(c.battery('[[attack]]\nname = "torchattacks:SINIFGSM"\nm = 200000\n'))),
    ),
    Row(
        "score-torchattacks-difgsm-resize-rate-5000",
        lambda c: score(
            c, "--battery", str(c.battery('[[attack]]\nname = "torchattacks:DIFGSM"\nresize_rate = 5000.0\n'))
        ),
    ),
    Row(
        "score-battery-estimated-beyond-the-pass-cap",
        lambda c: score(
            c, "--battery", str(c.battery('[[attack]]\nname = "torchattacks:SPSA"\nnb_iter = 50000\nnb_sample = 128\n'))
        ),
    ),
    Row("score-eps-grid-a-million-points", lambda c: score(c, "--eps-grid", "0:0.3:1000000")),
    Row("score-eps-grid-linf-1000", lambda c: score(c, "--eps-grid", "0,1000")),
    Row(
        "score-eps-grid-l2-wider-than-the-box",
        lambda c: score(c, "--norm", "L2", "--eps", "0.5", "--eps-grid", "0,500"),
    ),
    Row(
        "score-battery-eps-curve-linf-5",
        lambda c: score(c, "--battery", str(c.battery('[[attack]]\nname = "pgd"\n\n[eps_curve]\ngrid = [0.0, 5.0]\n'))),
    ),
    Row("sweep-eps-grid-linf-5", lambda c: sweep(c, "--eps-grid", "0,5")),
    Row(
        "score-npz-header-claims-1e12-images",
        lambda c: score(c, "--dataset", str(c.npz_with_header("lies.npz", (10**12, 1, 8, 8)))),
        memory=True,
    ),
    Row(
        "score-npz-header-disagrees-with-its-data",
        lambda c: score(c, "--dataset", str(c.npz_with_header("short.npz", (4, 1, 8, 8)))),
        memory=True,
    ),
    Row("score-idx-gzip-inflating-to-4-gib", lambda c: score(c, "--dataset", str(c.idx_bomb())), memory=True),
    Row(
        "score-idx-dimensions-overflow-int64",
        lambda c: score(c, "--dataset", str(c.idx_images((2**31, 2**31, 2**31), b"", gz=False))),
        memory=True,
    ),
    Row(
        "score-npz-label-1e9",
        lambda c: score(
            c, "--dataset", str(c.npz_arrays(x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 10**9])))
        ),
        memory=True,
    ),
    Row(
        "score-npz-zero-size-images",
        lambda c: score(c, "--dataset", str(c.npz_arrays(x=np.zeros((4, 1, 0, 8), np.float32), y=np.zeros(4, int)))),
    ),
    Row(
        "score-npz-uint8-pixels-without-pixel-max",
        lambda c: score(c, "--dataset", str(c.npz_arrays(x=np.full((4, 1, 8, 8), 200, np.uint8), y=np.zeros(4, int)))),
    ),
    Row("score-checkpoint-float8-tensor", lambda c: score(c, "--checkpoint", str(c.odd_checkpoint("float8"))), True),
    Row("score-checkpoint-sparse-tensor", lambda c: score(c, "--checkpoint", str(c.odd_checkpoint("sparse"))), True),
    Row("score-checkpoint-meta-tensor", lambda c: score(c, "--checkpoint", str(c.odd_checkpoint("meta"))), True),
    Row(
        "score-checkpoint-manifest-nested-100000-deep",
        lambda c: score(c, "--checkpoint", str(c.deep_manifest_checkpoint())),
        True,
    ),
    Row("score-trust-parent-without-parent", lambda c: score(c, "--trust-parent")),
    Row("sweep-config-100000-seeds", lambda c: sweep_config(c, seeds=list(range(100_000)))),
    # the recipes' models are built to check they fit the data (a sweep's pre-check), never run
    Row(
        "sweep-parent-recipe-needs-a-parent",
        lambda c: sweep_config(c, recipes=["magnitude"], sparsities=[0.5], parent_recipe="magnitude"),
        True,
    ),
    Row(
        "sweep-data-without-a-train-split",
        lambda c: sweep(
            c, "--dataset", str(c.npz_arrays(x_test=np.zeros((8, 1, 8, 8), np.float32), y_test=np.arange(8)))
        ),
    ),
    Row("sweep-into-another-sweeps-folder", lambda c: (c.sweep_folder_of_another_sweep(), sweep(c))[1], True),
    Row(
        "train-out-holds-the-parent",
        lambda c: [
            "train",
            "--recipe",
            "magnitude",
            "--sparsity",
            "0.5",
            "--parent",
            str(p := c.parent_folder()),
            "--out",
            str(p.parent),
        ],
    ),
    Row(
        "report-robust-above-100",
        lambda c: ["report", str(c.edited_results("r/results.json", robust_acc=150.0).parent)],
    ),
    Row("report-clean-below-0", lambda c: ["report", str(c.edited_results("r/results.json", clean_acc=-5.0).parent)]),
    Row(
        "report-per-sample-says-all-broke", lambda c: ["report", str(c.per_sample_all_broken("r/results.json").parent)]
    ),
    Row(
        "report-nan-accuracy",
        lambda c: [
            "report",
            str(
                c.edited_text(
                    "r/results.json", lambda t: t.replace('"clean_acc": ', '"clean_acc": NaN, "x": ', 1)
                ).parent
            ),
        ],
    ),
    Row(
        "report-nested-100000-deep",
        lambda c: ["report", str(c.write("deep/results.json", "[" * 100_000 + "]" * 100_000).parent)],
    ),
    Row(
        "check-robust-above-clean",
        lambda c: check(c.edited_results("new/results.json", robust_acc=100.0, clean_acc=50.0), c.valid_results()),
    ),
    Row(
        "check-unknown-verdict",
        lambda c: check(c.edited_results("new/results.json", verdict="fine"), c.valid_results()),
    ),
    Row(
        "check-per-sample-disagrees-with-the-headline",
        lambda c: check(c.per_sample_all_broken("new/results.json"), c.valid_results()),
    ),
]

CLI_ROWS = SCORE_ROWS + TRAIN_ROWS + SWEEP_ROWS + REPORT_ROWS + CHECK_ROWS + FILES_ROWS


# ---------------------------------------------------------------------------------------------------- API rows


def _mlp() -> torch.nn.Module:
    from robustprune.models import build_model

    return build_model("mlp", 10, (1, 8, 8))


def api_score(**kwargs: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def build(c: Ctx) -> Callable[[], Any]:
        import robustprune

        args = {"data": "digits", "battery": "quick", "n": 8, "batch_size": 8} | kwargs
        model = args.pop("model") if "model" in args else _mlp()
        data, battery = args.pop("data"), args.pop("battery")
        if callable(data):
            data = data(c)
        return lambda: robustprune.score(model, data, battery, **args)

    return build


def _xy(n: int = 10, *, nan: bool = False, labels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    if nan:
        x[2, 0, 3, 3] = float("nan")
    return x, torch.arange(labels if labels is not None else n) % 10


def api_train(recipe: str = "dense", **kwargs: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def build(c: Ctx) -> Callable[[], Any]:
        from robustprune.defenses.pipeline import train_model

        resolved = {k: (v(c) if callable(v) else v) for k, v in kwargs.items()}
        return lambda: train_model(recipe, **resolved)

    return build


def api_compare(results: Callable[[Ctx], Any], baseline: Callable[[Ctx], Any], **kwargs: Any):
    def build(c: Ctx) -> Callable[[], Any]:
        from robustprune.check.compare import compare

        new, base = results(c), baseline(c)
        return lambda: compare(new, base, **kwargs)

    return build


def api_sweep_spec(**kwargs: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def build(c: Ctx) -> Callable[[], Any]:
        from robustprune.sweep import SweepSpec

        values = {"recipes": ("dense",), "sparsities": (0.0,), "seeds": (0,), "battery": "quick", "n": 10} | kwargs
        return lambda: SweepSpec(**values)

    return build


def api_battery(spec: Callable[[Ctx], str] | str, **kwargs: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def build(c: Ctx) -> Callable[[], Any]:
        from robustprune.attacks import load_battery

        name = spec(c) if callable(spec) else spec
        return lambda: load_battery(name, **kwargs)

    return build


def _valid(c: Ctx) -> Path:
    return c.valid_results()


def _valid_b(c: Ctx) -> Path:
    return c.valid_results("b/results.json")


API_ROWS = [
    # robustprune.score
    Row("api-score-eps-nan", api_score(eps=float("nan"))),
    Row("api-score-eps-inf", api_score(eps=float("inf"))),
    Row("api-score-eps-negative", api_score(eps=-0.1)),
    Row("api-score-n-zero", api_score(n=0)),
    Row("api-score-n-negative", api_score(n=-5)),
    Row("api-score-n-float", api_score(n=2.5)),
    Row("api-score-batch-size-zero", api_score(batch_size=0)),
    Row("api-score-seed-negative", api_score(seed=-1)),
    Row("api-score-seed-2pow70", api_score(seed=2**70)),
    Row("api-score-seed-float", api_score(seed=0.5)),
    Row("api-score-norm-unknown", api_score(norm="L3")),
    Row("api-score-battery-unknown", api_score(battery="nonesuch")),
    Row("api-score-data-with-nan", api_score(data=lambda c: _xy(nan=True))),
    Row("api-score-data-length-mismatch", api_score(data=lambda c: _xy(10, labels=9))),
    Row("api-score-data-missing-file", api_score(data=lambda c: str(c.root / "missing.npz"))),
    Row("api-score-data-truncated-npz", api_score(data=lambda c: str(c.truncated_npz()))),
    Row("api-score-data-dev-zero", api_score(data="/dev/zero"), memory=True),
    Row("api-score-model-not-a-module", api_score(model="mlp")),
    # robustprune.defenses.pipeline.train_model
    Row("api-train-sparsity-1.5", api_train(sparsity=1.5)),
    Row("api-train-sparsity-nan", api_train(sparsity=float("nan"))),
    Row("api-train-seed-negative", api_train(seed=-1)),
    Row("api-train-seed-2pow70", api_train(seed=2**70)),
    Row("api-train-epochs-negative", api_train(epochs=-1)),
    Row("api-train-epochs-huge", api_train(epochs=99_999_999_999)),
    Row("api-train-unknown-recipe", api_train("nonesuch")),
    Row("api-train-lr-nan", api_train(overrides=["train.lr=nan"])),
    Row("api-train-lr-inf", api_train(overrides=["train.lr=inf"])),
    Row("api-train-unknown-section", api_train(overrides=["nosuch.key=1"])),
    Row(
        "api-train-parent-missing",
        api_train("magnitude", sparsity=0.5, parent=lambda c: str(c.root / "missing.safetensors")),
    ),
    Row("api-train-dataset-dev-zero", api_train(dataset="/dev/zero"), memory=True),
    # robustprune.regression.compare
    Row("api-compare-tolerance-nan", api_compare(_valid, _valid_b, tolerance=float("nan"))),
    Row("api-compare-alpha-2", api_compare(_valid, _valid_b, alpha=2)),
    Row("api-compare-results-missing", api_compare(lambda c: c.root / "missing.json", _valid)),
    Row("api-compare-baseline-random-bytes", api_compare(_valid, lambda c: c.random_bytes("baseline.json"))),
    Row(
        "api-compare-results-schema-99",
        api_compare(lambda c: c.edited_results("new/results.json", schema_version="99"), _valid),
    ),
    Row(
        "api-compare-results-dict-schema-99",
        api_compare(lambda c: json.loads(c.valid_results().read_text()) | {"schema_version": "99"}, _valid_b),
    ),
    # robustprune.sweep.SweepSpec
    Row("api-sweepspec-no-recipes", api_sweep_spec(recipes=())),
    Row("api-sweepspec-recipes-string", api_sweep_spec(recipes="dense")),
    Row("api-sweepspec-seeds-negative", api_sweep_spec(seeds=(-1,))),
    Row("api-sweepspec-seeds-float", api_sweep_spec(seeds=(0.5,))),
    Row("api-sweepspec-seeds-2pow70", api_sweep_spec(seeds=(2**70,))),
    Row("api-sweepspec-sparsities-string", api_sweep_spec(sparsities=("a",))),
    Row("api-sweepspec-sparsities-nan", api_sweep_spec(sparsities=(float("nan"),))),
    Row("api-sweepspec-threads-string", api_sweep_spec(threads="one")),
    Row("api-sweepspec-threads-zero", api_sweep_spec(threads=0)),
    Row("api-sweepspec-n-negative", api_sweep_spec(n=-1)),
    Row("api-sweepspec-batch-size-zero", api_sweep_spec(batch_size=0)),
    Row("api-sweepspec-epochs-negative", api_sweep_spec(epochs=-1)),
    Row("api-sweepspec-eps-nan", api_sweep_spec(eps=float("nan"))),
    # robustprune.config.load_battery
    Row("api-battery-unknown-name", api_battery("nonesuch")),
    Row("api-battery-eps-nan", api_battery("quick", eps=float("nan"))),
    Row("api-battery-eps-negative", api_battery("quick", eps=-0.1)),
    Row("api-battery-norm-unknown", api_battery("quick", norm="L3")),
    Row("api-battery-not-utf8", api_battery(lambda c: str(c.write("bad.toml", b"\xff\xfe\x00bad")))),
    Row("api-battery-attack-array-of-ints", api_battery(lambda c: str(c.battery("attack = [1, 2]\n")))),
    Row("api-battery-attack-name-int", api_battery(lambda c: str(c.battery("[[attack]]\nname = 5\n")))),
    Row("api-battery-label-int", api_battery(lambda c: str(c.pgd_battery("label = 5")))),
    Row("api-battery-rel-step-nan", api_battery(lambda c: str(c.pgd_battery("rel_step = nan")))),
    Row("api-battery-steps-int64-max", api_battery(lambda c: str(c.pgd_battery("steps = 9223372036854775807")))),
    Row("api-battery-steps-negative", api_battery(lambda c: str(c.pgd_battery("steps = -3")))),
    Row("api-battery-unknown-attack", api_battery(lambda c: str(c.battery('[[attack]]\nname = "deepfool9"\n')))),
    Row("api-battery-unknown-setting", api_battery(lambda c: str(c.pgd_battery("stepz = 3")))),
    Row("api-battery-dev-zero", api_battery("/dev/zero"), memory=True),
    Row("api-battery-not-a-string", api_battery(lambda c: 5)),
]


# ---------------------------------------------------------------------------------------------------- checks


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every non-directory under root: (size, mtime_ns), to see what a refused run wrote or changed."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def _written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(k for k, v in after.items() if before.get(k) != v) + sorted(f"-{k}" for k in before.keys() - after)


def _out_arg(argv: list[str]) -> Path | None:
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    return Path(values[-1]) if values else None


def _out_contents(out: Path) -> list[str]:
    try:
        if not out.is_dir():
            return []
        return sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    except OSError:
        return []


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. ENAMETOOLONG: then it cannot exist either
        return False


def _short(text: str, limit: int = 400) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


@pytest.fixture
def fresh_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r.id for r in CLI_ROWS])
def test_cli_refuses_bad_input(row: Row, tmp_path, monkeypatch, capsys, request, fresh_threads):
    monkeypatch.chdir(tmp_path)  # a stray relative write (reports/...) lands here, where it is seen
    ctx = Ctx(tmp_path / "case", request)
    argv = row.build(ctx)
    out = _out_arg(argv)
    capsys.readouterr()
    before = _files(tmp_path)
    held = set(_out_contents(out)) if out is not None else set()  # what --out held before (a row may fill it)
    counters = install_counters(monkeypatch)
    code, exc, hung = call_guarded(lambda: main(argv), row, ctx)
    monkeypatch.undo()  # real Module again before judging (and before the next row's fixtures)
    _, err = capsys.readouterr()

    problems = []
    if hung:
        problems.append(f"still running after {FIFO_DEADLINE_S:g} s (blocked on a non-regular file)")
    if exc is not None and not isinstance(exc, ForwardCalled):
        problems.append(f"main() raised {type(exc).__name__}: {str(exc)[:200]!r}")
    if counters.forward:
        problems.append(f"a forward pass ran on bad input ({counters.first_forward}; aborted by the test)")
    if counters.constructed and not row.checkpoint_content:
        problems.append(f"{counters.constructed} torch.nn.Module constructions before refusing")
    if exc is None and code != 2:
        problems.append(f"exit {code}, want 2")
    body = err.removesuffix("\n")
    if not err.endswith("\n") or "\n" in body:
        problems.append(f"stderr is not exactly one line ({err.count(chr(10))} newlines)")
    if not body.startswith("robustprune: error:"):
        problems.append("stderr does not start with 'robustprune: error:'")
    if "Traceback" in err or "internal error" in err:
        problems.append("stderr reports a crash (Traceback / internal error)")
    added = sorted(set(_out_contents(out)) - held) if out is not None else []
    if added:
        problems.append(f"--out {out.name[:40]} is not empty: {added[:5]}")
    if argv[0] == "sweep" and out is not None and not held and (_exists(out / "sweep.json") or _exists(out / "cells")):
        problems.append("the sweep wrote sweep.json or cells/ before refusing")
    written = _written(before, _files(tmp_path))
    if written:
        problems.append(f"files written or changed: {written[:5]}")
    assert not problems, "; ".join(problems) + f" | stderr: {_short(err)}"


@pytest.mark.parametrize("row", API_ROWS, ids=[r.id for r in API_ROWS])
def test_api_raises_usage_error(row: Row, tmp_path, monkeypatch, request, fresh_threads):
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path / "case", request)
    call = row.build(ctx)
    before = _files(tmp_path)
    counters = install_counters(monkeypatch)
    value, exc, hung = call_guarded(call, row, ctx)
    monkeypatch.undo()

    problems = []
    if hung:
        problems.append(f"still running after {FIFO_DEADLINE_S:g} s")
    if isinstance(exc, ForwardCalled):
        problems.append(f"a forward pass ran on bad input ({counters.first_forward}; aborted by the test)")
    elif exc is None:
        problems.append(f"returned {type(value).__name__} instead of raising UsageError")
    elif not isinstance(exc, UsageError):
        problems.append(f"raised {type(exc).__name__}, not UsageError: {str(exc)[:200]!r}")
    elif "\n" in str(exc):
        problems.append(f"UsageError message is not one line: {_short(str(exc))}")
    elif not str(exc).strip():
        problems.append("UsageError message is empty")
    written = _written(before, _files(tmp_path))
    if written:
        problems.append(f"files written or changed: {written[:5]}")
    assert not problems, "; ".join(problems)


def test_table_is_large_and_ids_are_unique():
    ids = [r.id for r in CLI_ROWS + API_ROWS]
    assert len(ids) == len(set(ids))
    assert len(CLI_ROWS) >= 70
    assert {i.split("-")[0] for i in ids} == {"score", "train", "sweep", "report", "check", "api"}


def test_version_prints_and_exits_zero(capsys) -> None:
    from robustprune.cli import main
    from robustprune.version import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"robustprune {__version__} (torch ")
