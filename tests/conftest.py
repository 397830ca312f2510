"""Shared fixtures: the digits data and one small trained model, trained once per test session."""

from __future__ import annotations

import pytest
import torch

from robustprune.data import Dataset, load_dataset
from robustprune.defenses.train_loop import TrainSpec, fit
from robustprune.models import build_model

# Tiny models on a shared 2-core machine run fastest (and reproducibly) on one thread.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_train() -> Dataset:
    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_test() -> Dataset:
    return load_dataset("digits", "test")


@pytest.fixture(scope="session")
def _trained_mlp_state(digits_train: Dataset, digits_test: Dataset) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the initial weights too: tests that depend on which examples break see the same model
    model = build_model("mlp", 10, digits_train.input_shape)
    spec = TrainSpec(epochs=8, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0, probe_steps=2)
    fit(model, digits_train, digits_test, spec, seed=0)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def trained_mlp(_trained_mlp_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh copy of an MLP trained on digits (about 97% clean accuracy), in eval mode."""
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    return model.eval()


@pytest.fixture(scope="session")
def mlp_checkpoint(tmp_path_factory, _trained_mlp_state: dict[str, torch.Tensor]):
    """The trained MLP saved as a safetensors checkpoint (read only: tests that change it copy it first)."""
    from robustprune.models import save_checkpoint

    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole session (starting one costs seconds)."""
    import ray  # installed by `make test` (the ray extra): a missing Ray must fail, not skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`user_module(source, stem)` writes `source` as an importable module of a unique name (what a user's own
    models or attacks look like) and returns that name; it is forgotten after the test."""
    import sys
    import textwrap

    written: list[str] = []

    def write(source: str, stem: str = "user_module") -> str:
        name = f"{stem}_{abs(hash(tmp_path)) % 10**8}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)
