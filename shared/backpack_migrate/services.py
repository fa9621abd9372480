"""Everything the domain logic talks to, built once per process from the settings.

Handlers take a ``Services`` (tests pass one made of fakes); nothing else reads the environment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .breaker import BadgrGate, OpenGate
from .config import Settings, get_settings
from .crypto import EmailCipher, TokenVault, learner_id_for
from .links import no_other_secrets
from .notify import EmailSender, RateLimiter
from .queues import JobQueue
from .store import Store

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def badgr_answer_class(status: int) -> str:
    """How the dashboard and the error-rate alarm group Badgr's answers."""
    if status == 429:
        return "429"
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def count_badgr_answer(response: Any, *args: Any, **kwargs: Any) -> None:
    """A requests response hook: one metric per Badgr answer, by class (no URL, no body)."""
    from .observability import metrics

    metrics.add_metric(name=f"BadgrAnswer{badgr_answer_class(response.status_code)}", unit="Count", value=1)


def _no_idempotency(name: str, fn: F) -> F:
    return fn


def _ignore_context(context: Any) -> None:
    return None


def _nothing_to_forget(name: str, job: dict[str, Any]) -> None:
    return None


@dataclass
class Services:
    settings: Settings
    store: Store
    queue: JobQueue
    s3: Any
    emails: EmailCipher
    tokens: TokenVault
    link_secret: Callable[[], bytes]
    learner_id_secret: Callable[[], bytes]
    sender: EmailSender
    rate: RateLimiter
    verifier_factory: Callable[[], Any]
    badgr_factory: Callable[[], Any]
    # Wraps a side effect so a replayed event does not repeat it (Powertools idempotency in Lambda).
    once: Callable[[str, Any], Any] = _no_idempotency
    # The shared import rate and circuit breaker in front of Badgr (breaker.DynamoGate in Lambda).
    gate: BadgrGate = field(default_factory=OpenGate)
    # Deletes the idempotency record ``once(name, ...)`` keeps for ``job`` (erasing a learner).
    forget_once: Callable[[str, dict[str, Any]], None] = _nothing_to_forget
    # Lets idempotency records expire with the invocation that wrote them.
    register_context: Callable[[Any], None] = _ignore_context
    # Keys a link may be signed with besides the cached current one (see build_services).
    other_link_secrets: Callable[[], Iterable[bytes]] = no_other_secrets
    _verifier: Any = field(default=None, init=False, repr=False)
    _badgr: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def learner_id(self, email: str) -> str:
        return learner_id_for(email, self.learner_id_secret())

    def once_keeping_result(self, name: str, fn: Callable[..., R], job: dict[str, Any]) -> R:
        """``once(name, fn)(job=job)``, except that when ``fn`` ran and only saving its result in
        the idempotency store failed (a throttled write), its result is returned: raising would
        run ``fn`` again, its side effect too, once the record left in progress expires."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

        results: list[R] = []

        def kept(job: dict[str, Any]) -> R:
            results.append(fn(job=job))
            return results[-1]

        try:
            result: R = self.once(name, kept)(job=job)
            return result
        except IdempotencyPersistenceLayerError:
            if not results:
                raise
            from .observability import logger

            logger.warning("a result was not saved in the idempotency store", extra={"once": name})
            return results[-1]

    @property
    def verifier(self) -> Any:
        """One verifier per process, so issuer documents stay cached across invocations."""
        with self._lock:
            if self._verifier is None:
                self._verifier = self.verifier_factory()
            return self._verifier

    @property
    def badgr(self) -> Any:
        with self._lock:
            if self._badgr is None:
                self._badgr = self.badgr_factory()
            return self._badgr


_services: Services | None = None
_services_lock = threading.Lock()


def get_services() -> Services:
    global _services  # noqa: PLW0603 - one container per warm Lambda process
    with _services_lock:
        if _services is None:
            _services = build_services(get_settings())
        return _services


def use_services(services: Services | None) -> None:
    """Make ``get_services`` answer with these (tests hand in fakes; None forgets them)."""
    global _services  # noqa: PLW0603
    with _services_lock:
        _services = services


def reset_services() -> None:
    """Forget the process's services (the local stack and tests change the environment)."""
    global _services  # noqa: PLW0603
    with _services_lock:
        _services = None


