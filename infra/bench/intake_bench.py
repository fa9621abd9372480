"""Intake throughput (learners/s, badges/s) and intake's own memory, per export size.

The figure is the memory of ``backpack_migrate.intake.read_export`` alone: the local AWS (moto,
which holds the uploaded ZIP) and the chunk workers are not in the measured process.

For each size, every step a fresh process:

1. *generate*: ``infra.local.sample_export.write_large_export`` writes the export ZIP (and, once,
   a tiny export used to warm the measured process up);
2. *serve*: ``infra.local.stack.LocalStack(dispatch=False)`` deploys ``template.yaml`` into a moto
   server and uploads the ZIPs under keys no notification watches. No S3 watcher and no SQS
   pollers run, so the chunk jobs intake queues stay in the queue: no chunk worker runs anywhere
   while intake is measured. The process publishes the stack's environment and then waits for
   its stdin to close;
3. *measure* (``--runs`` timed runs and one traced run against the same stack, each in a fresh
   process with the stack's environment and ``AWS_ENDPOINT_URL``, each on its own copy of the
   export, hence its own export record): imports, builds the services, reads a copy of the tiny
   export (every client and code path warmed up), then reads the big export with
   ``read_export`` (manifest and ZIP directory read from S3 by range, emails encrypted, chunk
   jobs queued):

   - a *timed* run gives the wall time, the process's peak RSS (``ru_maxrss``) and the RSS
     growth during ``read_export`` (peak RSS while it ran minus RSS just before it; the kernel's
     high-water mark is reset at the start, see ``/proc/self/clear_refs``). The figures are the
     median time and the highest memory of the runs;
   - the *traced* run repeats it under ``tracemalloc`` and gives the peak of the Python
     allocations made during ``read_export``. tracemalloc slows the run down, so its time is
     not a figure.

Every wait is bounded and the stack process ends when its stdin closes, so the bench exits.

Parts that are not in the tree yet make the bench print ``skipped: <reason>``, never a figure.
``python -m infra.bench.intake_bench [--sizes 10000:50000:10k,1000:5000:1k] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from infra.bench.common import Part

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIZES = ((10_000, 50_000, "10k"), (1_000, 5_000, "1k"))
WARM_SIZE = (20, 100)  # the tiny export every measured process reads first
ISSUER_BASE_URL = "http://127.0.0.1:9/issuers"  # never fetched by intake
# Outside the notified exports/ prefix (and nothing polls anyway: the stack does not dispatch).
RUNS = 3  # timed runs per size, each in a fresh process; the median is the figure


def _keys(run: str) -> tuple[str, str]:
    """The export and the warm-up export one measured process reads (its own export records)."""
    return f"bench/intake-export-{run}.zip", f"bench/warm-export-{run}.zip"


def _run_names(runs: int) -> list[str]:
    return [*(str(i) for i in range(runs)), "traced"]


MIB = 1024 * 1024

MARK = "BENCH-RESULT "  # the functions' logs and metrics share the processes' stdout


def _emit(payload: dict[str, Any]) -> int:
    print(MARK + json.dumps(payload), flush=True)
    return 0


# --------------------------------------------------------------------------- memory


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mb(field: str) -> float | None:
    """``VmRSS``/``VmHWM`` of this process from /proc (Linux), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakRss:
    """The highest RSS of this process between :meth:`start` and :meth:`stop`.

    Resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) and reads
    ``VmHWM`` back; where that is not possible, a thread samples ``VmRSS`` every few ms.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.method = ""
        self._peak = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")
            hwm, rss = _status_mb("VmHWM"), _status_mb("VmRSS")
            if hwm is not None and rss is not None and hwm <= rss + 1:
                self.method = "VmHWM after clear_refs"
                return
        except OSError:
            pass
        self.method = f"VmRSS sampled every {self.interval * 1000:.0f} ms"
        self._peak = _status_mb("VmRSS") or _maxrss_mb()
        self._thread = threading.Thread(target=self._sample, name="bench-rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self._peak = max(self._peak, _status_mb("VmRSS") or 0.0)

    def stop(self) -> float:
        if self._thread is None:
            return _status_mb("VmHWM") or _maxrss_mb()
        self._done.set()
        self._thread.join(timeout=5)
        return max(self._peak, _status_mb("VmRSS") or 0.0)


# --------------------------------------------------------------------------- child: generate


def child_generate(path: Path, learners: int, badges: int) -> int:
    try:
        from infra.local.sample_export import write_large_export
    except ImportError as exc:
        return _emit({"skipped": f"the export generator is not in the tree yet ({exc})"})
    started = time.perf_counter()
    write_large_export(path, learners, badges, ISSUER_BASE_URL, issuers=200)
    return _emit({"seconds": time.perf_counter() - started, "bytes": path.stat().st_size})


# --------------------------------------------------------------------------- child: serve


def child_serve(path: Path, warm: Path, runs: int) -> int:
    """Deploy the stack (no dispatching), upload the exports, publish the environment, wait."""
    try:
        from infra.local.stack import LocalStack
    except ImportError as exc:
        return _emit({"skipped": f"the local stack is not in the tree yet ({exc})"})
    before = dict(os.environ)
    try:
        stack = LocalStack(
            PROJECT_ROOT,
            badgr_api_url="http://127.0.0.1:9",
            badgr_authorize_url="http://127.0.0.1:9/authorize",
            badgr_client_secret="bench-secret",
            dispatch=False,
        )
    except TypeError as exc:  # a LocalStack without the dispatch option
        return _emit({"skipped": f"the local stack cannot run without dispatching ({exc})"})
    try:
        stack.start()
    except Exception as exc:
        return _emit({"skipped": f"the local stack did not start: {type(exc).__name__}: {exc}"})
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=stack.endpoint_url)
        bucket = stack.env.get("EXPORTS_BUCKET", "")
        if not bucket:
            raise RuntimeError("the template gives the functions no EXPORTS_BUCKET")
        started = time.perf_counter()
        first = ""
        for run in _run_names(runs):
            key, warm_key = _keys(run)
            s3.upload_file(str(warm), bucket, warm_key)
            if not first:
                s3.upload_file(str(path), bucket, key)
                first = key
            else:
                s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": first})
        uploaded = time.perf_counter() - started
        env = {k: v for k, v in os.environ.items() if before.get(k) != v}
        removed = [k for k in before if k not in os.environ]
        _emit({"env": env, "removed": removed, "bucket": bucket, "upload_seconds": uploaded})
    except Exception as exc:
        _emit({"skipped": f"uploading the export failed: {type(exc).__name__}: {exc}"})
    else:
        # Serve until the bench closes our stdin (or dies, which closes it too).
        with contextlib.suppress(Exception):
            sys.stdin.read()
    stopper = threading.Thread(target=stack.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=20)
    sys.stdout.flush()
    os._exit(0)


# --------------------------------------------------------------------------- child: measure


def child_measure(key: str, warm_key: str, traced: bool) -> int:
    """Read the export at ``key`` once, after a warm-up, and report time and memory."""
    import tracemalloc

    try:
        from backpack_migrate.config import get_settings
        from backpack_migrate.intake import read_export
        from backpack_migrate.services import get_services
    except ImportError as exc:
        return _emit({"skipped": f"an intake piece is not in the tree yet ({exc})"})
    try:
        svc = get_services()
        bucket = get_settings().exports_bucket

        def read(object_key: str) -> Any:
            head = svc.s3.head_object(Bucket=bucket, Key=object_key)
            return read_export(svc, bucket, object_key, head["ETag"].strip('"'), int(head["ContentLength"]))

        warm = read(warm_key)  # every client, code path and lazy import used once
        head = svc.s3.head_object(Bucket=bucket, Key=key)
        etag, size = head["ETag"].strip('"'), int(head["ContentLength"])
        gc.collect()
        imports_peak = _maxrss_mb()
        baseline = _status_mb("VmRSS") or imports_peak
        peak_rss = PeakRss()
        if traced:
            tracemalloc.start()
        traced_base = tracemalloc.get_traced_memory()[0] if traced else 0
        peak_rss.start()
        started = time.perf_counter()
        export = read_export(svc, bucket, key, etag, size)
        seconds = time.perf_counter() - started
        window_peak = peak_rss.stop()
        traced_peak = tracemalloc.get_traced_memory()[1] if traced else 0
        if traced:
            tracemalloc.stop()
        _emit(
            {
                "seconds": seconds,
                "learners": int(getattr(export, "learner_count", 0) or 0),
                "badges": int(getattr(export, "badge_count", 0) or 0),
                "status": str(getattr(export, "status", "")),
                "chunks": int(getattr(export, "chunk_count", 0) or 0),
                "warm_status": str(getattr(warm, "status", "")),
                "baseline_mb": round(baseline, 1),
                "window_peak_mb": round(window_peak, 1),
                "growth_mb": round(max(0.0, window_peak - baseline), 1),
                # The whole life of the process: imports, warm-up and read_export.
                "peak_mb": round(max(imports_peak, _maxrss_mb(), window_peak), 1),
                "traced_mb": round((traced_peak - traced_base) / MIB, 1) if traced else None,
                "rss_method": peak_rss.method,
                "export_bytes": size,
            }
        )
    except Exception as exc:
        _emit({"skipped": f"intake failed: {type(exc).__name__}: {exc}"})
    return 0


# --------------------------------------------------------------------------- orchestration


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "infra.bench.intake_bench", *args]


def _last_result(text: str) -> dict[str, Any] | None:
    lines = [line[len(MARK) :] for line in text.splitlines() if line.startswith(MARK)]
    return json.loads(lines[-1]) if lines else None


def _child(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            _command(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(PROJECT_ROOT),
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"took longer than {timeout:.0f} s"}
    result = _last_result(proc.stdout)
    if result is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"the bench process failed (exit {proc.returncode}): {tail[:200]}"}
    return result


class StackProcess:
    """The ``serve`` child: started, waited for (bounded), and always ended."""

    def __init__(self, zip_path: Path, warm_path: Path, runs: int, log_dir: Path) -> None:
        self.args = ["--serve", str(zip_path), "--warm", str(warm_path), "--runs", str(runs)]
        self.log_path = log_dir / f"stack-{zip_path.stem}.out"
        self._log: IO[str] | None = None
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float) -> dict[str, Any]:
        # Output goes to a file: a pipe nobody reads could fill up and block the stack.
        self._log = open(self.log_path, "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _command(self.args),
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(PROJECT_ROOT),
            # moto allows one PurgeQueue a minute by default; the bench purges before every run.
            env={**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = _last_result(self.log_path.read_text(encoding="utf-8", errors="replace"))
            if result is not None:
                return result
            if self.proc.poll() is not None:
                tail = (self.log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                return {"skipped": f"the stack process ended (exit {self.proc.returncode}): {tail[:200]}"}
            time.sleep(0.2)
        return {"skipped": f"the stack was not ready after {timeout:.0f} s"}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()  # the child stops its stack and exits
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _measure_env(served: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in set(served.get("removed", []))}
    env.update(served["env"])
    env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "BackpackMigrateBench")
    return env


def _purge_chunk_queue(env: dict[str, str]) -> str | None:
    """Empty the chunk queue, so every run starts from the same moto state.

    moto answers SendMessageBatch more slowly as a queue fills up; without this each run would
    be slower than the one before. Returns why it could not, if it could not.
    """
    url = env.get("CHUNK_QUEUE_URL")
    if not url:
        return "no CHUNK_QUEUE_URL in the stack's environment"
    try:
        import boto3

        boto3.client(
            "sqs",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
        ).purge_queue(QueueUrl=url)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _per_s(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 and count > 0 else None


def _measure_size(
    path: Path, warm: Path, runs: int, log_dir: Path, timeout: float
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Serve one export and measure it: (what the stack reported, the timed runs, the traced run)."""
    stack = StackProcess(path, warm, runs, log_dir)
    try:
        served = stack.start(timeout)
        if "skipped" in served:
            return served, [], {}
        env = _measure_env(served)
        results = []
        for run in _run_names(runs):
            key, warm_key = _keys(run)
            flags = ["--traced"] if run == "traced" else []
            problem = _purge_chunk_queue(env)
            if problem:
                results.append({"skipped": f"the chunk queue could not be emptied: {problem}"})
                continue
            results.append(_child(["--measure", key, "--warm-key", warm_key, *flags], timeout, env))
        traced = results.pop()
        return served, results, traced
    finally:
        stack.stop()


