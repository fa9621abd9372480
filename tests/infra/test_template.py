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

from infra.bench.cold_imports import lambda_env
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
        "Collections",
        "Web",
        "Reconcile",
        "Legacy",
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
    assert layer["Metadata"]["BuildMethod"] == "makefile"  # shared/Makefile, tests/infra/test_layer_build.py
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    lines = (ROOT / "shared" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(declared)


def test_every_sqs_event_source_reports_batch_item_failures(cfn: dict[str, Any]) -> None:
    mappings = resources(cfn, "AWS::Lambda::EventSourceMapping")
    by_queue = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"] for m in mappings.values()
    }
    assert set(by_queue) == {
        "IntakeQueue",
        "ChunkQueue",
        "VerifyQueue",
        "NotifyQueue",
        "MigrateQueue",
        "CollectionsQueue",
    }
    for props in by_queue.values():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= by_queue["ChunkQueue"]["BatchSize"] <= 5
    assert by_queue["MigrateQueue"]["BatchSize"] == 10
    assert by_queue["NotifyQueue"]["ScalingConfig"] == {"MaximumConcurrency": 2}
    # The send rate is shared by the instances that may run at once.
    notify_env = cfn["Resources"]["NotifyFunction"]["Properties"]["Environment"]["Variables"]
    most_at_once = by_queue["NotifyQueue"]["ScalingConfig"]["MaximumConcurrency"]
    assert notify_env["NOTIFY_CONCURRENCY"] == str(most_at_once)


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
        # Badgr's answers decide these jobs: they get as many deliveries as the import does.
        expected = 5 if logical_id in ("MigrateQueue", "CollectionsQueue") else 3
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
    lifecycle, downloads, markers = bucket["LifecycleConfiguration"]["Rules"]
    # A learner's big download lives a day at most (its presigned URL, minutes).
    assert downloads["Prefix"] == "downloads/" and downloads["ExpirationInDays"] == 1
    assert markers["ExpiredObjectDeleteMarker"] is True and markers["Prefix"] == "exports/"
    assert lifecycle["Prefix"] == "exports/"
    assert lifecycle["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert lifecycle["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "LinkTtlDays"}}
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
    gsi, open_index = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "GSI1"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["GSI1PK", "GSI1SK"]
    # Sparse: what is still expected to move on, found by age without a scan.
    assert open_index["IndexName"] == "Open"
    assert [k["AttributeName"] for k in open_index["KeySchema"]] == ["OPEN_PK", "OPEN_SK"]
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


# ---------------------------------------------------------------- least privilege, per function
# Resources as the expanded template names them: a logical id, or one of these.
EXPORTS = "exports/*"  # the objects under exports/ in the exports bucket
OPEN_INDEX = "Table/index/Open"  # the table's sparse index of open items
DOWNLOADS = "downloads/*"  # learners' downloads too big for a Lambda answer, in the same bucket
EXPORT_KEYS = "export data keys"  # kms:Decrypt only with an "export" encryption context
SES_IDENTITIES = "ses:identity/*"
# Conditions: None (unconditioned), "via <services>" (kms:ViaService), "from SesSender".
Grant = tuple[str, str, str | None]


def _via(*services: str) -> str:
    return "via " + ",".join(sorted(services))


# Powertools' DynamoDBPersistenceLayer behind ``svc.once`` (services.build_services).
IDEMPOTENT: frozenset[Grant] = frozenset(
    (f"dynamodb:{action}", "IdempotencyTable", None)
    for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")
)

