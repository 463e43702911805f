"""cluster.yaml is a config the Ray cluster launcher accepts, checked offline (no cloud needed)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_the_launcher_accepts_it(config):
    jsonschema.validate(config, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(config)))


def test_it_keeps_work_off_the_head_and_declares_agent_slots(config):
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert any(isinstance(n["resources"].get("agent_slot"), int) for n in workers)


def test_it_installs_this_project_with_the_pinned_ray(config):
    setup = " ".join(config["setup_commands"])
    assert "ray[default]==2.60.0" in setup
    mounted = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert mounted and mounted[0] in setup


def test_it_holds_no_credentials():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"://[^:\s/]+:[^@<\s]+@", text), "a URL with a password"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["available_node_types"]["agents"]["resources"].update(agent_slot=0.5),
        lambda c: c["available_node_types"]["agents"].update(surprise=True),
        lambda c: c.update(head_node_type="missing"),
    ],
    ids=["fractional-resource", "unknown-key", "unknown-head-type"],
)
def test_the_checks_catch_a_broken_config(config, breakage):
    breakage(config)
    with pytest.raises(Exception):
        jsonschema.validate(config, SCHEMA)
        validate_config(prepare_config(copy.deepcopy(config)))
