"""Names are names, not paths, and attack parameters have types: a config name or an attack label that is
a path is refused before anything runs, nothing is written outside the output folder, and an attack
parameter of the wrong type (``steps=abc``, ``early_stop=no``) is the same one-line error from the CLI
and from a config."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparring.cli import main
from sparring.config import config_from_dict
from sparring.errors import ConfigError, InputError
from sparring.evaluate import AttackSpec
from sparring.paths import check_name, inside
from sparring.threat import Norm

EPS = (("0.1", 0.1),)


@pytest.mark.parametrize("bad", ["/tmp/x", "../x", "a/b", "a\\b", ".hidden", "..", "", " ", "a\nb", "tab\there", 5])
def test_a_path_is_not_a_name(bad):
    with pytest.raises(ConfigError, match="expected a"):
        check_name(bad, "label")


@pytest.mark.parametrize("good", ["pgd", "pgd-margin", "AT vs PGD", "eps_8.255", "résumé"])
def test_names_pass(good):
    assert check_name(good, "label") == good


def test_inside_follows_links(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "out", tmp_path / "out" / "a.pt") == tmp_path / "out" / "a.pt"
    for escape in (tmp_path / "out" / ".." / "a.pt", tmp_path / "out" / "link" / "a.pt", Path("/etc/passwd")):
        with pytest.raises(InputError, match="expected a path inside"):
            inside(tmp_path / "out", escape)


@pytest.mark.parametrize("params, message", [
    ({"steps": "abc"}, "expected steps to be an integer, got 'abc'"),
    ({"steps": ""}, "expected steps to be an integer, got ''"),
    ({"steps": 2.5}, "expected steps to be an integer, got 2.5"),
    ({"steps": True}, "expected steps to be an integer, got True"),
    ({"early_stop": "no"}, "expected early_stop to be true or false, got 'no'"),
    ({"early_stop": 1}, "expected early_stop to be true or false, got 1"),
    ({"loss": 3}, "expected loss to be a string, got 3"),
    ({"kappa": "big"}, "expected kappa to be a finite number, got 'big'"),
    ({"kappa": float("nan")}, "expected kappa to be a finite number"),
    ({"lr": True}, "expected lr to be a finite number, got True"),
])
def test_attack_parameters_are_typed(params, message):
    name = "cw-l2" if {"kappa", "lr"} & set(params) else "pgd"
    with pytest.raises(ConfigError, match=f"attack {name}: {message}"):
        AttackSpec(name, Norm.L2 if name == "cw-l2" else Norm.LINF, EPS, params)


def test_typed_parameters_pass_and_ints_become_floats():
    spec = AttackSpec("pgd", Norm.LINF, EPS, {"steps": 3, "early_stop": False, "loss": "margin"})
    assert spec.params == {"steps": 3, "early_stop": False, "loss": "margin"}
    cw = AttackSpec("cw-l2", Norm.L2, EPS, {"kappa": 1, "lr": 0.5})
    assert cw.params == {"kappa": 1.0, "lr": 0.5} and isinstance(cw.params["kappa"], float)
    # a parameter whose annotation is wider than its default's type is left to the attack
    assert AttackSpec("eot-pgd", Norm.LINF, EPS, {"transform": {"rotate": 10}}).params["transform"] == {"rotate": 10}


def test_an_attack_label_that_is_a_path_is_refused():
    with pytest.raises(ConfigError, match="attack fgsm's label: expected a name"):
        AttackSpec("fgsm", Norm.LINF, EPS, label="/../../x")


def test_a_config_name_that_is_a_path_is_refused():
    for bad in ("/tmp/evil", "../evil", "a/b"):
        with pytest.raises(ConfigError, match="name .*expected a name"):
            config_from_dict({"name": bad})


@pytest.mark.parametrize("attack", ["fgsm:label=/../../escaped", "fgsm:label=../escaped", "pgd:steps=abc",
                                    "pgd:early_stop=maybe"])
def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, attack):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    name, _, params = attack.partition(":")
    key, _, value = params.partition("=")
    (work / "c.toml").write_text(f'name = "c"\n[[attacks]]\nname = "{name}"\n{key} = "{value}"\n')
    before = sorted(tmp_path.rglob("*"))
    for argv in (["evaluate", "--dataset", "digits", "--model", "digits-cnn", "--attack", attack, "--eps", "0.1",
                  "--n", "4"], ["run", "c.toml", "--out", "out"]):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], (argv, err)
        assert (key if key != "label" else "label") in err[0]
        assert sorted(tmp_path.rglob("*")) == before  # nothing trained, nothing written, here or above
