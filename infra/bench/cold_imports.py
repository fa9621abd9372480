"""Cold import time of each Lambda function's module, in a fresh interpreter per run.

Each run loads ``functions/<name>/app.py`` the way the Lambda runtime does: from the shared
layer as ``shared/Makefile`` builds it for ``sam build`` (built first, for this machine's
platform, its files dated as the deployed ZIP dates them), with only the standard library, the
function's folder and the layer on ``sys.path`` and no bytecode written (``python -I -S -B``),
``app.py`` compiled from source as a function's own code is; ``--dev-env`` loads from the
development environment instead, with warm ``.pyc``. Each run is a new interpreter with a
Lambda-like environment: ``AWS_LAMBDA_FUNCTION_NAME`` is set, so Powertools' Tracer is enabled
and imports ``aws_xray_sdk`` as it does in Lambda (its own cost is reported separately), and
``AWS_LAMBDA_RUNTIME_API`` is set, so the function's init runs with the garbage collector paused
and frozen at its end, as in Lambda.
Packages that are in the project's development environment but not in the deployed layer
(``awscrt``, ``OpenSSL``, which botocore picks up when present) are hidden, so botocore takes
the same path as in Lambda. The median of several runs is reported, after one untimed run
(which, in the development environment, writes the ``.pyc`` files).

``python -m infra.bench.cold_imports [--runs 5] [--dev-env] [--collector-on]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from infra.bench.common import Part

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("intake", "chunk", "verify", "notify", "migrate", "collections", "reconcile", "web", "legacy")
HIDDEN = ("awscrt", "OpenSSL")

_LOADER = r"""
import importlib.abc, importlib.util, json, sys, time
HIDDEN = set(sys.argv[3].split(",")) if sys.argv[3] else set()

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in HIDDEN:
            raise ImportError(f"{name} is not in the deployed layer")
        return None

sys.meta_path.insert(0, _Hide())
target = sys.argv[1]
mode = sys.argv[2]
layer = sys.argv[4] if len(sys.argv) > 4 else None
if layer:  # the layer as deployed, on the path where Lambda puts /opt/python
    sys.path.insert(0, layer)
started = time.perf_counter()
if mode == "module":
    importlib.import_module(target)
else:
    folder = target.rsplit("/", 1)[0]
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    if layer:  # a function's own code ships as source: Lambda compiles app.py at each cold start
        with open(target, "rb") as source:
            exec(compile(source.read(), target, "exec"), module.__dict__)
    else:
        spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
