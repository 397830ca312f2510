"""Architecture registry, Normalize, and `package.module:factory` import paths."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.models import MODELS, Normalize, build_model

SHAPES = {"mlp": (1, 8, 8), "digits_cnn": (1, 8, 8), "vgg11": (3, 32, 32), "preact_resnet18": (3, 32, 32)}


@pytest.fixture
def one_thread():
    # Small convs are far slower with 2 threads on a busy 2-core box than with one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_required_models_registered():
    assert set(SHAPES) <= set(MODELS.names())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_registered_model_contract(name, one_thread):
    shape = SHAPES[name]
    channels = shape[0]
    model = build_model(name, 7, shape, mean=(0.5,) * channels, std=(0.25,) * channels)
    assert not model.training
    assert all(not m.training for m in model.modules())
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    assert not first.identity
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Normalize holds no persistent tensors, so checkpoints carry only learned weights.
    assert not any("normalize" in k for k in model.state_dict())


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 5, 7)])
def test_small_models_take_other_input_shapes(shape):
    for name in ("mlp", "digits_cnn"):
        model = build_model(name, 3, shape)
        with torch.no_grad():
            assert model(torch.rand(2, *shape)).shape == (2, 3)
    # The same keys for every input size, so a checkpoint's keys never depend on the dataset's image size.
    assert (
        build_model("digits_cnn", 3, shape).state_dict().keys()
        == build_model("digits_cnn", 3, (1, 8, 8)).state_dict().keys()
    )


def test_digits_cnn_has_no_batchnorm():
    model = build_model("digits_cnn", 10, (1, 8, 8))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_vgg11_width_and_batchnorm():
    narrow = build_model("vgg11", 10, (3, 32, 32), width=16)
    standard = build_model("vgg11", 10, (3, 32, 32))
    assert any(isinstance(m, nn.BatchNorm2d) for m in standard.modules())
    convs = [m.out_channels for m in standard.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)] == [c // 4 for c in convs]
    with torch.no_grad():
        assert narrow(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_preact_resnet18_layout():
    model = build_model("preact_resnet18", 10, (3, 32, 32))
    keys = model.state_dict().keys()
    # Names of the Wong et al. / Rice et al. fast-AT code, so their checkpoints load.
    for key in ("conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"):
        assert key in keys
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 20  # 1 stem + 16 block convs + 3 shortcuts
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000


def test_normalize_math():
    norm = Normalize((0.5, 0.25), (0.5, 2.0))
    assert norm.mean.shape == (1, 2, 1, 1) and norm.std.shape == (1, 2, 1, 1)
    x = torch.rand(3, 2, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], dim=1)
    assert torch.allclose(norm(x), expected)
    identity = Normalize()
    assert identity.identity
    assert torch.equal(identity(x), x)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_normalize_is_scriptable_and_moves_with_the_model():
    norm = torch.jit.script(Normalize((0.5,), (0.5,)))
    assert torch.allclose(norm(torch.ones(1, 1, 2, 2)), torch.ones(1, 1, 2, 2))
    assert {n for n, _ in Normalize((0.5,), (0.5,)).named_buffers()} == {"mean", "std"}


@pytest.mark.parametrize(("mean", "std"), [((0.5, 0.5), (0.5,)), ((0.5,), (0.0,)), ((float("nan"),), (1.0,))], ids=str)
def test_normalize_rejects_bad_values(mean, std):
    with pytest.raises(UsageError):
        Normalize(mean, std)


@pytest.mark.parametrize(
    ("name", "num_classes", "shape", "kwargs"),
    [
        ("mlp", 1, (1, 8, 8), {}),
        ("mlp", 10, (8, 8), {}),
        ("mlp", 10, (1, 0, 8), {}),
        ("digits_cnn", 10, (3, 8, 8), {"mean": (0.5,), "std": (0.5,)}),
        ("vgg11", 10, (1, 8, 8), {}),
        ("vgg11", 10, (3, 32, 32), {"width": 0}),
        ("mlp", 10, (1, 8, 8), {"width": 32}),
        ("resnet18", 10, (3, 32, 32), {}),
    ],
)
def test_bad_model_arguments(name, num_classes, shape, kwargs):
    with pytest.raises(UsageError) as err:
        build_model(name, num_classes, shape, **kwargs)
    assert "\n" not in str(err.value)


def test_unknown_name_suggests_near_match():
    with pytest.raises(UsageError, match="digits_cnn"):
        build_model("digits_cn", 10, (1, 8, 8))


def test_digits_cnn_trains_on_digits(one_thread):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = build_model("digits_cnn", 10, (1, 8, 8)).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(x_tr), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (model.eval()(x_te).argmax(1) == y_te).float().mean().item()
    assert acc >= 0.95


# ------------------------------------------------------------------ import paths

FACTORY_MODULE = textwrap.dedent(
    """
    from torch import nn
    from robustprune.models import Normalize

    def tiny(num_classes, input_shape, mean=None, std=None, hidden=4):
        c, h, w = input_shape
        return nn.Sequential(Normalize(mean, std), nn.Flatten(), nn.Linear(c * h * w, hidden),
                             nn.Linear(hidden, num_classes))

    def not_a_model(num_classes, input_shape, mean=None, std=None):
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"rp_user_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY_MODULE)
    (tmp_path / "rp_broken_models.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.modules.pop("rp_broken_models", None)


def test_import_path_factory(factory_module):
    model = build_model(f"{factory_module}:tiny", 3, (1, 4, 4), hidden=5, mean=(0.5,), std=(0.5,))
    assert isinstance(model, nn.Sequential)
    assert not model.training
    assert model[2].out_features == 5
    with torch.no_grad():
        assert model(torch.rand(2, 1, 4, 4)).shape == (2, 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rp_no_such_module_xyz:f", r"cannot import 'rp_no_such_module_xyz' for --model rp_no_such_module_xyz:f"),
        ("{mod}:missing", r"{mod} has no attribute 'missing'"),
        ("{mod}:not_a_model", r"returned a int, not a torch\.nn\.Module"),
        ("{mod}:NOT_CALLABLE", r"not a factory"),
        ("{mod}:tiny:extra", r"--model needs the form package\.module:factory"),
        (":tiny", r"--model needs the form package\.module:factory"),
        ("{mod}:", r"--model needs the form package\.module:factory"),
        ("rp_broken_models:f", r"cannot import 'rp_broken_models'.*boom at import"),
    ],
)
def test_import_path_failures(factory_module, spec, message):
    spec = spec.format(mod=factory_module)
    with pytest.raises(UsageError, match=message.format(mod=factory_module)) as err:
        build_model(spec, 3, (1, 4, 4))
    assert "\n" not in str(err.value)


def test_import_path_with_wrong_arguments(factory_module):
    with pytest.raises(UsageError, match="does not take the argument .depth."):
        build_model(f"{factory_module}:tiny", 3, (1, 4, 4), depth=3)
