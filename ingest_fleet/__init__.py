"""ingest-fleet's client for applications: submit ingest intents to the fleet and follow them,
with Redis alone (no Celery, no provider credential, no import of the fleet's packages).

    from ingest_fleet import Client, IngestError
    fleet = Client()          # REDIS_URL
    job_id = fleet.submit({"provider": "gcore", "source": "https://cdn.example.com/a.mp4", "title": "A"})
    print(fleet.wait(job_id, timeout=3600)["state"])

``pip install ingest-fleet`` installs this client with redis only; the fleet itself (workers,
scheduler, webhooks, Flower) comes with ``pip install 'ingest-fleet[fleet]'``.
"""

from ingest_fleet.batch import BatchResult
from ingest_fleet.client import AsyncClient, Client
from ingest_fleet.errors import (
    BatchNotFound,
    FleetUnavailable,
    IdempotencyConflict,
    IngestError,
    IntentRefused,
    JobNotFound,
    WaitTimeout,
)
from ingest_fleet.intent import Intent
from ingest_fleet.signature import HEADER as SIGNATURE_HEADER
from ingest_fleet.signature import sign, verify_signature

__version__ = "0.1.0"
__all__ = [
    "SIGNATURE_HEADER", "AsyncClient", "BatchNotFound", "BatchResult", "Client", "FleetUnavailable",
    "IdempotencyConflict", "IngestError", "Intent", "IntentRefused", "JobNotFound", "WaitTimeout", "__version__",
    "sign", "verify_signature",
]
