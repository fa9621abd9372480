"""The SAM template as the local stack deploys it: expanded offline, created in moto's
CloudFormation, and its intrinsic functions resolved for what moto leaves out.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import secrets
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PLACEHOLDER_CODE_URI = "s3://backpack-migrate-local-placeholder/code.zip"
_SAM_TYPES_WITH_CODE = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}
_env_lock = threading.Lock()


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


class Deployment:
    """One stack of the template in moto, and the resolution of its references.

    ``client`` makes boto3 clients for moto; ``api_url`` is what the HTTP API's endpoint resolves to.
    """

    def __init__(
        self,
        template: dict[str, Any],
        expanded: dict[str, Any],
        client: Callable[[str], Any],
        *,
        stack_name: str,
        api_url: str,
        badgr_api_url: str,
        badgr_authorize_url: str,
        badgr_client_secret: str,
    ) -> None:
        self.template = template
        self.expanded = expanded
        self._client = client
        self.stack_name = stack_name
        self.url = api_url
        self.badgr_api_url = badgr_api_url
        self.badgr_authorize_url = badgr_authorize_url
        self.badgr_client_secret = badgr_client_secret
        self.parameters: dict[str, str] = {}
        self._physical: dict[str, str] = {}
        self._types: dict[str, str] = {}
        self._pseudo: dict[str, str] = {}
        self._attr_cache: dict[tuple[str, str], str] = {}

    @property
    def physical(self) -> dict[str, str]:
        return self._physical

    def deploy(self) -> None:
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
        deployable = replace_refs(deployable, made)
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
        s3.put_object(Bucket=placeholder_bucket, Key=placeholder_key, Body=placeholder_zip())

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

    def get_att(self, logical_id: str, attribute: str) -> str:
        return self._get_att(logical_id, attribute)

    def resolve(self, node: Any) -> Any:
        return self._resolve(node)


def placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def replace_refs(node: Any, values: dict[str, str]) -> Any:
    """Replace Ref/GetAtt/Sub references to the given logical ids with literal values."""
    if isinstance(node, list):
        return [replace_refs(item, values) for item in node]
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
                return {fn: text if variables is None else [text, replace_refs(variables, values)]}
        return {k: replace_refs(v, values) for k, v in node.items()}
    return node
