"""The configuration base: YAML values coerced to the declared types, bad ones named."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from caloforge.config import Config, load_yaml
from caloforge.errors import CaloforgeError
from caloforge.models import get_model_class
from caloforge.train import TrainConfig


@dataclass(frozen=True)
class Toy(Config):
    size: int = 4
    scale: float = 1.0
    widths: tuple[int, ...] = (8, 8)
    pair: tuple[float, float] = (0.0, 1.0)
    limit: int | None = None
    gen_lr: float = 1e-3
    name: str = "toy"
    flag: bool = False


def test_yaml_values_become_the_declared_types():
    c = Toy.from_dict({"size": 2.0, "scale": 3, "widths": [1, 2, 3], "pair": [1, 2],
                       "limit": None, "flag": True})
    assert c == Toy(size=2, scale=3.0, widths=(1, 2, 3), pair=(1.0, 2.0), flag=True)
    assert Toy.from_dict(c.to_dict()) == c
    assert c.replace(limit=5).limit == 5


@pytest.mark.parametrize("settings, message", [
    ({"size": "abc"}, r"Toy\.size: expected an integer, got 'abc'"),
    ({"size": 1.5}, r"Toy\.size: expected an integer"),
    ({"scale": "fast"}, r"Toy\.scale: expected a number"),
    ({"scale": [1]}, r"Toy\.scale: expected a number"),
    ({"widths": 3}, r"Toy\.widths: expected a list"),
    ({"pair": [1, 2, 3]}, r"Toy\.pair: expected 2 values"),
    ({"limit": "x"}, r"Toy\.limit: cannot read"),
    ({"flag": "yes"}, r"Toy\.flag: expected true or false"),
    ({"name": 3}, r"Toy\.name: expected a string"),
    ({"gen_lr": -1}, r"Toy\.gen_lr: a learning rate must be positive, got -1\.0"),
    ({"gen_lr": 0}, r"Toy\.gen_lr: a learning rate must be positive"),
    ({"sise": 3}, r"unknown setting\(s\) sise; valid: size"),
])
def test_a_bad_value_is_one_error_naming_the_key(settings, message):
    with pytest.raises(CaloforgeError, match=message):
        Toy.from_dict(settings)


@pytest.mark.parametrize("family", ["calogan", "wgan", "3dgan", "caloflow"])
def test_every_family_names_a_bad_key(family):
    cls = get_model_class(family).Config
    with pytest.raises(CaloforgeError, match=r"model\.latent_size|model\.flow1_blocks"):
        key = "latent_size" if "latent_size" in cls.__dataclass_fields__ else "flow1_blocks"
        cls.from_dict({key: "abc"}, where="model")
    lr = next(k for k in cls.__dataclass_fields__ if k.endswith("_lr"))
    with pytest.raises(CaloforgeError, match=rf"model\.{lr}: a learning rate must be positive"):
        cls.from_dict({lr: -1}, where="model")


def test_train_config_and_yaml_errors(tmp_path):
    with pytest.raises(CaloforgeError, match=r"TrainConfig\.batch_size: expected an integer"):
        TrainConfig.from_dict({"batch_size": "many"})
    with pytest.raises(CaloforgeError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {batch_size: 4\nmodel: [\n")
    with pytest.raises(CaloforgeError, match="not valid YAML at line 2, column 6") as err:
        load_yaml(bad)
    assert "\n" not in str(err.value)  # one line
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(CaloforgeError, match="expected a mapping"):
        load_yaml(bad)


@pytest.mark.parametrize("line, key", [("latent_size: abc", "model.latent_size"),
                                       ("gen_lr: -1", "model.gen_lr")])
def test_cli_train_names_the_bad_model_setting(tmp_path, capsys, line, key):
    from cli_helpers import run_cli

    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  {line}\n")
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "calogan", "--data", tmp_path / "none.h5", "--out", out,
                            "--config", config, "-q"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and key in err and "Traceback" not in err
    assert not out.exists()


def test_check_choice_names_the_choices_in_one_line():
    from caloforge.config import check_choice

    check_choice("wgan", "mode", "a", ("a", "b"))  # a valid choice passes
    for choices, listed in ((("a",), "'a'"), (("a", "b"), "'a' or 'b'"),
                            (("a", "b", "c"), "'a', 'b' or 'c'")):
        with pytest.raises(CaloforgeError) as info:
            check_choice("wgan", "mode", "z", choices)
        assert str(info.value) == f"wgan mode must be {listed}, got 'z'"