class _Lazy:
    """A boto3 client made on first use: each function builds only the clients it calls."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make()
        return getattr(self._client, name)


def build_services(settings: Settings) -> Services:
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from botocore.config import Config

    from .breaker import DynamoGate
    from .notify import SesSender
    from .queues import SqsJobQueue
    from .store import DynamoStore

    kms = _Lazy(lambda: boto3.client("kms"))
    # Owned by these services (not Powertools' process-wide default provider), so reset_services()
    # also forgets the secrets' client and cache when the environment points somewhere else.
    secrets = _Lazy(lambda: parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager")))
    # Powertools caches a secret by its name alone, whatever VersionStage asked for, so the
    # previous version of a key is read through a provider (and cache) of its own.
    previous_secrets = _Lazy(lambda: parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager")))
    # Powertools' persistence layer keeps the running call's key prefix and the invocation's
    # context on itself: one per thread, as one Lambda environment runs one invocation at a time.
    # (A process that plays several environments at once, like the local stack, runs each
    # invocation on a thread of its own, so no invocation ever uses another's prefix.)
    idempotency_state = threading.local()

    def idempotency() -> tuple[DynamoDBPersistenceLayer, IdempotencyConfig]:
        state: tuple[DynamoDBPersistenceLayer, IdempotencyConfig] | None = getattr(
            idempotency_state, "layer", None
        )
        if state is None:
            state = (
                DynamoDBPersistenceLayer(table_name=settings.idempotency_table),
                IdempotencyConfig(expires_after_seconds=7 * 86400),
            )
            context = getattr(idempotency_state, "context", None)
            if context is not None:
                state[1].register_lambda_context(context)
            idempotency_state.layer = state
        return state

    def once(name: str, fn: Any) -> Any:
        persistence, config = idempotency()
        return idempotent_function(
            fn,
            data_keyword_argument="job",
            persistence_store=persistence,
            config=config,
            key_prefix=name,
        )

    def register_context(context: Any) -> None:
        # Kept for the layer, which is only built when a call first needs it (a page view
        # rarely does, and building it makes a DynamoDB client): an in-progress record then
        # expires with the invocation that wrote it, whichever function wrote it.
        idempotency_state.context = context
        state = getattr(idempotency_state, "layer", None)
        if state is not None:
            state[1].register_lambda_context(context)

    forgetting: dict[str, DynamoDBPersistenceLayer] = {}

    def forget_once(name: str, job: dict[str, Any]) -> None:
        # A layer per name, configured like the one ``once`` uses, so the key is computed the
        # same way (prefix and hash of the job) without touching the shared layer's state.
        layer = forgetting.get(name)
        if layer is None:
            layer = forgetting[name] = DynamoDBPersistenceLayer(table_name=settings.idempotency_table)
            layer.configure(idempotency()[1], key_prefix=name)
        layer.delete_record(data=job, exception=LookupError("the learner erased their data"))

    def key_bytes(value: Any) -> bytes:
        if not isinstance(value, str | bytes):
            raise TypeError("a signing secret must be a string")
        return value.encode() if isinstance(value, str) else value

    def secret_bytes(arn: str) -> bytes:
        return key_bytes(secrets.get(arn, max_age=300))

    no_previous_until = [0.0]
    current_refreshed_at = [float("-inf")]

    def other_link_secrets() -> Iterator[bytes]:
        """For a link the cached current key refuses: the key before the last rotation, then (at
        most every 30 s) the current key read afresh, in case it was rotated since it was cached.
        A key never rotated has no previous version; that is remembered like a found key, so
        forged links cost no Secrets Manager calls."""
        now = time.monotonic()
        if now >= no_previous_until[0]:
            try:
                yield key_bytes(
                    previous_secrets.get(settings.link_secret_arn, max_age=300, VersionStage="AWSPREVIOUS")
                )
            except parameters.GetParameterError as error:
                cause = error.__cause__ or error.__context__
                if getattr(cause, "response", {}).get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                no_previous_until[0] = now + 300
        if now - current_refreshed_at[0] >= 30:
            current_refreshed_at[0] = now
            yield key_bytes(secrets.get(settings.link_secret_arn, max_age=300, force_fetch=True))

    def verifier_factory() -> Any:
        from .observability import trace_http
        from .openbadges import SafeFetcher, Verifier

        trace_http()
        return Verifier(SafeFetcher(allow_loopback=settings.allow_loopback_fetch))

    def badgr_factory() -> Any:
        from .badgr import BadgrClient
        from .observability import trace_http

        trace_http()
        secret = secrets.get(settings.badgr_client_secret_arn, max_age=300)
        client = BadgrClient(settings.badgr_api_url, settings.badgr_client_id, str(secret))
        client.session.hooks["response"].append(count_badgr_answer)
        return client

    table = _Lazy(lambda: boto3.resource("dynamodb").Table(settings.table_name))

    return Services(
        settings=settings,
        store=DynamoStore(table, settings.record_ttl_days),
        queue=SqsJobQueue(_Lazy(lambda: boto3.client("sqs"))),
        # SigV4, as presigned URLs for SSE-KMS objects (a learner's big download) require.
        s3=_Lazy(lambda: boto3.client("s3", config=Config(signature_version="s3v4"))),
        emails=EmailCipher(kms, settings.kms_key_id),
        tokens=TokenVault(kms, settings.kms_key_id),
        link_secret=lambda: secret_bytes(settings.link_secret_arn),
        learner_id_secret=lambda: secret_bytes(settings.learner_id_secret_arn),
        sender=SesSender(_Lazy(lambda: boto3.client("ses")), settings.ses_sender),
        # Each notify instance keeps to its share, so together they keep to the configured rate.
        rate=RateLimiter(settings.emails_per_second / settings.notify_concurrency),
        verifier_factory=verifier_factory,
        badgr_factory=badgr_factory,
        once=once,
        gate=DynamoGate(table, settings.badgr_imports_per_second),
        forget_once=forget_once,
        register_context=register_context,
        other_link_secrets=other_link_secrets,
    )
