import subprocess
import sys

import pytest

from cxrlab.config import load_config, parse_overrides
from cxrlab.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "name: x\ntrain:\n  epochs: 3\n")
    cfg = load_config(p, ["train.lr=0.01", "data.labels=[Mass,Nodule]", "model.name=resnet18"])
    assert cfg.name == "x" and cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.data.labels == ["Mass", "Nodule"] and cfg.model.name == "resnet18"
    assert cfg.train.weight_decay == 1e-4  # default kept


@pytest.mark.parametrize("text,needle", [
    ("train:\n  epochz: 3\n", "train.epochz: unknown key"),
    ("bogus: 1\n", "bogus: unknown key"),
    ("train:\n  lr: fast\n", "train.lr:"),
    ("data:\n  image_size: 8\n", "data.image_size:"),
    ("train:\n  optimizer: adam9\n", "train.optimizer:"),
])
def test_bad_keys_and_types_name_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"))


def test_cli_prints_one_line_and_exits_2(tmp_path):
    p = write(tmp_path, "train:\n  epochz: 3\n")
    r = subprocess.run([sys.executable, "-m", "cxrlab", "train", "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.epochz: unknown key" in lines[0]
    assert "Traceback" not in r.stderr
