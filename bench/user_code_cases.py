"""The user-code cases of issue 20, run through the command line: does each end cleanly?

Every case is one `robustprune score` run in a subprocess (digits, Linf 0.1, the quick battery, 40 examples) on a
model factory, attack or checkpoint written to a temporary directory. A case ends cleanly when it exits 0 with a
result, or 1 / 2 with exactly one line on stderr and no `internal error`; a case whose number could be false is
also compared with the truth (the untouched model's robust accuracy, or the test set's fingerprint). Point
--source at another checkout to measure it (e.g. the code before this change):

    .venv/bin/python bench/user_code_cases.py [--source /path/to/checkout] [--cases name,...]

Prints a Markdown table and the count of clean endings; no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

MODELS = """
import sys
import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from robustprune.models import build_model

STATE = torch.load(__file__.replace("user_models.py", "mlp.pt"), weights_only=True)

def trained(num_classes, input_shape):
    net = build_model("mlp", num_classes, input_shape)
    net.load_state_dict(STATE)
    return net.eval()

class Wrap(nn.Module):
    def __init__(self, inner, fn):
        super().__init__()
        self.inner, self.fn, self.calls = inner, fn, 0
    def forward(self, x):
        self.calls += 1
        return self.fn(self, x)

def make(fn):
    return lambda num_classes, input_shape: Wrap(trained(num_classes, input_shape), fn)

plain = trained
halves_input = make(lambda s, x: s.inner(x.mul_(0.5) * 2))
returns_tuple = make(lambda s, x: (s.inner(x), x))
returns_dict = make(lambda s, x: {"logits": s.inner(x)})
returns_list = make(lambda s, x: [s.inner(x)])
returns_none = make(lambda s, x: None)
returns_numpy = make(lambda s, x: s.inner(x).detach().numpy())
returns_int = make(lambda s, x: s.inner(x).long())
returns_bool = make(lambda s, x: s.inner(x) > 0)
returns_complex = make(lambda s, x: s.inner(x).to(torch.complex64))
returns_float16 = make(lambda s, x: s.inner(x).half())
returns_bfloat16 = make(lambda s, x: s.inner(x).bfloat16())
one_row_short = make(lambda s, x: s.inner(x)[:-1])
one_row_long = make(lambda s, x: torch.cat([s.inner(x), s.inner(x[:1])]))

def _raise_from(n):
    def fn(s, x):
        if s.calls >= n:
            raise RuntimeError("boom")
        return s.inner(x)
    return fn

raises_on_2nd_call = make(_raise_from(2))
raises_from_100th_call = make(_raise_from(100))
exits_in_forward = make(lambda s, x: sys.exit(0))

def float16_model(num_classes, input_shape):
    return trained(num_classes, input_shape).half()

def float64_model(num_classes, input_shape):
    return trained(num_classes, input_shape).double()

def exits_in_factory(num_classes, input_shape):
    sys.exit(0)

def exits_3_in_factory(num_classes, input_shape):
    sys.exit(3)

def _rescale(s, x):
    with torch.no_grad():
        s.inner.fc1.weight.mul_(1.5)
    return s.inner(x)

rescales_its_weights = make(_rescale)
zero_term_cut = make(lambda s, x: s.inner(x.detach()) + 0 * x.sum())
linear_decoy_cut = make(lambda s, x: s.inner(x.detach()) + 1e-3 * x.flatten(1)[:, :10])
functional_round = make(lambda s, x: s.inner(torch.round(x * 4) / 4))

def _mask(value):
    def factory(num_classes, input_shape):
        net = trained(num_classes, input_shape)
        mask = torch.ones_like(net.fc1.weight)
        mask[0, 0] = value
        prune.custom_from_mask(net.fc1, "weight", mask)
        return net
    return factory

mask_of_2 = _mask(2.0)
mask_of_half = _mask(0.5)
mask_of_minus_1 = _mask(-1.0)
mask_of_int_3 = _mask(3)

def takes(num_classes, input_shape, name="x", clip=1.0):
    return trained(num_classes, input_shape)
"""

EXITS_AT_IMPORT = "import sys\nsys.exit(0)\n"

ATTACKS = """
import torch
from robustprune.attacks.base import Attack

class _Base(Attack):
    defaults = {}
    uses_gradients = False

def _step(x, eps):
    g = torch.Generator().manual_seed(0)
    return (x + eps * torch.sign(torch.rand(x.shape, generator=g) - 0.5)).clamp(0, 1)

