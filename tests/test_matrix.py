"""The model x defense x attack x eps matrix of `sparring run`: [[models]] and [[variants]] configs,
prefixed cells that resume, per-class confusion counts, norm percentiles and the latent record."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch

from conftest import logged
from sparring.config import config_from_dict, dump_toml
from sparring.errors import ConfigError
from sparring.evaluate.metrics import confusion, summarize
from sparring.experiment import matrix, run_experiment

MATRIX = """
name = "matrix"
seed = 1
[data]
n = 60
[train]
epochs = 2
[evaluate]
eps = ["0.05", "0.1"]
over = "correct"
gallery = 2
[audit]
enabled = false
[[variants]]
name = "plain"
[[variants]]
name = "fgsm-at"
epochs = 1
defenses = [{name = "fgsm-at", eps = "0.1"}]
[[variants]]
name = "contrastive"
[[variants.defenses]]
name = "contrastive"
per_class = 3
[[attacks]]
name = "fgsm"
[[attacks]]
name = "pgd"
steps = 3
"""


def test_variants_parse_round_trip_and_expand():
    config = config_from_dict(tomllib.loads(MATRIX))
    assert [v.name for v in config.variants] == ["plain", "fgsm-at", "contrastive"]
    assert config.variants[1].epochs == 1 and config.variants[1].defenses[0].eps == "0.1"
    assert config.variants[2].defenses[0].params == {"per_class": 3}
    assert config_from_dict(tomllib.loads(dump_toml(config))) == config
    units = matrix(config)
    assert [u.prefix for u in units] == ["digits-cnn|plain|", "digits-cnn|fgsm-at|", "digits-cnn|contrastive|"]
    two = config_from_dict({"models": [{"arch": "digits-cnn"}, {"arch": "digits-cnn", "label": "b"}],
                            "variants": [{"name": "x"}, {"name": "y"}]})
    assert [u.prefix for u in matrix(two)] == ["digits-cnn|x|", "digits-cnn|y|", "b|x|", "b|y|"]
    assert [u.prefix for u in matrix(config_from_dict({}))] == [""]  # one unit keeps the plain cell keys


@pytest.mark.parametrize("raw,message", [
    ({"variants": [{"name": "a"}], "defenses": [{"name": "median-blur"}]}, "either"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "distinct variants"),
    ({"variants": [{"name": "a|b"}]}, "without '|'"),
    ({"variants": [{"epochs": 2}]}, "needs a name"),
    ({"variants": [{"name": "a", "defenses": "pgd-at"}]}, "list of tables"),
    ({"models": [{"weights": "x"}]}, "needs a arch"),
    ({"evaluate": {"over": "some"}}, "evaluate.over"),
])
def test_bad_matrices_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_confusion_and_percentiles():
    y, pred = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion(y, pred, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion(y, pred, 21) is None
    s = summarize(torch.arange(101, dtype=torch.float64))
    assert (s["p10"], s["p25"], s["median"], s["p75"], s["p90"]) == (10, 25, 50, 75, 90)


@pytest.mark.slow
def test_matrix_run_trains_each_variant_resumes_and_reports(tmp_path):
    config = config_from_dict(tomllib.loads(MATRIX))
    out = tmp_path / "run"
    run_experiment(config, out, progress=False)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    cells = [r["cell"] for r in records]
    assert len(cells) == len(set(cells)) == 3 * (1 + 4 + 2 + 1)  # clean, 4 cells, 2 worst cases, latent
    assert {r["defense"] for r in records} == {"plain", "fgsm-at", "contrastive"}
    for name in ("plain", "fgsm-at", "contrastive"):
        assert (out / "models" / f"digits-cnn__{name}.safetensors").is_file()
    by = {r["cell"]: r for r in records}
    for prefix in ("digits-cnn|plain|", "digits-cnn|fgsm-at|"):
        clean = by[prefix + "clean"]
        counts = torch.tensor(clean["confusion"])
        assert int(counts.sum()) == clean["n"] and int(counts.trace()) == clean["n_correct"]
        for eps in ("0.05", "0.1"):
            cell = by[f"{prefix}pgd|linf|{eps}"]
            adv = torch.tensor(cell["confusion"])  # over the attacked (correct) samples
            assert int(adv.sum()) == cell["n_attacked"] and int(adv.trace()) == cell["n_robust"]
            assert (adv.sum(1) == counts.diagonal()).all()  # per class: the correctly classified
    latent = by["digits-cnn|contrastive|latent"]
    coords = torch.load(out / latent["file"], weights_only=True)
    assert coords["clean"].shape == coords["adversarial"].shape == (60, 2) and latent["mean_shift"] > 0
    before = (out / "results.jsonl").read_text()
    run_experiment(config, out, progress=False)  # resume: nothing redone
    assert (out / "results.jsonl").read_text() == before
    md = (out / "report.md").read_text()
    pgd = by["digits-cnn|fgsm-at|pgd|linf|0.1"]
    shown = f"{100 * pgd['n_robust'] / pgd['n_attacked']:.2f}"  # over="correct": over the attacked samples
    assert "| pgd | digits-cnn / fgsm-at | " in md and shown in md
    for heading in ("## Attack x defense", "### Perturbation norms", "### Per-class confusion shift", "## Latent space"):
        assert heading in md


@pytest.mark.slow
def test_train_n_trains_on_the_first_images_and_is_checked(tmp_path):
    config = config_from_dict({"data": {"n": 20, "train_n": 300}, "train": {"epochs": 1}, "audit": {"enabled": False},
                               "attacks": [{"name": "fgsm"}], "evaluate": {"eps": ["0.1"]}})
    with logged() as lines:
        run_experiment(config, tmp_path / "run", progress=False)
    assert any("(300 images, 1 epochs)" in line for line in lines)
    too_many = config_from_dict({"data": {"train_n": 10**6}, "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match="data.train_n must be between 1 and 1347"):
        run_experiment(too_many, tmp_path / "bad", progress=False)


def test_quarter_width_cifar_cnn_keeps_the_noise_slots():
    from sparring.defenses import insert_noise
    from sparring.models import build_model

    model = build_model("cifar-cnn-small")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build_model("cifar-cnn").parameters()) / 10
    insert_noise(model, 0.05, where=("noise1", "noise2"))
