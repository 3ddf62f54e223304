"""Contrastive latent-space defense (student report, seeds/001): the losses against hand-written
loops, contrastive training tightens the classes in the latent space, LatentNN is the brute-force
1-NN and is attackable, determinism, the 2-D views and their PNG, one-line errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import SGD, tiny_cnn
from sparring.attacks import pgd
from sparring.defenses import DEFENSES
from sparring.defenses.contrastive import LatentNN, contrastive_loss, contrastive_training, triplet_loss
from sparring.defenses.latent import latent_features, latent_view
from sparring.errors import ConfigError, InputError, SparringError, UnknownNameError
from sparring.report import plot_latent
from sparring.threat import Norm, ThreatModel
from sparring.training import TrainSettings, evaluate_accuracy, train

LAYER = "5"  # tiny_cnn: Conv, ReLU, MaxPool, Flatten, Linear(128, 32), ReLU (the 32-d latent vector), Linear
RECIPE = dict(settings=SGD.replace(epochs=8, batch_size=32, optimizer="adam", lr=1e-2, weight_decay=0.0), seed=0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data / 16, dtype=torch.float32).view(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, torch.tensor(data.target), test_size=0.25, random_state=0)
    return x_tr, y_tr, x_te, y_te


@pytest.fixture(scope="module")
def trained(digits: tuple[torch.Tensor, ...]) -> tuple[torch.nn.Module, torch.nn.Module, list]:
    """(plain cross-entropy, contrastive) tiny_cnn, same init, seed, epochs and optimizer."""
    x, y = digits[0], digits[1]
    plain = tiny_cnn()
    train(plain, x, y, **RECIPE)  # type: ignore[arg-type]
    model, history = contrastive_training(tiny_cnn(), x, y, layer=LAYER, margin=2.0, **RECIPE)  # type: ignore[arg-type]
    return plain, model, history


def _ratio(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean intra-class distance / mean inter-class distance of the latent vectors."""
    z = latent_features(model, LAYER, x)
    d, same = torch.cdist(z, z), y[:, None] == y[None, :]
    return float(d[same & ~torch.eye(len(y), dtype=torch.bool)].mean() / d[~same].mean())


def test_registered() -> None:
    meta = DEFENSES.meta("contrastive")
    assert DEFENSES.get("contrastive").target is contrastive_training
    assert meta["kind"] == "training" and meta["differentiable"] is True and meta["random"] is False
    assert meta["params"] == {"layer": "penultimate", "margin": 2.0, "weight": 1.0, "pairs": "batch", "per_class": 5}
    assert "Hadsell" in meta["paper"]

    net = tiny_cnn()
    nn1 = LatentNN(net, "penultimate", torch.rand(20, 1, 8, 8), torch.arange(2).repeat(10), per_class=2)
    assert nn1.differentiable is True and nn1.random is False and nn1.for_attack() is nn1
    x = torch.rand(5, 1, 8, 8)  # "penultimate" = the input of the last Linear = the output of the ReLU "5"
    assert torch.equal(latent_features(net, "penultimate", x), latent_features(net, "5", x))
    with pytest.raises(InputError, match="no.*Linear|has none"):
        latent_features(torch.nn.Sequential(torch.nn.Flatten()), "penultimate", x)


def test_contrastive_loss_matches_double_loop() -> None:
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 0, 2, 1, 1, 0])
    for margin in (2.0, 0.5):
        terms = []
        for i, j in itertools.combinations(range(7), 2):
            d = float(torch.sqrt(((z[i] - z[j]) ** 2).sum()))
            terms.append(d**2 if y[i] == y[j] else max(0.0, margin - d) ** 2)
        assert float(contrastive_loss(z, y, margin=margin)) == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    ring = [float(((z[i] - z[(i + 1) % 7]) ** 2).sum()) for i in range(7)]
    expect = [r if y[i] == y[(i + 1) % 7] else max(0.0, 2.0 - r**0.5) ** 2 for i, r in enumerate(ring)]
    assert float(contrastive_loss(z, y, pairs="random")) == pytest.approx(sum(expect) / 7, rel=1e-10)
    assert float(contrastive_loss(z[:1], y[:1])) == 0.0


