"""Backup routes: `POST /v1/admin/snapshots/export` uploads a fresh checkpoint's snapshot and its
manifest to an object store (node/archive/). Superuser only: a file:// URL writes on the node's disk."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..archive.access import Stores
from ..archive.crypto import load_archive_key
from ..archive.snapshots import export_checkpoint
from ..archive.store import ArchiveError, ObjectExists
from ..catalog import Principal
from ..config import Settings
from ..errors import AlreadyExists, BadGateway, BadRequest
from .admin import AdminNode, checkpoint_document
from .http import Request, Response, json_response
from .routes import Route, superuser

MAX_URL_CHARS = 1024


class BackupNode(AdminNode, Protocol):
    settings: Settings


def _stores_from_body(request: Request, settings: Settings) -> Stores:
    body = request.json()
    if not isinstance(body, dict) or set(body) != {"to"} or not isinstance(body["to"], str):
        raise BadRequest('the body is {"to": URL}: s3://bucket/prefix or file:///absolute/path')
    url = body["to"]
    if not url or len(url) > MAX_URL_CHARS:
        raise BadRequest(f"'to' must be a URL of 1 to {MAX_URL_CHARS} characters")
    try:
        # With an archive key (archive_key_file / KVSTORE_ARCHIVE_KEY) the snapshot is encrypted.
        return Stores.open(url, load_archive_key(settings.archive_key_file, settings.archive_key))
    except ArchiveError as exc:
        raise BadRequest(str(exc)) from None


def routes(node: BackupNode) -> list[Route]:
    async def export(request: Request, principal: Principal) -> Response:
        stores = _stores_from_body(request, node.settings)
        result = await node.checkpointer.checkpoint("export")
        control = node.checkpointer.control
        # Opened before anything else can run: a later checkpoint may remove the file from base/,
        # and the open file keeps its bytes until the upload is done.
        snapshot = (node.datadir.base / result.snapshot).open("rb")
        try:
            manifest = await asyncio.to_thread(export_checkpoint, stores, snapshot, result.snapshot, control)
        except ObjectExists as exc:
            raise AlreadyExists(f"{exc} (no key changed since that export: it is the same snapshot)") from None
        except ArchiveError as exc:
            raise BadGateway(f"export to {stores.url} failed: {exc}") from None
        finally:
            snapshot.close()
        document: dict[str, Any] = {"to": stores.url, "manifest": manifest.document()}
        document["checkpoint"] = checkpoint_document(result)
        return json_response(document)

    return [Route("POST", "/v1/admin/snapshots/export", export, superuser("admin routes"))]
