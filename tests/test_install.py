"""A plain `pip install .` works anywhere: the wheel carries the built-in batteries and recipes and declares every
runtime dependency, and the installed `robustprune` run from an unrelated directory finds its built-ins, ignores
./attacks and ./defenses there, and uses a user's directory only when it is given (recording the file that ran).

Offline: the wheel is built without build isolation from a copy of the package (nothing is written into the
checkout) and installed with --no-deps --no-index into a fresh venv, whose dependencies come from this
interpreter's site-packages through a .pth file (a venv's --system-site-packages would expose the base
interpreter's, not this environment's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180
# An untrained model must be asked for once score can tell it apart from a forgotten --checkpoint.
RANDOM_INIT = ["--random-init"] if "--random-init" in (ROOT / "robustprune/cli/score.py").read_text() else []

pytestmark = pytest.mark.slow


def _can_build_offline() -> str | None:
    """Why a wheel cannot be built here without the network, or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed (the dev extra brings it): the wheel cannot be built offline"
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1):
        try:
            import wheel  # noqa: F401 - bdist_wheel for setuptools older than 70.1
        except ImportError:
            return f"setuptools {setuptools.__version__} needs the wheel package to build a wheel offline"
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False).returncode:
        return "pip is not available to this interpreter"
    return None


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(robustprune console script of a fresh venv holding only the wheel, the environment to run it in)."""
    why = _can_build_offline()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "robustprune", src / "robustprune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBUSTPRUNE_", "PYTHONPATH", "PIP_"))}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(base / "dist"), str(src)],
        base,
        env,
    )
    (wheel,) = (base / "dist").glob("robustprune-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for shipped in ("attacks/quick.toml", "attacks/fast.toml", "defenses/dense.toml", "defenses/pgd_at.toml"):
        assert f"robustprune/builtin/{shipped}" in names, f"the wheel lacks {shipped}"
    assert "robustprune/results/schema/score_result.schema.json" in names
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("jsonschema") for r in runtime), runtime

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], base, env)
    # The dependencies: this interpreter's site directories, appended after the venv's own (which holds robustprune).
    # Their .pth files are not processed, so an editable install of the checkout stays out of the venv.
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    outer = dict.fromkeys(
        p
        for p in [*sys.path, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        if p and Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()
    )
    (purelib / "_robustprune_test_deps.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")

    # Every declared runtime dependency is installed where the wheel runs, and robustprune is the wheel's.
    names_only = [r.split(";")[0].split("[")[0] for r in runtime]
    check = (
        "import importlib.metadata as m, re, robustprune, sys\n"
        f"for req in {names_only!r}:\n"
        "    m.version(re.split('[<>=!~ ]', req)[0])\n"
        "print(robustprune.__file__)\n"
    )
    where = _run([str(python), "-c", check], base, env).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    script = venv / ("Scripts/robustprune.exe" if os.name == "nt" else "bin/robustprune")
    assert script.exists()
    return script, env


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory far from the checkout, holding decoys: ./attacks/quick.toml and ./defenses/dense.toml
    would change the run's battery and recipe names if robustprune looked there."""
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "quick.toml").write_text(
        'name = "decoy"\nnorm = "Linf"\neps = 0.3\n[[attack]]\nname = "fgsm"\n', encoding="utf-8"
    )
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "dense.toml").write_text('name = "decoy"\ndefense = "standard"\n', encoding="utf-8")
    return tmp_path


def test_ls_from_another_directory_lists_the_built_ins(installed, elsewhere: Path) -> None:
    script, env = installed
    out = _run([str(script), "ls"], elsewhere, env).stdout
    lines = {line.split(":", 1)[0].strip(): line for line in out.splitlines()}
    for name in ("quick", "fast", "standard", "autoattack"):
        assert name in lines["batteries"], out
    for name in ("dense", "pgd_at", "magnitude"):
        assert name in lines["recipes"], out
    assert "decoy" not in out and "from " not in out, out  # no user directory was given
    assert str(script.parents[1]) in lines["built-in batteries and recipes"], out


def test_score_and_train_from_another_directory_use_the_built_ins(installed, elsewhere: Path) -> None:
    script, env = installed
    common = ["--threads", "1", "--seed", "0"]
    score = [str(script), "score", "--model", "mlp", *RANDOM_INIT, "--battery", "quick", "--n", "8", "--out", "score"]
    _run([*score, *common], elsewhere, env)
    doc = json.loads((elsewhere / "score" / "results.json").read_text(encoding="utf-8"))
    assert doc["battery"] == "quick" and doc["eps"] == 0.1  # not the decoy in ./attacks (eps 0.3)
    assert doc["provenance"]["battery"]["source"] == "builtin:quick"

    out = _run(
        [str(script), "train", "--recipe", "dense", "--epochs", "1", "--out", "train", *common], elsewhere, env
    ).stdout
    assert "trained dense" in out, out
    manifest = json.loads((elsewhere / "train" / "model.manifest.json").read_text(encoding="utf-8"))
    assert manifest["recipe"]["name"] == "dense" and manifest["recipe"]["source"] == "builtin:dense"


def test_a_user_directory_is_used_only_when_given_and_is_recorded(installed, elsewhere: Path) -> None:
    script, env = installed
    mine = elsewhere / "mine"
    mine.mkdir()
    (mine / "quick.toml").write_text(
        'name = "my-quick"\nnorm = "Linf"\neps = 0.05\n[[attack]]\nname = "fgsm"\n', encoding="utf-8"
    )
    listed = _run([str(script), "ls", "--battery-dir", "mine"], elsewhere, env).stdout
    assert f"from {mine.resolve()}: quick (shadows builtin:quick)" in listed, listed
    score = [str(script), "score", "--model", "mlp", *RANDOM_INIT, "--battery", "quick", "--n", "8"]
    proc = _run([*score, "--battery-dir", "mine", "--out", "mine-score", "--threads", "1"], elsewhere, env)
    assert "not the built-in" in proc.stderr, proc.stderr
    doc = json.loads((elsewhere / "mine-score" / "results.json").read_text(encoding="utf-8"))
    assert doc["battery"] == "my-quick" and doc["eps"] == 0.05
    assert doc["provenance"]["battery"]["source"] == str((mine / "quick.toml").resolve())
