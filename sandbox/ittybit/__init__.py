"""Ittybit emulator: files, ingest tasks, signed and resumable uploads, task webhooks.

Follows Ittybit's ingest guide (``shared/seeds/ittybit-ingest.txt``, "the seed": ``POST
/files`` ingests synchronously, ``POST /tasks`` with ``kind: "ingest"`` asynchronously, then
poll ``GET /tasks/{id}`` or take a webhook) and ``design/providers.md`` §3 (envelope and
later response shapes, File and Task fields, signatures, resumable uploads, errors; from
Ittybit's API docs I1-I5, I7 and the PHP SDK I6). The paths are Ittybit's, so the fleet only
swaps the base URL of ``api.ittybit.com`` (and of the ``{project}.ittybit.net`` delivery
domain of signed URLs), both of which are the sandbox here.

Endpoints, by the names the request log and fault rules use:

=========================  =================================  =======================================
ittybit.create_file        ``POST /files``                    201 File (synchronous ingest) / 400
ittybit.list_files         ``GET /files?limit=&page=``        200 list, newest first
ittybit.get_file           ``GET /files/{id}``                200 File / 404
ittybit.create_task        ``POST /tasks``                    201 Task ``pending`` / 400
ittybit.list_tasks         ``GET /tasks?limit=&page=``        200 list, newest first (limit 20, max 100)
ittybit.get_task           ``GET /tasks/{id}``                200 Task / 404
ittybit.create_webhook_endpoint ``POST /webhooks/endpoints``  201 Webhook Endpoint / 400
ittybit.list_webhook_endpoints  ``GET /webhooks/endpoints``   200 list, newest first
ittybit.delete_webhook_endpoint ``DELETE /webhooks/endpoints/{id}`` 204 / 404
ittybit.create_signature   ``POST /signatures``               201 signed URL
ittybit.upload_put         ``PUT /upload/{folder/}{name}``    201 File, 202 chunk stored / 400 403 409
ittybit.upload_head        ``HEAD /upload/{folder/}{name}``   200 + ``Upload-Offset`` / 403
ittybit.processing         (no HTTP) a task's processing      target of ``action: "fail"`` rules
=========================  =================================  =======================================

Modules, one per resource of the API:

* :mod:`.emulator` - the :class:`IttybitEmulator`: options, settings, routes and state;
* :mod:`.api` - what every call shares: versions and response shapes, authentication,
  errors, request fields, lists;
* :mod:`.files` - files, and fetching a source from its URL;
* :mod:`.tasks` - ingest tasks and their processing;
* :mod:`.uploads` - signatures and the signed, resumable uploads;
* :mod:`.webhooks` - Webhook Endpoints and the delivery of task events.

Limits. Ittybit publishes no number (providers.md §6): ``rate_limit_rps`` is 0 (off) unless
a fault config sets it; throttled requests get 429 with ``Retry-After``.
"""

from .api import SHAPES
from .emulator import IttybitEmulator

__all__ = ["SHAPES", "IttybitEmulator"]
