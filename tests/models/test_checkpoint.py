"""Safe checkpoint loading and saving: round trips, pruning masks, refusals of code-carrying files, bad files."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import warnings

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.utils import prune

from robustprune.errors import UsageError
from robustprune.models import CheckpointInfo, build_model, load_checkpoint, save_checkpoint, sha256_file
from robustprune.models.pickled import TrustedCheckpointWarning
from robustprune.models.state import fold_pruning_pairs
from robustprune.paths import manifest_path

SHAPE = (1, 8, 8)


class PickledNet(nn.Module):
    """Module-level so that torch.save(model) can be unpickled under trust."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class TouchOnLoad:
    """Unpickling this creates a marker file: stands in for a malicious checkpoint."""

    def __init__(self, marker: pathlib.Path, via_system: bool = False) -> None:
        self.marker, self.via_system = marker, via_system

    def __reduce__(self):
        if self.via_system:
            return (os.system, (f"touch {self.marker}",))
        return (pathlib.Path.touch, (self.marker,))


def fresh(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("digits_cnn", num_classes, SHAPE)


def pruned_source() -> nn.Module:
    model = fresh(seed=1)
    prune.l1_unstructured(model.features[0], "weight", amount=0.5)
    prune.l1_unstructured(model.classifier[0], "weight", amount=0.7)
    return model.eval()


def outputs(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(123)
    with torch.no_grad():
        return model(torch.rand(4, *SHAPE))


def has_mask(module: nn.Module, name: str = "weight") -> bool:
    return prune.is_pruned(module) and hasattr(module, f"{name}_mask")


# ------------------------------------------------------------------ round trips


def test_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3_000_000))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_safetensors_round_trip_with_manifest(tmp_path):
    src = fresh(seed=1)
    path = tmp_path / "model.safetensors"
    manifest = {"recipe": "dense", "sparsity": {"target": 0.0}, "seed": 1}
    saved = save_checkpoint(src, path, manifest)
    assert manifest_path(path) == tmp_path / "model.manifest.json"
    assert json.loads((tmp_path / "model.manifest.json").read_text()) == manifest
    assert saved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert saved.format == "safetensors" and not saved.folded_pruning and saved.masked == ()

    model, info = load_checkpoint(fresh(seed=2), path, trust=True)
    assert torch.equal(outputs(model), outputs(src))
    assert not model.training
    assert info.format == "safetensors"
    assert info.trusted is False  # trust was offered but not needed
    assert info.manifest == manifest
    assert info.sha256 == saved.sha256
    assert info.size_bytes == path.stat().st_size
    assert json.loads(json.dumps(info.to_dict()))["sha256"] == saved.sha256


def test_safetensors_keeps_masks(tmp_path):
    src = pruned_source()
    path = tmp_path / "pruned.safetensors"
    saved = save_checkpoint(src, path)
    assert saved.masked == ("classifier.0.weight", "features.0.weight")
    with safe_open(str(path), framework="pt") as fh:
        names = set(fh.keys())
        assert not any(n.endswith("_orig") for n in names)
        assert {"__mask__.features.0.weight", "__mask__.classifier.0.weight"} <= names
        assert torch.equal(fh.get_tensor("features.0.weight"), src.features[0].weight)

    model, info = load_checkpoint(fresh(seed=3), path)
    assert info.masked == ("classifier.0.weight", "features.0.weight")
    assert has_mask(model.features[0]) and has_mask(model.classifier[0])
    assert not prune.is_pruned(model.features[2])
    assert torch.equal(model.features[0].weight_mask, src.features[0].weight_mask)
    zeros = src.classifier[0].weight_mask == 0
    assert zeros.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert (model.classifier[0].weight[zeros] == 0).all()
    assert torch.equal(outputs(model), outputs(src))
    # The mask stays in force: a weight update to a masked position does not come back into effect.
    with torch.no_grad():
        model.classifier[0].weight_orig.add_(1.0)
    model(torch.rand(1, *SHAPE))
    assert (model.classifier[0].weight[zeros] == 0).all()


def test_module_level_mask_names_are_weight_masks(tmp_path):
    from safetensors.torch import save_file

    src = fresh(seed=1)
    mask = (torch.rand_like(src.features[0].weight) > 0.5).to(torch.uint8)
    tensors = {k: v.clone() for k, v in src.state_dict().items()}
    tensors["__mask__.features.0"] = mask
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    model, info = load_checkpoint(fresh(), path)
    assert info.masked == ("features.0.weight",)
    assert torch.equal(model.features[0].weight_mask, mask.float())


