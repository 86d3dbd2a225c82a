"""Ingest.io emulator: videos, encoding inputs with signed S3-style uploads, jobs, webhooks.

Follows ``design/providers.md`` §4 and Ingest's API reference (``ingest/api-reference``,
seed ``shared/seeds/ingestio-api-reference.md``; "the docs": ``versioning.md``,
``rate-limiting.md``, ``pagination.md``, ``request-ids.md``, ``inputs/upload-*.md``,
``jobs/object.md``, ``webhooks/*.md``, ``events/*.md``). The paths are Ingest's, so the fleet
only swaps the base URL of ``api.ingest.io``; the signed part URLs point at the sandbox too.

Endpoints, by the names the request log and fault rules use:

========================  ===========================================  ================================
ingestio.create_video     ``POST /videos``                             201 video ``CREATED`` / 400
ingestio.publish_videos   ``POST /videos/publish [ids]``               200 videos ``PUBLISHED`` / 400 404 409
ingestio.list_videos      ``GET /videos?search=&status=``              200/206 page, oldest first
ingestio.count_videos     ``HEAD /videos?status=``                     204 + ``Resource-Count``
ingestio.get_video        ``GET /videos/{id}``                         200 / 404
ingestio.create_input     ``POST /encoding/inputs``                    201 input ``uploading`` / 400
ingestio.list_inputs      ``GET /encoding/inputs``, ``GET /inputs``    200/206 page; ``filter=<state>``
ingestio.count_inputs     ``HEAD /encoding/inputs``, ``HEAD /inputs``  204 + ``Resource-Count``
ingestio.get_input        ``GET /encoding/inputs/{id}``, ``/inputs/…``  200 / 404
ingestio.upload_init      ``POST /encoding/inputs/{id}/upload``        201 ``{key[, uploadId, …]}``
ingestio.upload_sign      ``POST …/upload/sign``                       200 signed part PUT
ingestio.part_put         ``PUT /ingestio-s3/{key}``                   200 + ``ETag`` / 403 404 (S3 XML)
ingestio.upload_complete  ``POST …/upload/complete``                   200 input / 404 409
ingestio.upload_abort     ``POST …/upload/abort``                      201 input / 404 409
ingestio.list_profiles    ``GET /encoding/profiles``                   200 page (the default profile)
ingestio.get_profile      ``GET /encoding/profiles/{id}``              200 / 404
ingestio.create_job       ``POST /encoding/jobs``                      201 job ``status: 0`` / 400 404 409
ingestio.list_jobs        ``GET /encoding/jobs?video=``                200/206 page
ingestio.count_jobs       ``HEAD /encoding/jobs``                      204 + ``Resource-Count``
ingestio.get_job          ``GET /encoding/jobs/{id}``                  200 / 404
ingestio.job_progress     ``GET /encoding/jobs/{id}/progress``         200 ``{progress, status}``
ingestio.create_hook      ``POST /hooks``                              201 hook / 400
ingestio.list_hooks       ``GET /hooks``                               200/206 page
ingestio.get_hook         ``GET /hooks/{id}`` (``/hooks/{event}``)     200 hook (page of its hooks) / 404
ingestio.delete_hook      ``DELETE /hooks/{id}``                       204 / 404
ingestio.processing       (no HTTP) a job's encoding                   target of ``action: "fail"`` rules
========================  ===========================================  ================================

Modules, one per resource of the API:

* :mod:`.emulator` - the :class:`IngestioEmulator`: options, settings, routes, state, and
  what every call passes through (the checks, the rate limit, the answer headers);
* :mod:`.api` - the conventions all resources share: JSON bodies, errors, pages;
* :mod:`.auth` - the version header and the bearer JWT (:func:`mint_token`);
* :mod:`.videos`, :mod:`.inputs` - the two entities the fleet creates;
* :mod:`.uploads` - an input's signed S3-style upload (init, sign, part PUT, complete, abort);
* :mod:`.jobs` - encoding: the default profile and the jobs;
* :mod:`.hooks` - webhooks and the delivery of events.

Not emulated: updates and deletes of videos and inputs, ETag/304 on reads, thumbnails,
live streams, networks, ``DELETE /hooks`` with a body, the docs' POST-policy variant of
``amazon`` uploads (the SDK signs a PUT for those too, as here).
"""

from .auth import DEFAULT_NETWORK, DEFAULT_SECRET, default_user_id, mint_token
from .emulator import IngestioEmulator
from .jobs import default_profile_id

__all__ = ["DEFAULT_NETWORK", "DEFAULT_SECRET", "IngestioEmulator", "default_profile_id", "default_user_id",
           "mint_token"]
