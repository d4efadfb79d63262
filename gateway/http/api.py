"""The HTTP ops API on klein: one handler per row of :data:`gateway.http.routes.ROUTES`.

The dispatcher does what every endpoint shares, in one place: the bearer token
for writes, the body limit and JSON parsing, the JSON or raw response, the
error object, and the request counter. Handlers only validate their own fields
and call the domain. Database reads run in the reactor thread; each is bounded
(LIMIT, grouped counts on indexed columns).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from klein import Klein
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from gateway import learning_service
from gateway.http import dashboard
from gateway.http.errors import ApiError, invalid, not_found, too_large, unauthorized
from gateway.http.openapi import build_document
from gateway.http.routes import (
    CSV,
    JSON,
    OUTBOX_STATES,
    PROJECT_ACTIONS,
    REPORT_KINDS,
    REPORT_SOURCES,
    ROUTES,
    Route,
    klein_path,
)
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics, outbox_figures, refresh_from_db
from gateway.smpp.text import fits_parts
from notifier.campaigns import campaign_summaries
from notifier.models import FINAL_STATES, LIVE_STATES
from notifier.outbox import new_message_id
from notifier.product_reports import product_csv
from notifier.reports import campaign_report, csv_text
from offers.learning import control as learning_control
from offers.queries import subscriber_view
from offers.router import Inbound
from offers.shelf import explain as explain_shelf
from offers.shelf import shelf_json

log = Logger(namespace="gateway.http")

MSISDN = re.compile(r"^\+?[0-9]{3,20}$")
SERVICE = re.compile(r"^[0-9*#+]{1,20}$")
CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FIXTURE_PATH = re.compile(r"^(?!/)(?!.*\.\.)[\w./ -]{1,200}\.(ya?ml|json|j2)$")
MAX_TEXT = 1000
MAX_FIXTURE_FILES = 200
ASSET_TYPES = {".js": "application/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml"}
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Raw:
    """A non-JSON response body."""

    body: bytes
    content_type: str
    headers: Mapping[str, str] | None = None


# report kind -> its function, imported with this module: a missing one stops the gateway at startup
REPORTS: dict[str, Callable[..., dict[str, Any]]] = {
    kind: getattr(importlib.import_module(module), name) for kind, (module, name) in REPORT_SOURCES.items()}


class OpsApi:
    def __init__(self, gateway: Any, extra: Mapping[str, Any] | None = None):
        self.gw = gateway
        self.extra = dict(extra or {})
        self.prom: GatewayMetrics = (self.extra.get("metrics") or getattr(gateway, "metrics", None)
                                        or GatewayMetrics())
        self.stats_source = dashboard.StatsSource(gateway, self.extra.get("stats"))
        self.hub = dashboard.StatsHub(gateway.reactor, self.stats_source.current)
        self.document = build_document(ROUTES)
        self.assets = {p.name: p for p in dashboard.STATIC.iterdir() if p.suffix in ASSET_TYPES}
        self.app = Klein()
        for route in ROUTES:
            self.app.route(klein_path(route.path), methods=[route.method], endpoint=route.handler)(
                self._endpoint(route))
        self.app.handle_errors(HTTPException)(self._routing_error)

    # --- dispatch ---------------------------------------------------------------------------------

    def _endpoint(self, route: Route) -> Callable[..., defer.Deferred]:
        def endpoint(request: Any, **params: str) -> defer.Deferred:
            d = defer.maybeDeferred(self._call, route, request, params)
            d.addCallback(self._respond, route, request)
            d.addErrback(self._fail, route, request)
            return d

        return endpoint

    def _call(self, route: Route, request: Any, params: dict[str, str]) -> Any:
        if route.write:
            self._authorize(request)
        if route.body is not None:
            params["body"] = self._json_body(request, route.body_limit, route.body_required)
        return getattr(self, route.handler)(request, **params)

    def _authorize(self, request: Any) -> None:
        header = (request.getHeader("authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("this endpoint needs 'Authorization: Bearer <token>' (demo: demo-token)")
        if not self.gw.token_ok(token.strip()):
            raise unauthorized("the bearer token is not valid; ask ops for one (hashes live in ops_tokens.yaml)")

    def _json_body(self, request: Any, limit: int, required: bool = True) -> dict[str, Any]:
        if getattr(request, "body_too_large", False):
            raise too_large(limit)
        length = request.getHeader("content-length")
        if length and length.strip().isdigit() and int(length) > limit:
            raise too_large(limit)
        request.content.seek(0)
        if not required and not request.content.read(1):
            return {}  # e.g. curl -X POST without -d
        kind = (request.getHeader("content-type") or JSON).split(";")[0].strip().lower()
        if kind != JSON:
            raise ApiError(415, "unsupported_media_type", f"send the body as JSON with Content-Type: {JSON}")
        request.content.seek(0)
        data = request.content.read(limit + 1)
        if len(data) > limit:
            raise too_large(limit)
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid("body", f"not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise invalid("body", "expected a JSON object")
        return body

    def _respond(self, result: Any, route: Route, request: Any) -> bytes | None:
        if isinstance(result, Raw):
            request.setHeader("content-type", result.content_type)
            for name, value in (result.headers or {}).items():
                request.setHeader(name, value)
            body = result.body
        else:
            request.setHeader("content-type", "application/json; charset=utf-8")
            body = json.dumps(result, ensure_ascii=False, default=str).encode("utf-8")
        request.setHeader("cache-control", "no-store")
        request.setResponseCode(route.ok)
        self._count(request, route.path, route.ok)
        return body

    def _fail(self, failure: Failure, route: Route, request: Any) -> Any:
        if failure.check(defer.CancelledError):
            return failure  # the client went away (event stream): klein drops it quietly
        if failure.check(ApiError):
            error = failure.value
        else:
            log.failure("{method} {path} failed", failure, method=route.method, path=route.path)
            self.prom.errors.labels(component="http").inc()
            error = ApiError(500, "internal", "internal error; the gateway log has the details")
        return self._error(request, error, route.path)

    def _error(self, request: Any, error: ApiError, route_path: str) -> bytes:
        request.setResponseCode(error.status)
        request.setHeader("content-type", "application/json; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        for name, value in error.headers.items():
            request.setHeader(name, value)
        self._count(request, route_path, error.status)
        return error.to_json()

    def _routing_error(self, request: Any, failure: Failure) -> bytes:
        exc = failure.value
        if isinstance(exc, NotFound):
            error = not_found(f"no such endpoint; /openapi.json lists them all ({request.path.decode(errors='replace')[:200]})")
        elif isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(sorted(exc.valid_methods or ()))
            error = ApiError(405, "method_not_allowed", f"use one of: {allowed}", headers={"Allow": allowed})
        else:
            error = ApiError(exc.code or 400, "bad_request", exc.description or "bad request")
        return self._error(request, error, "unmatched")

    def _count(self, request: Any, route_path: str, status: int) -> None:
        method = request.method.decode("ascii", "replace")
        self.prom.http_requests.labels(method=method, route=route_path, status=str(status)).inc()

    # --- query helpers ------------------------------------------------------------------------------

    @staticmethod
    def _query(request: Any, name: str) -> str | None:
        values = request.args.get(name.encode())
        if not values:
            return None
        if len(values) > 1:
            raise invalid(name, "given more than once")
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(name, "not UTF-8") from None

    def _int(self, request: Any, name: str, default: int, low: int, high: int) -> int:
        raw = self._query(request, name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
            raise invalid(name, f"expected an integer from {low} to {high}")
        return int(raw)

    def _page(self, request: Any) -> tuple[int, int]:
        return self._int(request, "limit", 50, 1, 500), self._int(request, "offset", 0, 0, 10_000_000)

    @staticmethod
    def _next(request: Any, limit: int, offset: int, more: bool) -> str | None:
        if not more:
            return None
        args = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items() if v}
        args.update(limit=str(limit), offset=str(offset + limit))
        return f"{request.path.decode()}?{urlencode(sorted(args.items()))}"

    def _paged(self, request: Any, items: list[Any], limit: int, offset: int, total: int | None = None,
               **more: Any) -> dict[str, Any]:
        """``items`` holds up to limit+1 rows from ``offset``: one extra says a next page exists."""
        page = {"items": items[:limit], "limit": limit, "offset": offset,
                "next": self._next(request, limit, offset, len(items) > limit)}
        if total is not None:
            page["total"] = total
        page.update(more)
        return page

    @staticmethod
    def _msisdn(value: str, field: str = "msisdn") -> str:
        if not MSISDN.match(value):
            raise invalid(field, "expected a phone number of 3 to 20 digits, e.g. 13800000001")
        return value

    def _snapshot(self) -> Any:
        if self.gw.snapshot is None:
            raise ApiError(503, "no_fixtures", "no fixture set is loaded; POST /api/fixtures first")
        return self.gw.snapshot

    def _wants_csv(self, request: Any) -> bool:
        fmt = self._query(request, "format")
        if fmt not in (None, "json", "csv"):
            raise invalid("format", "expected json or csv")
        if fmt is not None:
            return fmt == "csv"
        return CSV in (request.getHeader("accept") or "")

    # --- ops --------------------------------------------------------------------------------------

    def healthz(self, request: Any) -> dict[str, Any]:
        try:
            with self.gw.db() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise ApiError(503, "database_unavailable", f"database check failed ({type(exc).__name__})") from None
        snapshot = self.gw.snapshot
        started = getattr(self.gw, "started_at", self.gw.now())
        return {"status": "ok", "fixtures_version": snapshot.version if snapshot else None,
                "uptime_s": round(max(0.0, self.gw.now() - started), 1), "worker": self.gw.worker}

    def metrics(self, request: Any) -> Raw:
        refresh_from_db(self.prom, self.gw)
        return Raw(self.prom.render(), CONTENT_TYPE_LATEST)

    def openapi(self, request: Any) -> dict[str, Any]:
        return self.document

    # --- dashboard --------------------------------------------------------------------------------

    def dashboard(self, request: Any) -> Raw:
        return Raw(dashboard.page(), "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP})

    def static(self, request: Any, name: str) -> Raw:
        path = self.assets.get(name)
        if path is None:
            raise not_found(f"no asset '{name[:80]}'")
        return Raw(path.read_bytes(), ASSET_TYPES[path.suffix])

    def stats(self, request: Any) -> dict[str, Any]:
        return self.stats_source.current()

    def events(self, request: Any) -> defer.Deferred:
        if len(self.hub.clients) >= dashboard.MAX_STREAMS:
            raise ApiError(503, "too_many_streams", f"at most {dashboard.MAX_STREAMS} event streams; retry later")
        request.setHeader("content-type", "text/event-stream; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        request.setHeader("x-accel-buffering", "no")
        self._count(request, "/api/events", 200)
        request.write(b"retry: 2000\n\n" + self.hub.event(self.stats_source.current()))
        self.hub.add(request)
        # Fires never: the stream ends when the client goes and klein cancels it.
        return defer.Deferred(canceller=lambda _: self.hub.remove(request))

    # --- subscribers ------------------------------------------------------------------------------

    def subscriber(self, request: Any, msisdn: str) -> dict[str, Any]:
        snapshot = self.gw.snapshot
        with self.gw.db() as session:
            result = subscriber_view(session, self._msisdn(msisdn), snapshot.offers if snapshot else None)
        if result is None:
            raise not_found(f"unknown subscriber {msisdn} (demo numbers: 13800000001 to 13800000100)")
        return result

    def shelf(self, request: Any, msisdn: str) -> dict[str, Any]:
        self._msisdn(msisdn)
        explain = self._query(request, "explain")
        if explain not in (None, "0", "1", "true", "false"):
            raise invalid("explain", "expected 1 or 0")
        fn = explain_shelf if explain in ("1", "true") else shelf_json
        catalog = self._snapshot().offers
        with self.gw.db() as session:
            result = fn(session, catalog, msisdn, self.gw.now(), self.gw.settings, self._fits(),
                        learned=self.gw.router.learned)
        if result is None:
            raise not_found(f"unknown subscriber {msisdn}")
        return result

    def _fits(self) -> Callable[[str, int], bool]:
        """The SMPP encoder's part count, so the API shows the offers the 200 SMS shows."""
        return self.extra.get("fits", fits_parts)

    # --- fixtures ---------------------------------------------------------------------------------

    def fixtures_info(self, request: Any) -> dict[str, Any]:
        from notifier.models import FixtureSetRow

        with self.gw.db() as session:
            row = FixtureSetRow.latest(session)
        snapshot = self.gw.snapshot
        if row is None:
            return {"version": None, "loaded_at": None, "source": None, "counts": {}, "files": []}
        return {"version": snapshot.version if snapshot else None, "loaded_at": row.loaded_at,
                "source": row.source, "counts": row.counts, "files": sorted(row.files)}

    def fixtures_load(self, request: Any, body: dict[str, Any]) -> dict[str, Any]:
        extra_keys = sorted(set(body) - {"files"})
        if extra_keys:
            raise invalid(extra_keys[0], "unknown field; the body is {\"files\": {path: text}}")
        files = body.get("files")
        if not isinstance(files, dict) or not files:
            raise invalid("files", "expected a non-empty object of {\"<path>\": \"<file text>\"}")
        if len(files) > MAX_FIXTURE_FILES:
            raise invalid("files", f"at most {MAX_FIXTURE_FILES} files")
        for path, content in files.items():
            if not FIXTURE_PATH.match(path):
                raise invalid(f"files.{path[:100]}", "expected a relative path ending in .yaml, .yml, .json or .j2")
            if not isinstance(content, str):
                raise invalid(f"files.{path}", "expected the file's text as a string")
        return {"loaded": self._apply(files, "http"), "version": self.gw.snapshot.version}

    def _apply(self, files: Mapping[str, str], source: str) -> dict[str, int]:
        from core.fixtures import FixtureError

        try:
            return self.gw.apply_fixtures(dict(files), source=source)
        except FixtureError as exc:
            raise ApiError(422, "invalid_fixtures", f"{len(exc.problems)} problem(s); nothing was loaded",
                           [p.as_dict() for p in exc.problems]) from None

    # --- campaigns --------------------------------------------------------------------------------

    def campaigns(self, request: Any) -> dict[str, Any]:
        limit, offset = self._page(request)
        snapshot = self._snapshot()
        now = self.gw.now()
        with self.gw.db() as session:
            items = campaign_summaries(session, snapshot.parsed, now)
            progress = {c["campaign"]: c for c in campaign_report(session, None, now)["campaigns"]}
        for item in items:
            item["progress"] = progress.get(item["id"])
        return self._paged(request, items[offset:offset + limit + 1], limit, offset, len(items))

    def campaign_create(self, request: Any, body: dict[str, Any]) -> dict[str, Any]:
        cid = body.get("id")
        if not isinstance(cid, str) or not CAMPAIGN_ID.match(cid):
            raise invalid("id", "expected a campaign id of letters, digits, '-', '_' or '.' (at most 64)")
        return self._append_item("campaigns", cid, body)

    def _append_item(self, kind: str, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add one item to ``<kind>.yaml`` of the fixture set loaded last and load the whole set again."""
        import yaml

        from notifier.models import FixtureSetRow

        with self.gw.db() as session:
            row = FixtureSetRow.latest(session)
        if row is None:
            raise ApiError(503, "no_fixtures", "no fixture set is loaded; POST /api/fixtures first")
        files = dict(row.files)
        name = next((p for p in files if p.rsplit("/", 1)[-1] in (f"{kind}.yaml", f"{kind}.yml")), f"{kind}.yaml")
        doc = yaml.safe_load(files.get(name) or "") or {}
        items = doc.setdefault(kind, []) if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ApiError(409, "conflict", f"{name} has no {kind} list to add to; upload the set instead")
        if any(isinstance(c, dict) and c.get("id") == item_id for c in items):
            raise ApiError(409, "conflict", f"'{item_id}' exists in {name}; pick another id")
        items.append(body)
        files[name] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
        counts = self._apply(files, f"http: new {kind[:-1]} {item_id}")
        return {"id": item_id, "file": name, "loaded": counts, "version": self.gw.snapshot.version}

    def _scheduler(self) -> Any:
        scheduler = self.extra.get("scheduler")
        if scheduler is None:
            raise ApiError(503, "no_scheduler", "this gateway process runs no campaign scheduler")
        return scheduler

    def _campaign_call(self, campaign_id: str, call: Callable[[], Any]) -> Any:
        if not CAMPAIGN_ID.match(campaign_id):
            raise invalid("id", "expected a campaign id")
        try:
            return call()
        except KeyError as exc:
            raise not_found(str(exc.args[0]) if exc.args else f"unknown campaign '{campaign_id}'") from None

    def campaign_run(self, request: Any, id: str) -> defer.Deferred:
        scheduler = self._scheduler()
        return self._campaign_call(id, lambda: scheduler.run_now(id))

    def campaign_pause(self, request: Any, id: str) -> dict[str, Any]:
        scheduler = self._scheduler()
        self._campaign_call(id, lambda: scheduler.pause(id))
        return {"campaign": id, "state": "paused"}

    def campaign_resume(self, request: Any, id: str) -> dict[str, Any]:
        scheduler = self._scheduler()
        self._campaign_call(id, lambda: scheduler.resume(id))
        return {"campaign": id, "state": "active"}

    # --- outbound call projects --------------------------------------------------------------------

    def _project_book(self) -> Any:
        return self._snapshot().extras["projects"]

    def _project(self, project_id: str) -> Any:
        if not PROJECT_ID.match(project_id):
            raise invalid("id", "expected a project id of a-z, 0-9, '-' or '_' (at most 64)")
        project = self._project_book().projects.get(project_id)
        if project is None:
            raise not_found(f"no project '{project_id}' in the fixtures being served")
        return project

    def _who(self, request: Any) -> str:
        """The name of the ops token that authorised this write (ops_tokens.yaml)."""
        from notifier.security import hash_token

        token = (request.getHeader("authorization") or "").partition(" ")[2].strip()
        digest = hash_token(token)
        for item in self.gw.snapshot.parsed.get("ops_tokens") or ():
            if item.get("token_sha256") == digest:
                return str(item.get("name") or "ops")
        return "ops"

    def projects(self, request: Any) -> dict[str, Any]:
        from notifier.projects_lifecycle import states

        book = self._project_book()
        with self.gw.db() as session:
            rows = states(session)
        items = [_project_json(p, rows.get(p.id)) for p in book.projects.values()]
        return {"items": items, "total": len(items)}

    def project_create(self, request: Any, body: dict[str, Any]) -> dict[str, Any]:
        pid = body.get("id")
        if not isinstance(pid, str) or not PROJECT_ID.match(pid):
            raise invalid("id", "expected a project id of a-z, 0-9, '-' or '_' (at most 64)")
        return dict(self._append_item("projects", pid, body), state="draft")

    def project(self, request: Any, id: str) -> Any:
        from notifier.project_models import ProjectState
        from notifier.projects_lifecycle import history
        from notifier.projects_report import project_report

        project = self._project(id)
        as_csv = self._wants_csv(request)
        days = self._int(request, "days", 30, 1, 366)
        now = self.gw.now()
        with self.gw.db() as session:
            row = session.get(ProjectState, id)
            result = _project_json(project, row, full=True)
            result["transitions"] = history(session, id)
            result["report"] = project_report(session, now=now, since=now - days * 86400.0, project_id=id,
                                              book=self._project_book())
        if as_csv:
            return Raw(self._csv("projects", result["report"]).encode("utf-8"), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="project-{id}.csv"'})
        dialer = self.extra.get("dialer")
        run = dialer.runs.get(id) if dialer is not None else None
        result["live"] = run.summary() if run is not None else None
        return result

    def project_action(self, request: Any, id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        from notifier.projects_lifecycle import TransitionError, transition

        if action not in PROJECT_ACTIONS:
            raise not_found(f"no action '{action[:20]}'; one of {', '.join(PROJECT_ACTIONS)}")
        self._project(id)
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise invalid("reason", "expected a text of at most 500 characters")
        unknown = set(body) - {"reason"}
        if unknown:
            raise invalid(sorted(unknown)[0], "unknown field; the body may hold only 'reason'")
        try:
            with self.gw.db() as session, session.begin():
                result = transition(session, id, action, self._who(request), self.gw.now(), reason)
        except TransitionError as exc:
            field = "reason" if action == "reject" and not (reason or "").strip() else "action"
            raise ApiError(409 if field == "action" else 400, "invalid_transition" if field == "action"
                           else "invalid", str(exc), [{"field": field, "reason": str(exc)}]) from None
        dialer = self.extra.get("dialer")
        if dialer is not None:
            dialer.sync()
        return result

    # --- reports ----------------------------------------------------------------------------------

    def _campaign_ids(self) -> set[str]:
        snapshot = self.gw.snapshot
        book = snapshot.extras.get("campaigns") if snapshot is not None else None
        return set(getattr(book, "campaigns", None) or {})

    def report(self, request: Any, kind: str) -> Any:
        if kind not in REPORT_KINDS:
            raise not_found(f"no report '{kind[:40]}'; reports: {', '.join(REPORT_KINDS)}")
        as_csv = self._wants_csv(request)
        limit, offset = self._page(request)
        days = self._int(request, "days", 7, 1, 366)
        campaign = self._query(request, "campaign")
        if campaign is not None and not CAMPAIGN_ID.match(campaign):
            raise invalid("campaign", "expected a campaign id")
        if campaign is not None and campaign not in self._campaign_ids():
            raise not_found(f"no campaign '{campaign}' in the fixtures being served")
        fn = REPORTS[kind]
        now = self.gw.now()
        with self.gw.db() as session:
            if kind == "campaigns":
                result = fn(session, campaign, now)
            elif kind == "products":
                result = fn(session, now=now, since=now - days * 86400.0,
                            confirm_window_s=self.gw.settings["router.confirm_window_s"])
            else:
                # a window keeps the scan bounded however long the gateway has run
                result = fn(session, now=now, since=now - days * 86400.0)
        if as_csv:
            return Raw(self._csv(kind, result).encode("utf-8"), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="{kind}-report.csv"'})
        items = result.get("items")
        if isinstance(items, list):
            result = dict(result, **self._paged(request, items[offset:offset + limit + 1], limit, offset,
                                                len(items)))
        return result

    @staticmethod
    def _csv(kind: str, report: Mapping[str, Any]) -> str:
        if kind == "campaigns":
            return csv_text(report)
        if kind == "products":
            return product_csv(report)
        out = io.StringIO()
        writer = csv.writer(out)
        items = report.get("items")
        if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
            columns = list(dict.fromkeys(k for item in items for k in item))
            writer.writerow(columns)
            writer.writerows([_cell(item.get(c)) for c in columns] for item in items)
        else:
            writer.writerow(["key", "value"])
            writer.writerows(_flatten(report))
        return out.getvalue()

    # --- learned shelf ------------------------------------------------------------------------------

    def learning_state(self, request: Any) -> dict[str, Any]:
        state = self.gw.router.learned.summary()
        with self.gw.db() as session, session.begin():
            ctl = learning_control(session)
            state.update(frozen=ctl.frozen, reset_at=ctl.reset_at, changed_at=ctl.changed_at)
        state["settings"] = {k: self.gw.settings[k] for k in self.gw.settings if k.startswith("learning.")}
        return state

    def learning_freeze(self, request: Any, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"frozen"} or not isinstance(body["frozen"], bool):
            raise invalid("frozen", 'expected {"frozen": true} or {"frozen": false}')
        return learning_service.control(self.gw, "freeze", body)

    def learning_reset(self, request: Any) -> dict[str, Any]:
        return learning_service.control(self.gw, "reset", {})

    # --- messages ---------------------------------------------------------------------------------

    def outbox(self, request: Any) -> dict[str, Any]:
        from notifier.models import OutboxMessage
        from notifier.outbox import Outbox

        limit, offset = self._page(request)
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc())
        state = self._query(request, "state")
        if state is not None:
            if state not in OUTBOX_STATES:
                raise invalid("state", f"expected one of {', '.join(OUTBOX_STATES)}")
            query = query.where(OutboxMessage.state == state)
        dest = self._query(request, "dest")
        if dest is not None:
            if len(dest) > 320:
                raise invalid("dest", "at most 320 characters")
            query = query.where(OutboxMessage.dest == dest)
        campaign = self._query(request, "campaign")
        if campaign is not None:
            if not CAMPAIGN_ID.match(campaign):
                raise invalid("campaign", "expected a campaign id")
            query = query.where(OutboxMessage.campaign_id == campaign)
        with self.gw.db() as session:
            rows = list(session.scalars(query.offset(offset).limit(limit + 1)))
            depth = Outbox.depth_by_state(session, LIVE_STATES)  # exact now; the final ones as /metrics has them
        figures = outbox_figures(self.gw).get()
        depth.update({state: figures.depth.get(state, 0) for state in FINAL_STATES} if figures is not None else {})
        return self._paged(request, [_outbox_row(r) for r in rows], limit, offset, depth=depth)

    def message(self, request: Any, body: dict[str, Any]) -> Any:
        unknown = sorted(set(body) - {"from", "to", "text"})
        if unknown:
            raise invalid(unknown[0], "unknown field; the body is {\"from\", \"to\", \"text\"}")
        sender, service, text_ = body.get("from"), body.get("to"), body.get("text")
        if not isinstance(sender, str):
            raise invalid("from", "expected the subscriber's number as a string")
        self._msisdn(sender, "from")
        if not isinstance(service, str) or not SERVICE.match(service):
            raise invalid("to", "expected a service number such as 10086")
        if not isinstance(text_, str) or len(text_) > MAX_TEXT:
            raise invalid("text", f"expected a string of at most {MAX_TEXT} characters")
        self._snapshot()
        inbound = Inbound(channel="http", sender=sender, service=service, text=text_, account=None)
        message_id = new_message_id()
        pipeline = self.extra.get("pipeline")
        if pipeline is not None:
            return self._via_pipeline(pipeline, inbound, message_id)
        return _reply_json(self._route_here(inbound, message_id), message_id)

    def _via_pipeline(self, pipeline: Any, inbound: Any, message_id: str) -> defer.Deferred:
        from gateway.pipeline import Accepted

        done: defer.Deferred = defer.Deferred()

        def on_done(reply: Any, error: Exception | None) -> None:
            if error is not None or reply is None:
                done.errback(Failure(error or RuntimeError("the router gave no reply")))
            else:
                done.callback(_reply_json(reply, message_id))

        pipeline.accept(Accepted(inbound=inbound, message_id=message_id, reply_account=None, receipt=None,
                                 on_done=on_done, reply_channel="http"))
        return done

    def _route_here(self, inbound: Any, message_id: str) -> Any:
        """Without the service's MO pipeline (tests, tools): route and log in one transaction."""
        from notifier.models import MessageLog

        started = time.perf_counter()
        now = self.gw.now()
        with self.gw.db() as session, session.begin():
            reply = self.gw.router.handle(session, inbound, now)
            session.add(MessageLog(direction="MO", channel="http", account=None, source=inbound.sender,
                                   dest=inbound.service, text=inbound.text, message_id=message_id, at=now,
                                   action=reply.action))
        self.prom.router_latency.labels(channel="http").observe(time.perf_counter() - started)
        self.prom.sms_in.labels(channel="http").inc()
        return reply


def _project_json(project: Any, row: Any, full: bool = False) -> dict[str, Any]:
    out = {"id": project.id, "name": project.name, "channel": project.channel, "offers": list(project.offers),
           "state": row.state if row is not None else "draft", "reason": row.reason if row is not None else None,
           "changed_at": row.changed_at if row is not None else None,
           "changed_by": row.changed_by if row is not None else None,
           "plan": dict(row.plan or {}) if row is not None else {}}
    if full:
        out.update(target=project.target.text, window=project.window_text(), attempts=project.attempts,
                   backoff_s=list(project.backoff_s), pacing=dataclasses.asdict(project.pacing),
                   trial={"share": project.trial.share, "count": project.trial.count, "seed": project.trial.seed},
                   agents={"count": project.agents, "aht_s": project.aht_s},
                   expected={"answer_rate": project.answer_rate, "accept_rate": project.accept_rate},
                   sms_campaign=project.sms_campaign, prompt=project.prompt, note=project.note,
                   script=[{"step": s.id, "text": s.text, "objections": [{"objection": o.text, "answer": o.answer}
                                                                         for o in s.objections]}
                           for s in project.script],
                   qa={"sample": project.qa_sample, "rules": [{"id": r.id, "points": r.points, r.check: r.value,
                                                               "text": r.text} for r in project.qa_rules]})
    return out


def _reply_json(reply: Any, message_id: str) -> dict[str, Any]:
    return {"reply": reply.text, "action": reply.action, "source": reply.source,
            "details": dict(reply.details or {}), "message_id": message_id}


def _outbox_row(row: Any) -> dict[str, Any]:
    keys = ("id", "message_id", "kind", "channel", "account", "source", "dest", "text", "state", "attempts",
            "created_at", "sent_at", "done_at", "last_error", "campaign_id", "correlation")
    return {k: getattr(row, k) for k in keys}


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _flatten(value: Any, prefix: str = "") -> list[list[Any]]:
    if isinstance(value, Mapping):
        rows: list[list[Any]] = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [[prefix, _cell(value)]]
