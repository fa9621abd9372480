"""A local stand-in for the Badgr server, answering the way the real one does.

It covers what the migration service calls: the web app's OAuth2 authorize page (and the JSON
API behind it), the token endpoint with its throttle, ``/v2/backpack/import``,
``/v2/backpack/assertions``, ``/v2/backpack/collections`` and ``/v2/users/self``. Outcomes of an
import are decided from the same facts the real server uses: it unbakes images, fetches hosted
assertions (and their badge class and issuer) over HTTP, compares the recipient with every
email of the account, checks a signed 2.0 badge's signature, signing key and revocation list
as the validator does, and fetches the badge class image to host its own copy. Answers carry
the real server's statuses, content types and fields.

Modules, by what changes together: :mod:`.validator` (the validator's checks), :mod:`.fetch`
(loopback-only fetching), :mod:`.backpack` (import and assertions), :mod:`.backpack_collections`,
:mod:`.oauth` (authorize and token endpoints), :mod:`.http` (plumbing) and :mod:`.server` (the
sandbox's state and accounts).

Run it alone with ``python -m infra.local.badgr_sandbox`` (prints its URL and a demo account).
Only ever listens on 127.0.0.1, and only fetches from there. It is a tool for tests and demos,
not deployed code.
"""

from infra.local.badgr_sandbox.server import BadgrSandbox, LoggedRequest, main
from infra.local.badgr_sandbox.validator import local_unbake as _local_unbake
from infra.local.badgr_sandbox.validator import unbake

__all__ = ["BadgrSandbox", "LoggedRequest", "_local_unbake", "main", "unbake"]
