"""The verifier's parts on nets small enough to know the truth: the walk equals the model (masked weights
included), CROWN is sound at sampled points of the ball, IBP is never the tighter one, and the MILP agrees with
an exhaustive grid search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from robustprune.models.layers import Normalize
from robustprune.verify.bounds import CERTIFY_TOLERANCE, IBP_SLACK, certified, margin_bounds
from robustprune.verify.milp import exact_search
from robustprune.verify.network import NotVerifiable, walk


def tiny(seed: int, hidden: int = 8, classes: int = 3) -> nn.Module:
    """2 -> 8 -> 8 -> 3: small enough that a grid over the 2-d ball is the truth."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    return net.eval()


def small_conv(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize((0.5,), (0.5,)),
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3).eval(),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 10),
        nn.ReLU(),
        nn.Linear(10, 3),
    ).eval()


def _margins(net: nn.Module, points: torch.Tensor, label: int) -> torch.Tensor:
    """min over t != label of z_label - z_t at each point (float64)."""
    with torch.no_grad():
        z = net.double()(points.double())
        net.float()
    others = torch.cat([z[:, :label], z[:, label + 1 :]], dim=1)
    return z[:, label] - others.max(dim=1).values


def _grid(x: torch.Tensor, eps: float, steps: int = 201) -> torch.Tensor:
    axes = [torch.linspace(max(0.0, float(v) - eps), min(1.0, float(v) + eps), steps, dtype=torch.float64) for v in x]
    a, b = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)


def test_the_walk_equals_the_model_including_batchnorm_maxpool_and_normalize():
    net = small_conv(0)
    x = torch.rand(16, 1, 4, 4)
    network = walk(net, x, 3)
    assert network.check_equal(net, x) < 1e-5
    assert network.n_relus > 0


