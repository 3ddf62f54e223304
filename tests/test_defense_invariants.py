"""The shared defense suite: every registered DefenseSpec (plugins included), built from its declared defaults
on a tiny network (trained or fitted for one epoch when the spec trains), must keep what it declares.

- differentiable: the deployed model passes torch.autograd.gradcheck (a random one under a fixed seed);
  otherwise for_attack() exists, gives the same forward values bit for bit and a finite, non-zero gradient;
- random: two forward passes of the same batch differ; otherwise they are equal;
- the flags of the deployed model (is_differentiable / is_random) are the spec's;
- every surrogate() of a deployed module keeps the shape of its module's output;
- parameters: the defaults pass the spec's own check; an unknown name is a one-line ConfigError.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from sparring.config import TrainSettings
from sparring.data import load_dataset
from sparring.defenses import (
    DEFENSES,
    Context,
    DefenseSpec,
    SmoothedClassifier,
    apply_defenses,
    is_differentiable,
    is_random,
)
from sparring.errors import ConfigError
from sparring.models import build_model
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel

TINY = TrainSettings(epochs=1, batch_size=32, lr=2e-3)
FAST_PARAMS = {"autoencoder": {"epochs": 1, "width": 4}, "binary-detector": {"epochs": 1, "train": 64, "hidden": 8},
               "reconstruction-detector": {"epochs": 1, "train": 64, "width": 4},
               "pgd-at": {"steps": 2}, "trades": {"steps": 2}, "contrastive": {"per_class": 2}}


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return dataclasses.replace(ds, x_train=ds.x_train[:96], y_train=ds.y_train[:96])


def _net(ds) -> nn.Module:
    """mnist-small on 8x8 images: a Normalized network with the noise slots noise1 / noise2."""
    torch.manual_seed(0)
    return build_model("mnist-small", num_classes=10, in_channels=1, image_size=8, mean=ds.mean, std=ds.std)


def _params(spec: DefenseSpec) -> tuple[dict, dict]:
    """The spec's checked defaults (fast ones where training is long), as the chain entry records them, and
    as ``train`` gets them: a "models" parameter (ensemble-at's surrogates) is a name in the entry and
    trained modules for training, as sparring.experiment does."""
    models = [p.name for p in spec.params if p.kind == "models"]
    checked = spec.check({**FAST_PARAMS.get(spec.name, {}), **{m: "surrogate" for m in models}})
    return checked, {**checked, **{m: [_tiny_trained(i)] for i, m in enumerate(models)}}


_SURROGATE: dict[int, nn.Module] = {}


def _tiny_trained(i: int) -> nn.Module:
    if i not in _SURROGATE:
        ds = load_dataset("digits")
        from sparring.training import train

        net = _net(ds)
        train(net, ds.x_train[:96], ds.y_train[:96], TINY, seed=10 + i)
        _SURROGATE[i] = net.eval()
    return _SURROGATE[i]


def _deployed(spec: DefenseSpec, ds) -> nn.Module | SmoothedClassifier:
    """What the spec deploys on a tiny network, trained / fitted / built with its (fast) defaults."""
    checked, params = _params(spec)
    context = Context(ds, TINY, 0, "cpu", ThreatModel(Norm.LINF, 0.1), attack="fgsm")
    model: nn.Module = _net(ds)
    if spec.detector is not None and not spec.deployed and spec.train is None:
        return spec.detector(model.eval(), context, params).eval()
    parts, entry = {}, {"name": spec.name, "params": checked}
    if spec.fit is not None:
        fitted = spec.fit(context, params)
        parts, entry = fitted.parts, {**entry, **fitted.entry}
    model = apply_defenses(model, [entry], parts)
    if spec.train is not None:
        model = spec.train(model, context, params).model
    model = model.eval()
    if spec.kind == "certified":  # the defense is the smoothed classifier around the trained base
        return spec.target(model, params["sigma"], ds.num_classes)
    return model


def _forward(model: nn.Module | SmoothedClassifier, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, SmoothedClassifier):
        return model.counts(x, 32).double()
    return model(x)


SPECS = DEFENSES.names()


@pytest.fixture(scope="module")
def deployed(digits):
    cache: dict[str, nn.Module | SmoothedClassifier] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _deployed(DEFENSES.get(name), digits)
        return cache[name]

    return get


@pytest.mark.parametrize("name", SPECS)
def test_declared_flags_hold(name, deployed, digits):
    spec, model = DEFENSES.get(name), deployed(name)
    x = digits.x_test[:8]
    with torch.no_grad():
        a, b = _forward(model, x), _forward(model, x)
    assert (not torch.equal(a, b)) == spec.random, "two forward passes of a random defense must differ"
    if isinstance(model, nn.Module):
        assert is_random(model) == spec.random and is_differentiable(model) == spec.differentiable


@pytest.mark.parametrize("name", SPECS)
def test_differentiable_means_gradcheck_and_otherwise_bpda(name, deployed, digits):
    spec, model = DEFENSES.get(name), deployed(name)
    if not isinstance(model, nn.Module):
        assert not spec.differentiable  # the smoothed classifier: a Monte-Carlo vote, no gradient at all
        return
    x = digits.x_test[:2].double().clamp(0.05, 0.95).requires_grad_(True)
    if spec.differentiable:
        double = model.double()

        def fn(inputs: torch.Tensor) -> torch.Tensor:
            with torch.random.fork_rng():
                torch.manual_seed(0)  # a random defense draws the same noise at every evaluation
                return double(inputs)

        try:
            assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-4, rtol=1e-3, nondet_tol=1e-12)
        finally:
            model.float()
        return
    attack = model.for_attack()
    with torch.no_grad():
        assert torch.equal(attack(x.float()), model(x.float()))  # BPDA keeps the forward values bit for bit
    xf = x.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(attack(xf).sum(), xf)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("name", SPECS)
def test_surrogates_keep_shapes(name, deployed, digits):
    model = deployed(name)
    if not isinstance(model, nn.Module):
        return
    x = digits.x_test[:4]
    seen = 0
    for module in model.modules():
        if callable(getattr(module, "surrogate", None)):
            inputs: list[torch.Tensor] = []
            handle = module.register_forward_pre_hook(lambda m, args, seen=inputs: seen.append(args[0]))
            with torch.no_grad():
                model(x)
                handle.remove()
                assert inputs, "a deployed module with a surrogate must run in the forward pass"
                assert module.surrogate()(inputs[0]).shape == module(inputs[0]).shape
            seen += 1
    if DEFENSES.get(name).front is not None:
        assert seen >= 1  # a module in front of the network is an input filter: it gives its surrogate


@pytest.mark.parametrize("name", SPECS)
def test_parameters_are_typed_and_checked(name):
    spec = DEFENSES.get(name)
    defaults = spec.defaults()
    assert DEFENSES.meta(name)["params"] == defaults
    required = {p.name for p in spec.params if p.required}
    if not required:
        assert spec.check({}) == defaults
    with pytest.raises(ConfigError, match=f"defense '{name}' does not take nope"):
        spec.check({"nope": 1})
    given = {p.name: "a+b" for p in spec.params if p.required and p.kind == "models"}
    for p in spec.params:
        if p.kind in ("int", "float") and p.default is not None:
            with pytest.raises(ConfigError, match=p.name):
                spec.check({**given, p.name: "text"})
    assert spec.kind in ("preprocess", "noise", "training", "detector", "certified")
    assert isinstance(spec.differentiable, bool) and isinstance(spec.random, bool) and spec.paper


def test_the_suite_covers_every_kind_and_the_plugin():
    kinds = {DEFENSES.get(n).kind for n in SPECS}
    assert kinds == {"preprocess", "noise", "training", "detector", "certified"}
    assert "example-contrast" in SPECS  # the one-file defense of tests/plugins


def test_a_random_defense_is_reproducible_with_sample_generators(digits):
    from sparring.defenses import GaussianNoise

    layer = GaussianNoise(0.1, generator=SampleGenerators(0, range(4)))
    x = digits.x_test[:4]
    first = layer(x)
    layer.generator = SampleGenerators(0, range(4))
    assert torch.equal(first, layer(x)) and not math.isclose(float((first - x).abs().sum()), 0.0)


TRAINED = [n for n in SPECS if DEFENSES.get(n).train is not None or DEFENSES.get(n).fit is not None]


@pytest.mark.parametrize("name", TRAINED)
def test_training_without_a_training_split_is_a_config_error_naming_the_defense(name, digits):
    spec = DEFENSES.get(name)
    context = Context(dataclasses.replace(digits, x_train=None, y_train=None), TINY, 0, "cpu",
                      ThreatModel(Norm.LINF, 0.1))
    params = _params(spec)[1]
    with pytest.raises(ConfigError, match=f"defense '{name}' trains on the training split") as error:
        if spec.fit is not None:
            spec.fit(context, params)
        else:
            assert spec.train is not None
            spec.train(_net(digits), context, params)
    assert "\n" not in str(error.value)
