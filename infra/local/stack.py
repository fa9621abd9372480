"""A local stack without Docker: the SAM template deployed into moto, the functions run in-process.

The resources come from ``template.yaml`` (expanded with samtranslator, then created through
moto's CloudFormation), so the template stays the one source of truth. Lambda itself is played
by dispatcher threads that deliver the events AWS would deliver, in AWS's shapes:

* S3 ``ObjectCreated`` records for new objects matching the bucket's notification filter, with
  Lambda's asynchronous retries (two) and the function's dead-letter queue after them;
* SQS batches per event source mapping (batch size, batching window, maximum concurrency,
  ``ReportBatchItemFailures``; failed messages come back and go to the dead-letter queue after
  ``maxReceiveCount`` receives);
* API Gateway HTTP API payload format 2.0 events for the HttpApi routes.

Functions share this process, so their environment is merged into ``os.environ``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import http.server
import importlib.util
import io
import json
import logging
import os
import queue
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("backpack_migrate.local_stack")

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PLACEHOLDER_CODE_URI = "s3://backpack-migrate-local-placeholder/code.zip"
_SAM_TYPES_WITH_CODE = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}
_TEXT_CONTENT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/problem+json",
)
_env_lock = threading.Lock()

Handler = Callable[[dict[str, Any], Any], Any]


# --------------------------------------------------------------------------- template


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM template (YAML with short-form intrinsics) into a dict."""
    from samtranslator.yaml_helper import yaml_parse

    parsed: dict[str, Any] = yaml_parse(path.read_text(encoding="utf-8"))
    return parsed


class _NoManagedPolicies:
    """Managed-policy loader for offline transforms: SAM knows the ARNs it needs itself."""

    def load(self) -> dict[str, str]:
        return {}


def expand_template(
    template: Path | dict[str, Any],
    parameter_values: dict[str, Any] | None = None,
    *,
    region: str = REGION,
) -> dict[str, Any]:
    """Expand a SAM template into plain CloudFormation, offline.

    Local ``CodeUri``/``ContentUri`` are replaced by a placeholder S3 URI (as ``sam package``
    would replace them with uploaded artifacts).
    """
    from samtranslator.translator.arn_generator import ArnGenerator
    from samtranslator.translator.transform import transform

    sam = load_template(template) if isinstance(template, Path) else copy.deepcopy(template)
    for resource in sam.get("Resources", {}).values():
        key = _SAM_TYPES_WITH_CODE.get(resource.get("Type", ""))
        props = resource.get("Properties", {})
        if key and isinstance(props.get(key), str) and not props[key].startswith("s3://"):
            props[key] = PLACEHOLDER_CODE_URI
    with _env_lock:
        saved = os.environ.get("AWS_DEFAULT_REGION")
        saved_arn_region = ArnGenerator.BOTO_SESSION_REGION_NAME
        os.environ["AWS_DEFAULT_REGION"] = region
        ArnGenerator.BOTO_SESSION_REGION_NAME = region
        try:
            expanded: dict[str, Any] = transform(sam, dict(parameter_values or {}), _NoManagedPolicies())
        finally:
            ArnGenerator.BOTO_SESSION_REGION_NAME = saved_arn_region
            if saved is None:
                os.environ.pop("AWS_DEFAULT_REGION", None)
            else:
                os.environ["AWS_DEFAULT_REGION"] = saved
    return expanded


# --------------------------------------------------------------------------- Lambda look-alikes


