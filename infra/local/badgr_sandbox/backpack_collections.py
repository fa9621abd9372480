"""Collections: ``GET|POST /v2/backpack/collections``, ``GET|PUT|DELETE .../collections/{entityId}``.

As the real server's ``BackpackCollectionSerializerV2`` and views answer: ``name`` is required
(also on PUT), ``description``, ``published`` and ``assertions`` (entityIds) are optional, and
``share_url`` / ``shareHash`` are read-only. A POST that carries ``assertions`` crashes the real
server (it sets the badge list on a collection not saved yet): 500. A PUT replaces the list; an
id the server does not hold is ``fieldErrors.assertions``. Publishing gives the collection a
share hash and a public ``share_url``; unpublishing takes both away.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from infra.local.badgr_sandbox.backpack import BackpackState, entity_id
from infra.local.badgr_sandbox.http import NOT_FOUND, BaseHandler, Route, bad_request, envelope, py_type


@dataclass
class StoredCollection:
    entity_id: str
    username: str
    name: str
    description: str = ""
    share_hash: str = ""  # published when set, as on the real server
    assertions: list[str] = field(default_factory=list)  # assertion entityIds, in the order given


def boolean(value: Any) -> bool | None:
    """A value as the real serializer's BooleanField reads it, or None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on", "t", "y"):
            return True
        if lowered in ("false", "0", "no", "off", "f", "n"):
            return False
    return None


