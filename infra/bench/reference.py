"""The IMS reference validator (`openbadges` 1.1.2) in a virtual environment of its own.

The reference does not install on a current Python as published, so it lives apart from the
project's environment, in ``infra/bench/.reference-venv`` (git-ignored), built with these
workarounds:

* ``pycryptodome==3.6.6`` (pinned by ``openbadges``) is built from source with
  ``SETUPTOOLS_USE_DISTUTILS=stdlib`` and ``setuptools<58``, so its Python 2 -> 3 conversion
  runs (otherwise importing it fails with ``SyntaxError: 0xffffffffL``);
* a ``.pth`` file aliases the ``collections.abc`` names into ``collections`` for
  ``python-jose`` 3.0.1, ``jsonschema`` 2.6 and ``requests-cache`` 0.4.13;
* ``requests-cache==0.4.13`` (1.x lacks ``remove_expired_responses``);
* ``responses`` to serve fixtures and the w3id contexts, as the reference has no offline mode.

``python -m infra.bench.reference`` builds (or checks) the environment; ``--force`` rebuilds it.
The benchmark calls :func:`run_reference` with a job that ``reference_runner.py`` executes
inside that environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_DIR = HERE / ".reference-venv"
RUNNER = HERE / "reference_runner.py"
STAMP_NAME = ".bench-ready"

REFERENCE_SPEC = "openbadges==1.1.2"
PINS = ("requests-cache==0.4.13", "pycryptodome==3.6.6", "responses")
BUILD_TOOLS = ("setuptools<58", "wheel")
STAMP_CONTENT = " ".join((REFERENCE_SPEC, *PINS, *BUILD_TOOLS))

COMPAT_MODULE = '''"""Aliases the collections.abc names into collections for packages written before 3.10."""

import collections
import collections.abc

for _name in collections.abc.__all__:
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
'''
COMPAT_PTH = "import _bench_collections_compat\n"

IMPORT_CHECK = (
    "import openbadges, responses, requests_cache, Crypto; "
    "from Crypto.PublicKey import RSA; "
    "from importlib.metadata import version; "
    "print(version('openbadges'), Crypto.__version__, version('requests-cache'))"
)


class ReferenceSetupError(RuntimeError):
    """The reference environment could not be built or does not work."""


def venv_python(venv_dir: Path = VENV_DIR) -> Path:
    return venv_dir / "bin" / "python"


def find_python311() -> str:
    """A Python 3.11 interpreter for the reference environment (``REFERENCE_PYTHON`` overrides)."""
    override = os.environ.get("REFERENCE_PYTHON")
    if override:
        return override
    if sys.version_info[:2] == (3, 11):
        base = getattr(sys, "_base_executable", None) or sys.executable
        return str(base)
    found = shutil.which("python3.11")
    if found:
        return found
    raise ReferenceSetupError(
        "no Python 3.11 interpreter found for the reference validator; "
        "install one or set REFERENCE_PYTHON to its path"
    )


def _run(cmd: list[str], step: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReferenceSetupError(f"{step}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ReferenceSetupError(f"{step} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def check_reference(venv_dir: Path = VENV_DIR) -> str:
    """Imports the reference in its environment; returns "openbadges pycryptodome requests-cache"."""
    python = venv_python(venv_dir)
    if not python.exists():
        raise ReferenceSetupError(f"{venv_dir.name} has no interpreter")
    return _run([str(python), "-c", IMPORT_CHECK], "importing the reference", env=_pip_env()).strip()


def ensure_reference(force: bool = False, venv_dir: Path = VENV_DIR, log: Any = print) -> Path:
    """Builds the reference environment if absent (or broken); returns its interpreter."""
    stamp = venv_dir / STAMP_NAME
    if not force and stamp.exists() and stamp.read_text().strip() == STAMP_CONTENT:
        try:
            check_reference(venv_dir)
            return venv_python(venv_dir)
        except ReferenceSetupError as exc:
            log(f"reference environment is broken, rebuilding: {exc}")
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    base = find_python311()
    log(f"building the reference environment with {base} (about a minute)")
    _run([base, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 11))"], "checking Python 3.11")
    try:
        _run([base, "-m", "venv", str(venv_dir)], "creating the virtual environment")
    except ReferenceSetupError:
        # A build of Python without ensurepip: fall back to the venv module of this interpreter.
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    python = str(venv_python(venv_dir))
    env = _pip_env()
    pip = [python, "-m", "pip", "install", "--quiet"]
    _run([*pip, *BUILD_TOOLS], "installing setuptools<58 and wheel", env=env)
    # Built here, never taken from the wheel cache: a cached build made without the
    # workaround would install fine and then fail to import.
    _run(
        [
            *pip,
            "--no-build-isolation",
            "--no-cache-dir",
            "--no-binary",
            "pycryptodome",
            "pycryptodome==3.6.6",
        ],
        "building pycryptodome 3.6.6 from source",
        env=env,
    )
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "locating site-packages"
    ).strip()
    Path(site, "_bench_collections_compat.py").write_text(COMPAT_MODULE)
    Path(site, "_bench_collections_compat.pth").write_text(COMPAT_PTH)
    _run(
        [*pip, "--no-build-isolation", REFERENCE_SPEC, *PINS],
        f"installing {REFERENCE_SPEC} with {' '.join(PINS)}",
        env=env,
    )
    versions = check_reference(venv_dir)
    stamp.write_text(STAMP_CONTENT + "\n")
    log(f"reference environment ready: openbadges / pycryptodome / requests-cache = {versions}")
    return venv_python(venv_dir)


def run_reference(job: dict[str, Any], timeout: float = 3600, python: Path | None = None) -> dict[str, Any]:
    """Runs one job (see ``reference_runner.py``) in the reference environment; returns its JSON."""
    interpreter = python or venv_python()
    env = _pip_env()
    env.pop("SETUPTOOLS_USE_DISTUTILS", None)
    try:
        proc = subprocess.run(
            [str(interpreter), str(RUNNER)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ReferenceSetupError(f"the reference run took longer than {timeout:.0f} s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise ReferenceSetupError(f"the reference runner failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild the environment from scratch")
    args = parser.parse_args(argv)
    try:
        python = ensure_reference(force=args.force)
    except ReferenceSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"reference validator: {python} ({check_reference()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
