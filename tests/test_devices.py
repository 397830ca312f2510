"""--device / device=: the resolver, its one-line refusals, the CLI flag in the provenance, the Python API moving
model and data. Nothing here needs a GPU: CUDA is either absent (refused) or faked where only bookkeeping is
checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustprune.cli import main
from robustprune.devices import check_device_spec, device_record, is_cuda_spec, resolve_device
from robustprune.errors import UsageError

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


# --------------------------------------------------------------------------------------------------------------
# The resolver


@pytest.mark.skipif(not (NO_CUDA and NO_MPS), reason="this machine has a GPU")
@pytest.mark.parametrize("spec", ["auto", None, "AUTO", " auto "])
def test_auto_is_the_cpu_here(spec) -> None:
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", torch.device("cpu")])
def test_cpu(spec) -> None:
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_is_refused_in_one_line_when_absent(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_device(spec)
    assert str(err.value) == f"--device {spec}: no CUDA device is available here; use --device cpu"


@pytest.mark.skipif(not NO_MPS, reason="this machine has MPS")
def test_mps_is_refused_in_one_line_when_absent() -> None:
    with pytest.raises(UsageError, match=r"^--device mps: no MPS .* use --device cpu$"):
        resolve_device("mps")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "mps:1", "auto:0", "", "cuda0", 3])
def test_malformed_devices_are_refused(spec) -> None:
    with pytest.raises(UsageError) as err:
        resolve_device(spec)
    assert "\n" not in str(err.value) and "--device" in str(err.value)


def test_check_device_spec_checks_the_form_only() -> None:
    assert check_device_spec("CUDA:1") == "cuda:1"  # not resolved: a sweep's device is resolved where cells run
    with pytest.raises(UsageError, match="the sweep's device tpu: unknown device"):
        check_device_spec("tpu", "the sweep's device")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CUDA devices, as far as the bookkeeping can tell (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)


def test_cuda_resolution_and_record_bookkeeping(fake_cuda) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError, match=r"^--device cuda:2: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2")
    record = device_record(torch.device("cuda", 1))
    assert record["kind"] == "cuda" and record["name"] == "Fake GPU 1" and record["index"] == 1
    assert record["cudnn_deterministic"] is True and record["deterministic_algorithms"] is False
    assert any("non-deterministic" in c for c in record["caveats"])
    assert is_cuda_spec("auto") and is_cuda_spec("cuda:1") and not is_cuda_spec("cpu")


def test_process_pool_workers_take_gpus_round_robin(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    import queue

    from robustprune.sweep import cell

    for worker, expected in [(0, 0), (1, 1), (2, 0), (3, 1)]:
        q: queue.Queue[int] = queue.Queue()
        q.put(worker)
        cell.pin_worker(q)
        assert cell.cell_device("cuda") == torch.device("cuda", expected)
        assert cell.cell_device("auto") == torch.device("cuda", expected)
        assert cell.cell_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
        assert cell.cell_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(cell, "_WORKER_CUDA", None)


def test_cpu_record() -> None:
    assert device_record(torch.device("cpu")) == {"kind": "cpu", "name": "cpu", "index": None, "caveats": []}


# --------------------------------------------------------------------------------------------------------------
# The CLI and the Python API


def test_score_cli_records_the_device(tmp_path: Path) -> None:
    out = tmp_path / "score"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--batch-size", "8"]
    assert main([*args, "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["device"] == "cpu"
    assert prov["device_info"]["kind"] == "cpu" and prov["device_info"]["name"] == "cpu"


@pytest.mark.parametrize("command", ["score", "train", "sweep", "demo"])
def test_every_command_has_the_flag(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    assert "--device DEVICE" in capsys.readouterr().out


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_score_cli_refuses_an_absent_gpu_before_writing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "score"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--out", str(out)]
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "robustprune: error: --device cuda: no CUDA device is available here; use --device cpu"
    assert not out.exists()


class Spy(nn.Module):
    """A tiny classifier that remembers where it was moved to and where its inputs were."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.moved_to: list[object] = []
        self.input_devices: set[torch.device] = set()

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.moved_to.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_devices.add(x.device)
        return self.net(x)


def _digits(n: int = 8):
    from robustprune.data import load_dataset

    return load_dataset("digits", "test").subset(n)


def test_score_api_moves_model_and_data_to_the_device() -> None:
    from robustprune.scoring import score

    torch.manual_seed(0)
    model = Spy()
    result = score(model, _digits(), "quick", batch_size=8, device=torch.device("cpu"), efficiency=False)
    assert model.moved_to == [torch.device("cpu")]  # moved once, at the start
    assert model.input_devices == {torch.device("cpu")}
    assert result.provenance.device == "cpu" and result.provenance.device_info["kind"] == "cpu"
    assert result.adversarial is not None and isinstance(result.adversarial.x, type(result.adversarial.index))


def test_score_api_default_keeps_the_model_where_it_is() -> None:
    from robustprune.scoring import score

    model = Spy()
    result = score(model, _digits(), "quick", batch_size=8, efficiency=False)
    assert model.moved_to == [torch.device("cpu")]  # where its parameters already are: a no-op move
    assert result.provenance.device == "cpu"


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_score_api_refuses_an_absent_gpu() -> None:
    from robustprune.scoring import score

    with pytest.raises(UsageError, match="no CUDA device"):
        score(Spy(), _digits(), "quick", device="cuda")


def test_train_api_takes_a_device() -> None:
    from robustprune.defenses.pipeline import train_model

    artifact, manifest = train_model("dense", epochs=1, device="cpu")
    assert manifest["provenance"]["device"] == "cpu"
    assert manifest["provenance"]["device_info"]["kind"] == "cpu"
    assert all(p.device.type == "cpu" for p in artifact.model.parameters())
    if NO_CUDA:
        with pytest.raises(UsageError, match="no CUDA device"):
            train_model("dense", epochs=1, device="cuda")


def test_sweep_device_is_not_part_of_the_cell_key() -> None:
    from robustprune.config import SweepSpec
    from robustprune.sweep.plan import plan_cells

    common = {"recipes": ("dense",), "n": 8, "epochs": 1}
    on_cpu = plan_cells(SweepSpec(**common, device="cpu"))
    anywhere = plan_cells(SweepSpec(**common))
    assert [c.key for c in on_cpu] == [c.key for c in anywhere]
    assert {c.device for c in on_cpu} == {"cpu"} and {c.device for c in anywhere} == {"auto"}
    with pytest.raises(UsageError, match="the sweep's device gpu: unknown device"):
        SweepSpec(**common, device="gpu")
