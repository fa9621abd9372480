"""A learner's addresses, decrypted with the data key of the export they came in.

Apart from the migration, so that the functions that only write to learners (notify) or show
their pages do not load the migration and the export reader with it.
"""

from __future__ import annotations

import json

from .domain import ExportRecord, LearnerRecord
from .services import Services


def learner_email(svc: Services, learner: LearnerRecord, export: ExportRecord | None = None) -> str:
    export = export or svc.store.get_export(learner.export_id)
    if export is None:
        raise LookupError(f"learner {learner.learner_id} belongs to an unknown export")
    return svc.emails.decrypt(
        learner.email_ciphertext,
        learner_id=learner.learner_id,
        export_id=learner.export_id,
        data_key_ciphertext=export.data_key_ciphertext,
    )


def learner_recipients(
    svc: Services, learner: LearnerRecord, export: ExportRecord | None = None
) -> list[str]:
    """The addresses a badge of this learner may be issued to: the contact address and, for a
    Backpack user, every verified address of theirs (an unverified one is never trusted)."""
    export = export or svc.store.get_export(learner.export_id)
    email = learner_email(svc, learner, export)
    if not learner.addresses_ciphertext or export is None:
        return [email]
    addresses = json.loads(
        svc.emails.decrypt(
            learner.addresses_ciphertext,
            learner_id=learner.learner_id,
            export_id=learner.export_id,
            data_key_ciphertext=export.data_key_ciphertext,
        )
    )
    verified = [a["address"] for a in addresses if a.get("verified") and a.get("address") != email]
    return [email, *verified]