class LambdaContext:
    """The attributes and method of the Python runtime's context object that code uses."""

    def __init__(self, function_name: str, memory_mb: int, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: str
    physical_name: str
    memory_mb: int
    timeout_s: int
    dead_letter_arn: str | None = None
    handler: Handler | None = None


@dataclass
class SqsSource:
    function: FunctionSpec
    queue_logical_id: str
    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window_s: float
    max_concurrency: int
    report_failures: bool
    max_receive_count: int | None = None
    dlq_url: str | None = None


@dataclass
class HttpRoute:
    method: str  # upper case or ANY
    path: str
    function: FunctionSpec
    pattern: re.Pattern[str] = field(init=False)
    params: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.params = []
        regex = ""
        for segment in self.path.strip("/").split("/"):
            match = re.fullmatch(r"\{([^}]+?)(\+?)\}", segment)
            if match:
                self.params.append(match.group(1))
                regex += "/(.+)" if match.group(2) else "/([^/]+)"
            else:
                regex += "/" + re.escape(segment)
        self.pattern = re.compile(regex or "/")

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def specificity(self) -> tuple[int, int, int]:
        greedy = sum(1 for segment in self.path.split("/") if segment.endswith("+}"))
        return (greedy, len(self.params), -len(self.path))


# --------------------------------------------------------------------------- the stack


def _upload_identity(etag: str, version_id: str | None) -> str:
    """What tells one upload of a key from another: its version, or in an unversioned bucket
    (version "null") its ETag."""
    return version_id if version_id and version_id != "null" else etag


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
        failure_visibility_timeout: int | None = 1,
        async_retry_delays: tuple[float, ...] = (0.2, 0.5),
        poll_interval: float = 0.1,
        default_max_concurrency: int = 2,
        dispatch: bool = True,
    ) -> None:
        """
        ``failure_visibility_timeout``: seconds after which a message whose invocation failed is
        visible again (instead of the queue's VisibilityTimeout, minutes in the template);
        ``None`` keeps the queue's timeout as AWS does.
        ``async_retry_delays``: waits before the asynchronous retries (a minute and two in AWS).
        ``dispatch=False`` deploys the resources and serves the HTTP API but starts no S3 watcher,
        asynchronous-invoke worker or SQS pollers: new objects and queued messages just stay
        where they are (for measuring one function's work alone; ``wait_idle`` then waits on
        queues nobody empties).
        """
        self.root = Path(root).resolve()
        self.badgr_api_url = badgr_api_url
        self.badgr_authorize_url = badgr_authorize_url
        self.badgr_client_secret = badgr_client_secret
        self.public_host = public_host
        self.http_port = http_port
        self.env_overrides = dict(env_overrides or {})
        self.failure_visibility_timeout = failure_visibility_timeout
        self.async_retry_delays = async_retry_delays
        self.poll_interval = poll_interval
        self.default_max_concurrency = default_max_concurrency
        self.dispatch = dispatch

        self.stack_name = f"backpack-migrate-local-{uuid.uuid4().hex[:8]}"
        self.endpoint_url = ""
        self.url = ""
        self.env: dict[str, str] = {}
        self.parameters: dict[str, str] = {}
        self.template: dict[str, Any] = {}
        self.expanded: dict[str, Any] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.sqs_sources: list[SqsSource] = []
        self.routes: list[HttpRoute] = []

        self._physical: dict[str, str] = {}
        self._types: dict[str, str] = {}
        self._pseudo: dict[str, str] = {}
        self._attr_cache: dict[tuple[str, str], str] = {}
        self._server: Any = None
        self._http: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._saved_env: dict[str, str] | None = None
        self._saved_sys_path: list[str] | None = None
        self._invocations = 0
        self._active_lock = threading.Lock()
        self._async_queue: queue.Queue[tuple[FunctionSpec, dict[str, Any]]] = queue.Queue()
        self._s3_watch: list[tuple[str, str, str, FunctionSpec]] = []  # bucket, prefix, suffix, fn
        self._s3_seen: set[tuple[str, str, str]] = set()
        self._s3_lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._started = False
        self._http_serving = False
        self._saved_log_levels: dict[str, int] = {}

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
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        port = self._server.get_host_and_port()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
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
        self._http = http.server.ThreadingHTTPServer((self.public_host, self.http_port), self._http_handler())
        self._http.daemon_threads = True
        self.url = f"http://{self.public_host}:{self._http.server_address[1]}"

        self.template = load_template(self.root / "template.yaml")
        self.expanded = expand_template(self.template)
        self._deploy()
        self._resolve_environment()
        self._prepare_ses()
        self._load_functions()
        self._build_dispatch()
        self._spawn(self._http.serve_forever, "local-http-api")
        self._http_serving = True
        if self.dispatch:
            self._spawn(self._s3_watcher, "local-s3-watch")
            self._spawn(self._async_worker, "local-async-invoke")
            for source in self.sqs_sources:
                for n in range(source.max_concurrency):
                    self._spawn(
                        functools.partial(self._sqs_worker, source),
                        f"local-sqs-{source.queue_logical_id}-{n}",
                    )
        log.info("local stack up: api %s, aws %s", self.url, self.endpoint_url)

    def stop(self) -> None:
        self._stop.set()
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
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                )
            return self._clients[service]

    # ------------------------------------------------------------------ deploy

    def _deploy(self) -> None:
        deployable = copy.deepcopy(self.expanded)
        declared = self.template.get("Parameters", {})
        params = {"BadgrClientSecret": self.badgr_client_secret}
        if "BadgrApiUrl" in declared:
            params["BadgrApiUrl"] = self.badgr_api_url
        if "BadgrAuthorizeUrl" in declared:
            params["BadgrAuthorizeUrl"] = self.badgr_authorize_url
        params = {k: v for k, v in params.items() if k in declared}
        self.parameters = {
            name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec
        } | params

        # moto's CloudFormation has no Secrets Manager: those are made here, and the template
        # refers to them by ARN. The dispatchers play Lambda's pollers (moto's own would consume
        # the messages) and the local HTTP API plays API Gateway v2, which moto skips.
        made: dict[str, str] = {}
        for logical_id, resource in list(deployable["Resources"].items()):
            rtype = resource["Type"]
            if rtype == "AWS::SecretsManager::Secret":
                made[logical_id] = self._create_secret(logical_id, resource.get("Properties", {}))
            elif rtype.startswith("AWS::ApiGatewayV2::"):
                made[logical_id] = "localapi"
            elif rtype != "AWS::Lambda::EventSourceMapping":
                continue
            del deployable["Resources"][logical_id]
        deployable = _replace_refs(deployable, made)
        for resource in deployable["Resources"].values():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::KMS::Key" and isinstance(props.get("KeyPolicy"), dict):
                # moto keeps a key policy given as an object unserialised and then fails on it.
                props["KeyPolicy"] = json.dumps(self._resolve_pseudo(props["KeyPolicy"]))
        self._physical.update(made)
        self._types.update({k: self.expanded["Resources"][k]["Type"] for k in made})

        # The functions' code artifacts: moto's Lambda reads them when it creates the functions.
        placeholder_bucket, placeholder_key = PLACEHOLDER_CODE_URI[len("s3://") :].split("/", 1)
        s3 = self._client("s3")
        s3.create_bucket(Bucket=placeholder_bucket)
        s3.put_object(Bucket=placeholder_bucket, Key=placeholder_key, Body=_placeholder_zip())

        cfn = self._client("cloudformation")
        cfn.create_stack(
            StackName=self.stack_name,
            TemplateBody=json.dumps(deployable),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        deadline = time.monotonic() + 60
        while True:
            stack = cfn.describe_stacks(StackName=self.stack_name)["Stacks"][0]
            status = stack["StackStatus"]
            if status == "CREATE_COMPLETE":
                break
            if status.endswith("FAILED") or status.startswith("ROLLBACK") or time.monotonic() > deadline:
                events = cfn.describe_stack_events(StackName=self.stack_name)["StackEvents"]
                reasons = [e.get("ResourceStatusReason") for e in events if e.get("ResourceStatusReason")]
                raise RuntimeError(f"local stack creation ended in {status}: {reasons[:5]}")
            time.sleep(0.1)
        for resource in cfn.describe_stack_resources(StackName=self.stack_name)["StackResources"]:
            if resource.get("PhysicalResourceId"):  # moto leaves out what it does not model
                self._physical[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
                self._types[resource["LogicalResourceId"]] = resource["ResourceType"]
        # What moto's CloudFormation leaves out and the code relies on.
        for logical_id, resource in deployable["Resources"].items():
            ttl = resource.get("Properties", {}).get("TimeToLiveSpecification")
            if resource["Type"] == "AWS::DynamoDB::Table" and ttl and logical_id in self._physical:
                self._client("dynamodb").update_time_to_live(
                    TableName=self._physical[logical_id],
                    TimeToLiveSpecification={
                        "AttributeName": ttl["AttributeName"],
                        "Enabled": bool(ttl["Enabled"]),
                    },
                )
            versioning = resource.get("Properties", {}).get("VersioningConfiguration")
            if resource["Type"] == "AWS::S3::Bucket" and versioning and logical_id in self._physical:
                self._client("s3").put_bucket_versioning(
                    Bucket=self._physical[logical_id],
                    VersioningConfiguration={"Status": versioning["Status"]},
                )
        self._pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": stack["StackId"],
            "AWS::NoValue": "",
        }

    def _create_secret(self, logical_id: str, props: dict[str, Any]) -> str:
        if "SecretString" in props:
            value = str(self._resolve_early(props["SecretString"]))
        else:
            generate = props.get("GenerateSecretString", {})
            value = secrets.token_urlsafe(max(16, int(generate.get("PasswordLength", 32))))[
                : int(generate.get("PasswordLength", 32))
            ]
            if "SecretStringTemplate" in generate and "GenerateStringKey" in generate:
                document = json.loads(generate["SecretStringTemplate"])
                document[generate["GenerateStringKey"]] = value
                value = json.dumps(document)
        name = str(props.get("Name") or f"{self.stack_name}-{logical_id}-{uuid.uuid4().hex[:6]}")
        created = self._client("secretsmanager").create_secret(Name=name, SecretString=value)
        arn: str = created["ARN"]
        return arn

    def _resolve_pseudo(self, node: Any) -> Any:
        """Resolve Fn::Sub of pseudo parameters only (for documents moto takes as text)."""
        pseudo = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT_ID, "AWS::Region": REGION}
        if isinstance(node, list):
            return [self._resolve_pseudo(item) for item in node]
        if isinstance(node, dict):
            if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
                return re.sub(
                    r"\$\{(AWS::[A-Za-z]+)\}", lambda m: pseudo.get(m.group(1), m.group(0)), node["Fn::Sub"]
                )
            return {k: self._resolve_pseudo(v) for k, v in node.items()}
        return node

    def _resolve_early(self, node: Any) -> Any:
        """Resolve what can be resolved before the stack exists (parameters only)."""
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return self.parameters[node["Ref"]]
        if isinstance(node, str):
            return node
        raise ValueError(f"the local stack cannot resolve {node!r} before the stack exists")

    # ------------------------------------------------------------------ intrinsics

    def resource(self, logical_id: str) -> str:
        """Physical id of a resource of the template (queue URL, table name, bucket name, ...)."""
        return self._physical[logical_id]

    def _get_att(self, logical_id: str, attribute: str) -> str:
        key = (logical_id, attribute)
        if key in self._attr_cache:
            return self._attr_cache[key]
        rtype = self._types.get(logical_id) or self.expanded["Resources"][logical_id]["Type"]
        physical = self._physical[logical_id]
        value: str
        if rtype == "AWS::SQS::Queue":
            if attribute == "QueueUrl":
                value = physical
            else:
                attrs = self._client("sqs").get_queue_attributes(
                    QueueUrl=physical, AttributeNames=["QueueArn"]
                )
                arn = attrs["Attributes"]["QueueArn"]
                value = arn if attribute == "Arn" else arn.rsplit(":", 1)[1]
        elif rtype == "AWS::KMS::Key":
            value = self._client("kms").describe_key(KeyId=physical)["KeyMetadata"][
                "Arn" if attribute == "Arn" else "KeyId"
            ]
        elif rtype == "AWS::DynamoDB::Table":
            table = self._client("dynamodb").describe_table(TableName=physical)["Table"]
            value = table["LatestStreamArn"] if attribute == "StreamArn" else table["TableArn"]
        elif rtype == "AWS::S3::Bucket":
            value = {"Arn": f"arn:aws:s3:::{physical}", "DomainName": f"{physical}.s3.amazonaws.com"}.get(
                attribute, physical
            )
        elif rtype == "AWS::Lambda::Function":
            value = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{physical}"
        elif rtype == "AWS::IAM::Role":
            value = physical if physical.startswith("arn:") else f"arn:aws:iam::{ACCOUNT_ID}:role/{physical}"
        elif rtype == "AWS::ApiGatewayV2::Api" and attribute == "ApiEndpoint":
            value = self.url
        else:
            value = physical
        self._attr_cache[key] = value
        return value

    def _resolve(self, node: Any, local_vars: dict[str, str] | None = None) -> Any:
        if isinstance(node, list):
            return [self._resolve(item, local_vars) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            return {k: self._resolve(v, local_vars) for k, v in node.items()}
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return self._ref(arg)
        if fn == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._get_att(logical_id, attribute)
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            resolved_vars = {k: str(self._resolve(v, local_vars)) for k, v in variables.items()}
            return self._sub(text, resolved_vars)
        if fn == "Fn::Join":
            sep, items = arg
            return sep.join(str(x) for x in self._resolve(items, local_vars))
        if fn == "Fn::Select":
            index, items = arg
            return self._resolve(items, local_vars)[int(self._resolve(index, local_vars))]
        if fn == "Fn::Split":
            sep, text = arg
            return str(self._resolve(text, local_vars)).split(sep)
        if fn == "Fn::If":
            condition, when_true, when_false = arg
            chosen = when_true if self._condition(condition) else when_false
            return self._resolve(chosen, local_vars)
        if fn == "Fn::ImportValue":
            raise ValueError("Fn::ImportValue is not supported by the local stack")
        return {k: self._resolve(v, local_vars) for k, v in node.items()}

    def _ref(self, name: str) -> str:
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._physical[name]

    def _sub(self, text: str, variables: dict[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and name.split(".", 1)[0] in self._physical:
                logical_id, attribute = name.split(".", 1)
                return self._get_att(logical_id, attribute)
            return self._ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _condition(self, name: str) -> bool:
        return bool(self._eval_condition(self.expanded.get("Conditions", {})[name]))

    def _eval_condition(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Fn::Equals":
                left, right = (self._eval_condition(x) for x in arg)
                return str(left) == str(right)
            if fn == "Fn::Not":
                return not self._eval_condition(arg[0])
            if fn == "Fn::And":
                return all(self._eval_condition(x) for x in arg)
            if fn == "Fn::Or":
                return any(self._eval_condition(x) for x in arg)
            if fn == "Condition":
                return self._condition(arg)
        return self._resolve(node)

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
                physical_name=self._physical.get(logical_id, logical_id),
                memory_mb=int(props.get("MemorySize", 128)),
                timeout_s=int(props.get("Timeout", 3)),
                dead_letter_arn=(
                    str(self._resolve(props["DeadLetterConfig"]["TargetArn"]))
                    if props.get("DeadLetterConfig", {}).get("TargetArn")
                    else None
                ),
            )
            source = self.root / code_uri / f"{module_file.replace('.', '/')}.py"
            module = _import_file(f"fn_{code_dir}_{module_file.replace('.', '_')}", source)
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
                url = self._physical[queue_id]
                batch = int(props.get("BatchSize", 10))
                scaling = props.get("ScalingConfig", {}).get("MaximumConcurrency")
                source = SqsSource(
                    function=self._function_for(props["FunctionName"]),
                    queue_logical_id=queue_id,
                    queue_url=url,
                    queue_arn=self._get_att(queue_id, "Arn"),
                    batch_size=batch,
                    batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                    max_concurrency=int(scaling or self.default_max_concurrency),
                    report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
                attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get(
                    "Attributes", {}
                )
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
                    self._s3_watch.append(
                        (
                            self._physical[logical_id],
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

    @staticmethod
    def _is_sqs_arn(node: Any) -> bool:
        return isinstance(node, dict) and "Fn::GetAtt" in node

    # ------------------------------------------------------------------ invocation bookkeeping

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with self._active_lock:
            self._invocations += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._invocations -= 1

    def _invoke(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        assert function.handler is not None
        context = LambdaContext(function.physical_name, function.memory_mb, function.timeout_s)
        return function.handler(event, context)

    # ------------------------------------------------------------------ S3 -> function

    def _s3_event(
        self, bucket: str, key: str, size: int, etag: str, version_id: str | None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        obj: dict[str, Any] = {
            "key": urllib.parse.quote_plus(key, safe="/"),
            "size": size,
            "eTag": etag.strip('"'),
            "sequencer": f"{time.time_ns():X}"[:18],
        }
        if version_id and version_id != "null":
            obj["versionId"] = version_id
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "AWS:AIDALOCALSTACKUPLOADER"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {
                        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                        "x-amz-id-2": base64.b64encode(os.urandom(48)).decode(),
                    },
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "ExportUploaded",
                        "bucket": {
                            "name": bucket,
                            "ownerIdentity": {"principalId": "A3LOCALSTACKOWNER"},
                            "arn": f"arn:aws:s3:::{bucket}",
                        },
                        "object": obj,
                    },
                }
            ]
        }

    def _s3_target(self, bucket: str, key: str) -> FunctionSpec | None:
        for watched, prefix, suffix, function in self._s3_watch:
            if watched == bucket and key.startswith(prefix) and key.endswith(suffix):
                return function
        return None

    def invoke_s3_event(self, bucket: str, key: str, *, wait: bool = True) -> None:
        """Deliver one ObjectCreated:Put event for an existing object, as S3 would.

        ``wait=True`` runs the invocation (with Lambda's retries) before returning; otherwise
        it is queued like an asynchronous invoke. Raises when no function is subscribed.
        """
        function = self._s3_target(bucket, key)
        if function is None:
            raise ValueError(f"no function is notified for s3://{bucket}/{key}")
        head = self._client("s3").head_object(Bucket=bucket, Key=key)
        with self._s3_lock:
            self._s3_seen.add((bucket, key, _upload_identity(head["ETag"], head.get("VersionId"))))
        event = self._s3_event(bucket, key, int(head["ContentLength"]), head["ETag"], head.get("VersionId"))
        if wait:
            with self._running():
                self._invoke_async(function, event)
        else:
            self._async_queue.put((function, event))

    def _scan_buckets(self) -> None:
        """Deliver an ObjectCreated event for every object version not seen yet, oldest first,
        as S3 sends one per upload (an unversioned bucket lists each object as version "null")."""
        s3 = self._client("s3")
        for bucket, prefix, suffix, function in self._s3_watch:
            versions = [
                version
                for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
                for version in page.get("Versions", [])
                if version["Key"].endswith(suffix)
            ]
            for version in sorted(versions, key=lambda v: v["LastModified"]):
                key, etag, version_id = version["Key"], version["ETag"], version.get("VersionId")
                seen = (bucket, key, _upload_identity(etag, version_id))
                event = self._s3_event(bucket, key, int(version["Size"]), etag, version_id)
                with self._s3_lock:
                    # Seen and queued in one step: wait_idle must never find an upload seen but
                    # not yet queued, or it would call the stack idle too soon.
                    if seen in self._s3_seen:
                        continue
                    self._s3_seen.add(seen)
                    self._async_queue.put((function, event))

    def _s3_watcher(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan_buckets()
            except Exception:  # the stack is shutting down, or moto hiccuped: try again
                if not self._stop.is_set():
                    log.exception("scanning the exports bucket failed")
            self._stop.wait(self.poll_interval)

    def _async_worker(self) -> None:
        while not self._stop.is_set():
            try:
                function, event = self._async_queue.get(timeout=self.poll_interval)
            except queue.Empty:
                continue
            with self._running():
                self._async_queue.task_done()
                self._invoke_async(function, event)

    def _invoke_async(self, function: FunctionSpec, event: dict[str, Any]) -> None:
        """Lambda's asynchronous invocation: the first try and two retries, then the DLQ."""
        attempts = 1 + len(self.async_retry_delays)
        for attempt in range(attempts):
            try:
                self._invoke(function, event)
                return
            except Exception:
                log.exception("%s failed (attempt %d of %d)", function.logical_id, attempt + 1, attempts)
                if attempt < len(self.async_retry_delays):
                    time.sleep(self.async_retry_delays[attempt])
        if function.dead_letter_arn:
            sqs = self._client("sqs")
            url = sqs.get_queue_url(QueueName=function.dead_letter_arn.rsplit(":", 1)[1])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
        log.error("%s gave up on an event after %d attempts", function.logical_id, attempts)

    # ------------------------------------------------------------------ SQS -> function

    def _receive(self, source: SqsSource) -> list[dict[str, Any]]:
        sqs = self._client("sqs")
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + source.batching_window_s
        while not self._stop.is_set():
            wanted = min(10, source.batch_size - len(messages))
            response = sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=wanted,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=1 if not messages else 0,
            )
            messages.extend(response.get("Messages", []))
            if len(messages) >= source.batch_size or time.monotonic() >= deadline:
                break
            if not response.get("Messages"):
                time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        return messages

    def _to_dlq_if_exhausted(self, source: SqsSource, message: dict[str, Any]) -> bool:
        """Redrive a message received more than maxReceiveCount times (if moto did not)."""
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if source.max_receive_count is None or source.dlq_url is None or count <= source.max_receive_count:
            return False
        sqs = self._client("sqs")
        params: dict[str, Any] = {"QueueUrl": source.dlq_url, "MessageBody": message["Body"]}
        if message.get("MessageAttributes"):
            params["MessageAttributes"] = message["MessageAttributes"]
        sqs.send_message(**params)
        sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return True

    def _sqs_event(self, source: SqsSource, messages: list[dict[str, Any]]) -> dict[str, Any]:
        records = []
        for message in messages:
            attributes = {k: str(v) for k, v in message.get("Attributes", {}).items()}
            message_attributes = {}
            for name, value in message.get("MessageAttributes", {}).items():
                converted: dict[str, Any] = {
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value["DataType"],
                }
                if "StringValue" in value:
                    converted["stringValue"] = value["StringValue"]
                if "BinaryValue" in value:
                    raw = value["BinaryValue"]
                    converted["binaryValue"] = (
                        base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
                    )
                message_attributes[name] = converted
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": message.get("MD5OfBody")
                    or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                    "eventSource": "aws:sqs",
                    "eventSourceARN": source.queue_arn,
                    "awsRegion": REGION,
                }
            )
        return {"Records": records}

    def _sqs_worker(self, source: SqsSource) -> None:
        sqs = self._client("sqs")
        while not self._stop.is_set():
            try:
                # Received messages are in flight, so wait_idle sees them until they are settled.
                messages = [m for m in self._receive(source) if not self._to_dlq_if_exhausted(source, m)]
                if messages:
                    with self._running():
                        self._process_batch(sqs, source, messages)
            except Exception:
                if not self._stop.is_set():
                    log.exception("polling %s failed", source.queue_logical_id)
                    self._stop.wait(self.poll_interval)

    def _process_batch(self, sqs: Any, source: SqsSource, messages: list[dict[str, Any]]) -> None:
        event = self._sqs_event(source, messages)
        ids = {m["MessageId"] for m in messages}
        failed: set[str]
        try:
            result = self._invoke(source.function, event)
        except Exception:
            log.exception("%s failed on a batch of %d", source.function.logical_id, len(messages))
            failed = set(ids)
        else:
            failed = set()
            if source.report_failures and isinstance(result, dict) and result.get("batchItemFailures"):
                reported = {
                    item.get("itemIdentifier") if isinstance(item, dict) else None
                    for item in result["batchItemFailures"]
                }
                # An unknown or empty identifier makes Lambda treat the whole batch as failed.
                failed = ids if not reported <= ids else reported  # type: ignore[assignment]
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            sqs.delete_message_batch(QueueUrl=source.queue_url, Entries=entries)
        if self.failure_visibility_timeout is not None:
            for message in messages:
                if message["MessageId"] in failed:
                    with contextlib.suppress(Exception):
                        sqs.change_message_visibility(
                            QueueUrl=source.queue_url,
                            ReceiptHandle=message["ReceiptHandle"],
                            VisibilityTimeout=self.failure_visibility_timeout,
                        )

    # ------------------------------------------------------------------ HTTP API -> function

    def _match_route(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for wanted in (method, "ANY"):
            for route in self.routes:
                if route.method != wanted:
                    continue
                match = route.pattern.fullmatch(path)
                if match:
                    return route, {
                        name: urllib.parse.unquote(value)
                        for name, value in zip(route.params, match.groups(), strict=True)
                    }
        return None

    def http_event(
        self,
        route: HttpRoute,
        path_params: dict[str, str],
        method: str,
        raw_path: str,
        raw_query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> dict[str, Any]:
        """An API Gateway HTTP API (payload format 2.0) event."""
        lowered: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in headers:
            key = name.lower()
            if key == "cookie":
                cookies.extend(part.strip() for part in value.split(";") if part.strip())
                continue
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
        now = datetime.now(UTC)
        host = lowered.get("host", self.url.split("//", 1)[1])
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": lowered,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": self._physical.get("HttpApi", "localapi"),
                "domainName": host,
                "domainPrefix": host.split(".", 1)[0],
                "http": {
                    "method": method,
                    "path": raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": base64.b32encode(os.urandom(10)).decode().rstrip("=")[:16],
                "routeKey": route.route_key,
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if raw_query:
            query: dict[str, list[str]] = {}
            for name, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
                query.setdefault(name, []).append(value)
            event["queryStringParameters"] = {name: ",".join(values) for name, values in query.items()}
        if path_params:
            event["pathParameters"] = path_params
        if body:
            content_type = lowered.get("content-type", "").lower()
            text = content_type.startswith(_TEXT_CONTENT_TYPES) or content_type.split(";")[0].endswith(
                "+json"
            )
            try:
                decoded = body.decode("utf-8") if text else None
            except UnicodeDecodeError:
                decoded = None
            if decoded is None:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            else:
                event["body"] = decoded
        return event

    def _http_handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        stack = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "LocalHttpApi/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

            def _handle(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                matched = stack._match_route(self.command, parsed.path)
                if matched is None:
                    self._reply(404, {"content-type": "application/json"}, [], b'{"message":"Not Found"}')
                    return
                route, params = matched
                event = stack.http_event(
                    route,
                    params,
                    self.command,
                    parsed.path,
                    parsed.query,
                    list(self.headers.items()),
                    body,
                    self.client_address[0],
                )
                try:
                    with stack._running():
                        result = stack._invoke(route.function, event)
                    status, headers, cookies, payload = _http_response(result)
                except Exception:
                    log.exception("%s failed on %s", route.function.logical_id, route.route_key)
                    status, headers, cookies = 500, {"content-type": "application/json"}, []
                    payload = b'{"message":"Internal Server Error"}'
                self._reply(status, headers, cookies, payload)

            def _reply(
                self, status: int, headers: dict[str, str], cookies: list[str], payload: bytes
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                        self.send_header(name, value)
                for cookie in cookies:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle  # noqa: N815

        return Handler

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
            with contextlib.suppress(Exception):
                self._scan_buckets()
            busy = {}
            for source in self.sqs_sources:
                attrs = sqs.get_queue_attributes(
                    QueueUrl=source.queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                ).get("Attributes", {})
                total = sum(int(v) for v in attrs.values())
                if total:
                    busy[source.queue_logical_id] = total
            pending = self._async_queue.unfinished_tasks
            if pending:
                busy["async events"] = pending
            with self._active_lock:
                running = self._invocations
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

    def dlq_messages(self, queue_logical_id: str) -> list[dict[str, Any]]:
        """Messages in the dead-letter queue of ``queue_logical_id`` (or in that queue if it has
        none); read without consuming them."""
        sqs = self._client("sqs")
        url = self._physical[queue_logical_id]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        if "RedrivePolicy" in attrs:
            dlq_name = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[1]
            url = sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
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


def _http_response(result: Any) -> tuple[int, dict[str, str], list[str], bytes]:
    """Turn a handler's result into an HTTP response the way payload format 2.0 does."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Without a statusCode, API Gateway takes the result as a JSON body.
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, {"content-type": "application/json"}, [], body.encode()
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ",".join(str(v) for v in values)
    cookies = [str(c) for c in result.get("cookies") or []]
    raw_body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        payload = base64.b64decode(raw_body)
    else:
        payload = raw_body.encode() if isinstance(raw_body, str) else json.dumps(raw_body).encode()
    return int(result["statusCode"]), headers, cookies, payload


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def _replace_refs(node: Any, values: dict[str, str]) -> Any:
    """Replace Ref/GetAtt/Sub references to the given logical ids with literal values."""
    if isinstance(node, list):
        return [_replace_refs(item, values) for item in node]
    if isinstance(node, dict):
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref" and arg in values:
                return values[arg]
            if fn == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).split(".")[0]
                if target in values:
                    return values[target]
            if fn == "Fn::Sub":
                text, variables = (arg, None) if isinstance(arg, str) else (arg[0], arg[1])
                for logical_id, value in values.items():
                    text = re.sub(r"\$\{" + re.escape(logical_id) + r"(\.[A-Za-z.]+)?\}", value, text)
                return {fn: text if variables is None else [text, _replace_refs(variables, values)]}
        return {k: _replace_refs(v, values) for k, v in node.items()}
    return node


def _import_file(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        existing = sys.modules[module_name]
        if Path(getattr(existing, "__file__", "") or "").resolve() == path.resolve():
            return existing
    if not path.is_file():
        raise FileNotFoundError(f"handler module {path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
