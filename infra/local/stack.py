"""A local stack without Docker: the SAM template deployed into moto, the functions run in-process.

The resources come from ``template.yaml`` (expanded with samtranslator, then created through
moto's CloudFormation: :mod:`infra.local.cloudformation`), so the template stays the one source
of truth. Lambda itself is played by threads that deliver the events AWS would deliver, in AWS's
shapes, each invocation on a thread of its own as in a Lambda environment of its own:

* S3 ``ObjectCreated`` records for new object versions matching the bucket's notification filter,
  with Lambda's asynchronous retries and the function's dead-letter queue (:mod:`.s3_events`);
* SQS batches per event source mapping, with SQS's visibility timeouts, the functions' own
  ``ChangeMessageVisibility``, receive counts and dead-letter redrive (:mod:`.sqs_poller`);
* API Gateway HTTP API payload format 2.0 events for the HttpApi routes (:mod:`.http_api`);
* EventBridge schedules at their rate (:mod:`.schedules`).

Ranged S3 reads are answered from moto's store in this process (:mod:`.s3_ranges`): moto copies
the whole object for each, which made big exports crawl.

SQS and schedule durations, and the functions' ``*_SECONDS`` settings, are multiplied by
``time_scale`` (a hundredth by default), so a 720 s visibility timeout lasts 7.2 s here, and
the reconciler's two hours 72 s. Functions share this process, so their environment
is merged into ``os.environ``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backpack_migrate.queues import jobs_held
from infra.local import aws_calls
from infra.local.cloudformation import (
    ACCOUNT_ID,
    REGION,
    Deployment,
    expand_template,
    load_template,
)
from infra.local.http_api import HttpApi, HttpRoute
from infra.local.lambda_runtime import FunctionSpec, Invoker, LambdaContext, import_file
from infra.local.moto_dispatch import list_moto_modules_once
from infra.local.moto_locks import (
    cheap_sqs_attributes,
    query_by_key,
    serialise_dynamodb,
    serialise_sqs_receives,
    snapshot_sqs_pending,
)
from infra.local.moto_memory import forget_model_instances
from infra.local.s3_events import S3Events
from infra.local.s3_ranges import serve_range
from infra.local.schedules import Scheduler, find_schedules
from infra.local.sqs_poller import SqsPollers, SqsSource

__all__ = ["LambdaContext", "LocalStack", "expand_template", "load_template"]

log = logging.getLogger("backpack_migrate.local_stack")


class LocalStack:
    """The service's AWS resources in moto (server mode) and its functions run by dispatchers.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        root: Path,
        *,
        badgr_api_url: str,
        badgr_authorize_url: str,
        badgr_client_secret: str,
        public_host: str = "127.0.0.1",
        http_port: int = 0,
        env_overrides: dict[str, str] | None = None,
        time_scale: float = 0.01,
        schedule_scale: float | None = None,
        async_retry_delays: tuple[float, ...] = (0.2, 0.5),
        poll_interval: float = 0.1,
        default_max_concurrency: int = 2,
        max_concurrency: dict[str, int] | None = None,
        dispatch: bool = True,
        dynamodb_process: bool = False,
    ) -> None:
        """
        ``time_scale``: how long a second of SQS and EventBridge time lasts here (visibility
        timeouts, the functions' ``ChangeMessageVisibility``, schedule rates); 1.0 is AWS's own.
        ``schedule_scale``: the same for schedule rates alone, where it differs (a benchmark
        timing a real export runs the reconciler at its own rate: moto answers each of its
        index queries by walking the whole table, so every scaled-down run cost the stack a
        walk of every item).
        ``async_retry_delays``: waits before the asynchronous retries (a minute and two in AWS).
        ``max_concurrency``: concurrent pollers per queue (logical id), where the template sets none
        or a benchmark wants another.
        ``dispatch=False`` deploys the resources and serves the HTTP API but delivers no S3
        events and starts no asynchronous-invoke worker, SQS pollers or schedules: new objects
        and queued messages just stay where they are (for measuring one function's work alone;
        ``wait_idle`` then waits on queues nobody empties).
        ``dynamodb_process``: moto's DynamoDB answers from a process of its own
        (:mod:`infra.local.moto_process`) rather than from a thread of this one, so the
        functions' DynamoDB calls do not wait for this interpreter's lock (for benchmarks of a
        busy stack); its table is then counted through ``census_url``.
        """
        self.root = Path(root).resolve()
        self.badgr_api_url = badgr_api_url
        self.badgr_authorize_url = badgr_authorize_url
        self.badgr_client_secret = badgr_client_secret
        self.public_host = public_host
        self.http_port = http_port
        self.env_overrides = dict(env_overrides or {})
        self.time_scale = time_scale
        self.poll_interval = poll_interval
        self.default_max_concurrency = default_max_concurrency
        self.max_concurrency = dict(max_concurrency or {})
        self.dispatch = dispatch
        self.dynamodb_process = dynamodb_process

        self.stack_name = f"backpack-migrate-local-{uuid.uuid4().hex[:8]}"
        self.endpoint_url = ""
        self.dynamodb_endpoint_url = ""  # where DynamoDB answers: endpoint_url unless in its own process
        self.census_url = ""  # the table's census, when DynamoDB runs in its own process
        self._dynamodb: subprocess.Popen[str] | None = None
        self.url = ""
        self.env: dict[str, str] = {}
        self.parameters: dict[str, str] = {}
        self.template: dict[str, Any] = {}
        self.expanded: dict[str, Any] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.deployment: Deployment | None = None

        self._server: Any = None
        self._http: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._saved_env: dict[str, str] | None = None
        self._saved_sys_path: list[str] | None = None
        self.invoker = Invoker()
        self.sqs = SqsPollers(
            self._client, self.invoker, self._stop, time_scale=time_scale, poll_interval=poll_interval
        )
        self.s3 = S3Events(
            self._client,
            self.invoker,
            self._stop,
            async_retry_delays=async_retry_delays,
            poll_interval=poll_interval,
        )
        self.api = HttpApi(self.invoker)
        self.scheduler = Scheduler(
            self.invoker, self._stop, time_scale=time_scale if schedule_scale is None else schedule_scale
        )
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._started = False
        self._http_serving = False
        self._saved_log_levels: dict[str, int] = {}

    @property
    def sqs_sources(self) -> list[SqsSource]:
        return self.sqs.sources

    @property
    def routes(self) -> list[HttpRoute]:
        return self.api.routes

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._saved_env = dict(os.environ)
        # moto and werkzeug are chatty (a line per request, a warning per resource it skips).
        for name in ("moto", "werkzeug"):
            self._saved_log_levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Tried to parse", category=UserWarning)
        self._saved_sys_path = list(sys.path)
        # Port 0: the server binds a free port itself, so no other process can take it between
        # choosing and binding (moto's start() would then wait forever).
        serialise_dynamodb()
        snapshot_sqs_pending()
        serialise_sqs_receives()
        cheap_sqs_attributes()
        query_by_key()
        list_moto_modules_once()
        forget_model_instances()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        port = self._server.get_host_and_port()[1]
        self.endpoint_url = self.dynamodb_endpoint_url = f"http://127.0.0.1:{port}"
        # The stacks of one process share moto's state (sent emails are kept per account, not
        # per stack): start from nothing, whatever an earlier stack's stop() could not clear.
        import requests

        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )

        # The HTTP API listens first: its URL is the functions' PUBLIC_BASE_URL.
        self._http = http.server.ThreadingHTTPServer(
            (self.public_host, self.http_port), self.api.handler_class()
        )
        self._http.daemon_threads = True
        self.url = self.api.url = f"http://{self.public_host}:{self._http.server_address[1]}"

        self.template = load_template(self.root / "template.yaml")
        self.expanded = expand_template(self.template)
        self.deployment = Deployment(
            self.template,
            self.expanded,
            self._client,
            stack_name=self.stack_name,
            api_url=self.url,
            badgr_api_url=self.badgr_api_url,
            badgr_authorize_url=self.badgr_authorize_url,
            badgr_client_secret=self.badgr_client_secret,
        )
        self.deployment.deploy()
        if self.dynamodb_process:
            self._move_tables_to_own_process()
        self.parameters = self.deployment.parameters
        self.api.api_id = self.deployment.physical.get("HttpApi", "localapi")
        self._resolve_environment()
        self._prepare_ses()
        self._load_functions()
        self._build_dispatch()
        aws_calls.add_hook(self.sqs.on_aws_call)
        aws_calls.add_hook(serve_range, everywhere=True)
        self._spawn(self._http.serve_forever, "local-http-api")
        self._http_serving = True
        if self.dispatch:
            self.s3.listen()
            for target, name in self.s3.threads() + self.sqs.threads() + self.scheduler.threads():
                self._spawn(target, name)
        log.info("local stack up: api %s, aws %s", self.url, self.endpoint_url)

    def stop(self) -> None:
        self._stop.set()
        self.s3.close()
        aws_calls.remove_hook(self.sqs.on_aws_call)
        aws_calls.remove_hook(serve_range)
        if self._http is not None and self._http_serving:
            with contextlib.suppress(Exception):
                self._http.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self._http is not None:
            with contextlib.suppress(Exception):
                self._http.server_close()
            self._http = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                import requests

                requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=5)
            with contextlib.suppress(Exception):
                self._server.stop()
            self._server = None
        if self._dynamodb is not None:
            with contextlib.suppress(Exception):
                assert self._dynamodb.stdin is not None
                self._dynamodb.stdin.close()  # its signal to stop
                self._dynamodb.wait(timeout=10)
            if self._dynamodb.poll() is None:
                self._dynamodb.kill()
            self._dynamodb = None
        if self._saved_env is not None:
            os.environ.clear()
            os.environ.update(self._saved_env)
            self._saved_env = None
        if self._saved_sys_path is not None:
            sys.path[:] = self._saved_sys_path
            self._saved_sys_path = None
        self._clients.clear()
        self._clear_settings_cache()
        for name, level in self._saved_log_levels.items():
            logging.getLogger(name).setLevel(level)

    def _move_tables_to_own_process(self) -> None:
        """Start moto's DynamoDB process and make there the tables the template made here (moto's
        CloudFormation, which made them, lives in this process), then point every client at it."""
        self._start_dynamodb_process()
        here = self._client("dynamodb")
        with self._clients_lock:
            del self._clients["dynamodb"]
        there = self._client("dynamodb")  # now the other process's
        for name in here.list_tables()["TableNames"]:
            table = here.describe_table(TableName=name)["Table"]
            wanted: dict[str, Any] = {
                "TableName": name,
                "KeySchema": table["KeySchema"],
                "AttributeDefinitions": table["AttributeDefinitions"],
                "BillingMode": "PAY_PER_REQUEST",
            }
            indexes = [
                {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
                for index in table.get("GlobalSecondaryIndexes", [])
            ]
            if indexes:
                wanted["GlobalSecondaryIndexes"] = indexes
            if table.get("StreamSpecification"):
                wanted["StreamSpecification"] = table["StreamSpecification"]
            if table.get("SSEDescription"):
                wanted["SSESpecification"] = {"Enabled": True}
            there.create_table(**wanted)
            ttl = here.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if ttl.get("TimeToLiveStatus") == "ENABLED":
                there.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
            here.delete_table(TableName=name)  # a client left pointing here then fails loudly
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = self.dynamodb_endpoint_url

    def _start_dynamodb_process(self) -> None:
        self._dynamodb = subprocess.Popen(
            [sys.executable, "-m", "infra.local.moto_process"],
            cwd=str(self.root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._dynamodb.stdout is not None
        ports = self._dynamodb.stdout.readline().split()
        if len(ports) != 2:
            raise RuntimeError("moto's DynamoDB process did not start")
        self.dynamodb_endpoint_url = f"http://127.0.0.1:{ports[0]}"
        self.census_url = f"http://127.0.0.1:{ports[1]}/census"

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _client(self, service: str) -> Any:
        with self._clients_lock:  # boto3's session is not thread-safe; its clients are
            if service not in self._clients:
                import boto3

                session: Any = boto3.session.Session()
                self._clients[service] = session.client(
                    service,
                    region_name=REGION,
                    endpoint_url=self.dynamodb_endpoint_url if service == "dynamodb" else self.endpoint_url,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                )
            return self._clients[service]

    # ------------------------------------------------------------------ deployed resources

    def resource(self, logical_id: str) -> str:
        """Physical id of a resource of the template (queue URL, table name, bucket name, ...)."""
        assert self.deployment is not None, "the stack is not started"
        return self.deployment.physical[logical_id]

    @property
    def _physical_ids(self) -> dict[str, str]:
        assert self.deployment is not None
        return self.deployment.physical

    def _resolve(self, node: Any) -> Any:
        assert self.deployment is not None
        return self.deployment.resolve(node)

    def _get_att(self, logical_id: str, attribute: str) -> str:
        assert self.deployment is not None
        return self.deployment.get_att(logical_id, attribute)

    # ------------------------------------------------------------------ environment

    def _resolve_environment(self) -> None:
        merged: dict[str, str] = {}
        for logical_id, resource in self.expanded["Resources"].items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            variables = resource["Properties"].get("Environment", {}).get("Variables", {})
            for name, value in variables.items():
                resolved = str(self._resolve(value))
                if name in merged and merged[name] != resolved:
                    log.debug("%s differs between functions (%s); keeping the first", name, logical_id)
                    continue
                merged[name] = resolved
        for name, value in merged.items():
            # A duration the functions compare with SQS's and the schedules' clocks runs at
            # their pace, or the reconciler would call a job stale a hundred times too late.
            if name.endswith("_SECONDS") and value.isdigit():
                merged[name] = str(max(1, round(int(value) * self.time_scale)))
        merged.update(
            {
                "BADGR_API_URL": self.badgr_api_url,
                "BADGR_AUTHORIZE_URL": self.badgr_authorize_url,
                "PUBLIC_BASE_URL": self.url,
                "ALLOW_LOOPBACK_FETCH": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        merged.update(self.env_overrides)
        self.env = merged
        os.environ.update(merged)
        self._clear_settings_cache()

    @staticmethod
    def _clear_settings_cache() -> None:
        config = sys.modules.get("backpack_migrate.config")
        if config is None:
            with contextlib.suppress(ImportError):
                import backpack_migrate.config as config_module

                config = config_module
        if config is not None:
            config.get_settings.cache_clear()

    def _prepare_ses(self) -> None:
        sender = self.env.get("SES_SENDER")
        if not sender:
            return
        ses = self._client("ses")
        ses.verify_email_identity(EmailAddress=sender)
        if "@" in sender:
            ses.verify_domain_identity(Domain=sender.rsplit("@", 1)[1])

    # ------------------------------------------------------------------ functions

    def _load_functions(self) -> None:
        for path in (str(self.root / "shared"), str(self.root)):
            if path not in sys.path:
                sys.path.insert(0, path)
        self._clear_settings_cache()
        sam_resources = self.template.get("Resources", {})
        globals_fn = self.template.get("Globals", {}).get("Function", {})
        for logical_id, resource in self.expanded["Resources"].items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            props = resource["Properties"]
            sam_props = sam_resources.get(logical_id, {}).get("Properties", {})
            code_uri = str(sam_props.get("CodeUri", globals_fn.get("CodeUri", "")))
            code_dir = Path(code_uri.rstrip("/")).name
            handler_spec = str(props.get("Handler", "app.handler"))
            module_file, _, attribute = handler_spec.rpartition(".")
            spec = FunctionSpec(
                logical_id=logical_id,
                code_dir=code_dir,
                physical_name=self._physical_ids.get(logical_id, logical_id),
                memory_mb=int(props.get("MemorySize", 128)),
                timeout_s=int(props.get("Timeout", 3)),
                dead_letter_arn=(
                    str(self._resolve(props["DeadLetterConfig"]["TargetArn"]))
                    if props.get("DeadLetterConfig", {}).get("TargetArn")
                    else None
                ),
            )
            source = self.root / code_uri / f"{module_file.replace('.', '/')}.py"
            module = import_file(f"fn_{code_dir}_{module_file.replace('.', '_')}", source)
            spec.handler = getattr(module, attribute)
            self.functions[logical_id] = spec

    def _function_for(self, ref: Any) -> FunctionSpec:
        """The function a Ref/GetAtt/Sub to a Lambda function names."""
        if isinstance(ref, dict):
            if "Ref" in ref:
                return self.functions[ref["Ref"]]
            if "Fn::GetAtt" in ref:
                target = ref["Fn::GetAtt"]
                return self.functions[target[0] if isinstance(target, list) else target.split(".")[0]]
            if "Fn::Sub" in ref:
                text = ref["Fn::Sub"] if isinstance(ref["Fn::Sub"], str) else ref["Fn::Sub"][0]
                for logical_id in re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", text):
                    if logical_id in self.functions:
                        return self.functions[logical_id]
        raise ValueError(f"cannot tell which function {ref!r} names")

    def _build_dispatch(self) -> None:
        sqs = self._client("sqs")
        for logical_id, resource in self.expanded["Resources"].items():
            rtype, props = resource["Type"], resource.get("Properties", {})
            if rtype == "AWS::Lambda::EventSourceMapping" and self._is_sqs_arn(props.get("EventSourceArn")):
                queue_ref = props["EventSourceArn"]["Fn::GetAtt"]
                queue_id = queue_ref[0] if isinstance(queue_ref, list) else queue_ref.split(".")[0]
                url = self._physical_ids[queue_id]
                batch = int(props.get("BatchSize", 10))
                scaling = props.get("ScalingConfig", {}).get("MaximumConcurrency")
                source = SqsSource(
                    function=self._function_for(props["FunctionName"]),
                    queue_logical_id=queue_id,
                    queue_url=url,
                    queue_arn=self._get_att(queue_id, "Arn"),
                    batch_size=batch,
                    batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                    # 0 from a benchmark: no poller, the queue's jobs wait.
                    max_concurrency=int(
                        self.max_concurrency.get(queue_id, scaling or self.default_max_concurrency)
                    ),
                    report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
                attrs = sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
                ).get("Attributes", {})
                source.visibility_timeout_s = float(attrs.get("VisibilityTimeout", 30))
                if "RedrivePolicy" in attrs:
                    policy = json.loads(attrs["RedrivePolicy"])
                    source.max_receive_count = int(policy["maxReceiveCount"])
                    dlq_name = policy["deadLetterTargetArn"].rsplit(":", 1)[1]
                    source.dlq_url = sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
                self.sqs_sources.append(source)
            elif rtype == "AWS::S3::Bucket":
                for config in props.get("NotificationConfiguration", {}).get("LambdaConfigurations", []):
                    if not str(config.get("Event", "")).startswith("s3:ObjectCreated"):
                        continue
                    rules = {
                        rule["Name"].lower(): rule["Value"]
                        for rule in config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                    }
                    self.s3.watch.append(
                        (
                            self._physical_ids[logical_id],
                            rules.get("prefix", ""),
                            rules.get("suffix", ""),
                            self._function_for(config["Function"]),
                        )
                    )
            elif rtype == "AWS::ApiGatewayV2::Api":
                for path, methods in props.get("Body", {}).get("paths", {}).items():
                    for method, operation in methods.items():
                        integration = operation.get("x-amazon-apigateway-integration")
                        if not integration:
                            continue
                        verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                        self.routes.append(HttpRoute(verb, path, self._function_for(integration["uri"])))
        self.routes.sort(key=HttpRoute.specificity)
        self.scheduler.schedules = find_schedules(self.template, self.functions)

    @staticmethod
    def _is_sqs_arn(node: Any) -> bool:
        return isinstance(node, dict) and "Fn::GetAtt" in node

    # ------------------------------------------------------------------ S3 -> function

    def invoke_s3_event(self, bucket: str, key: str, *, wait: bool = True) -> None:
        """Deliver one ObjectCreated:Put event for an existing object, as S3 would.

        ``wait=True`` runs the invocation (with Lambda's retries) before returning; otherwise
        it is queued like an asynchronous invoke. Raises when no function is subscribed.
        """
        self.s3.deliver(bucket, key, wait=wait)

    # ------------------------------------------------------------------ inspection

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Return once every queue (visible, in flight, delayed) is empty and nothing runs.

        Raises ``TimeoutError`` with what is still busy.
        """
        sqs = self._client("sqs")
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        busy: dict[str, int] = {}
        while time.monotonic() < deadline:
            busy = {}
            for source in self.sqs_sources:
                total = jobs_held(sqs, source.queue_url)
                if total:
                    busy[source.queue_logical_id] = total
            pending = self.s3.pending
            if pending:
                busy["async events"] = pending
            running = self.invoker.running
            if running:
                busy["running invocations"] = running
            if busy:
                quiet_checks = 0
            else:
                quiet_checks += 1
                if quiet_checks >= 2:
                    return
            time.sleep(self.poll_interval)
        raise TimeoutError(f"local stack still busy after {timeout}s: {busy}")

    def sent_emails(self) -> list[dict[str, Any]]:
        """Emails accepted by SES (moto), oldest first."""
        from moto.backends import get_backend

        backend = get_backend("ses")[ACCOUNT_ID][REGION]
        emails: list[dict[str, Any]] = []
        for message in list(backend.sent_messages):
            destinations = getattr(message, "destinations", {})
            if isinstance(destinations, list):
                destinations = {"ToAddresses": destinations}
            emails.append(
                {
                    "id": message.id,
                    "source": message.source,
                    "to": list(destinations.get("ToAddresses", [])),
                    "cc": list(destinations.get("CcAddresses", [])),
                    "bcc": list(destinations.get("BccAddresses", [])),
                    "subject": getattr(message, "subject", None),
                    "body": getattr(message, "body", None),
                    "raw": getattr(message, "raw_data", None),
                    "template": getattr(message, "template", None),
                    "template_data": getattr(message, "template_data", None),
                }
            )
        return emails

    def _dlq_url(self, queue_logical_id: str) -> str:
        sqs = self._client("sqs")
        url = self._physical_ids[queue_logical_id]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        if "RedrivePolicy" in attrs:
            dlq_name = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[1]
            url = sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
        return str(url)

    def dlq_depth(self, queue_logical_id: str) -> int:
        """How many messages the dead-letter queue of ``queue_logical_id`` holds, counting those
        out of sight (the reconciler holds the ones it has read, for an operator's redrive)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self._client("sqs").get_queue_attributes(
            QueueUrl=self._dlq_url(queue_logical_id), AttributeNames=names
        )
        return sum(int(attrs["Attributes"].get(name, 0)) for name in names)

    def dlq_messages(self, queue_logical_id: str) -> list[dict[str, Any]]:
        """The visible messages in the dead-letter queue of ``queue_logical_id`` (or in that
        queue if it has none); read without consuming them."""
        sqs = self._client("sqs")
        url = self._dlq_url(queue_logical_id)
        found: dict[str, dict[str, Any]] = {}
        handles: list[str] = []
        for _ in range(20):
            response = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                VisibilityTimeout=5,
                WaitTimeSeconds=0,
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            for message in batch:
                found.setdefault(message["MessageId"], message)
                handles.append(message["ReceiptHandle"])
        for handle in handles:
            with contextlib.suppress(Exception):
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        return list(found.values())
