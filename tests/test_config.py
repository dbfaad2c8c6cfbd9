"""The typed config: defaults < YAML < overrides, strict about keys and types."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from hpacam.config import ConfigError, load_config, parse_args, save_config, to_dict


@dataclass
class Optim:
    lr: float = 0.1
    name: Literal["sgd", "adam"] = "sgd"
    milestones: list[int] = field(default_factory=lambda: [10, 20])


@dataclass
class Model:
    name: str = "resnest101"
    pretrained: bool = False
    weights: Optional[Path] = None


@dataclass
class Cfg:
    seed: int = 0
    scales: tuple[float, ...] = (1.0, 1.3)
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "a.yaml", {"seed": 3, "optim": {"lr": 0.01}})
    cfg = load_config(Cfg, path, ["optim.name=adam", "model.weights=/x/w.pth", "scales=[1.0, 1.6]"])
    assert cfg.seed == 3
    assert cfg.optim.lr == 0.01 and cfg.optim.name == "adam"
    assert cfg.optim.milestones == [10, 20]  # untouched default inside a partly given section
    assert cfg.model.weights == Path("/x/w.pth") and cfg.model.name == "resnest101"
    assert cfg.scales == (1.0, 1.6)


def test_override_beats_yaml_and_scientific_floats(tmp_path):
    path = write(tmp_path, "a.yaml", "optim:\n  lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_config(Cfg, path).optim.lr == pytest.approx(1e-3)
    assert load_config(Cfg, path, ["optim.lr=2.5e-3"]).optim.lr == pytest.approx(2.5e-3)


def test_string_field_keeps_numeric_looking_text():
    assert load_config(Cfg, None, ["model.name=101"]).model.name == "101"


def test_base_inheritance(tmp_path):
    write(tmp_path, "base.yaml", {"seed": 1, "optim": {"lr": 0.5, "name": "adam"}})
    child = write(tmp_path, "child.yaml", {"_base_": "base.yaml", "optim": {"lr": 0.2}})
    cfg = load_config(Cfg, child)
    assert (cfg.seed, cfg.optim.lr, cfg.optim.name) == (1, 0.2, "adam")


@pytest.mark.parametrize("data, message", [
    ({"sed": 1}, "unknown key(s) ['sed']"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected float"),
    ({"seed": 1.5}, "seed: expected int"),
    ({"seed": True}, "seed: expected int"),
    ({"optim": {"name": "rmsprop"}}, "not one of ['sgd', 'adam']"),
    ({"model": {"pretrained": "yes"}}, "model.pretrained: expected bool"),
    ({"optim": 3}, "expected a section"),
])
def test_yaml_errors_name_file_and_key(tmp_path, data, message):
    path = write(tmp_path, "bad.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match="optim.lrr=1"):
        load_config(Cfg, None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Cfg, None, ["seed"])


def test_missing_file_and_base_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "nope.yaml")
    write(tmp_path, "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path, "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(Cfg, None, ["optim.name=adam", "model.weights=w.pth", "seed=7"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Cfg, tmp_path / "run" / "config.yaml")
    assert again == cfg and to_dict(again) == to_dict(cfg)


def test_parse_args_exits_nonzero_on_bad_override(capsys):
    cfg, _ = parse_args(Cfg, ["seed=5"])
    assert cfg.seed == 5
    with pytest.raises(SystemExit) as exit_info:
        parse_args(Cfg, ["optim.lr=abc"])
    assert exit_info.value.code == 2
    assert "optim.lr" in capsys.readouterr().err


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = save_config(Cfg(), tmp_path / "config.yaml")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_yaml_aliases_are_refused_so_a_tiny_alias_bomb_cannot_expand(tmp_path):
    """Six levels of nine aliases: 600 bytes that PyYAML would expand to 9**6 items (seconds, megabytes)."""
    import time

    lines = ["optim:", "  milestones: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]", "extra:"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"{path.name}: not valid YAML \(aliases \(\*name\) are not allowed"):
        load_config(Cfg, path)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match="override .*aliases"):
        load_config(Cfg, None, ["optim.milestones=[&x 1, *x]"])


@pytest.mark.parametrize("content, message", [
    (b"seed: \xff\xfe 1\n", "not UTF-8 text"),
    (b"_base_: [a.yaml]\n", "_base_ must be the path of another config file, got ['a.yaml']"),
    (b"_base_: 3\n", "_base_ must be the path of another config file, got 3"),
    (b"seed: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested more than 32 levels deep"),
    (b"seed: " + b"[" * 40 + b"]" * 40 + b"\n", "nested more than 32 levels deep"),
])
def test_malformed_config_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(Cfg, path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_empty_path_is_refused_rather_than_read_as_the_current_folder():
    with pytest.raises(ConfigError, match=r"model.weights: empty path"):
        load_config(Cfg, None, ["model.weights="])
    assert load_config(Cfg, None, ["model.weights=null"]).model.weights is None