# Every AWS call each function's code makes (functions/<name>/app.py and what it reaches in
# backpack_migrate), and the permission it needs. Nothing else may be granted.
CALLS: dict[str, frozenset[Grant]] = {
    "Intake": IDEMPOTENT  # svc.once("intake", read_export)
    | {
        # S3RangeReader: ranged GetObject, and HeadObject when the event had no size, both by
        # the VersionId of the event when it has one.
        ("s3:GetObject", EXPORTS, None),
        ("s3:GetObjectVersion", EXPORTS, None),
        # get_export; put_export_if_absent and save_export (conditional and plain puts).
        ("dynamodb:GetItem", "Table", None),
        ("dynamodb:PutItem", "Table", None),
        # EmailCipher.new_data_key; EmailCipher.encrypt opens the data key when another delivery
        # made it or a retry resumes the export. Also opens the export, the tables, the secret.
        ("kms:GenerateDataKey", "DataKey", None),
        ("kms:Decrypt", "DataKey", None),
        # SqsJobQueue.send (SendMessageBatch) of the chunk jobs, and of the intake job that goes
        # on with the manifest when time runs short.
        ("sqs:SendMessage", "ChunkQueue", None),
        ("sqs:SendMessage", "IntakeQueue", None),
        # svc.learner_id: the HMAC key of learner ids (never the link-signing key).
        ("secretsmanager:GetSecretValue", "LearnerIdSecret", None),
        # Lambda's asynchronous dead-letter queue, sent to with the function's role.
        ("sqs:SendMessage", "IntakeDeadLetterQueue", None),
    },
    "Chunk": frozenset(
        {
            ("s3:GetObject", EXPORTS, None),  # read_member of each badge
            ("s3:GetObjectVersion", EXPORTS, None),
            # get_export; put_learner_if_absent and put_badges_if_absent; list_badges.
            ("dynamodb:GetItem", "Table", None),
            ("dynamodb:PutItem", "Table", None),
            ("dynamodb:Query", "Table", None),
            # No KMS call of its own (emails pass through sealed): S3 and DynamoDB decrypt.
            ("kms:Decrypt", "DataKey", _via("s3", "dynamodb")),
            # A continuation of the chunk, verify jobs and invitations.
            ("sqs:SendMessage", "ChunkQueue", None),
            ("sqs:SendMessage", "VerifyQueue", None),
            ("sqs:SendMessage", "NotifyQueue", None),
        }
    ),
    "Verify": frozenset(
        {
            ("s3:GetObject", EXPORTS, None),  # the badge images
            ("s3:GetObjectVersion", EXPORTS, None),
            # get_learner, get_export; list_badges; transition.
            ("dynamodb:GetItem", "Table", None),
            ("dynamodb:Query", "Table", None),
            ("dynamodb:UpdateItem", "Table", None),
            ("kms:Decrypt", "DataKey", None),  # learner_email: the export's data key
        }
    ),
    "Notify": IDEMPOTENT  # svc.once("notice", deliver)
    | {
        # get_learner, get_export; list_badges; mark_invited, its one write to the table.
        ("dynamodb:GetItem", "Table", None),
        ("dynamodb:Query", "Table", None),
        ("dynamodb:UpdateItem", "Table", None),
        ("kms:Decrypt", "DataKey", None),  # learner_email
        ("secretsmanager:GetSecretValue", "LinkSigningSecret", None),  # sign_link
        ("ses:SendEmail", SES_IDENTITIES, "from SesSender"),  # SesSender.send
    },
    "Migrate": IDEMPOTENT  # svc.once("badgr-import", call)
    | {
        ("s3:GetObject", EXPORTS, None),  # the image import form
        ("s3:GetObjectVersion", EXPORTS, None),
        # get_badge, get_export, get_token, get_learner; list_badges; transition and
        # claim_summary (conditional updates); save_token after a refresh.
        ("dynamodb:GetItem", "Table", None),
        ("dynamodb:Query", "Table", None),
        ("dynamodb:UpdateItem", "Table", None),
        ("dynamodb:PutItem", "Table", None),
        # TokenVault.open for each import, TokenVault.seal after a refresh.
        ("kms:Decrypt", "DataKey", None),
        ("kms:Encrypt", "DataKey", None),
        ("secretsmanager:GetSecretValue", "BadgrClientSecretSecret", None),  # badgr_factory
        ("sqs:SendMessage", "NotifyQueue", None),  # maybe_send_summary
        ("sqs:SendMessage", "MigrateQueue", None),  # run_import_job: a deferred job, sent delayed
        ("sqs:SendMessage", "MigrateDeadLetterQueue", None),  # run_import_job: out of tries
        ("sqs:ChangeMessageVisibility", "MigrateQueue", None),  # SqsJobQueue.delay (backoff)
        ("sqs:SendMessage", "CollectionsQueue", None),  # maybe_send_summary: groups first
        # DynamoGate: GetItem and UpdateItem on the gate item, covered above.
    },
    "Reconcile": frozenset(
        {
            # iter_open on the sparse index; get_badge, get_learner, list_badges, transition,
            # touch_learner, claim_summary, save_reconcile_run; save_token after a refresh.
            ("dynamodb:Query", OPEN_INDEX, None),
            ("dynamodb:GetItem", "Table", None),
            ("dynamodb:Query", "Table", None),
            ("dynamodb:UpdateItem", "Table", None),
            ("dynamodb:PutItem", "Table", None),
            # Backpacks.held lists the learner's backpack with their token; a refresh seals anew.
            ("kms:Decrypt", "DataKey", None),
            ("kms:Encrypt", "DataKey", None),
            ("secretsmanager:GetSecretValue", "BadgrClientSecretSecret", None),  # badgr_factory
            # Lost jobs sent again; maybe_send_summary.
            ("sqs:SendMessage", "MigrateQueue", None),
            ("sqs:GetQueueAttributes", "MigrateQueue", None),  # _migrate_backlog: a badge only late
            ("sqs:SendMessage", "VerifyQueue", None),
            ("sqs:SendMessage", "NotifyQueue", None),
            ("sqs:SendMessage", "CollectionsQueue", None),  # maybe_send_summary: groups first
            # Dead-lettered imports read and held back, never deleted (kept for a redrive).
            ("sqs:ReceiveMessage", "MigrateDeadLetterQueue", None),
            ("sqs:ChangeMessageVisibility", "MigrateDeadLetterQueue", None),
        }
    ),
    "Collections": frozenset(
        {
            # get_learner, get_token; list_badges, list_groups; save_group (conditional puts),
            # save_token after a refresh; claim_summary. No export is read.
            ("dynamodb:GetItem", "Table", None),
            ("dynamodb:Query", "Table", None),
            ("dynamodb:PutItem", "Table", None),
            ("dynamodb:UpdateItem", "Table", None),
            ("kms:Decrypt", "DataKey", None),  # TokenVault.open
            ("kms:Encrypt", "DataKey", None),  # TokenVault.seal after a refresh
            ("secretsmanager:GetSecretValue", "BadgrClientSecretSecret", None),  # badgr_factory
            ("sqs:SendMessage", "NotifyQueue", None),  # maybe_send_summary
            ("sqs:SendMessage", "CollectionsQueue", None),  # maybe_send_summary, request changed
            ("sqs:ChangeMessageVisibility", "CollectionsQueue", None),  # backoff
        }
    ),
    "Web": frozenset(
        {
            ("s3:GetObject", EXPORTS, None),  # portal.badge_image
            ("s3:GetObjectVersion", EXPORTS, None),
            # sessions, learners, badges, exports, tokens; list_badges; put_session, save_token;
            # mark_migration_requested, transition, claim_summary. Sessions expire by TTL only.
            ("dynamodb:GetItem", "Table", None),
            ("dynamodb:PutItem", "Table", None),
            ("dynamodb:UpdateItem", "Table", None),
            ("dynamodb:Query", "Table", None),
            # store_tokens seals the Badgr tokens; nothing is opened here directly.
            ("kms:Encrypt", "DataKey", None),
            ("kms:Decrypt", "DataKey", _via("s3", "dynamodb", "secretsmanager")),
            ("secretsmanager:GetSecretValue", "LinkSigningSecret", None),  # verify_link
            ("secretsmanager:GetSecretValue", "BadgrClientSecretSecret", None),  # badgr_factory
            ("sqs:SendMessage", "MigrateQueue", None),  # request_migration
            ("sqs:SendMessage", "NotifyQueue", None),  # maybe_send_summary
            # The learner's own address on their pages: EmailCipher opens the export's data key.
            ("kms:Decrypt", "DataKey", EXPORT_KEYS),
            # erase_learner: the learner's items, and the idempotency records of their jobs.
            ("dynamodb:DeleteItem", "Table", None),
            ("dynamodb:DeleteItem", "IdempotencyTable", None),
            # build_download past what a Lambda answer carries: the object, its presigned GET,
            # and the SSE-KMS data key S3 asks for on the function's behalf.
            ("s3:PutObject", DOWNLOADS, None),
            ("s3:GetObject", DOWNLOADS, None),
            ("kms:GenerateDataKey", "DataKey", _via("s3")),
            ("sqs:SendMessage", "CollectionsQueue", None),  # maybe_send_summary: groups first
        }
    ),
    "Legacy": IDEMPOTENT  # svc.once("badgr-import", call) for badges third-party sites hand over
    | {
        ("s3:GetObject", EXPORTS, None),  # displayer.badge_image
        ("s3:GetObjectVersion", EXPORTS, None),
        # index items, learners, badges, groups, grants, sessions; list_badges, list_groups;
        # grants, pending requests and issued badges written; transition and claim_summary.
        ("dynamodb:GetItem", "Table", None),
        ("dynamodb:PutItem", "Table", None),
        ("dynamodb:UpdateItem", "Table", None),
        ("dynamodb:Query", "Table", None),
        # learner_addresses: the export's data key; TokenVault.open and seal for the import.
        ("kms:Decrypt", "DataKey", None),
        ("kms:Encrypt", "DataKey", None),
        # convert/email: the keyed HMAC of the address, the same key as learner ids.
        ("secretsmanager:GetSecretValue", "LearnerIdSecret", None),
        ("secretsmanager:GetSecretValue", "BadgrClientSecretSecret", None),  # badgr_factory
        ("sqs:SendMessage", "MigrateQueue", None),  # an import Badgr did not answer, retried
        ("sqs:SendMessage", "NotifyQueue", None),  # maybe_send_summary
    },
}