class CollectionState(BackpackState):
    """The learners' collections, over their backpacks (part of the sandbox)."""

    _collections: list[StoredCollection]

    def collections_of(self, username: str) -> list[dict[str, Any]]:
        """A learner's collections, as ``GET /v2/backpack/collections`` lists them."""
        with self._lock:
            return [self._render_collection(c) for c in self._collections if c.username == username]

    def _delete(self, username: str, assertion_id: str) -> bool:
        """A deleted badge also leaves every collection, as its rows go with it on the real server."""
        with self._lock:
            if not super()._delete(username, assertion_id):
                return False
            for collection in self._collections:
                if assertion_id in collection.assertions:
                    collection.assertions.remove(assertion_id)
            return True

    def _render_collection(self, collection: StoredCollection) -> dict[str, Any]:
        live = {a.entity_id for a in self._assertions if a.acceptance != "Rejected"}
        share_url = (
            f"{self._base}/public/collections/{collection.share_hash}" if collection.share_hash else None
        )
        return {
            "entityType": "BackpackCollection",
            "entityId": collection.entity_id,
            "name": collection.name,
            "description": collection.description,
            "share_url": share_url,
            "shareHash": collection.share_hash,
            "published": bool(collection.share_hash),
            "assertions": [assertion_id for assertion_id in collection.assertions if assertion_id in live],
        }

    def _collection(self, username: str, collection_id: str) -> StoredCollection | None:
        # Another learner's collection is "not found", as the owner check makes it on the real server.
        return next(
            (c for c in self._collections if c.entity_id == collection_id and c.username == username), None
        )

    def _collection_fields(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The writable fields of a collection, checked as the real serializer checks them."""
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        name = data.get("name")
        if name is None:
            errors["name"] = ["This field may not be null." if "name" in data else "This field is required."]
        elif isinstance(name, bool) or not isinstance(name, str | int | float):
            errors["name"] = ["Not a valid string."]
        elif not str(name).strip():
            errors["name"] = ["This field may not be blank."]
        else:
            values["name"] = str(name).strip()
        if "description" in data:
            description = data["description"]
            if not isinstance(description, str):
                errors["description"] = ["Not a valid string."]
            else:
                values["description"] = description.strip()
        if "published" in data:
            published = boolean(data["published"])
            if published is None:
                errors["published"] = [f'"{data["published"]}" is not a valid boolean.']
            else:
                values["published"] = published
        if "assertions" in data:
            given = data["assertions"]
            if not isinstance(given, list):
                errors["assertions"] = [f'Expected a list of items but got type "{py_type(given)}".']
            else:
                # Looked up among every assertion the server holds, as the real field's queryset does.
                known = {a.entity_id for a in self._assertions}
                problems = []
                for assertion_id in given:
                    if not isinstance(assertion_id, str):
                        problems.append(
                            f"Incorrect type. Expected entity_id value, got {py_type(assertion_id)}."
                        )
                    elif assertion_id not in known:
                        problems.append(f'Invalid entity_id "{assertion_id}" - object does not exist.')
                if problems:
                    errors["assertions"] = problems
                else:
                    values["assertions"] = list(dict.fromkeys(given))
        return values, errors

    def _create_collection(self, username: str, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """201 with the new collection; ``None`` as the body means the server crashed (500)."""
        with self._lock:
            values, errors = self._collection_fields(data)
            if errors:
                return 400, bad_request(field_errors=errors)
            if "assertions" in values:
                return 500, None
            collection = StoredCollection(
                entity_id=entity_id(),
                username=username,
                name=values["name"],
                description=values.get("description", ""),
                share_hash=secrets.token_hex(16) if values.get("published") else "",
            )
            self._collections.append(collection)
            return 201, envelope(True, "ok", result=[self._render_collection(collection)])

    def _update_collection(
        self, username: str, collection_id: str, data: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            collection = self._collection(username, collection_id)
            if collection is None:
                return 404, envelope(False, NOT_FOUND)
            values, errors = self._collection_fields(data)
            if errors:
                return 400, bad_request(field_errors=errors)
            collection.name = values["name"]
            collection.description = values.get("description", collection.description)
            if "published" in values:
                if values["published"] and not collection.share_hash:
                    collection.share_hash = secrets.token_hex(16)
                elif not values["published"]:
                    collection.share_hash = ""
            if "assertions" in values:
                collection.assertions = values["assertions"]  # PUT replaces the list
            return 200, envelope(True, "ok", result=[self._render_collection(collection)])

    def _delete_collection(self, username: str, collection_id: str) -> bool:
        with self._lock:
            collection = self._collection(username, collection_id)
            if collection is None:
                return False
            self._collections.remove(collection)
            return True


class CollectionRoutes(BaseHandler):
    def collection_routes(self) -> list[Route]:
        one = r"/v2/backpack/collections/([\w-]+)"
        return [
            ("GET", "/v2/backpack/collections", self._collections),
            ("POST", "/v2/backpack/collections", self._collection_create),
            ("GET", one, self._collection_get),
            ("PUT", one, self._collection_put),
            ("DELETE", one, self._collection_delete),
        ]

    def _collections(self) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        self._json(200, envelope(True, "ok", result=self.sandbox.collections_of(user)))

    def _collection_create(self) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        data = self._data()
        if data is None:
            return
        status, body = self.sandbox._create_collection(user, data)
        if body is None:
            self._server_error()
            return
        self._json(status, body)

    def _collection_get(self, collection_id: str) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        with self.sandbox._lock:
            collection = self.sandbox._collection(user, collection_id)
            rendered = self.sandbox._render_collection(collection) if collection is not None else None
        if rendered is None:
            self._json(404, envelope(False, NOT_FOUND))
            return
        self._json(200, envelope(True, "ok", result=[rendered]))

    def _collection_put(self, collection_id: str) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        with self.sandbox._lock:
            exists = self.sandbox._collection(user, collection_id) is not None
        if not exists:
            self._json(404, envelope(False, NOT_FOUND))
            return
        data = self._data()
        if data is None:
            return
        self._json(*self.sandbox._update_collection(user, collection_id, data))

    def _collection_delete(self, collection_id: str) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        if self.sandbox._delete_collection(user, collection_id):
            self._no_content()
        else:
            self._json(404, envelope(False, NOT_FOUND))
