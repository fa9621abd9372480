"""Typed settings, read once from the environment the function (or local stack) provides."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import ConfigDict, Field

from .models import Model


class Settings(Model):
    model_config = ConfigDict(frozen=True)

    table_name: str = Field(default="migration", alias="TABLE_NAME")
    idempotency_table: str = Field(default="idempotency", alias="IDEMPOTENCY_TABLE")
    exports_bucket: str = Field(default="exports", alias="EXPORTS_BUCKET")
    chunk_queue_url: str = Field(default="", alias="CHUNK_QUEUE_URL")
    intake_queue_url: str = Field(default="", alias="INTAKE_QUEUE_URL")
    verify_queue_url: str = Field(default="", alias="VERIFY_QUEUE_URL")
    notify_queue_url: str = Field(default="", alias="NOTIFY_QUEUE_URL")
    migrate_queue_url: str = Field(default="", alias="MIGRATE_QUEUE_URL")
    collections_queue_url: str = Field(default="", alias="COLLECTIONS_QUEUE_URL")
    kms_key_id: str = Field(default="alias/backpack-migrate", alias="KMS_KEY_ID")
    link_secret_arn: str = Field(default="", alias="LINK_SECRET_ARN")
    # Never rotated: a learner's id is an HMAC of the email under it, so re-uploads keep their ids.
    learner_id_secret_arn: str = Field(default="", alias="LEARNER_ID_SECRET_ARN")
    badgr_client_secret_arn: str = Field(default="", alias="BADGR_CLIENT_SECRET_ARN")
    badgr_client_id: str = Field(default="backpack-migrate", alias="BADGR_CLIENT_ID")
    badgr_api_url: str = Field(default="https://api.badgr.io", alias="BADGR_API_URL")
    badgr_authorize_url: str = Field(
        default="https://badgr.com/auth/oauth2/authorize", alias="BADGR_AUTHORIZE_URL"
    )
    # The Badgr web app learners use (their backpack, their account's addresses, signing up).
    badgr_web_url: str = Field(default="https://badgr.com", alias="BADGR_WEB_URL")
    # Where learners write for help: named in every email and on every error page.
    support_email: str = Field(default="support@example.org", alias="SUPPORT_EMAIL")
    # A "Download my badges" ZIP up to this size is answered directly (Lambda answers at most
    # 6 MB, base64 included); a bigger one goes through a short-lived S3 object.
    download_inline_bytes: int = Field(default=4_000_000, alias="DOWNLOAD_INLINE_BYTES", ge=0, le=4_300_000)
    public_base_url: str = Field(default="http://127.0.0.1:3000", alias="PUBLIC_BASE_URL")
    # The Backpack's old host name, when it points at this service: the base of the URLs the
    # old APIs hand out (image URLs, Connect's api_root). Empty: public_base_url.
    legacy_base_url: str = Field(default="", alias="LEGACY_BASE_URL")
    ses_sender: str = Field(default="badges@example.org", alias="SES_SENDER")
    # Days S3 keeps an export: what the erase page tells a learner about the export's own bytes.
    export_retention_days: int = Field(default=90, alias="EXPORT_RETENTION_DAYS", ge=1)
    link_ttl_days: int = Field(default=30, alias="LINK_TTL_DAYS", ge=1, le=365)
    emails_per_second: float = Field(default=10.0, alias="EMAILS_PER_SECOND", gt=0)  # in all
    notify_concurrency: int = Field(default=1, alias="NOTIFY_CONCURRENCY", ge=1)
    learners_per_chunk: int = Field(default=50, alias="LEARNERS_PER_CHUNK", ge=1, le=500)
    migrate_dead_letter_queue_url: str = Field(default="", alias="MIGRATE_DEAD_LETTER_QUEUE_URL")
    # Badgr imports per second from all migrate instances together (halved on 429, then regained).
    badgr_imports_per_second: float = Field(default=10.0, alias="BADGR_IMPORTS_PER_SECOND", gt=0)
    # A badge or learner left this long in a state that should have moved on is repaired, and
    # a badge given up on after an import of ours was sent has its second look in Badgr.
    stale_after_seconds: int = Field(default=7200, alias="STALE_AFTER_SECONDS", ge=1)
    migrate_max_receive_count: int = Field(default=5, alias="MIGRATE_MAX_RECEIVE_COUNT", ge=1)
    allow_loopback_fetch: bool = Field(default=False, alias="ALLOW_LOOPBACK_FETCH")
    record_ttl_days: int = Field(default=180, alias="RECORD_TTL_DAYS", ge=1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process; tests and the local stack call ``get_settings.cache_clear()``."""
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    return Settings.model_validate({k: v for k, v in os.environ.items() if k in known})
