"""The OpenAPI 3.0 document of the ops API, built from :data:`gateway.http.routes.ROUTES`."""

from __future__ import annotations

from typing import Any

from gateway.http.routes import FIXTURE_BODY, JSON, OUTBOX_STATES, ROUTES, Param, Route

STATUS_TEXT = {400: "invalid request (problems name the field)", 401: "missing or wrong bearer token",
               404: "not found", 409: "conflict with the current state", 413: "body too large",
               415: "body is not JSON", 422: "fixture problems (file, line, reason)",
               503: "not ready (no fixtures, no scheduler, too many streams)"}

OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
NUMBER_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "limit", "offset", "next"],
            "properties": {"items": {"type": "array", "items": item}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"}, "total": {"type": "integer"},
                           "next": {"type": "string", "nullable": True,
                                    "description": "URL of the next page; null on the last"}},
            "additionalProperties": True}


SCHEMAS: dict[str, Any] = {
    "Object": OBJECT,
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "problems"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}}}},
    "Problem": {"type": "object", "required": ["reason"], "properties": {
        "file": {"type": "string"}, "field": {"type": "string"}, "line": {"type": "integer", "nullable": True},
        "path": {"type": "string"}, "reason": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ok"]}, "fixtures_version": {"type": "integer", "nullable": True},
        "uptime_s": {"type": "number"},
        "worker": {"type": "integer", "nullable": True, "description": "index of the worker that answered "
                   "(serve --workers N > 1), null for a single process"}}},
    "Stats": {"type": "object", "description": "see gateway/http/dashboard.py for every key",
              "properties": {k: OBJECT for k in ("queue", "sms", "outbox", "busy_hour", "survey", "binds")}
              | {"campaigns": {"type": "array", "items": OBJECT}, "at": {"type": "number"}},
              "additionalProperties": True},
    "Shelf": {"type": "object", "required": ["msisdn", "offers"], "properties": {
        "msisdn": {"type": "string"},
        "offers": {"type": "array", "items": {"type": "object", "properties": {
            "rank": {"type": "integer"}, "code": {"type": "string"}, "name": {"type": "string"},
            "price": {"type": "number"}, "order": {"type": "string"}}, "additionalProperties": True}},
        "decisions": {"type": "array", "items": OBJECT}, "segments": OBJECT}, "additionalProperties": True},
    "FixtureUpload": {"type": "object", "required": ["files"], "additionalProperties": False, "properties": {
        "files": {"type": "object", "minProperties": 1, "maxProperties": 200,
                  "additionalProperties": {"type": "string"},
                  "description": f"path in a fixture folder -> file text; at most {FIXTURE_BODY} bytes in all"}}},
    "FixtureResult": {"type": "object", "required": ["loaded"], "properties": {
        "loaded": NUMBER_MAP, "version": {"type": "integer"}}},
    "FixtureInfo": {"type": "object", "properties": {
        "version": {"type": "integer", "nullable": True}, "loaded_at": {"type": "number", "nullable": True},
        "source": {"type": "string", "nullable": True}, "counts": NUMBER_MAP,
        "files": {"type": "array", "items": {"type": "string"}}}},
    "CampaignPage": _page(OBJECT),
    "CampaignNew": {
        "type": "object", "required": ["id", "name", "kind", "target", "schedule", "templates"],
        "additionalProperties": False,
        "description": "one item of campaigns.yaml; checked with the whole fixture set (rule types, offer "
                       "codes, template variables), so a well-formed body can still get 422",
        "properties": {
            "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}, "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["marketing", "care"]}, "channel": {"type": "string"},
            "target": {"type": "string", "description": "rule-engine condition over subscriber attributes"},
            "offers": {"type": "array", "items": {"type": "string"}}, "priority": {"type": "integer"},
            "schedule": OBJECT, "window": {"type": "string", "example": "09:00-20:00"},
            "start": {"type": "string"}, "end": {"type": "string"}, "repeat_after_days": {"type": "number"},
            "thresholds": OBJECT, "templates": {"type": "object", "additionalProperties": {"type": "string"}},
            "source": {"type": "string"}, "account": {"type": "string"}, "note": {"type": "string"}}},
    "ProjectNew": {
        "type": "object", "required": ["id", "name", "target", "offers", "channel", "window", "trial", "script"],
        "description": "one item of projects.yaml; checked with the whole fixture set (rule types, offer codes, "
                       "script steps, QA rules), so a well-formed body can still get 422",
        "properties": {
            "id": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"}, "name": {"type": "string"},
            "target": {"type": "string"}, "offers": {"type": "array", "items": {"type": "string"}},
            "channel": {"type": "string", "enum": ["agent", "ivr"]}, "window": {"type": "string"},
            "trial": OBJECT, "script": {"type": "array", "items": OBJECT}}},
    "ProjectAction": {"type": "object", "additionalProperties": False,
                      "properties": {"reason": {"type": "string", "maxLength": 500,
                                                "description": "required to reject; kept for pause and close"}}},
    "Report": {"type": "object", "additionalProperties": True},
    "LearningFreeze": {"type": "object", "required": ["frozen"], "additionalProperties": False,
                       "properties": {"frozen": {"type": "boolean"}}},
    "OutboxPage": _page({"type": "object", "properties": {
        "id": {"type": "integer"}, "message_id": {"type": "string"}, "kind": {"type": "string"},
        "channel": {"type": "string"}, "account": {"type": "string", "nullable": True},
        "source": {"type": "string"}, "dest": {"type": "string"}, "text": {"type": "string"},
        "state": {"type": "string", "enum": list(OUTBOX_STATES)}, "attempts": {"type": "integer"},
        "created_at": {"type": "number"}, "sent_at": {"type": "number", "nullable": True},
        "done_at": {"type": "number", "nullable": True}, "last_error": {"type": "string", "nullable": True},
        "campaign_id": {"type": "string", "nullable": True}}}),
    "MessageIn": {"type": "object", "required": ["from", "to", "text"], "additionalProperties": False,
                  "properties": {"from": {"type": "string", "pattern": r"^\+?[0-9]{3,20}$"},
                                 "to": {"type": "string", "pattern": r"^[0-9*#+]{1,20}$"},
                                 "text": {"type": "string", "maxLength": 1000}}},
    "MessageReply": {"type": "object", "required": ["reply", "action"], "properties": {
        "reply": {"type": "string"}, "action": {"type": "string"}, "source": {"type": "string"},
        "details": OBJECT, "message_id": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameter(param: Param) -> dict[str, Any]:
    out = {"name": param.name, "in": param.where, "required": param.required or param.where == "path",
           "description": param.description, "schema": param.schema}
    if param.example is not None:
        out["example"] = param.example
    return out


def _operation(route: Route) -> dict[str, Any]:
    content = {m: {"schema": _ref(route.result) if route.result and m == JSON else {"type": "string"}}
               for m in route.media}
    responses: dict[str, Any] = {str(route.ok): {"description": "success", "content": content}}
    for status in route.errors:
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": {JSON: {"schema": _ref("Error")}}}
    op: dict[str, Any] = {"operationId": route.handler, "summary": route.summary, "tags": [route.tag],
                          "responses": responses}
    if route.params:
        op["parameters"] = [_parameter(p) for p in route.params]
    if route.body:
        op["requestBody"] = {"required": route.body_required, "content": {JSON: {"schema": _ref(route.body)}},
                             "description": f"JSON, at most {route.body_limit} bytes"}
    if route.write:
        op["security"] = [{"bearer": []}]
    return op


def build_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Self-service gateway ops API", "version": "1.0.0",
                 "description": "Writes need `Authorization: Bearer <token>` (demo: demo-token). Every error is "
                                "`{\"error\": {\"code\", \"message\", \"problems\"}}`."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