class WipesAndReturnsInput(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return x.mul_(0)

class WipesItsInput(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        out = _step(x, self.threat.eps)
        x.mul_(0)
        return out

class Noise(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps)

class ZeroesWeights(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return x

class Raises(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        raise ValueError("boom")

class ReturnsList(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return [x]

    def perturb(self, model, x, y, **kwargs):
        return [x]

class ReturnsFloat64(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps).double()

class ReturnsFloat16(_Base):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps).half()
"""


def model_cases() -> dict[str, list[str]]:
    names = [
        "halves_input", "returns_tuple", "returns_dict", "returns_list", "returns_none", "returns_numpy",
        "returns_int", "returns_bool", "returns_complex", "returns_float16", "returns_bfloat16", "one_row_short",
        "one_row_long", "raises_on_2nd_call", "raises_from_100th_call", "exits_in_forward", "float16_model",
        "float64_model", "exits_in_factory", "exits_3_in_factory", "rescales_its_weights", "zero_term_cut",
        "linear_decoy_cut", "functional_round", "mask_of_2", "mask_of_half", "mask_of_minus_1", "mask_of_int_3",
    ]  # fmt: skip
    cases = {name: ["--model", f"user_models:{name}"] for name in names}
    cases["exits_at_import"] = ["--model", "exits_at_import:f"]
    for arg in ("num_classes=10", "input_shape=[1,8,8]", "name=foo", "clip=nan", "clip=inf"):
        cases[f"model-arg {arg}"] = ["--model", "user_models:takes", "--model-arg", arg]
    return cases


def attack_cases() -> dict[str, str]:
    names = ["WipesAndReturnsInput", "WipesItsInput", "ZeroesWeights", "Raises", "ReturnsList", "ReturnsFloat64",
             "ReturnsFloat16"]  # fmt: skip
    cases = {f"attack {n}": f"user_attacks:{n}" for n in names}
    cases["torchattacks:APGDT (default n_classes)"] = "torchattacks:APGDT"
    return cases


def run(source: Path, work: Path, args: list[str], out: Path) -> tuple[int, str, dict | None]:
    env = dict(os.environ, PYTHONPATH=f"{work}{os.pathsep}{source}")
    command = [sys.executable, "-m", "robustprune", "score", *args, "--n", "40", "--out", str(out), "--quiet"]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=900, check=False)
    results = out / "results.json"
    doc = json.loads(results.read_text()) if done.returncode == 0 and results.exists() else None
    return done.returncode, done.stderr.strip(), doc


def accepts_allow_imports(source: Path) -> bool:
    env = dict(os.environ, PYTHONPATH=str(source))
    shown = subprocess.run(
        [sys.executable, "-m", "robustprune", "score", "--help"], env=env, capture_output=True, text=True, check=False
    )
    return "--allow-imports" in shown.stdout


def clean(code: int, err: str, doc: dict | None) -> bool:
    if "internal error" in err or "Traceback" in err:
        return False
    if code == 0:
        return doc is not None
    return code in (1, 2) and len(err.splitlines()) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO), help="the checkout to measure (default: this one)")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    wanted = set(args.cases.split(",")) if args.cases else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        sys.path.insert(0, str(source))
        from robustprune.data import load_dataset
        from robustprune.defenses.train_loop import TrainSpec, fit
        from robustprune.models import build_model

        train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
        net = build_model("mlp", 10, (1, 8, 8))
        fit(net, train, test, TrainSpec(epochs=6, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0), seed=0)
        torch.save(net.state_dict(), work / "mlp.pt")
        (work / "user_models.py").write_text(MODELS)
        (work / "exits_at_import.py").write_text(EXITS_AT_IMPORT)
        (work / "user_attacks.py").write_text(ATTACKS)
        truth = run(source, work, ["--model", "user_models:plain"], work / "truth")[2]
        rows, n_clean = [], 0
        cases = {k: (v, "quick") for k, v in model_cases().items()}
        for name, attack in attack_cases().items():
            battery = work / f"{name.split()[-1].replace(':', '_').strip('()')}.toml"
            battery.write_text(
                f'name = "b"\nnorm = "Linf"\neps = 0.1\n\n[[attack]]\nname = "{attack}"\nlabel = "user"\n'
            )
            allow = ["--allow-imports"] if accepts_allow_imports(source) else []  # older checkouts import freely
            cases[name] = (["--model", "user_models:plain", *allow], str(battery))
        for i, (name, (model_args, battery)) in enumerate(cases.items()):
            if wanted and name not in wanted:
                continue
            code, err, doc = run(source, work, [*model_args, "--battery", battery], work / f"out{i}")
            ok = clean(code, err, doc)
            n_clean += ok
            said = err.splitlines()[0][:150] if err else ""
            if doc is not None:
                said = f"verdict {doc['verdict']}, clean {doc['clean_acc']:.1f}, robust {doc['robust_acc']:.1f}"
                if truth and name in ("halves_input", "attack WipesItsInput"):
                    same = doc["data"]["fingerprint"] == truth["data"]["fingerprint"]
                    said += f" (test set {'untouched' if same else 'CHANGED'})"
            rows.append(f"| {name} | {code} | {'yes' if ok else 'NO'} | {said.replace('|', '/')} |")
        print(f"source: {source}\n")
        print("| case | exit | clean | what it said |\n|---|---|---|---|")
        print("\n".join(rows))
        print(f"\n{n_clean} of {len(rows)} cases end cleanly")
        if truth:
            print(f"(the untouched model: clean {truth['clean_acc']:.1f}, robust {truth['robust_acc']:.1f})")


if __name__ == "__main__":
    main()
