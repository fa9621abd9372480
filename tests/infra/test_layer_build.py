"""The shared layer as ``sam build`` makes it: bytecode that Lambda uses, whatever the files' dates.

SAM's own Python builder unpacks wheels, which carry no bytecode, and the ZIP it deploys dates
every file 1980-01-01; Lambda then compiled every module from source on every cold start (380 of
them for notify). ``shared/Makefile`` compiles them to unchecked hash-based bytecode instead. The
build here uses this machine's wheels, so that the layer can be loaded; the template's build is
the same with arm64 wheels. It installs from the package index, so it is not a unit test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.bench.cold_imports import build_layer, lambda_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# Loads a function with only the standard library and the layer on its path, as Lambda does,
# writing no bytecode, and names every module of the layer that had to be compiled from source.
_LOAD = r"""
import importlib.machinery, importlib.util, json, sys
layer, target = sys.argv[1], sys.argv[2]
compiled = []
original = importlib.machinery.SourceFileLoader.source_to_code

def counting(self, data, path, *, _optimize=-1):
    if path.startswith(layer):
        compiled.append(path)
    return original(self, data, path, _optimize=_optimize)

importlib.machinery.SourceFileLoader.source_to_code = counting
sys.path[:0] = [target.rsplit("/", 1)[0], layer]
spec = importlib.util.spec_from_file_location("app", target)
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
ours = sorted(name for name in sys.modules if name.startswith("backpack_migrate"))
print(json.dumps({"compiled": compiled, "loaded": ours}))
"""


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build_layer(tmp_path_factory.mktemp("layer"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


def test_every_module_of_the_layer_ships_unchecked_hash_based_bytecode(layer: Path) -> None:
    sources = sorted(layer.rglob("*.py"))
    assert layer / "backpack_migrate" / "coldstart.py" in sources
    assert any(path.parts[-2:] == ("botocore", "client.py") for path in sources)
    flags = {}
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        # PEP 552: bit 0 set = hash-based; bit 1 clear = the source is never read to check it.
        flags[str(source.relative_to(layer))] = int.from_bytes(cached.read_bytes()[4:8], "little")
    assert {path: flag for path, flag in flags.items() if flag != 0b01} == {}


def test_a_function_loads_from_the_deployed_layer_without_compiling_any_of_it(layer: Path) -> None:
    # build_layer dated every file 1980-01-01, as the deployed ZIP does.
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-B",
            "-c",
            _LOAD,
            str(layer),
            str(ROOT / "functions" / "notify" / "app.py"),
        ],
        capture_output=True,
        text=True,
        env=lambda_env("notify"),
        cwd=str(ROOT),
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "backpack_migrate.notices" in answer["loaded"]
    assert answer["compiled"] == []


def test_the_layer_holds_the_package_and_its_run_time_dependencies_only(layer: Path) -> None:
    assert not (layer / "backpack_migrate.egg-info").exists()
    assert not (layer / "moto").exists()
    for name in ("boto3", "pydantic", "aws_lambda_powertools", "requests", "cryptography", "defusedxml"):
        assert (layer / name).is_dir(), name
