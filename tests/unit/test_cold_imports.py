"""What each function loads when Lambda starts it: nothing its jobs do not need.

The cold-import figures (``make bench``, README) come from keeping each function's import graph
to what it uses. This guards that without timing anything: each ``functions/<name>/app.py`` is
loaded in a fresh interpreter, in the environment the benchmark measures, and the modules it left
in ``sys.modules`` are checked. What every job of a function needs is checked as loaded too, so a
gain is never a cost moved to the first invocation; so are the pydantic models every job reads,
which must be built at init while the others wait for their first use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.bench.cold_imports import FUNCTIONS, HIDDEN, lambda_env

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

_LOAD = r"""
import importlib.abc, importlib.util, json, sys
HIDDEN = set(sys.argv[2].split(","))

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in HIDDEN:
            raise ImportError(f"{name} is not in the deployed layer")
        return None

sys.meta_path.insert(0, _Hide())
target = sys.argv[1]
sys.path.insert(0, target.rsplit("/", 1)[0])
spec = importlib.util.spec_from_file_location("app", target)
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
built = []
if "backpack_migrate.models" in sys.modules:
    pending = list(sys.modules["backpack_migrate.models"].Model.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if model.__pydantic_complete__:
            built.append(model.__name__)
import gc
print(json.dumps([sorted(sys.modules), sorted(built), [gc.isenabled(), gc.get_freeze_count()]]))
"""

# Never in any function: the operator's terminal and database tools, test tools, and X-Ray
# patches of libraries other than the AWS SDK (``trace_http`` adds requests' when it is used).
NEVER = (
    "rich",
    "pymysql",
    "moto",
    "backpack_migrate.console",
    "backpack_migrate.cli",
    "backpack_migrate.backpack_db",
    "backpack_migrate.export_db",
    "aws_xray_sdk.ext.requests",
    "aws_xray_sdk.ext.sqlite3",
    "aws_xray_sdk.ext.httplib",
    "aws_lambda_powertools.utilities.idempotency",  # built with the services, on first use
    # Signature checks load with the first signed badge (most badges are hosted).
    "cryptography",
    # Scratch databases load it when an export first outgrows memory.
    "sqlite3",
)
READ_ZIP = ("backpack_migrate.export",)
FULL_EXPORTS = ("backpack_migrate.fullintake", "backpack_migrate.fullexport")
VERIFIER = ("backpack_migrate.openbadges.verify", "backpack_migrate.openbadges.fetch")
BADGR = ("backpack_migrate.badgr", "requests")
MIGRATION = ("backpack_migrate.migration",)
LEGACY = (
    "backpack_migrate.connect",
    "backpack_migrate.displayer",
    "backpack_migrate.issuer_api",
    "backpack_migrate.legacy_issue",
)
PAGES = ("backpack_migrate.portal", "backpack_migrate.pages")
BADGES = ("backpack_migrate.openbadges",)
BATCH = ("aws_lambda_powertools.utilities.batch", "backpack_migrate.batch")
# A learner's download and a badge's image are rare requests of the web function.
DOWNLOADS = ("backpack_migrate.learner_data",)

# (must not be loaded, must be loaded) per function.
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Reads a 2019 export's manifest; a full-fidelity export loads its own reader when one comes,
    # and the batch utility loads with the first resumed intake (only a very long export has one).
    "intake": (
        (
            *FULL_EXPORTS,
            *VERIFIER,
            *BADGR,
            *MIGRATION,
            *LEGACY,
            *PAGES,
            *BATCH,
            "backpack_migrate.openbadges",
        ),
        (*READ_ZIP, "backpack_migrate.intake", "aws_lambda_powertools.utilities.parser"),
    ),
    # Unbakes badges; a full-fidelity export's reader loads with the first chunk of one.
    "chunk": (
        (*FULL_EXPORTS, *VERIFIER, *BADGR, *MIGRATION, *LEGACY, *PAGES),
        (*READ_ZIP, "backpack_migrate.openbadges.parse"),
    ),
    "verify": (
        (*FULL_EXPORTS, *BADGR[:1], *LEGACY, *PAGES, "backpack_migrate.intake"),
        (*READ_ZIP, *VERIFIER, "requests"),
    ),
    # Writes emails: no export, no badge reading, no Badgr.
    "notify": (
        (*READ_ZIP, *FULL_EXPORTS, *VERIFIER, *BADGR, *MIGRATION, *LEGACY, *BADGES),
        ("backpack_migrate.notices",),
    ),
    "migrate": (
        (*FULL_EXPORTS, *VERIFIER, *LEGACY, *PAGES, "backpack_migrate.intake", "backpack_migrate.openbadges"),
        (*BADGR, *MIGRATION),
    ),
    "collections": (
        (*READ_ZIP, *FULL_EXPORTS, *VERIFIER, *MIGRATION, *LEGACY, *PAGES, *BADGES),
        (*BADGR, "backpack_migrate.groups"),
    ),
    # Usually finds nothing to repair; settling against Badgr loads the client when it is needed.
    "reconcile": (
        (*FULL_EXPORTS, *VERIFIER, *BADGR, *LEGACY, *PAGES, "backpack_migrate.openbadges"),
        ("backpack_migrate.reconcile",),
    ),
    # Pages; the Badgr token exchange (requests) and the move load on the first callback, the
    # export's reader with the first badge image.
    "web": (
        (
            *READ_ZIP,
            *FULL_EXPORTS,
            *VERIFIER,
            *BADGR,
            *MIGRATION,
            *LEGACY,
            *DOWNLOADS,
            "backpack_migrate.openbadges",
        ),
        PAGES,
    ),
    # The old APIs; verifying an issued badge and calling Badgr load when a site issues one.
    "legacy": (
        (*FULL_EXPORTS, *VERIFIER, *BADGR, "backpack_migrate.openbadges", "backpack_migrate.portal"),
        LEGACY,
    ),
}


# The models every job of a function reads (built at init), and some it must leave for first use.
_RECORDS = ("Settings", "LearnerRecord", "BadgeRecord")
MODELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "intake": ((*_RECORDS, "ExportRecord", "ExportPlan", "ChunkJob"), ("IntakeJob", "Verdict")),
    "chunk": ((*_RECORDS, "ChunkJob", "ExportRecord", "Extracted"), ("Verdict", "ExportPlan")),
    "verify": ((*_RECORDS, "VerifyJob", "ExportRecord", "Verdict"), ("ChunkJob",)),
    "notify": (("Settings", "NoticeJob", "LearnerRecord"), ("BadgeRecord", "ExportRecord")),
    "migrate": ((*_RECORDS, "ImportJob", "Tokens", "ImportResult"), ("ExportRecord", "GrantRecord")),
    "collections": (
        (*_RECORDS, "CollectionsJob", "GroupRecord", "CollectionRecord", "Tokens"),
        ("ExportRecord",),
    ),
    "reconcile": (_RECORDS, ("GrantRecord",)),
    "web": (_RECORDS, ("GrantRecord", "ExportRecord", "BrowserSession")),
    "legacy": (("Settings",), ("LearnerRecord", "BadgeRecord", "GrantRecord")),
}


Loaded = tuple[set[str], set[str], tuple[bool, int]]


def _loaded(name: str, collector_paused: bool = True) -> Loaded:
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD, str(ROOT / "functions" / name / "app.py"), ",".join(HIDDEN)],
        capture_output=True,
        text=True,
        env=lambda_env(name, collector_paused),
        cwd=str(ROOT),
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules, built, (collecting, frozen) = json.loads(proc.stdout.strip().splitlines()[-1])
    return set(modules), set(built), (bool(collecting), int(frozen))


@pytest.fixture(scope="module")
def loaded() -> dict[str, Loaded]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(FUNCTIONS, pool.map(_loaded, FUNCTIONS), strict=True))


def _present(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def test_every_function_of_the_template_is_measured_and_checked() -> None:
    deployed = {path.parent.name for path in (ROOT / "functions").glob("*/app.py")}
    assert set(FUNCTIONS) == deployed == set(EXPECTED) == set(MODELS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_loads_only_what_its_jobs_need(name: str, loaded: dict[str, Loaded]) -> None:
    modules = loaded[name][0]
    never, needed = EXPECTED[name]
    assert [m for m in (*NEVER, *never) if _present(modules, m)] == []
    assert [m for m in needed if not _present(modules, m)] == []


def test_the_badge_reader_loads_nothing_it_does_not_use() -> None:
    # Importing the package loads only the unbaker; every other name loads its own module when it
    # is first asked for, so reading recipients never loads the fetcher or the verifier.
    code = (
        "import json, sys, backpack_migrate.openbadges as ob;"
        "names = lambda: sorted(m for m in sys.modules if m.startswith('backpack_migrate.openbadges.'));"
        "before = names(); ob.extract; ob.RecipientInfo; ob.recipient_matches;"
        "print(json.dumps([before, names(), 'requests' in sys.modules, 'cryptography' in sys.modules,"
        " callable(ob.unbake)]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120, check=True
    )
    before, after, requests_loaded, cryptography_loaded, unbake_is_the_function = json.loads(proc.stdout)
    package = "backpack_migrate.openbadges."
    assert before == [package + m for m in ("errors", "messages", "unbake")]
    assert {package + "parse", package + "model", package + "recipient"} <= set(after)
    assert package + "verify" not in after and package + "fetch" not in after
    assert (requests_loaded, cryptography_loaded, unbake_is_the_function) == (False, False, True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_builds_at_init_only_the_models_every_job_reads(
    name: str, loaded: dict[str, Loaded]
) -> None:
    built = loaded[name][1]
    every_job, first_use = MODELS[name]
    assert set(every_job) <= built
    assert built.isdisjoint(first_use)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_ends_its_init_collecting_again_with_what_init_built_frozen(
    name: str, loaded: dict[str, Loaded]
) -> None:
    # The collector is paused while the function loads (coldstart.py); were it left paused, an
    # instance would never free a reference cycle, and were nothing frozen, an early invocation
    # would walk every object init made.
    collecting, frozen = loaded[name][2]
    assert collecting
    assert frozen > 50_000


def test_outside_the_lambda_runtime_importing_a_function_leaves_the_collector_alone() -> None:
    # The local stack and the tests load every function into one long-lived process.
    assert _loaded("notify", collector_paused=False)[2] == (True, 0)