def test_manifest_none_removes_stale_and_foreign_manifest_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(fresh(), path, {"run": 1})
    (tmp_path / "m.manifest.json").write_text(json.dumps({"run": 2}))
    with pytest.raises(UsageError, match="does not belong to checkpoint"):
        load_checkpoint(fresh(), path)
    save_checkpoint(fresh(), path)
    assert not (tmp_path / "m.manifest.json").exists()
    assert load_checkpoint(fresh(), path)[1].manifest is None
    # A manifest placed by hand beside a file that recorded none is unproven: ignored, and the load says so.
    (tmp_path / "m.manifest.json").write_text(json.dumps({"note": "by hand", "parent": "p.pt"}))
    info = load_checkpoint(fresh(), path)[1]
    assert info.manifest is None
    assert any("not used" in note or "is used" in note for note in info.notes), info.notes
    # Even one that is not a manifest at all: it is never read, so it cannot fail the load either.
    (tmp_path / "m.manifest.json").write_text("[1, 2]")
    info = load_checkpoint(fresh(), path)[1]
    assert info.manifest is None and info.notes


def test_save_rejects_bad_manifest(tmp_path):
    with pytest.raises(UsageError, match="manifest"):
        save_checkpoint(fresh(), tmp_path / "a.safetensors", {"x": object()})
    with pytest.raises(UsageError, match="manifest"):
        save_checkpoint(fresh(), tmp_path / "a.safetensors", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert not (tmp_path / "a.safetensors").exists()


def test_save_handles_tied_weights(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    save_checkpoint(model, tmp_path / "tied.safetensors")
    loaded, _ = load_checkpoint(
        nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)), tmp_path / "tied.safetensors"
    )
    assert torch.equal(loaded[1].weight, model[0].weight)


def test_state_dict_round_trip(tmp_path):
    src = fresh(seed=1)
    path = tmp_path / "model.pt"
    torch.save(src.state_dict(), path)
    model, info = load_checkpoint(fresh(seed=2), path)
    assert torch.equal(outputs(model), outputs(src))
    assert (info.format, info.trusted, info.folded_pruning, info.manifest) == ("state_dict", False, False, None)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("wrap", ["state_dict", "model_state_dict", "model", "ddp", "legacy"])
def test_state_dict_variants(tmp_path, wrap):
    src = fresh(seed=1)
    sd = src.state_dict()
    path = tmp_path / "model.pth"
    if wrap == "ddp":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif wrap == "legacy":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
        assert not path.read_bytes().startswith(b"PK")
    else:
        torch.save({wrap: sd, "epoch": 7, "optimizer": {"lr": 0.1}}, path)
    model, info = load_checkpoint(fresh(seed=2), path)
    assert info.format == "state_dict"
    assert torch.equal(outputs(model), outputs(src))


def test_torch_prune_state_dict_is_folded(tmp_path):
    src = pruned_source()
    sd = src.state_dict()
    assert "features.0.weight_orig" in sd and "features.0.weight_mask" in sd
    path = tmp_path / "pruned.pt"
    torch.save(sd, path)
    model, info = load_checkpoint(fresh(seed=4), path)
    assert info.folded_pruning is True
    assert info.masked == ("classifier.0.weight", "features.0.weight")
    assert has_mask(model.features[0]) and has_mask(model.classifier[0])
    assert torch.equal(outputs(model), outputs(src))
    zeros = src.features[0].weight_mask == 0
    assert zeros.any() and (model.features[0].weight[zeros] == 0).all()


def testfold_pruning_pairs():
    sd = {"a.weight_orig": torch.tensor([1.0, 2.0]), "a.weight_mask": torch.tensor([0.0, 1.0]), "a.bias": torch.ones(2)}
    folded, masks = fold_pruning_pairs(sd)
    assert set(folded) == {"a.weight", "a.bias"}
    assert torch.equal(folded["a.weight"], torch.tensor([0.0, 2.0]))
    assert set(masks) == {"a.weight"}


def test_existing_masks_on_the_model_are_replaced(tmp_path):
    dense = fresh(seed=1)
    path = tmp_path / "dense.safetensors"
    save_checkpoint(dense, path)
    target = pruned_source()
    model, info = load_checkpoint(target, path)
    assert not prune.is_pruned(model)
    assert info.masked == ()
    assert torch.equal(outputs(model), outputs(dense))


