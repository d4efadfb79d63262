"""The route table of the HTTP ops API: the app registers it and the OpenAPI document is built from it.

One table, two readers, so the served routes and ``/openapi.json`` cannot drift.
Paths are written the OpenAPI way (``/api/subscribers/{msisdn}``); :func:`klein_path`
turns them into the router's syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KIB = 1024
SMALL_BODY = 64 * KIB
FIXTURE_BODY = 8 * KIB * KIB
# report kind -> (module, function); each is called (session, ..., now) and returns a JSON-ready dict
REPORT_SOURCES = {"campaigns": ("notifier.reports", "campaign_report"),
                  "surveys": ("notifier.surveys", "survey_report"),
                  "busy-hour": ("ivr.reports", "busy_hour_report"),
                  "ivr": ("ivr.reports", "ivr_report"),
                  "projects": ("notifier.projects_report", "project_report"),
                  "products": ("notifier.product_reports", "product_report")}
REPORT_KINDS = tuple(REPORT_SOURCES)
OUTBOX_STATES = ("queued", "sending", "sent", "delivered", "failed", "expired")
JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path or query
    schema: dict[str, Any]
    description: str
    required: bool = False
    example: str | None = None  # a value that exists in the demo data, for docs and fuzzers


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # method name on the API object, also the operationId
    summary: str
    tag: str
    result: str | None = None  # components/schemas name of the 2xx body (None: see media)
    ok: int = 200
    write: bool = False  # needs Authorization: Bearer <token>
    params: tuple[Param, ...] = ()
    body: str | None = None  # components/schemas name of the JSON request body
    body_required: bool = True  # False: no body at all is the same as {}
    body_limit: int = SMALL_BODY
    media: tuple[str, ...] = (JSON,)
    errors: tuple[int, ...] = ()


PAGE = (Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
              "items per page"),
        Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0},
              "items to skip"))
MSISDN = Param("msisdn", "path", {"type": "string", "pattern": r"^\+?[0-9]{3,20}$"}, "subscriber number",
               required=True, example="13800000001")
CAMPAIGN_ID = Param("id", "path", {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                    "campaign id", required=True, example="care-roaming")
PROJECT_ID = Param("id", "path", {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"}, "project id",
                   required=True, example="data-alert-call")
PROJECT_ACTIONS = ("approve", "reject", "start", "go", "pause", "close")
FORMAT = Param("format", "query", {"type": "string", "enum": ["json", "csv"]},
               "csv for a download (Accept: text/csv does the same)")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "liveness and database check", "ops", "Health", errors=(503,)),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (names start with gateway_)", "ops",
          media=("text/plain",)),
    Route("GET", "/openapi.json", "openapi", "this document", "ops", "Object"),
    Route("GET", "/", "dashboard", "live dashboard", "dashboard", media=("text/html",)),
    Route("GET", "/static/{name}", "static", "dashboard assets (served locally, no CDN)", "dashboard",
          params=(Param("name", "path", {"type": "string", "pattern": r"^[a-z0-9_-]+\.(js|css|svg)$"},
                        "asset file name", required=True, example="dashboard.js"),),
          media=("application/javascript", "text/css", "image/svg+xml"), errors=(404,)),
    Route("GET", "/api/stats", "stats", "live numbers of the dashboard", "dashboard", "Stats"),
    Route("GET", "/api/events", "events", "server-sent events: the stats every second", "dashboard",
          media=("text/event-stream",), errors=(503,)),
    Route("GET", "/api/subscribers/{msisdn}", "subscriber", "a subscriber's profile, usage, segments",
          "subscribers", "Object", params=(MSISDN,), errors=(400, 404)),
    Route("GET", "/api/subscribers/{msisdn}/shelf", "shelf", "the offer shelf the 200 SMS shows",
          "subscribers", "Shelf",
          params=(MSISDN, Param("explain", "query", {"type": "string", "enum": ["0", "1", "true", "false"]},
                                "1 adds every offer's decision and reasons")), errors=(400, 404, 503)),
    Route("GET", "/api/fixtures", "fixtures_info", "the fixture set served now", "fixtures", "FixtureInfo"),
    Route("POST", "/api/fixtures", "fixtures_load", "validate a complete fixture set and load it atomically",
          "fixtures", "FixtureResult", write=True, body="FixtureUpload", body_limit=FIXTURE_BODY,
          errors=(400, 401, 413, 415, 422)),
    Route("GET", "/api/campaigns", "campaigns", "every campaign with state, next run and SMS preview",
          "campaigns", "CampaignPage", params=PAGE, errors=(400, 503)),
    Route("POST", "/api/campaigns", "campaign_create", "add a campaign (validated with the whole fixture set)",
          "campaigns", "Object", ok=201, write=True, body="CampaignNew", errors=(400, 401, 409, 413, 415, 422, 503)),
    Route("POST", "/api/campaigns/{id}/run", "campaign_run", "plan and send a campaign now", "campaigns",
          "Object", write=True, params=(CAMPAIGN_ID,), errors=(400, 401, 404, 409, 503)),
    Route("POST", "/api/campaigns/{id}/pause", "campaign_pause", "pause a campaign", "campaigns", "Object",
          write=True, params=(CAMPAIGN_ID,), errors=(400, 401, 404, 503)),
    Route("POST", "/api/campaigns/{id}/resume", "campaign_resume", "resume a paused campaign", "campaigns",
          "Object", write=True, params=(CAMPAIGN_ID,), errors=(400, 401, 404, 503)),
    Route("GET", "/api/projects", "projects", "every outbound call project with its lifecycle state", "projects",
          "Object", errors=(503,)),
    Route("POST", "/api/projects", "project_create", "add an outbound call project as a draft (validated with the "
          "whole fixture set)", "projects", "Object", ok=201, write=True, body="ProjectNew",
          errors=(400, 401, 409, 413, 415, 422, 503)),
    Route("GET", "/api/projects/{id}", "project", "a project: definition, state and why, transitions, live dialer "
          "figures and its report (trial beside roll-out and the expected figures, QA findings)", "projects",
          "Object", params=(PROJECT_ID, FORMAT,
                            Param("days", "query", {"type": "integer", "minimum": 1, "maximum": 366, "default": 30},
                                  "calls of the last N days")),
          media=(JSON, CSV), errors=(400, 404, 503)),
    Route("POST", "/api/projects/{id}/{action}", "project_action", "approve, reject (with a reason), start (the "
          "trial first), go (roll-out after the trial), pause or close a project", "projects", "Object",
          write=True, body="ProjectAction", body_required=False,
          params=(PROJECT_ID, Param("action", "path", {"type": "string", "enum": list(PROJECT_ACTIONS)},
                                    "the lifecycle step", required=True, example="approve")),
          errors=(400, 401, 404, 409, 413, 415, 503)),
    Route("GET", "/api/reports/{kind}", "report", "campaign, survey, busy-hour, IVR, project and product reports", "reports",
          "Report",
          params=(Param("kind", "path", {"type": "string", "enum": list(REPORT_KINDS)}, "which report",
                        required=True),
                  Param("campaign", "query", CAMPAIGN_ID.schema, "one campaign only (campaigns report)"),
                  Param("days", "query", {"type": "integer", "minimum": 1, "maximum": 366, "default": 7},
                        "surveys, busy-hour, ivr, products: the last N days"),
                  FORMAT, *PAGE),
          media=(JSON, CSV), errors=(400, 404)),
    Route("GET", "/api/learning", "learning_state", "the learned shelf: switches, holdout, evidence totals",
          "learning", "Object", errors=(503,)),
    Route("POST", "/api/learning/freeze", "learning_freeze", "freeze (or unfreeze) the learned state",
          "learning", "Object", write=True, body="LearningFreeze", errors=(400, 401, 413, 415)),
    Route("POST", "/api/learning/reset", "learning_reset", "forget the evidence: back to the priors",
          "learning", "Object", write=True, errors=(401,)),
    Route("GET", "/api/outbox", "outbox", "outbox rows, newest first", "messages", "OutboxPage",
          params=(Param("state", "query", {"type": "string", "enum": list(OUTBOX_STATES)}, "only this state"),
                  Param("dest", "query", {"type": "string", "maxLength": 320}, "only to this address"),
                  Param("campaign", "query", CAMPAIGN_ID.schema, "only this campaign"), *PAGE),
          errors=(400,)),
    Route("POST", "/api/messages", "message", "send an MO through the command router, get its reply",
          "messages", "MessageReply", write=True, body="MessageIn", errors=(400, 401, 413, 415, 503)),
)

_PARAM = re.compile(r"\{([a-z_]+)\}")


def klein_path(path: str) -> str:
    return _PARAM.sub(r"<\1>", path)


def openapi_path(rule: str) -> str:
    """The inverse of :func:`klein_path`, for comparing the router's rules with the document."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)