def test_a_masked_model_is_walked_with_its_effective_weights_before_the_mask_is_folded():
    net = tiny(1)
    prune.l1_unstructured(net[0], "weight", amount=0.75)  # weight_orig and weight_mask, not folded
    assert hasattr(net[0], "weight_orig") and (net[0].weight_orig != 0).all()
    x = torch.rand(8, 2)
    network = walk(net, x, 3)
    expected = (net[0].weight_orig * net[0].weight_mask).double()
    assert torch.equal(network.pieces[0].weight, expected)
    assert network.check_equal(net, x) < 1e-6


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 3)), "Sigmoid"),
        (nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)), "Tanh"),
    ],
)
def test_an_unsupported_layer_is_refused_naming_it(model, reason):
    with pytest.raises(NotVerifiable, match=reason):
        walk(model.eval(), torch.rand(4, 2), 3)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class DoubledLogits(nn.Module):
    """Layers the walk can read, arithmetic after them it cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(x) * 2


@pytest.mark.parametrize("model", [Residual(), DoubledLogits()])
def test_a_graph_the_walk_cannot_read_is_refused(model):
    with pytest.raises(NotVerifiable):
        network = walk(model.eval(), torch.rand(4, 2), 3)
        network.check_equal(model, torch.rand(4, 2))


@pytest.mark.parametrize("intermediate", [True, False], ids=["crown", "crown-ibp"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_crown_never_exceeds_the_true_margin_at_sampled_points_of_the_ball(norm, intermediate):
    generator = torch.Generator().manual_seed(0)
    for seed in range(4):
        net = small_conv(seed)
        x = torch.rand(6, 1, 4, 4, generator=generator)
        network = walk(net, x, 3)
        for i, eps in itertools.product(range(len(x)), (0.02, 0.1, 0.3)):
            label = int(net(x[i : i + 1]).argmax())
            interval, crown = margin_bounds(network, x[i], label, norm, eps, intermediate=intermediate)
            if not intermediate:  # CROWN-IBP is looser than CROWN, and still tighter than IBP
                _, full = margin_bounds(network, x[i], label, norm, eps)
                assert (crown.margins <= full.margins + 1e-9).all() and (crown.margins >= interval.margins - 1e-9).all()
            flat = x[i].reshape(-1).double()
            if norm == "Linf":
                signs = torch.randint(0, 2, (200, flat.numel()), generator=generator).double() * 2 - 1
                noise = torch.rand(200, flat.numel(), generator=generator, dtype=torch.float64) * 2 - 1
                points = flat + eps * torch.cat([signs, noise])  # corners and inner points
            else:
                direction = torch.randn(400, flat.numel(), generator=generator, dtype=torch.float64)
                radius = eps * torch.rand(400, 1, generator=generator, dtype=torch.float64) ** (1 / flat.numel())
                points = flat + direction / direction.norm(dim=1, keepdim=True) * radius
            points = points.clamp(0, 1)  # still inside the ball: x is in the box
            z = network.forward(points)
            others = [t for t in range(3) if t != label]
            true = z[:, label : label + 1] - z[:, others]
            assert (true.min(dim=0).values >= crown.margins - 1e-9).all(), (seed, i, eps)


def test_ibp_is_never_tighter_than_crown_beyond_rounding():
    generator = torch.Generator().manual_seed(1)
    for seed in range(6):
        net = small_conv(seed)
        x = torch.rand(4, 1, 4, 4, generator=generator)
        network = walk(net, x, 3)
        for i, eps, norm in itertools.product(range(len(x)), (0.01, 0.05, 0.2, 0.5), ("Linf", "L2")):
            interval, crown = margin_bounds(network, x[i], 0, norm, eps)
            assert (interval.margins <= crown.margins + IBP_SLACK).all()
            # and CROWN's every pre-activation bound lies inside IBP's
            for (ilo, ihi), (clo, chi) in zip(interval.pre, crown.pre):
                assert (clo >= ilo - IBP_SLACK).all() and (chi <= ihi + IBP_SLACK).all()


def test_the_milp_agrees_with_a_dense_grid_search_on_tiny_nets():
    """The ground truth of a 2-d ball is a fine grid: where its worst margin is clearly negative there must be a
    counterexample, where it is clearly positive the MILP must prove robustness (examples within the grid's
    resolution of the boundary are left out, and there must be plenty of both kinds)."""
    agreed = {"counterexample": 0, "proved": 0}
    generator = torch.Generator().manual_seed(2)
    for seed in range(8):
        net = tiny(seed)
        network = walk(net, torch.rand(4, 2), 3)
        for eps in (0.1, 0.25, 0.5) * 3:
            x = torch.rand(2, generator=generator, dtype=torch.float64)
            label = int(network.forward(x[None]).argmax())
            worst = float(_margins(net, _grid(x, eps), label).min())
            if abs(worst) < 0.02:
                continue
            _, crown = margin_bounds(network, x, label, "Linf", eps)
            outcome = exact_search(network, crown, x, label, eps, time_limit=5.0)
            expected = "counterexample" if worst < 0 else "proved"
            assert outcome.status == expected, (seed, x.tolist(), worst, outcome)
            if outcome.status == "counterexample":
                point = outcome.x
                assert (point - x).abs().max() <= eps + 1e-6 and point.min() >= -1e-7 and point.max() <= 1 + 1e-7
                assert float(_margins(net, point[None], label)) < 0  # it really crosses the boundary
            agreed[expected] += 1
    assert agreed["counterexample"] >= 5 and agreed["proved"] >= 5, agreed


def test_the_milp_on_a_conv_net_never_proves_what_pgd_breaks_and_its_counterexamples_are_real():
    net = small_conv(5)  # a seed whose random net predicts all three classes over the box
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(12, 1, 4, 4, generator=generator)
    network = walk(net, x, 3)
    seen = set()
    for i in range(len(x)):
        eps = (0.02, 0.1)[i % 2]
        label = int(net(x[i : i + 1]).argmax())
        _, crown = margin_bounds(network, x[i], label, "Linf", eps)
        outcome = exact_search(network, crown, x[i], label, eps, time_limit=10.0)
        seen.add(outcome.status)
        # random search with many restarts: a break it finds means the MILP may not say proved
        flat = x[i].reshape(-1).double()
        points = flat + eps * (torch.rand(4000, flat.numel(), generator=generator, dtype=torch.float64) * 2 - 1)
        points = torch.cat([points, flat + eps * torch.sign(torch.randn(4000, flat.numel(), generator=generator))])
        found = bool((_margins(net, points.clamp(0, 1).reshape(-1, 1, 4, 4), label) < 0).any())
        if found:
            assert outcome.status == "counterexample"
        if outcome.status == "counterexample":
            assert float(_margins(net, outcome.x.reshape(1, 1, 4, 4), label)) < 0
        if certified(crown):
            assert outcome.status == "proved" and float(crown.margins.min()) > CERTIFY_TOLERANCE
    assert "counterexample" in seen and "proved" in seen, seen


def _halfplane() -> nn.Module:
    """Class 0 where x0 < 0.5, class 1 beyond: the boundary is known exactly."""
    net = nn.Sequential(nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -0.5]))
    return net


def test_the_milp_gives_unknown_when_its_time_runs_out_and_answers_given_time():
    net = _halfplane()
    x = torch.tensor([0.4, 0.5], dtype=torch.float64)
    network = walk(net, x[None].float(), 2)
    _, crown = margin_bounds(network, x, 0, "Linf", 0.15)
    assert exact_search(network, crown, x, 0, 0.15, time_limit=0.0).status == "unknown"
    found = exact_search(network, crown, x, 0, 0.15, time_limit=5.0)
    assert found.status == "counterexample" and float(found.x[0]) >= 0.5
    _, crown = margin_bounds(network, x, 0, "Linf", 0.05)
    assert certified(crown)  # a linear net: CROWN is exact


def test_a_grid_is_what_the_tests_above_take_for_the_truth():
    """The grid itself: a known linear boundary x0 = 0.5 at distance 0.1 is found at eps 0.15, not at eps 0.05."""
    net = _halfplane()
    x = torch.tensor([0.4, 0.5], dtype=torch.float64)
    assert float(_margins(net, _grid(x, 0.15), 0).min()) < 0 < float(_margins(net, _grid(x, 0.05), 0).min())
    assert np.isclose(float(_margins(net, x[None], 0)), 0.2)


def test_a_network_beyond_the_size_guard_is_refused_before_any_matrix_is_built():
    from robustprune.models import build_model

    cnn = build_model("digits_cnn", 10, (1, 8, 8)).eval()
    with pytest.raises(NotVerifiable, match=r"about 15,488 ReLUs are beyond the size guard \(4,096\)"):
        walk(cnn, torch.rand(2, 1, 8, 8), 10, max_relus=4096)
    assert walk(cnn, torch.rand(2, 1, 8, 8), 10).n_relus == 15_488  # the estimate is the walk's own count


def test_a_program_beyond_its_size_guard_is_not_built(monkeypatch):
    from robustprune.verify import certify as certify_module

    net = tiny(0)
    x = torch.rand(6, 2)
    network = walk(net, x, 3)
    monkeypatch.setattr(certify_module, "MAX_PROGRAM_NONZEROS", 10)
    labels = network.forward(x).argmax(1)
    run = certify_module.certify_examples(
        network, x, labels, norm="Linf", eps=0.3, bound=np.ones(6, bool), search=np.ones(6, bool), time_limit=5,
        budget=5,
    )  # fmt: skip
    assert "beyond the 10 it builds" in run.exact_skipped and not run.proved.any()
    assert all("beyond the 10" in reason for reason in run.unknown_reason.values())