def bench_intake(
    sizes: tuple[tuple[int, int, str], ...] = SIZES, timeout: float = 1800, runs: int = RUNS
) -> Part:
    part = Part(
        "intake: export ZIP on S3 (moto, another process) -> learners read and chunk jobs queued",
        headers=[
            "size",
            "export MB",
            "learners",
            "badges",
            "seconds",
            "learners/s",
            "badges/s",
            "peak MB",
            "baseline MB",
            "growth MB",
            "traced MB",
        ],
    )
    for _learners, _badges, label in sizes:
        for key in ("learners_per_s", "badges_per_s", "peak_mb", "growth_mb", "traced_mb", "export_mb"):
            part.figures[f"intake_{label}_{key}"] = None
    methods: set[str] = set()
    measured: list[tuple[int, float]] = []  # (badges, growth MB), to tell what memory follows
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        warm = Path(tmp) / "export-warm.zip"
        made = _child(
            ["--generate", str(warm), "--learners", str(WARM_SIZE[0]), "--badges", str(WARM_SIZE[1])],
            timeout,
        )
        if "skipped" in made:
            return part.skip(f"the warm-up export: {made['skipped']}")
        for learners, badges, label in sizes:
            path = Path(tmp) / f"export-{label}.zip"
            made = _child(
                ["--generate", str(path), "--learners", str(learners), "--badges", str(badges)], timeout
            )
            if "skipped" in made:
                part.notes.append(f"{label}: skipped: {made['skipped']}")
                continue
            export_mb = round(made["bytes"] / MIB, 1)
            part.figures[f"intake_{label}_export_mb"] = export_mb
            part.notes.append(
                f"{label}: export of {learners} learners / {badges} badges written in "
                f"{made['seconds']:.1f} s ({export_mb} MB)"
            )
            served, results, traced = _measure_size(path, warm, runs, Path(tmp), timeout)
            path.unlink(missing_ok=True)
            if "skipped" in served:
                part.notes.append(f"{label}: skipped: {served['skipped']}")
                continue
            failed = [r["skipped"] for r in results if "skipped" in r]
            timed = [r for r in results if "skipped" not in r]  # in the order they ran
            if failed:
                part.notes.append(f"{label}: {len(failed)} of {runs} timed runs failed: {failed[0]}")
            if not timed:
                continue
            if "skipped" in traced:
                part.notes.append(f"{label}: the tracemalloc run was skipped: {traced['skipped']}")
            by_time = sorted(timed, key=lambda r: float(r["seconds"]))
            got = by_time[(len(by_time) - 1) // 2]  # the median run (the lower one of an even count)
            seconds = float(got["seconds"])
            lps = _per_s(got["learners"], seconds)
            bps = _per_s(got["badges"], seconds)
            peak = max(float(r["peak_mb"]) for r in timed)
            growth = max(float(r["growth_mb"]) for r in timed)
            traced_mb = traced.get("traced_mb")
            part.figures[f"intake_{label}_learners_per_s"] = lps
            part.figures[f"intake_{label}_badges_per_s"] = bps
            part.figures[f"intake_{label}_peak_mb"] = peak
            part.figures[f"intake_{label}_growth_mb"] = growth
            part.figures[f"intake_{label}_traced_mb"] = traced_mb
            methods.update(str(r.get("rss_method", "")) for r in timed)
            measured.append((int(got["badges"]), growth))
            part.rows.append(
                [
                    label,
                    str(export_mb),
                    str(got["learners"]),
                    str(got["badges"]),
                    f"{seconds:.2f}",
                    str(lps),
                    str(bps),
                    str(peak),
                    str(got["baseline_mb"]),
                    str(growth),
                    str(traced_mb),
                ]
            )
            if any(r["learners"] != learners or r["badges"] != badges for r in timed):
                part.notes.append(
                    f"{label}: intake counted {got['learners']} learners / {got['badges']} badges "
                    f"(status {got['status']}), generated {learners} / {badges}"
                )
            part.notes.append(
                f"{label}: read_export took "
                + " / ".join(f"{float(r['seconds']):.2f}" for r in timed)
                + f" s in {len(timed)} fresh processes (in run order); growth "
                + " / ".join(str(r["growth_mb"]) for r in timed)
                + f" MB; {got['chunks']} chunk jobs queued per run (none processed: nothing "
                f"dispatches); upload to moto took {served['upload_seconds']:.1f} s"
            )
    if len(measured) >= 2:
        (small_badges, small_growth), (big_badges, big_growth) = min(measured), max(measured)
        if big_badges > small_badges:
            per_k = (big_growth - small_growth) / (big_badges - small_badges) * 1000
            part.notes.append(
                f"growth between sizes: {per_k:.2f} MB per 1000 badges (past a few thousand "
                "entries the ZIP directory index, listed names and seen emails go to a temporary "
                "SQLite file with a bounded cache; the ZIP's bytes are never held)"
            )
    part.notes.extend(
        [
            "moto (holding the ZIP) runs in another process; no chunk worker runs during the "
            "measurement; the chunk queue is emptied before each run",
            f"seconds = median wall time of read_export over {runs} fresh processes, each after a "
            f"warm-up read of a {WARM_SIZE[0]}-learner export (clients, caches and imports ready)",
            "peak MB = ru_maxrss of a measured process (interpreter, imports, boto3 clients, "
            "warm-up, intake); highest of the runs",
            "growth MB = peak RSS during read_export minus RSS just before it "
            f"({', '.join(sorted(methods)) or 'n/a'}); highest of the runs",
            "traced MB = tracemalloc peak of the Python allocations made during read_export "
            "(one more fresh process, same export under another key)",
        ]
    )
    return part


def _parse_sizes(text: str) -> tuple[tuple[int, int, str], ...]:
    sizes = []
    for item in text.split(","):
        learners, badges, *label = item.split(":")
        sizes.append((int(learners), int(badges), label[0] if label else f"{int(learners) // 1000}k"))
    return tuple(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Intake throughput and memory.")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--warm-key", default=_keys("0")[1], help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed runs per size (default {RUNS})")
    parser.add_argument("--learners", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--badges", type=int, default=50_000, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=SIZES,
        help="learners:badges:label,... (default 10000:50000:10k,1000:5000:1k)",
    )
    args = parser.parse_args(argv)
    if args.generate:
        return child_generate(args.generate, args.learners, args.badges)
    if args.serve:
        return child_serve(args.serve, args.warm, args.runs)
    if args.measure:
        return child_measure(args.measure, args.warm_key, args.traced)
    from infra.bench.common import render

    part = bench_intake(args.sizes, runs=max(1, args.runs))
    print(render(part))
    print(json.dumps(part.figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
