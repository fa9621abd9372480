"""Cold import time of each Lambda function's module, in a fresh interpreter per run.

Each run loads ``functions/<name>/app.py`` the way the Lambda runtime does (the function's
folder first on ``sys.path``, the shared package importable) in a new interpreter with a
Lambda-like environment: ``AWS_LAMBDA_FUNCTION_NAME`` is set, so Powertools' Tracer is enabled
and imports ``aws_xray_sdk`` as it does in Lambda (its own cost is reported separately).
Packages that are in the project's development environment but not in the deployed layer
(``awscrt``, ``OpenSSL``, which botocore picks up when present) are hidden, so botocore takes
the same path as in Lambda. The median of several runs is reported, after one untimed run
that writes the ``.pyc`` files.

``python -m infra.bench.cold_imports [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from infra.bench.common import Part

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("intake", "chunk", "verify", "notify", "migrate", "web")
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
started = time.perf_counter()
if mode == "module":
    importlib.import_module(target)
else:
    folder = target.rsplit("/", 1)[0]
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
print(json.dumps({"ms": elapsed * 1000, "modules": len(sys.modules)}))
"""


def lambda_env(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "_X_AMZN"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": f"backpack-migrate-{name}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "POWERTOOLS_SERVICE_NAME": "backpack-migrate",
            "POWERTOOLS_METRICS_NAMESPACE": "BackpackMigrate",
            "LAMBDA_TASK_ROOT": str(PROJECT_ROOT / "functions" / name),
            "PYTHONDONTWRITEBYTECODE": "",
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE")
    env.pop("PYTHONPATH", None)
    return env


def time_once(target: str, mode: str, env: dict[str, str], hidden: tuple[str, ...] = HIDDEN) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, target, mode, ",".join(hidden)],
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
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["ms"])


def median_ms(target: str, mode: str, env: dict[str, str], runs: int) -> float:
    time_once(target, mode, env)  # writes the .pyc files; not counted
    return round(statistics.median(time_once(target, mode, env) for _ in range(runs)), 1)


def bench_cold_imports(runs: int = 5) -> Part:
    part = Part(
        f"cold imports: functions/<name>/app.py in a fresh interpreter (median of {runs})",
        headers=["function", "median ms", "min ms", "max ms"],
        figures={"cold_import_ms": {}},
    )
    figures: dict[str, float | None] = {}
    for name in FUNCTIONS:
        app = PROJECT_ROOT / "functions" / name / "app.py"
        if not app.is_file():
            figures[name] = None
            part.notes.append(f"{name}: skipped: functions/{name}/app.py does not exist yet")
            continue
        env = lambda_env(name)
        try:
            time_once(str(app), "file", env)
            samples = [time_once(str(app), "file", env) for _ in range(runs)]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            figures[name] = None
            part.notes.append(f"{name}: failed to import: {exc}")
            continue
        figures[name] = round(statistics.median(samples), 1)
        part.rows.append([name, f"{figures[name]:.1f}", f"{min(samples):.1f}", f"{max(samples):.1f}"])
    part.figures["cold_import_ms"] = figures
    env = lambda_env("bench")
    for module, label in (
        ("aws_xray_sdk.core", "aws_xray_sdk.core (the Tracer's, included above)"),
        ("boto3", "boto3 alone"),
    ):
        try:
            part.notes.append(f"{label}: {median_ms(module, 'module', env, runs):.1f} ms")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            part.notes.append(f"{label}: not measured: {exc}")
    part.notes.append(
        "Lambda-like env (AWS_LAMBDA_FUNCTION_NAME set, Tracer on); dev-only awscrt/OpenSSL hidden; "
        "warm .pyc; this machine's CPU -- expect 2-3x at 512 MB in Lambda"
    )
    return part


def main(argv: list[str] | None = None) -> int:
    from infra.bench.common import render

    parser = argparse.ArgumentParser(description="Cold import time of each function.")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(render(bench_cold_imports(args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