# What init left for the collector: a full collection right after it, as an early invocation
# would meet (frozen objects are not walked).
import gc
started = time.perf_counter()
gc.collect()
collect = time.perf_counter() - started
print(json.dumps({"ms": elapsed * 1000, "collect_ms": collect * 1000, "modules": len(sys.modules)}))
"""


def lambda_env(name: str, collector_paused: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "_X_AMZN"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": f"backpack-migrate-{name}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            # Set by the runtime for every instance; a function pauses its collector for init
            # only where it is set (shared/backpack_migrate/coldstart.py).
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "POWERTOOLS_SERVICE_NAME": "backpack-migrate",
            "POWERTOOLS_METRICS_NAMESPACE": "BackpackMigrate",
            # As template.yaml's Globals set it (tests/infra/test_template.py checks they agree).
            "PYDANTIC_DISABLE_PLUGINS": "__all__",
            "LAMBDA_TASK_ROOT": str(PROJECT_ROOT / "functions" / name),
            "PYTHONDONTWRITEBYTECODE": "",
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE")
    env.pop("PYTHONPATH", None)
    if not collector_paused:  # as before the functions paused it: the comparison's other half
        env.pop("AWS_LAMBDA_RUNTIME_API")
    return env


def time_once(
    target: str, mode: str, env: dict[str, str], hidden: tuple[str, ...] = HIDDEN, layer: Path | None = None
) -> float:
    return load_once(target, mode, env, hidden, layer)["ms"]


def load_once(
    target: str, mode: str, env: dict[str, str], hidden: tuple[str, ...] = HIDDEN, layer: Path | None = None
) -> dict[str, float]:
    """One load in a fresh interpreter: its time, and a full collection's right after it.

    With ``layer``, the interpreter sees only the standard library and that built layer (``-I
    -S``), and writes no bytecode (``-B``; Lambda's /opt and /var/task are read-only)."""
    isolated = ["-I", "-S", "-B"] if layer is not None else []
    extra = [str(layer)] if layer is not None else []
    proc = subprocess.run(
        [sys.executable, *isolated, "-c", _LOADER, target, mode, ",".join(hidden), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(PROJECT_ROOT),
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(tail[0][:200])
    return {key: float(value) for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def median_ms(target: str, mode: str, env: dict[str, str], runs: int, layer: Path | None = None) -> float:
    time_once(target, mode, env, layer=layer)  # warms the caches (and the dev env's .pyc); not counted
    return round(statistics.median(time_once(target, mode, env, layer=layer) for _ in range(runs)), 1)


# The ZIP that SAM deploys dates every file so; a timestamp-based .pyc would never match it.
_ZIP_EPOCH = 315_532_800  # 1980-01-01T00:00:00Z


def build_layer(dest: Path) -> Path:
    """The shared layer as ``sam build`` makes it (``shared/Makefile``), with wheels for this
    machine's platform so that it can be loaded here, its files dated as the deployed ZIP dates
    them. Returns the folder Lambda puts on ``sys.path`` (``/opt/python``)."""
    shutil.rmtree(dest, ignore_errors=True)
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(PROJECT_ROOT / "shared"),
            "build-SharedLayer",
            f"ARTIFACTS_DIR={dest}",
            f"PYTHON={sys.executable}",
            f"LAYER_PLATFORM=manylinux2014_{platform.machine()}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if not line.startswith(("WARNING", "make"))]
        errors = [line for line in lines if "ERROR" in line] or lines or ["no output"]
        raise RuntimeError(f"the layer did not build: {errors[-1][:200]}")
    for path in dest.rglob("*"):
        os.utime(path, (_ZIP_EPOCH, _ZIP_EPOCH), follow_symlinks=False)
    return dest / "python"


def bench_cold_imports(runs: int = 5, collector_paused: bool = True, deployed_layer: bool = True) -> Part:
    """Each function's import, beside a bare ``import boto3`` timed in the same rounds.

    Every round times ``boto3`` and then each function once, so a busy machine slows both alike;
    "over boto3" is what the function costs beyond the AWS SDK every function needs anyway.
    """
    part = Part(
        f"cold imports: functions/<name>/app.py in a fresh interpreter (median of {runs})",
        headers=["function", "median ms", "min ms", "max ms", "over boto3 ms", "x boto3", "then gc ms"],
        figures={"cold_import_ms": {}, "cold_import_boto3_ms": None, "cold_import_from": None},
    )
    apps = {name: PROJECT_ROOT / "functions" / name / "app.py" for name in FUNCTIONS}
    figures: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {name: [] for name in FUNCTIONS if apps[name].is_file()}
    collections: dict[str, list[float]] = {name: [] for name in samples}
    for name in FUNCTIONS:
        if name not in samples:
            figures[name] = None
            part.notes.append(f"{name}: skipped: functions/{name}/app.py does not exist yet")
    bare_env = lambda_env("bench")
    boto3_samples: list[float] = []
    failed: dict[str, str] = {}
    layer: Path | None = None
    if deployed_layer:
        try:
            layer = build_layer(PROJECT_ROOT / ".local-stack" / "bench-layer")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            part.notes.append(f"{exc}; measured in the development environment instead")
    try:
        time_once("boto3", "module", bare_env, layer=layer)  # warms the caches; not counted
        for name in samples:
            _warm(name, apps[name], failed, collector_paused, layer)
        for _ in range(runs):
            boto3_samples.append(time_once("boto3", "module", bare_env, layer=layer))
            for name, taken in samples.items():
                if name not in failed:
                    try:
                        env = lambda_env(name, collector_paused)
                        loaded = load_once(str(apps[name]), "file", env, layer=layer)
                        taken.append(loaded["ms"])
                        collections[name].append(loaded["collect_ms"])
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        failed[name] = str(exc)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        part.notes.append(f"boto3 alone: not measured: {exc}")
    boto3_ms = round(statistics.median(boto3_samples), 1) if boto3_samples else None
    for name, taken in samples.items():
        if name in failed or not taken:
            figures[name] = None
            part.notes.append(f"{name}: failed to import: {failed.get(name, 'no sample')}")
            continue
        median = figures[name] = round(statistics.median(taken), 1)
        over = f"{median - boto3_ms:.1f}" if boto3_ms else "-"
        times = f"{median / boto3_ms:.2f}" if boto3_ms else "-"
        collect = f"{statistics.median(collections[name]):.1f}"
        spread = [f"{min(taken):.1f}", f"{max(taken):.1f}"]
        part.rows.append([name, f"{median:.1f}", *spread, over, times, collect])
    if boto3_ms is not None:
        part.rows.append(["(boto3 alone)", f"{boto3_ms:.1f}", f"{min(boto3_samples):.1f}",
                          f"{max(boto3_samples):.1f}", "0.0", "1.00", "-"])  # fmt: skip
    part.figures["cold_import_ms"] = figures
    part.figures["cold_import_boto3_ms"] = boto3_ms
    part.figures["cold_import_from"] = "layer" if layer is not None else "dev-env"
    try:
        xray = median_ms("aws_xray_sdk.core", "module", bare_env, runs, layer)
        part.notes.append(f"aws_xray_sdk.core (the Tracer's, included above): {xray:.1f} ms")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        part.notes.append(f"aws_xray_sdk.core: not measured: {exc}")
    part.notes.append(
        (
            "from the shared layer as shared/Makefile builds it (this machine's wheels, hash-based "
            "bytecode, files dated 1980 as in the deployed ZIP), the function's app.py compiled from "
            "source as Lambda does; "
            if layer is not None
            else "from the development environment (warm .pyc); "
        )
        + "Lambda-like env (AWS_LAMBDA_FUNCTION_NAME set, Tracer on; "
        + (
            "AWS_LAMBDA_RUNTIME_API set, so init runs with the collector paused"
            if collector_paused
            else "AWS_LAMBDA_RUNTIME_API left out (--collector-on), so init runs with the collector on"
        )
        + "); dev-only awscrt/OpenSSL hidden; this machine's CPU -- expect 2-3x at 512 MB in Lambda"
    )
    part.notes.append(
        "then gc ms: a full garbage collection right after the import, in the same interpreter "
        "(what init left for an early invocation to walk)"
    )
    return part


def _warm(name: str, app: Path, failed: dict[str, str], collector_paused: bool, layer: Path | None) -> None:
    """One untimed import that writes the function's .pyc files (or, from the layer, warms the
    file cache)."""
    try:
        time_once(str(app), "file", lambda_env(name, collector_paused), layer=layer)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        failed[name] = str(exc)


def main(argv: list[str] | None = None) -> int:
    from infra.bench.common import render

    parser = argparse.ArgumentParser(description="Cold import time of each function.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--dev-env",
        action="store_true",
        help="load from the development environment (warm .pyc) instead of the built layer",
    )
    parser.add_argument(
        "--collector-on",
        action="store_true",
        help="leave AWS_LAMBDA_RUNTIME_API out, so the functions' init runs with the collector on",
    )
    args = parser.parse_args(argv)
    part = bench_cold_imports(
        args.runs, collector_paused=not args.collector_on, deployed_layer=not args.dev_env
    )
    print(render(part))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