# ------------------------------------------------------------------ security


@pytest.mark.parametrize("via_system", [False, True], ids=["path_touch", "os_system"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, via_system):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": TouchOnLoad(marker, via_system)}, path)
    assert not marker.exists()
    with pytest.raises(UsageError) as err:
        load_checkpoint(fresh(), path)
    message = str(err.value)
    assert "pickled Python objects" in message and "--trust-checkpoint" in message
    assert "\n" not in message
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pt"
    torch.save(TouchOnLoad(marker), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UsageError, match="--trust-checkpoint"):
        load_checkpoint(fresh(), path)
    assert not marker.exists()


def test_pickled_module_needs_trust(tmp_path):
    torch.manual_seed(0)
    src = PickledNet().eval()
    path = tmp_path / "whole.pt"
    torch.save(src, path)
    with pytest.raises(UsageError, match="--trust-checkpoint") as err:
        load_checkpoint(None, path)
    assert "PickledNet" in str(err.value)  # the refusal names what the pickle would import
    with pytest.warns(TrustedCheckpointWarning):
        model, info = load_checkpoint(None, path, trust=True)
    assert isinstance(model, PickledNet)
    assert not model.training
    assert (info.format, info.trusted) == ("pickled_module", True)
    x = torch.rand(2, 64)
    assert torch.equal(model(x), src(x))


def test_trusted_pickle_with_objects_around_a_state_dict(tmp_path):
    import argparse

    src = fresh(seed=1)
    path = tmp_path / "train_ckpt.pt"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UsageError, match="--trust-checkpoint"):
        load_checkpoint(fresh(), path)
    with pytest.warns(TrustedCheckpointWarning):
        model, info = load_checkpoint(fresh(seed=2), path, trust=True)
    assert (info.format, info.trusted) == ("state_dict", True)
    assert torch.equal(outputs(model), outputs(src))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_needs_trust(tmp_path):
    src = fresh(seed=1)
    path = tmp_path / "scripted.pt"
    torch.jit.script(src).save(str(path))
    with pytest.raises(UsageError, match="TorchScript.*--trust-checkpoint"):
        load_checkpoint(fresh(), path)
    with pytest.warns(TrustedCheckpointWarning):
        model, info = load_checkpoint(None, path, trust=True)
    assert (info.format, info.trusted) == ("torchscript", True)
    assert isinstance(model, torch.jit.ScriptModule)
    assert not model.training
    assert torch.allclose(outputs(model), outputs(src))


