"""Brightcove Video Cloud emulator: OAuth, the CMS API (videos, ingest jobs) and Dynamic Ingest.

Follows ``shared/seeds/brightcove-dynamic-ingest.md`` ("the seed": CMS create video, then
``upload-urls`` for ``signed_url``/``api_request_url``, upload, ingest request,
notifications) and ``design/providers.md`` §1 (paths, fields, errors and limits, from
Brightcove's API reference sources B1-B9) and §7. The paths are Brightcove's, so the fleet
only swaps the base URLs of ``oauth.brightcove.com``, ``cms.api.brightcove.com`` and
``ingest.api.brightcove.com``, all of which are the sandbox here. Upload targets live in
the sandbox's S3 (:mod:`sandbox.s3`), bucket :data:`BUCKET`.

Endpoints, by the names the request log and fault rules use (``{a}`` = account id,
``{v}`` = a video id or ``ref:<reference_id>``):

===========================  ==================================================  ============================
brightcove.oauth_token       ``POST /v4/access_token``                           200 token / 401 invalid_client
brightcove.create_video      ``POST /v1/accounts/{a}/videos``                    201 video / 409 / 422 / 400
brightcove.video_fields      ``GET /v1/accounts/{a}/video_fields``               200 custom/standard fields
brightcove.get_video         ``GET /v1/accounts/{a}/videos/{v}``                 200 video / 404
brightcove.list_ingest_jobs  ``GET .../videos/{v}/ingest_jobs``                  200 [job]
brightcove.get_ingest_job    ``GET .../videos/{v}/ingest_jobs/{job_id}``         200 job / 404
brightcove.upload_urls       ``GET .../videos/{v}/upload-urls/{source_name}``    200 S3 target / 404 / 415
brightcove.ingest_request    ``POST .../videos/{v}/ingest-requests``             200 ``{"id": job}`` / 409 / 4xx
brightcove.processing        (no HTTP) the transcoding stage                     target of ``action: "fail"``
===========================  ==================================================  ============================

Modules, one per API (as Brightcove splits them) and one for what they share:

* :mod:`.emulator` - the :class:`BrightcoveEmulator`: options, settings, limits, routes and state;
* :mod:`.api` - the error format every API answers in, JSON bodies, times;
* :mod:`.oauth` - the OAuth API: access tokens, and their check on every other call;
* :mod:`.cms` - the CMS API: videos, the account's video fields, a video's ingest jobs;
* :mod:`.ingest` - the Dynamic Ingest API: upload targets, ingest requests, the jobs' processing;
* :mod:`.notifications` - the callbacks of an ingest job.
"""

from .api import bc_error
from .cms import DEFAULT_CUSTOM_FIELDS
from .emulator import BrightcoveEmulator
from .ingest import BUCKET

__all__ = ["BUCKET", "DEFAULT_CUSTOM_FIELDS", "BrightcoveEmulator", "bc_error"]
