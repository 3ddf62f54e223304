"""Configs: exact eps parsing, unknown keys rejected, the committed configs load and resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparring import paths
from sparring.config import Config, config_from_dict, dump_toml, load_config, parse_eps
from sparring.errors import ConfigError, DataError
from sparring.experiment import attack_specs

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def test_eps_is_exact():
    assert parse_eps("8/255") == ("8/255", 8 / 255)
    assert parse_eps(0.3) == ("0.3", 0.3)
    assert parse_eps("inf")[1] == float("inf")
    for bad in ("-1", "1/0", "abc", "nan"):
        with pytest.raises(ConfigError):
            parse_eps(bad)


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError, match="unknown key 'sede'"):
        config_from_dict({"sede": 1})
    with pytest.raises(ConfigError, match="train.'epoch'"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="must be a number"):
        config_from_dict({"train": {"epochs": "three"}})


def test_default_config_is_the_digits_file():
    assert load_config(None) == load_config(Path(__file__).parent.parent / "configs" / "digits.toml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_committed_configs_resolve(path):
    config = load_config(path)
    assert load_config(path) == config
    try:
        specs = attack_specs(config.attacks, config.evaluate.eps)
    except DataError as exc:  # an attack that names a pretrained surrogate loads it
        if paths.find_weights_dir() is not None:
            raise
        pytest.skip(f"{path.name} names pretrained weights and no weights folder is here: {exc}")
    assert specs and all(s.eps for s in specs)
    again = config_from_dict(__import__("tomllib").loads(dump_toml(config)))
    assert again == config


def test_attack_parameters_checked():
    config = config_from_dict({"attacks": [{"name": "pgd", "stepz": 3}]})
    with pytest.raises(ConfigError, match="no parameter 'stepz'"):
        attack_specs(config.attacks, ("0.1",))
    assert isinstance(Config().attacks[1].params["steps"], int)
