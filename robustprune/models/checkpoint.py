"""Safe checkpoint I/O: a checkpoint supplies tensors, the architecture comes from code the user names.

Accepted by default: safetensors, and plain state_dicts through `torch.load(weights_only=True)` (zip or legacy
format, optionally nested under "state_dict" / "model_state_dict" / "model", torch.nn.utils.prune's
`*_orig` / `*_mask` pairs folded). Whole pickled modules, pickles holding other Python objects, TorchScript and
torch.export `.pt2` run code from the file when loaded, so they load only with `trust=True`
(`--trust-checkpoint`), which `CheckpointInfo.trusted` records. torch.package archives are never loaded.

Files written by `save_checkpoint`:
- `<stem>.safetensors`: effective weights (weight * mask) plus one bool tensor `__mask__.<module>.<param>` per
  pruned parameter, re-applied on load with `torch.nn.utils.prune.custom_from_mask` so the model stays masked.
  (`__mask__.<module>` without a parameter name is read as that module's weight mask.)
- `<stem>.manifest.json` beside it (e.g. `model.safetensors` -> `model.manifest.json`): an optional JSON object
  with whatever the caller records (recipe, sparsity, ...). The safetensors metadata holds the manifest's
  SHA-256, so a manifest left over from another save is detected instead of silently attached.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from robustprune.atomic import write_text, write_with
from robustprune.errors import UsageError
from robustprune.jsonio import dumps_json, loads_bounded
from robustprune.models.modes import remember_train_mode, set_eval
from robustprune.models.pickled import corrupt, extract_state_dict, load_pickle, warn_trusted
from robustprune.models.state import check_mask, fold_pruning_pairs
from robustprune.paths import manifest_path
from robustprune.validation import check_input_file, escape
from robustprune.version import __version__

FORMATS = ("safetensors", "state_dict", "pickled_module", "torchscript", "pt2")
MASK_PREFIX = "__mask__."
MAX_MANIFEST_BYTES = 16 * 2**20  # a train manifest is a few kilobytes
MAX_CHECKPOINT_BYTES = 16 * 2**30  # refuse absurd files before reading them into memory
_SHOW = 3  # how many offending keys an error names


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    sha256: str
    format: str  # one of FORMATS
    trusted: bool  # the load relied on --trust-checkpoint (False when trust was given but not needed)
    folded_pruning: bool  # *_orig / *_mask pairs were folded (load) or masks were stored beside weights (save)
    manifest: dict | None  # <stem>.manifest.json beside a safetensors file, if any
    size_bytes: int = 0
    masked: tuple[str, ...] = ()  # parameters ("module.weight") that carry a prune mask after load / in the file
    notes: tuple[str, ...] = ()  # what was ignored and why (an unproven manifest)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["masked"] = list(self.masked)
        out["notes"] = list(self.notes)
        return out


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- saving


def save_checkpoint(model: nn.Module, path: str | Path, manifest: dict | None = None) -> CheckpointInfo:
    """Write the model's tensors as safetensors (atomically) and `manifest` as `<stem>.manifest.json` beside it.

    A model carrying torch prune masks is stored as effective weights plus `__mask__.*` tensors, never as
    `*_orig`. With manifest=None a manifest left beside `path` by an earlier save is removed.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if manifest is not None and not isinstance(manifest, dict):
        raise UsageError(f"the manifest for {path} must be a dict (a JSON object), got {type(manifest).__name__}")
    sd = model.state_dict()
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UsageError(f"cannot save {path}: state_dict entry {bad[0]!r} is not a tensor; safetensors holds tensors")
    folded, masks = fold_pruning_pairs(sd)
    # Clone: save_file refuses tensors that share memory (tied weights) and non-contiguous views.
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in folded.items()}
    tensors.update({MASK_PREFIX + k: m.detach().to("cpu").bool().contiguous() for k, m in masks.items()})
    meta = {"format": "pt", "producer": f"robustprune {__version__}", "manifest_sha256": ""}
    side = manifest_path(path)
    if manifest is not None:
        try:
            text = dumps_json(manifest)
        except (TypeError, ValueError) as err:
            raise UsageError(f"the manifest for {path} is not JSON-serialisable ({err}); store plain values") from None
        meta["manifest_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        write_text(side, text)
    else:
        side.unlink(missing_ok=True)
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return CheckpointInfo(
        path=str(path),
        sha256=sha256_file(path),
        format="safetensors",
        trusted=False,
        folded_pruning=bool(masks),
        manifest=manifest,
        size_bytes=path.stat().st_size,
        masked=tuple(sorted(masks)),
    )


# ---------------------------------------------------------------- loading


def inspect_checkpoint(path: str | Path) -> tuple[Path, int, str]:
    """(path, size, format) of a checkpoint file, from its header alone: missing, non-regular, empty, oversized,
    truncated and unrecognised files are one-line errors here, before any model is built to load them into."""
    shown = escape(path)
    path = check_input_file(path, "checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"checkpoint {shown} is truncated or corrupt (the file is empty); re-save or re-copy it")
    return path, size, _detect(path, size)


def load_checkpoint(
    model: nn.Module | None, path: str | Path, *, trust: bool = False, trust_flag: str = "--trust-checkpoint"
) -> tuple[nn.Module, CheckpointInfo]:
    """Load `path` into `model` (strict fit) and return it in eval mode with what was loaded.

    `model` may be None only for files that carry their own module (trusted pickled modules, TorchScript, .pt2);
    such files replace `model`. Prune masks already on `model` are removed and those in the file applied. `trust`
    applies to this file alone (`trust_flag` names the flag that grants it, for the messages).
    """
    path, size, kind = inspect_checkpoint(path)
    shown = escape(path)
    digest = sha256_file(path)

    notes: list[str] = []

    def info(
        out: nn.Module, fmt: str, trusted: bool, folded: bool = False, manifest: dict | None = None
    ) -> tuple[nn.Module, CheckpointInfo]:
        masked = tuple(sorted(_masked_params(out)))
        return out, CheckpointInfo(shown, digest, fmt, trusted, folded, manifest, size, masked, tuple(notes))

    if kind in ("torchscript", "pt2"):
        label = "a TorchScript archive" if kind == "torchscript" else "a torch.export .pt2 archive"
        if not trust:
            raise UsageError(
                f"checkpoint {shown} is {label}, which runs code from the file when loaded; load its weights from a "
                f"state_dict or safetensors instead, or pass {trust_flag} if you trust its source"
            )
        warn_trusted(shown, label, trust_flag)
        try:
            loaded = torch.jit.load(str(path), map_location="cpu") if kind == "torchscript" else _load_pt2(path)
        except Exception as err:  # noqa: BLE001  whatever the file makes the loader raise, the file is at fault
            raise corrupt(shown, err) from None
        _check_finite(loaded.state_dict(), shown)
        return info(_eval(loaded), kind, True)

    manifest = None
    if kind == "safetensors":
        tensors, meta = _read_safetensors(path, shown)
        _check_kinds(tensors, shown)
        manifest = _read_manifest(path, meta, shown, notes)
        sd = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
        stored = {k[len(MASK_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
        trusted = False
        sd, masks = fold_pruning_pairs(sd, f"checkpoint {shown}")  # tolerate *_orig/*_mask written by other tools
        folded = bool(masks)
        masks.update(_resolve_mask_names(stored, sd))
    else:
        obj, trusted = load_pickle(path, shown, trust, trust_flag)
        found = obj if isinstance(obj, nn.Module) else extract_state_dict(obj, shown)
        if isinstance(found, nn.Module):  # a whole module, or {"model": <module>} from a training script
            _check_kinds(found.state_dict(), shown)
            _check_finite(found.state_dict(), shown)
            return info(_eval(found), "pickled_module", trusted)
        _check_kinds(found, shown)
        sd, masks = fold_pruning_pairs(found, f"checkpoint {shown}")
        folded = bool(masks)

    if model is None:
        raise UsageError(f"checkpoint {shown} holds only weights; name the architecture with --model")
    _check_finite({**sd, **{MASK_PREFIX + k: v for k, v in masks.items()}}, shown)
    _strip_pruning(model)
    sd, masks = _fit(model, sd, masks, shown)
    for name, mask in masks.items():
        check_mask(name, mask, sd[name].shape if name in sd else mask.shape, f"checkpoint {shown}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # _fit checks keys and shapes, so this is a dtype or similar oddity
        raise UsageError(f"checkpoint {shown} does not fit the model: {str(err).splitlines()[0]}") from None
    for name, mask in masks.items():
        module_name, _, param = name.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, param)
        prune.custom_from_mask(module, param, mask.to(device=current.device, dtype=current.dtype))
    fmt = "safetensors" if kind == "safetensors" else "state_dict"
    return info(_eval(model), fmt, trusted, folded, manifest)


# ---------------------------------------------------------------- helpers


def _detect(path: Path, size: int) -> str:
    """Classify by content: safetensors, torch_zip, torchscript, pt2 or legacy_pickle (else corrupt)."""
    shown = escape(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise corrupt(shown, err) from None
        if any(n == "archive_format" or n.endswith("/archive_format") for n in names):
            return "pt2"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith(".data/extern_modules") for n in names):
            raise UsageError(
                f"checkpoint {shown} is a torch.package archive, which runs code shipped inside it; robustprune "
                "does not load these, re-save the model's state_dict or safetensors"
            )
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch_zip"
        raise corrupt(shown, "a zip archive without data.pkl, not written by torch.save")
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if header_len + 8 > size:
            raise UsageError(
                f"checkpoint {shown} is truncated or corrupt (safetensors header says {header_len} bytes, "
                f"file has {size}); re-save or re-copy it"
            )
        return "safetensors"
    if head[:1] == b"\x80":
        return "legacy_pickle"
    raise corrupt(shown, "not safetensors, a torch.save archive or a pickle")


def _read_safetensors(path: Path, shown: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            names = fh.keys()
            tensors = {k: fh.get_tensor(k) for k in names}
    except Exception as err:  # noqa: BLE001  SafetensorError and friends: the file, not our code
        raise corrupt(shown, err) from None
    return tensors, meta


def _read_manifest(path: Path, meta: Mapping[str, str], shown: str, notes: list[str]) -> dict | None:
    """The sidecar manifest, only when the checkpoint's metadata carries its SHA-256 and the file matches it: a
    manifest nobody can prove belongs to these weights is ignored (one note), never read for a parent or an
    accuracy. A manifest whose hash does not match is an error (it belongs to another save)."""
    side = manifest_path(path)
    expected = meta.get("manifest_sha256", "")
    if not side.is_file():
        return None
    if not expected:
        notes.append(
            f"manifest {escape(side)} ignored: checkpoint {shown} does not carry its SHA-256 (not written by "
            "robustprune's save), so nothing in it (parent, recorded accuracy) is used"
        )
        return None
    if side.stat().st_size > MAX_MANIFEST_BYTES:
        raise UsageError(f"manifest {escape(side)} is larger than {MAX_MANIFEST_BYTES} bytes; it is not a manifest")
    raw = side.read_bytes()
    if hashlib.sha256(raw).hexdigest() != expected:
        raise UsageError(
            f"manifest {side} does not belong to checkpoint {shown} (written by a different save); "
            "delete or restore the manifest"
        )
    try:
        manifest = loads_bounded(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise UsageError(f"manifest {side} beside checkpoint {shown} is not valid JSON ({err}); fix or delete it")
    if not isinstance(manifest, dict):
        raise UsageError(f"manifest {side} must hold a JSON object, got {type(manifest).__name__}; fix or delete it")
    return manifest


def _resolve_mask_names(stored: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`__mask__.<module>.<param>` as written here, or `__mask__.<module>` meaning that module's weight."""
    out = {}
    for name, mask in stored.items():
        out[name if name in sd or f"{name}.weight" not in sd else f"{name}.weight"] = mask
    return out


def _fit(
    model: nn.Module, sd: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], shown: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Strict key and shape check with an error that names what differs; returns (state_dict, masks) to load."""
    expected = model.state_dict()
    prefix = "module."  # DataParallel / DDP wrappers
    if sd and all(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in expected):
        sd = {k[len(prefix) :]: v for k, v in sd.items()}
        masks = {k[len(prefix) :]: v for k, v in masks.items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    unexpected += [MASK_PREFIX + k for k in masks if k not in expected]
    shapes = [
        f"shape of {k} is {_shape(v)} in the file but {_shape(expected[k])} in the model"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    shapes += [
        f"shape of mask {k} is {_shape(v)} but {_shape(expected[k])} in the model"
        for k, v in masks.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            problems.append(f"{label} {', '.join(items[:_SHOW])}{more}")
    problems += shapes[:_SHOW]
    arch = getattr(model, "robustprune_model", None) or type(model).__name__
    if problems:
        raise UsageError(
            f"checkpoint {shown} does not fit architecture {arch}: {'; '.join(problems)}; "
            "check --model and the dataset's class count"
        )
    _check_dtypes(sd, expected, shown, arch)
    return sd, masks


def _check_dtypes(sd: Mapping[str, Any], expected: Mapping[str, torch.Tensor], shown: str, arch: str) -> None:
    """Weights the model holds as real floats must be real floats in the file: loading int64 weights would cast
    them to integers (and count zeros as pruned), complex ones would silently drop the imaginary part."""
    for key, value in sd.items():
        want = expected[key]
        if not want.is_floating_point():
            continue  # integer buffers such as BatchNorm's num_batches_tracked
        if value.is_complex():
            why = f"is complex ({value.dtype}); robustprune models have real weights"
        elif not value.is_floating_point():
            why = f"is {value.dtype}, not floating point; weights must be stored as floats"
        else:
            continue
        raise UsageError(f"checkpoint {shown}: tensor {key!r} {why} (architecture {arch}); re-save it as float32")


# What a checkpoint's tensors may be: dense, on a real device, of a dtype the models compute in (float8, quantized,
# sparse and meta tensors are refused naming the tensor, before any arithmetic on them can fail obscurely).
_ORDINARY_DTYPES = frozenset(
    {
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128, torch.bool,
        torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    }
)  # fmt: skip


def _check_kinds(tensors: Mapping[str, Any], shown: str) -> None:
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.layout != torch.strided or value.is_meta or value.is_quantized or value.dtype not in _ORDINARY_DTYPES:
            kind = (
                "a meta tensor (no data)" if value.is_meta
                else f"a {value.layout} tensor" if value.layout != torch.strided
                else f"a {value.dtype} tensor"
            )  # fmt: skip
            raise UsageError(
                f"checkpoint {shown}: {escape(name)} is {kind}; robustprune loads dense float, integer or bool tensors "
                "only: re-save it with tensor.to_dense() / .dequantize() / .float()"
            )


def _check_finite(tensors: Mapping[str, Any], shown: str) -> None:
    bad = [
        k
        for k, v in tensors.items()
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()
    ]
    if bad:
        more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise UsageError(
            f"checkpoint {shown} has NaN or infinite values in {', '.join(bad[:_SHOW])}{more}; "
            "the training run diverged, use an earlier checkpoint"
        )


def _strip_pruning(model: nn.Module) -> None:
    """Make existing prune reparametrisations permanent so the model's keys are plain `X.weight` again."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)


def _masked_params(model: nn.Module) -> list[str]:
    out = []
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                out.append(f"{module_name}.{hook._tensor_name}" if module_name else hook._tensor_name)
    return out


def _load_pt2(path: Path) -> nn.Module:
    return torch.export.load(str(path)).module()


def _eval(model: nn.Module) -> nn.Module:
    remember_train_mode(model)  # a module pickled in train mode is still reported by scoring (S3)
    return set_eval(model)


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(str(d) for d in t.shape) + "]"