def test_triplet_loss_matches_triple_loop() -> None:
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 0])
    pos = z + 0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    dist = lambda a, b: float(torch.sqrt(((a - b) ** 2).sum()))  # noqa: E731
    same = [max(0.0, dist(z[a], z[p]) - dist(z[a], z[n]) + 2.0) for a, p, n in itertools.product(range(6), repeat=3)
            if a != p and y[a] == y[p] and y[n] != y[a]]  # fmt: skip
    assert float(triplet_loss(z, y, margin=2.0)) == pytest.approx(sum(same) / len(same), rel=1e-10)
    adv = [max(0.0, dist(z[a], pos[a]) - dist(z[a], z[n]) + 1.0) for a in range(6) for n in range(6) if y[n] != y[a]]
    assert float(triplet_loss(z, y, margin=1.0, positive=pos)) == pytest.approx(sum(adv) / len(adv), rel=1e-10)
    assert float(triplet_loss(z, torch.zeros(6, dtype=torch.long))) == 0.0  # one class: no triplet


def test_contrastive_training_tightens_classes(trained: tuple, digits: tuple[torch.Tensor, ...]) -> None:
    plain, model, history = trained
    x_te, y_te = digits[2], digits[3]
    r_plain, r_contrastive = _ratio(plain, x_te, y_te), _ratio(model, x_te, y_te)
    # measured (held-out digits, 8 epochs): about 0.50 for cross-entropy, 0.36 with the contrastive term
    assert r_contrastive < 0.85 * r_plain, (r_plain, r_contrastive)
    assert len(history) == 8 and history[-1]["latent_loss"] < history[0]["latent_loss"]
    assert not model.training and evaluate_accuracy(model, x_te, y_te) > 0.9


def test_latent_nn_is_brute_force_1nn(trained: tuple, digits: tuple[torch.Tensor, ...]) -> None:
    _, model, _ = trained
    x_tr, y_tr, x_te, y_te = digits
    nn1 = LatentNN(model, LAYER, x_tr, y_tr, per_class=5, seed=0)
    assert len(nn1.index) == 50 and torch.equal(torch.bincount(y_tr[nn1.index]), torch.full((10,), 5))
    refs, ref_y = latent_features(model, LAYER, x_tr[nn1.index]), y_tr[nn1.index]
    d = torch.cdist(latent_features(model, LAYER, x_te), refs)
    with torch.no_grad():
        logits = nn1(x_te)
    assert logits.shape == (len(x_te), 10)
    assert torch.equal(logits.argmax(1), ref_y[d.argmin(1)])
    assert torch.allclose(logits.max(1).values, -d.min(1).values, atol=1e-4)
    accuracy = evaluate_accuracy(nn1, x_te, y_te)
    assert accuracy > 0.85, accuracy  # measured 0.96