def test_pt2_needs_trust(tmp_path):
    src = fresh(seed=1)
    path = tmp_path / "exported.pt2"
    exported = torch.export.export(src, (torch.rand(4, *SHAPE),))  # batch size is static: outputs() uses 4
    torch.export.save(exported, str(path))
    with pytest.raises(UsageError, match=r"\.pt2.*--trust-checkpoint"):
        load_checkpoint(fresh(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's own deprecation chatter
        model, info = load_checkpoint(None, path, trust=True)
    assert (info.format, info.trusted) == ("pt2", True)
    assert torch.allclose(outputs(model), outputs(src))


# ------------------------------------------------------------------ bad inputs


def expect_usage_error(model, path, match: str) -> str:
    with pytest.raises(UsageError, match=match) as err:
        load_checkpoint(model, path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_empty_and_directory(tmp_path):
    expect_usage_error(fresh(), tmp_path / "nope.pt", "does not exist")
    (tmp_path / "empty.pt").write_bytes(b"")
    expect_usage_error(fresh(), tmp_path / "empty.pt", "truncated or corrupt")
    expect_usage_error(fresh(), tmp_path, "not a file")


@pytest.mark.parametrize("kind", ["safetensors", "pt", "legacy_pt", "safetensors_tail"])
def test_truncated_files(tmp_path, kind):
    src = fresh(seed=1)
    full = tmp_path / f"full.{kind}"
    if kind.startswith("safetensors"):
        save_checkpoint(src, full)
    else:
        torch.save(src.state_dict(), full, _use_new_zipfile_serialization=kind == "pt")
    data = full.read_bytes()
    cut = tmp_path / f"cut.{kind}"
    # Half the file, or (tail) all but the last few bytes, which keeps the header intact.
    cut.write_bytes(data[: len(data) - 16] if kind.endswith("tail") else data[: len(data) // 2])
    expect_usage_error(fresh(), cut, "truncated or corrupt")


@pytest.mark.parametrize("size", [5, 4096])
def test_random_bytes(tmp_path, size):
    path = tmp_path / "noise.pt"
    rng = torch.Generator().manual_seed(size)
    path.write_bytes(bytes(torch.randint(0, 256, (size,), generator=rng, dtype=torch.uint8).tolist()))
    expect_usage_error(fresh(), path, "truncated or corrupt")


def test_zip_that_is_not_a_checkpoint(tmp_path):
    import zipfile

    path = tmp_path / "a.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    expect_usage_error(fresh(), path, "truncated or corrupt")


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_wrong_architecture(tmp_path, suffix):
    path = tmp_path / f"ten.{suffix}"
    if suffix == "safetensors":
        save_checkpoint(fresh(10), path)
    else:
        torch.save(fresh(10).state_dict(), path)
    message = expect_usage_error(fresh(100), path, "does not fit architecture digits_cnn")
    assert "shape of classifier.2.weight is [10,128] in the file but [100,128] in the model" in message
    assert "class count" in message
    message = expect_usage_error(build_model("mlp", 10, SHAPE), path, "does not fit architecture mlp")
    assert "missing fc1.weight" in message
    assert re.search(r"unexpected (features|classifier)\.\d\.(weight|bias)", message)


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_nan_weights(tmp_path, suffix):
    src = fresh()
    with torch.no_grad():
        src.classifier[0].weight[0, 0] = float("nan")
    path = tmp_path / f"nan.{suffix}"
    if suffix == "safetensors":
        save_checkpoint(src, path)
    else:
        torch.save(src.state_dict(), path)
    expect_usage_error(fresh(), path, "NaN or infinite values in classifier.0.weight")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (torch.zeros(3), "holds a Tensor, not a state_dict"),
        ({}, "empty state_dict"),
        ({"fc.weight": torch.zeros(1), "note": "hi"}, "entry 'note' holds a str"),
    ],
    ids=["tensor", "empty", "mixed"],
)
def test_not_a_state_dict(tmp_path, payload, match):
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    expect_usage_error(fresh(), path, match)


def test_weights_without_architecture(tmp_path):
    path = tmp_path / "w.safetensors"
    save_checkpoint(fresh(), path)
    expect_usage_error(None, path, "name the architecture with --model")


def test_checkpoint_info_is_frozen():
    info = CheckpointInfo("p", "0" * 64, "safetensors", False, False, None)
    with pytest.raises(AttributeError):
        info.sha256 = "x"  # type: ignore[misc]
    assert info.to_dict()["masked"] == []


@pytest.mark.parametrize("value", [2.0, 0.5, -1.0, float("nan")])
@pytest.mark.parametrize("form", ["prune pairs", "safetensors mask"])
def test_masks_that_are_not_zero_or_one_are_refused_when_read(tmp_path, value, form):
    """A mask of 2, 0.5, -1 or NaN would rescale or negate the weights it multiplies: refused with the file named."""
    from safetensors.torch import save_file

    src = pruned_source()
    if form == "prune pairs":
        sd = {k: v.clone() for k, v in src.state_dict().items()}
        sd["features.0.weight_mask"][0, 0, 0, 0] = value
        path = tmp_path / "pairs.pt"
        torch.save(sd, path)
    else:
        tensors = {k: v.clone() for k, v in fresh(seed=1).state_dict().items()}
        mask = torch.ones_like(tensors["features.0.weight"])
        mask[0, 0, 0, 0] = value
        tensors["__mask__.features.0.weight"] = mask
        path = tmp_path / "mask.safetensors"
        save_file(tensors, str(path))
    with pytest.raises(UsageError, match=r"checkpoint .*(the prune mask of features.0.weight holds|NaN)") as caught:
        load_checkpoint(fresh(), path)
    assert "only 0 and 1" in str(caught.value) or "NaN or infinite values in __mask__" in str(caught.value)


def test_integer_masks_of_zeros_and_ones_still_load(tmp_path):
    sd = {k: v.clone() for k, v in pruned_source().state_dict().items()}
    sd["features.0.weight_mask"] = sd["features.0.weight_mask"].to(torch.int64)
    path = tmp_path / "int_mask.pt"
    torch.save(sd, path)
    _, info = load_checkpoint(fresh(), path)
    assert "features.0.weight" in info.masked
