"""The SAM template: expanded offline, linted as plain CloudFormation, and checked for its promises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import expand_template, load_template

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
BIN = Path(sys.executable).parent

WRITE_ACTION_PREFIXES = ("Put", "Update", "Delete", "Create", "Send", "Write", "BatchWrite", "Change")


def _tool(name: str) -> str | None:
    candidate = BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return expand_template(TEMPLATE)


def resources(cfn: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == rtype}


def _cfn_lint(template: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint = _tool("cfn-lint")
    if cfn_lint is None:
        pytest.skip("cfn-lint is not installed")
    path = tmp_path / "expanded.json"
    path.write_text(json.dumps(template, indent=1), encoding="utf-8")
    return subprocess.run(
        [cfn_lint, "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_expanded_template_passes_cfn_lint(cfn: dict[str, Any], tmp_path: Path) -> None:
    result = _cfn_lint(cfn, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_on_the_expansion_catches_what_sam_validate_misses(
    sam: dict[str, Any], tmp_path: Path
) -> None:
    broken = json.loads(json.dumps(sam))
    events = broken["Resources"]["MigrateFunction"]["Properties"]["Events"]["MigrateJobs"]["Properties"]
    events["FunctionResponseTypes"] = ["ReportBatchItemFailure"]
    result = _cfn_lint(expand_template(broken), tmp_path)
    assert result.returncode != 0
    assert "ReportBatchItemFailure" in result.stdout


def test_sam_validate_lint_is_clean() -> None:
    sam_cli = _tool("sam")
    if sam_cli is None:
        pytest.skip("the sam CLI is not installed")
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", SAM_CLI_TELEMETRY="0")
    env.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [sam_cli, "validate", "--lint", "--template-file", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_every_setting_is_in_the_function_environment(cfn: dict[str, Any]) -> None:
    from backpack_migrate.config import Settings

    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    for logical_id, function in resources(cfn, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        missing = aliases - set(variables)
        assert not missing, f"{logical_id} lacks {missing}"
        assert variables["ALLOW_LOOPBACK_FETCH"] == "false"
        assert variables["MIGRATE_MAX_RECEIVE_COUNT"] == "5"
        assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"} <= set(variables)


def test_functions_runtime_architecture_tracing_and_layer(cfn: dict[str, Any]) -> None:
    functions = resources(cfn, "AWS::Lambda::Function")
    assert {k.removesuffix("Function") for k in functions} == {
        "Intake",
        "Chunk",
        "Verify",
        "Notify",
        "Migrate",
        "Web",
    }
    layers = resources(cfn, "AWS::Lambda::LayerVersion")
    assert len(layers) == 1
    (layer_id,) = layers
    for function in functions.values():
        props = function["Properties"]
        assert props["Runtime"] == "python3.11"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Handler"] == "app.handler"
        assert props["Layers"] == [{"Ref": layer_id}]


def test_layer_is_built_from_shared_with_the_runtime_dependencies(sam: dict[str, Any]) -> None:
    import tomllib

    layer = sam["Resources"]["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "shared/"
    assert layer["Metadata"]["BuildMethod"] == "python3.11"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    lines = (ROOT / "shared" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(declared)


def test_every_sqs_event_source_reports_batch_item_failures(cfn: dict[str, Any]) -> None:
    mappings = resources(cfn, "AWS::Lambda::EventSourceMapping")
    by_queue = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"] for m in mappings.values()
    }
    assert set(by_queue) == {"ChunkQueue", "VerifyQueue", "NotifyQueue", "MigrateQueue"}
    for props in by_queue.values():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= by_queue["ChunkQueue"]["BatchSize"] <= 5
    assert by_queue["MigrateQueue"]["BatchSize"] == 10
    assert by_queue["NotifyQueue"]["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_every_queue_has_a_dead_letter_queue_encryption_and_a_long_enough_visibility(
    cfn: dict[str, Any],
) -> None:
    queues = resources(cfn, "AWS::SQS::Queue")
    functions = resources(cfn, "AWS::Lambda::Function")
    mappings = resources(cfn, "AWS::Lambda::EventSourceMapping").values()
    consumer = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]["FunctionName"]["Ref"]
        for m in mappings
    }
    dead_letter_targets = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    } | {
        f["Properties"]["DeadLetterConfig"]["TargetArn"]["Fn::GetAtt"][0]
        for f in functions.values()
        if "DeadLetterConfig" in f["Properties"]
    }
    for logical_id, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") or props.get("KmsMasterKeyId"), logical_id
        if logical_id in dead_letter_targets:
            continue
        assert "RedrivePolicy" in props, f"{logical_id} has no dead-letter queue"
        expected = 5 if logical_id == "MigrateQueue" else 3
        assert props["RedrivePolicy"]["maxReceiveCount"] == expected
        timeout = functions[consumer[logical_id]]["Properties"]["Timeout"]
        assert props["VisibilityTimeout"] >= 6 * timeout, logical_id


def test_bucket_is_private_encrypted_and_notifies_intake(cfn: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["ExportsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert rule["BucketKeyEnabled"] is True
    (lifecycle,) = bucket["LifecycleConfiguration"]["Rules"]
    assert lifecycle["Prefix"] == "exports/"
    assert lifecycle["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
    (notification,) = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Function"] == {"Fn::GetAtt": ["IntakeFunction", "Arn"]}
    rules = {r["Name"]: r["Value"] for r in notification["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "exports/", "suffix": ".zip"}
    (deny,) = cfn["Resources"]["ExportsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_tables_have_ttl_encryption_and_the_expected_keys(cfn: dict[str, Any]) -> None:
    table = cfn["Resources"]["Table"]["Properties"]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"PK": "HASH", "SK": "RANGE"}
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "GSI1"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["GSI1PK", "GSI1SK"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["SSESpecification"]["SSEType"] == "KMS"
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    idempotency = cfn["Resources"]["IdempotencyTable"]["Properties"]
    assert idempotency["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idempotency["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_key_rotates_and_secrets_exist(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    assert cfn["Resources"]["DataKey"]["Properties"]["EnableKeyRotation"] is True
    assert cfn["Resources"]["DataKeyAlias"]["Properties"]["TargetKeyId"] == {"Ref": "DataKey"}
    assert "GenerateSecretString" in cfn["Resources"]["LinkSigningSecret"]["Properties"]
    assert cfn["Resources"]["BadgrClientSecretSecret"]["Properties"]["SecretString"] == {
        "Ref": "BadgrClientSecret"
    }
    assert sam["Parameters"]["BadgrClientSecret"]["NoEcho"] is True


def _statements(cfn: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, role in resources(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                found.append((logical_id, statement))
    return found


def test_no_iam_statement_writes_to_every_resource(cfn: dict[str, Any]) -> None:
    statements = _statements(cfn)
    assert statements
    for role, statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        targets = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), (role, statement)
        writes = [a for a in actions if a.split(":", 1)[1].startswith(WRITE_ACTION_PREFIXES)]
        if writes:
            assert "*" not in targets, (role, statement)


def test_least_privilege_per_function(cfn: dict[str, Any]) -> None:
    def actions_of(role: str) -> set[str]:
        found: set[str] = set()
        for owner, statement in _statements(cfn):
            if owner == role:
                acts = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                found.update(acts)
        return found

    assert {"ses:SendEmail", "ses:SendRawEmail"} <= actions_of("NotifyFunctionRole")
    for role in (
        "IntakeFunctionRole",
        "ChunkFunctionRole",
        "VerifyFunctionRole",
        "MigrateFunctionRole",
        "WebFunctionRole",
    ):
        assert not any(a.startswith("ses:") for a in actions_of(role)), role
    ses_statements = [s for r, s in _statements(cfn) if "ses:SendEmail" in s["Action"]]
    assert all(
        s["Condition"]["StringEquals"]["ses:FromAddress"] == {"Ref": "SesSender"} for s in ses_statements
    )
    assert "s3:PutObject" not in actions_of("WebFunctionRole")
    assert "s3:GetObject" in actions_of("IntakeFunctionRole")
    assert "sqs:SendMessage" in actions_of("IntakeFunctionRole")
    for role, statement in _statements(cfn):
        if "s3:GetObject" in statement["Action"]:
            assert "/exports/*" in json.dumps(statement["Resource"]), role


def test_parameters_conditions_and_outputs(sam: dict[str, Any]) -> None:
    assert {
        "SesSender",
        "BadgrApiUrl",
        "BadgrAuthorizeUrl",
        "BadgrClientId",
        "BadgrClientSecret",
        "PublicBaseUrl",
        "EmailsPerSecond",
        "LinkTtlDays",
        "ExportRetentionDays",
    } <= set(sam["Parameters"])
    assert sam["Parameters"]["PublicBaseUrl"]["Default"] == ""
    assert "HasPublicBaseUrl" in sam["Conditions"]
    assert {
        "ApiUrl",
        "ExportsBucketName",
        "TableName",
        "IdempotencyTableName",
        "ChunkQueueUrl",
        "VerifyQueueUrl",
        "NotifyQueueUrl",
        "MigrateQueueUrl",
    } <= set(sam["Outputs"])


def test_http_api_routes(cfn: dict[str, Any]) -> None:
    (api,) = resources(cfn, "AWS::ApiGatewayV2::Api").values()
    routes = {
        f"{method.upper()} {path}"
        for path, methods in api["Properties"]["Body"]["paths"].items()
        for method, operation in methods.items()
        if operation["x-amazon-apigateway-integration"]["payloadFormatVersion"] == "2.0"
    }
    assert routes == {
        "GET /l/{token}",
        "POST /l/{token}/connect",
        "GET /l/{token}/status",
        "GET /l/{token}/status.json",
        "GET /l/{token}/badges/{badge_id}/image",
        "GET /oauth/callback",
    }