def test_latent_nn_gradients_flow_and_attacks_apply(trained: tuple, digits: tuple[torch.Tensor, ...]) -> None:
    _, model, _ = trained
    nn1 = LatentNN(model, LAYER, digits[0], digits[1], per_class=5)
    x, y = digits[2][:64], digits[3][:64]
    xg = x.clone().requires_grad_(True)
    nn1(xg).gather(1, y[:, None]).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    x_adv = pgd(nn1, x, y, threat=ThreatModel(Norm.LINF, 0.3), steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (nn1(x_adv).argmax(1) == y).float().mean() < (nn1(x).argmax(1) == y).float().mean()


def test_determinism_and_triplet_variants(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:256], digits[1][:256]
    fast = dict(settings=TrainSettings(epochs=1, batch_size=64, lr=1e-2))
    runs = []
    for seed, attack in ((3, "pgd"), (3, "pgd"), (4, "pgd"), (3, "fgsm"), (3, None)):
        model, history = contrastive_training(tiny_cnn(), x, y, layer=LAYER, triplet=True, attack=attack, seed=seed,
                                              threat=ThreatModel(Norm.LINF, 0.1), attack_steps=2,
                                              **fast)  # type: ignore[arg-type]
        assert history[0]["latent_loss"] > 0 and all(p.requires_grad for p in model.parameters())
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], runs[3]) and not torch.equal(runs[3], runs[4])
    a, b = (contrastive_training(tiny_cnn(), x, y, layer="4", pairs="random", seed=1, **fast)[0] for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    picks = [LatentNN(a, "4", x, y, per_class=3, seed=s).index for s in (0, 0, 1)]
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


def test_features_taken_before_an_inplace_relu(digits: tuple[torch.Tensor, ...]) -> None:
    from sparring.models import build_model

    torch.manual_seed(0)
    model = build_model("digits-cnn")  # net.classifier.1 = Linear, followed by ReLU(inplace=True)
    assert float(latent_features(model, "net.classifier.1", digits[2][:32]).min()) < 0
    assert float(latent_features(model, "net.classifier.2", digits[2][:32]).min()) >= 0


def test_latent_view_and_plot(trained: tuple, digits: tuple[torch.Tensor, ...], tmp_path) -> None:
    plain, model, _ = trained
    x, y = digits[2][:40], digits[3][:40]
    x_adv = pgd(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), steps=3, generator=torch.Generator().manual_seed(0))
    before, after = latent_view(plain, LAYER, x, y), latent_view(model, LAYER, x, y, x_adv=x_adv)
    assert before["clean"].shape == (40, 2) and before["adversarial"] is None and before["labels"].shape == (40,)
    assert after["adversarial"].shape == (40, 2) and (after["labels"] == y.numpy()).all()
    tsne = latent_view(model, LAYER, x, y, method="tsne", x_adv=x_adv)
    assert tsne["clean"].shape == (40, 2) and tsne["adversarial"].shape == (40, 2)
    again = latent_view(model, LAYER, x, y, method="tsne", x_adv=x_adv)
    assert (again["clean"] == tsne["clean"]).all()  # fixed random_state
    path = plot_latent([before, after], tmp_path / "latent.png", titles=["cross-entropy", "contrastive"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp"))


def test_one_line_errors(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:64], digits[1][:64]
    model = tiny_cnn()
    cases = [
        (UnknownNameError, "0, 1, 2", lambda: contrastive_training(model, x, y, layer="fc", settings=TrainSettings(epochs=1))),
        (InputError, "margin", lambda: contrastive_training(model, x, y, layer=LAYER, margin=0.0)),
        (InputError, "margin", lambda: contrastive_loss(torch.zeros(3, 2), torch.zeros(3), margin=-1)),
        (InputError, "pairs", lambda: contrastive_training(model, x, y, layer=LAYER, pairs="all")),
        (ConfigError, "triplet", lambda: contrastive_training(model, x, y, layer=LAYER, attack="pgd")),
        (InputError, "attack", lambda: contrastive_training(model, x, y, layer=LAYER, triplet=True, attack="cw")),
        (InputError, "per_class", lambda: LatentNN(model, LAYER, x, y, per_class=0)),
        (InputError, "per_class", lambda: LatentNN(model, LAYER, x, y, per_class=50)),
        (UnknownNameError, "layer", lambda: LatentNN(model, "7", x, y)),
        (InputError, "method", lambda: latent_view(model, LAYER, x, y, method="umap")),
        (InputError, "x_adv", lambda: latent_view(model, LAYER, x, y, x_adv=x[:3])),
        (InputError, "latent_view", lambda: plot_latent({"x": 1}, "unused.png")),
    ]
    for kind, needle, call in cases:
        with pytest.raises(kind) as info:
            call()
        assert isinstance(info.value, SparringError) and needle in str(info.value) and "\n" not in str(info.value)
    assert "expected" in str(pytest.raises(InputError, LatentNN, model, LAYER, x, y, per_class=50).value)