# Intake also goes on with its own jobs.
SQS_TRIGGERED = {"Intake", "Chunk", "Verify", "Notify", "Migrate", "Collections"}
FORBIDDEN_ACTIONS = {
    "dynamodb:Scan",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteTable",
    "dynamodb:CreateTable",
    "dynamodb:UpdateTable",
    "s3:PutObject",
    "s3:DeleteObject",
    "sqs:PurgeQueue",
    "sqs:DeleteQueue",
    "kms:ScheduleKeyDeletion",
    "secretsmanager:PutSecretValue",
    "secretsmanager:RotateSecret",
}
_EXPORT_OBJECTS_ARN = (
    "arn:${AWS::Partition}:s3:::backpack-migrate-exports-${AWS::AccountId}-${StackSuffix}/exports/*"
)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resource_name(resource: Any) -> str:
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"} and resource["Fn::GetAtt"][1] == "Arn":
        return str(resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and set(resource) == {"Ref"}:
        return str(resource["Ref"])
    if isinstance(resource, dict) and set(resource) == {"Fn::Sub"}:
        sub = resource["Fn::Sub"]
        if sub == "${Table.Arn}/index/Open":
            return OPEN_INDEX
        if isinstance(sub, list) and sub[0] == _EXPORT_OBJECTS_ARN:
            return EXPORTS
        if isinstance(sub, list) and sub[0] == _EXPORT_OBJECTS_ARN.replace("/exports/*", "/downloads/*"):
            return DOWNLOADS
        if sub == "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*":
            return SES_IDENTITIES
    return json.dumps(resource, sort_keys=True)  # matches no entry of CALLS


def _condition_name(condition: dict[str, Any] | None) -> str | None:
    if condition is None:
        return None
    if list(condition) == ["StringEquals"] and list(condition["StringEquals"]) == ["kms:ViaService"]:
        services = []
        for value in _as_list(condition["StringEquals"]["kms:ViaService"]):
            assert isinstance(value, dict) and value.get("Fn::Sub", "").endswith(
                ".${AWS::Region}.amazonaws.com"
            ), value
            services.append(value["Fn::Sub"].split(".", 1)[0])
        return _via(*services)
    if condition == {"Null": {"kms:EncryptionContext:export": "false"}}:
        return EXPORT_KEYS
    if condition == {"StringEquals": {"ses:FromAddress": {"Ref": "SesSender"}}}:
        return "from SesSender"
    return json.dumps(condition, sort_keys=True)  # matches no entry of CALLS


def _grants(cfn: dict[str, Any], role: str) -> set[Grant]:
    found: set[Grant] = set()
    for policy in cfn["Resources"][role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow", (role, statement)
            assert not {"NotAction", "NotResource", "Principal"} & set(statement), (role, statement)
            condition = _condition_name(statement.get("Condition"))
            for action in _as_list(statement["Action"]):
                for resource in _as_list(statement["Resource"]):
                    found.add((action, _resource_name(resource), condition))
    return found


@pytest.mark.parametrize("function", sorted(CALLS))
def test_each_function_is_granted_exactly_the_calls_its_code_makes(
    cfn: dict[str, Any], function: str
) -> None:
    role = f"{function}FunctionRole"
    assert cfn["Resources"][f"{function}Function"]["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    granted = _grants(cfn, role)
    missing = CALLS[function] - granted
    extra = granted - CALLS[function]
    assert not missing, f"{function} cannot make these calls: {sorted(missing, key=str)}"
    assert not extra, f"{function} is granted more than its code calls: {sorted(extra, key=str)}"

    managed = {
        arn.rsplit("policy/", 1)[1]
        for arn in cfn["Resources"][role]["Properties"].get("ManagedPolicyArns", [])
    }
    expected = {"service-role/AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
    if function in SQS_TRIGGERED:
        expected.add("service-role/AWSLambdaSQSQueueExecutionRole")  # the event source's poller
    assert managed == expected, function


def test_the_data_key_opens_whatever_each_function_reads(cfn: dict[str, Any]) -> None:
    """S3, DynamoDB and Secrets Manager decrypt under DataKey on the caller's behalf."""
    key_arn = {"Fn::GetAtt": ["DataKey", "Arn"]}
    (rule,) = cfn["Resources"]["ExportsBucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key_arn
    for table in ("Table", "IdempotencyTable"):
        assert cfn["Resources"][table]["Properties"]["SSESpecification"]["KMSMasterKeyId"] == key_arn
    for secret in resources(cfn, "AWS::SecretsManager::Secret").values():
        assert secret["Properties"]["KmsKeyId"] == {"Ref": "DataKey"}
    for function, calls in CALLS.items():
        reads = {action.split(":")[0] for action, _, _ in calls} & {"s3", "dynamodb", "secretsmanager"}
        decrypt = {
            condition
            for action, resource, condition in calls
            if action == "kms:Decrypt" and condition != EXPORT_KEYS
        }
        if None in decrypt:
            continue
        (via,) = decrypt
        assert via == _via(*reads), function


def test_no_role_can_scan_drop_or_use_wildcards(cfn: dict[str, Any]) -> None:
    for role, statement in _statements(cfn):
        for action in _as_list(statement["Action"]):
            assert "*" not in action, (role, action)
            targets = {_resource_name(r) for r in _as_list(statement["Resource"])}
            if (role, action) == ("WebFunctionRole", "s3:PutObject") and targets == {DOWNLOADS}:
                continue  # a learner's big download, and nothing but under downloads/
            assert action not in FORBIDDEN_ACTIONS, (role, action)
        for resource in _as_list(statement["Resource"]):
            assert resource != "*", (role, statement)
            if "/index/" in json.dumps(resource):
                # Only the reconciler reads an index, and only the sparse one of open items.
                assert role == "ReconcileFunctionRole" and _resource_name(resource) == OPEN_INDEX, role


def test_learner_id_secret_is_separate_and_never_rotated(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    secret = sam["Resources"]["LearnerIdSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert "GenerateSecretString" in secret["Properties"]
    assert secret["DeletionPolicy"] == "Retain"
    assert secret["UpdateReplacePolicy"] == "Retain"
    rotation = ("AWS::SecretsManager::RotationSchedule", "AWS::SecretsManager::SecretTargetAttachment")
    rotated = [r["Properties"].get("SecretId") for r in cfn["Resources"].values() if r["Type"] in rotation]
    assert {"Ref": "LearnerIdSecret"} not in rotated
    for function in resources(cfn, "AWS::Lambda::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["LEARNER_ID_SECRET_ARN"] == {"Ref": "LearnerIdSecret"}
        assert variables["LINK_SECRET_ARN"] == {"Ref": "LinkSigningSecret"}
    readers = {
        function
        for function, calls in CALLS.items()
        for action, resource, _ in calls
        if action == "secretsmanager:GetSecretValue" and resource == "LearnerIdSecret"
    }
    # Intake derives learner ids; the legacy APIs find a Backpack user by an address's id.
    assert readers == {"Intake", "Legacy"}


def test_traces_leave_out_handler_responses(cfn: dict[str, Any]) -> None:
    # Responses carry CSRF tokens, link tokens and session cookies.
    for logical_id, function in resources(cfn, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false", logical_id


def test_cold_start_environment_is_the_one_the_bench_measures(cfn: dict[str, Any]) -> None:
    # The cold-import figures are taken in this environment; a function without it would pay a
    # scan of every installed distribution for pydantic plugins on its first model.
    for logical_id, function in resources(cfn, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["PYDANTIC_DISABLE_PLUGINS"] == lambda_env("any")["PYDANTIC_DISABLE_PLUGINS"], (
            logical_id
        )


def test_parameters_conditions_and_outputs(sam: dict[str, Any]) -> None:
    assert {
        "SesSender",
        "BadgrApiUrl",
        "BadgrAuthorizeUrl",
        "BadgrClientId",
        "BadgrClientSecret",
        "PublicBaseUrl",
        "EmailsPerSecond",
        "BadgrImportsPerSecond",
        "LinkTtlDays",
        "ExportRetentionDays",
        "AlarmEmail",
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
        "DashboardUrl",
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
        "GET /l/{token}/download",
        "GET /l/{token}/erase",
        "POST /l/{token}/erase",
        "X-AMAZON-APIGATEWAY-ANY-METHOD /{proxy+}",
        # The Backpack's third-party APIs, at their old paths.
        "POST /displayer/convert/email",
        "GET /displayer/{userId}/groups",
        "GET /displayer/{userId}/groups.json",
        "GET /displayer/{userId}/groups.jsonp",
        "GET /displayer/{userId}/group/{groupId}",
        "GET /images/badge/{file}",
        "GET /issuer.js",
        "GET /issuer/frame",
        "POST /issuer/verify",
        "GET /issuer/requests/{request}",
        "GET /issuer/consent/{request}",
        "POST /issuer/consent/{request}",
        "POST /issuer/frameless",
        "GET /access",
        "POST /access",
        "POST /api/token",
        "POST /api/issue",
        "GET /api/identity",
        "OPTIONS /api/token",
        "OPTIONS /api/issue",
        "OPTIONS /api/identity",
    }


def _alarm_targets(cfn: dict[str, Any]) -> dict[str, set[str]]:
    """What the alarms watch: queue and function logical ids by metric name."""
    watched: dict[str, set[str]] = {}

    def note(metric: str, dimensions: list[dict[str, Any]]) -> None:
        for dimension in dimensions:
            value = dimension["Value"]
            if isinstance(value, dict):
                value = value.get("Ref") or value["Fn::GetAtt"][0]
            watched.setdefault(metric, set()).add(str(value))

    for alarm in resources(cfn, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if "MetricName" in props:
            note(props["MetricName"], props.get("Dimensions", []))
        for query in props.get("Metrics", []):
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                note(metric["MetricName"], metric.get("Dimensions", []))
    return watched


def test_every_dead_letter_queue_function_and_queue_age_has_an_alarm(cfn: dict[str, Any]) -> None:
    queues = resources(cfn, "AWS::SQS::Queue")
    dead_letter = {k for k, q in queues.items() if "RedrivePolicy" not in q["Properties"]}
    working = set(queues) - dead_letter
    watched = _alarm_targets(cfn)
    assert dead_letter <= watched["ApproximateNumberOfMessagesVisible"]
    assert working <= watched["ApproximateAgeOfOldestMessage"]
    assert set(resources(cfn, "AWS::Lambda::Function")) <= watched["Errors"]
    # The Badgr alarm reads the metrics the Badgr client's response hook records.
    assert {"BadgrAnswer5xx", "BadgrAnswer429", "BadgrAnswer2xx", "BadgrAnswer4xx"} <= set(watched)


def test_alarms_notify_an_optional_encrypted_topic(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    assert sam["Parameters"]["AlarmEmail"]["Default"] == ""
    topic = cfn["Resources"]["AlarmTopic"]
    assert topic["Condition"] == "HasAlarmEmail" and topic["Properties"]["KmsMasterKeyId"]
    for alarm in resources(cfn, "AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == {
            "Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
        }


def test_dashboard_shows_exports_learners_states_badgr_queues_and_functions(cfn: dict[str, Any]) -> None:
    (dashboard,) = resources(cfn, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    titles = {w["properties"]["title"] for w in widgets}
    assert {"Exports", "Learners", "Badges by state (changes)", "Badgr answers by class"} <= titles
    for logical_id in [*resources(cfn, "AWS::SQS::Queue"), *resources(cfn, "AWS::Lambda::Function")]:
        reference = f"${{{logical_id}.QueueName}}" if logical_id.endswith("Queue") else f"${{{logical_id}}}"
        assert reference in body, f"the dashboard does not show {logical_id}"


def test_the_reconciler_runs_on_a_schedule_and_reads_only_what_is_open(cfn: dict[str, Any]) -> None:
    rules = resources(cfn, "AWS::Events::Rule")
    (rule,) = rules.values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(10 minutes)"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ReconcileFunction", "Arn"]}
    function = cfn["Resources"]["ReconcileFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["MIGRATE_DEAD_LETTER_QUEUE_URL"] == {"Ref": "MigrateDeadLetterQueue"}
    # Stale means older than any retry takes: five deliveries at most 15 minutes apart.
    assert int(variables["STALE_AFTER_SECONDS"]) > 5 * 900
    assert variables["BADGR_IMPORTS_PER_SECOND"] == {"Ref": "BadgrImportsPerSecond"}


def test_the_backpacks_old_host_name_can_point_at_the_api(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    assert sam["Parameters"]["LegacyDomainName"]["Default"] == ""
    assert "HasLegacyDomain" in sam["Conditions"]
    domain = cfn["Resources"]["LegacyDomain"]
    assert domain["Type"] == "AWS::ApiGatewayV2::DomainName" and domain["Condition"] == "HasLegacyDomain"
    assert domain["Properties"]["DomainNameConfigurations"][0]["SecurityPolicy"] == "TLS_1_2"
    mapping = cfn["Resources"]["LegacyDomainMapping"]
    assert mapping["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    assert mapping["Properties"]["DomainName"] == {"Ref": "LegacyDomain"}
    variables = cfn["Resources"]["LegacyFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["LEGACY_BASE_URL"]["Fn::If"][0] == "HasLegacyDomain"
    assert sam["Outputs"]["LegacyDomainTarget"]["Condition"] == "HasLegacyDomain"
