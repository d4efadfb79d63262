"""Campaign reports and the complaint / opt-out early warning.

Per campaign: targeted, excluded by reason, consolidated (promos before, messages after), sent,
delivered (outbox state, set by delivery receipts), failed (failed or expired), converted (a
subscription to the contacted offer within 7 days of the contact), opt-outs and complaints
(attributed to the campaign that last contacted the subscriber within 7 days), and the rates:

- ``delivery_rate`` = delivered / (sent + delivered + failed), the messages that left the outbox;
- ``success_rate`` = converted / recipients; ``complaint_rate`` / ``opt_out_rate`` likewise.

:func:`check_thresholds` pauses an active campaign whose complaint or opt-out rate reaches its
threshold once it has at least ``min_sent`` recipients, cancels its queued messages, and raises
an ops :class:`~notifier.campaign_models.Alert` plus a warning log line — the "客户投诉早期预警"
of our sources.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, distinct, exists, func, select, update
from sqlalchemy.orm import Session

from notifier.campaign_models import (
    Alert,
    CampaignRun,
    CampaignState,
    Complaint,
    ContactLog,
    ExclusionCount,
    OptOutEvent,
)
from notifier.models import MessageLog, OutboxMessage
from notifier.policy import REASONS
from offers import exposures
from offers.models import Subscription

log = logging.getLogger("notifier.reports")

ATTRIBUTION_S = 7 * 86400.0
CSV_COLUMNS = ("campaign", "state", "targeted", "excluded", "items_before", "messages", "recipients", "sent",
               "delivered", "failed", "queued", "converted", "opt_outs", "complaints", "delivery_rate",
               "success_rate", "complaint_rate", "opt_out_rate")


def last_contact(session: Session, msisdn: str, now: float) -> str | None:
    """The campaign that contacted ``msisdn`` last within the attribution window, if any."""
    return session.scalar(select(ContactLog.campaign_id)
                          .where(ContactLog.msisdn == msisdn, ContactLog.at <= now,
                                 ContactLog.at > now - ATTRIBUTION_S)
                          .order_by(ContactLog.at.desc(), ContactLog.id.desc()).limit(1))


def record_complaint(session: Session, msisdn: str, now: float, *, campaign_id: str | None = None,
                     source: str = "hotline", text: str = "") -> Complaint:
    """Record a marketing complaint (attributed to the last contact when no campaign is named)."""
    row = Complaint(msisdn=msisdn, at=now, campaign_id=campaign_id or last_contact(session, msisdn, now),
                    source=source[:32], text=text[:1000])
    session.add(row)
    exposures.record_outcome(session, msisdn, None, "complaint", now, channel=source)
    return row


def record_opt_out(session: Session, msisdn: str, now: float, *, opted_out: bool = True,
                   source: str = "sms") -> OptOutEvent:
    """Record an opt-out (TD) or opt-in (KTYX); an opt-out is attributed to the last contact."""
    row = OptOutEvent(msisdn=msisdn, at=now, opted_out=opted_out, source=source[:32],
                      campaign_id=last_contact(session, msisdn, now) if opted_out else None)
    session.add(row)
    return row


def set_state(session: Session, campaign_id: str, state: str, now: float, reason: str | None = None) -> None:
    """Pause or resume a campaign (ops' switch, kept across fixture reloads)."""
    row = session.get(CampaignState, campaign_id)
    if row is None:
        session.add(CampaignState(campaign_id=campaign_id, state=state, reason=reason, changed_at=now))
    else:
        row.state, row.reason, row.changed_at = state, reason, now


def _outbox_counts(session: Session) -> dict[str, dict[str, int]]:
    # campaign_id first: the range of ix_outbox_campaign past its NULLs, so the replies and receipts of
    # the "200" traffic (millions of rows, no campaign) are never read; kind alone scanned them all
    out: dict[str, dict[str, int]] = {}
    for cid, state, n in session.execute(select(OutboxMessage.campaign_id, OutboxMessage.state, func.count())
                                         .where(OutboxMessage.campaign_id.is_not(None),
                                                OutboxMessage.kind == "campaign")
                                         .group_by(OutboxMessage.campaign_id, OutboxMessage.state)):
        out.setdefault(cid, {})[state] = n
    return out


def _by_campaign(session: Session, query) -> dict[str, int]:
    return {cid: n for cid, n in session.execute(query)}


def _converted(session: Session) -> dict[str, int]:
    c, s = ContactLog, Subscription
    q = (select(c.campaign_id, func.count(distinct(c.msisdn)))
         .join(s, and_(s.msisdn == c.msisdn, s.offer_code == c.offer_code, s.started_at >= c.at,
                       s.started_at < c.at + ATTRIBUTION_S))
         .group_by(c.campaign_id))
    return _by_campaign(session, q)


def _opt_outs(session: Session) -> dict[str, int]:
    """Opt-outs recorded with :func:`record_opt_out`, or TD messages in the log after a contact."""
    pairs = set(session.execute(select(OptOutEvent.campaign_id, OptOutEvent.msisdn)
                                .where(OptOutEvent.opted_out.is_(True), OptOutEvent.campaign_id.is_not(None))))
    # EXISTS, not a join: the contacts drive and the message log is only searched by number (a join left
    # SQLite free to scan the whole message log, every MO the gateway ever logged, each time)
    c, m = ContactLog, MessageLog
    pairs |= set(session.execute(select(c.campaign_id, c.msisdn).where(exists().where(
        m.source == c.msisdn, m.direction == "MO", m.action == "opt_out", m.at >= c.at,
        m.at < c.at + ATTRIBUTION_S))))
    out: dict[str, int] = {}
    for cid, _ in pairs:
        out[cid] = out.get(cid, 0) + 1
    return out


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def campaign_report(session: Session, campaign_id: str | None = None, now: float | None = None) -> dict[str, Any]:
    """``{"at", "campaigns": [per-campaign dict, ...], "totals": {...}}``, JSON-ready."""
    ids = set(session.scalars(select(CampaignState.campaign_id))) | set(session.scalars(
        select(CampaignRun.campaign_id).distinct()))
    if campaign_id is not None:
        ids = {campaign_id}
    states = dict(session.execute(select(CampaignState.campaign_id, CampaignState.state)).all())
    runs = {cid: (t, b, m) for cid, t, b, m in session.execute(
        select(CampaignRun.campaign_id, func.sum(CampaignRun.targeted), func.sum(CampaignRun.items_before),
               func.sum(CampaignRun.messages)).group_by(CampaignRun.campaign_id))}
    excluded: dict[str, dict[str, int]] = {}
    for cid, reason, n in session.execute(select(ExclusionCount.campaign_id, ExclusionCount.reason,
                                                 func.sum(ExclusionCount.count))
                                          .group_by(ExclusionCount.campaign_id, ExclusionCount.reason)):
        excluded.setdefault(cid, {})[reason] = int(n)
    recipients = _by_campaign(session, select(ContactLog.campaign_id, func.count(distinct(ContactLog.msisdn)))
                              .where(ContactLog.channel != "piggyback").group_by(ContactLog.campaign_id))
    complaints = _by_campaign(session, select(Complaint.campaign_id, func.count(distinct(Complaint.msisdn)))
                              .group_by(Complaint.campaign_id))
    outbox, converted, opt_outs = _outbox_counts(session), _converted(session), _opt_outs(session)
    items = []
    for cid in sorted(ids):
        targeted, before, messages = runs.get(cid, (0, 0, 0))
        box = outbox.get(cid, {})
        sent, delivered = box.get("sent", 0), box.get("delivered", 0)
        failed = box.get("failed", 0) + box.get("expired", 0)
        n = recipients.get(cid, 0)
        reasons = excluded.get(cid, {})
        items.append({
            "campaign": cid, "state": states.get(cid, "active"), "targeted": int(targeted or 0),
            "excluded": {r: reasons[r] for r in REASONS if r in reasons},
            "excluded_total": sum(reasons.values()),
            "consolidated": {"items_before": int(before or 0), "messages_after": int(messages or 0)},
            "recipients": n, "sent": sent + delivered + failed, "delivered": delivered, "failed": failed,
            "queued": box.get("queued", 0) + box.get("sending", 0),
            "converted": converted.get(cid, 0), "opt_outs": opt_outs.get(cid, 0), "complaints": complaints.get(cid, 0),
            "delivery_rate": _rate(delivered, sent + delivered + failed),
            "success_rate": _rate(converted.get(cid, 0), n), "complaint_rate": _rate(complaints.get(cid, 0), n),
            "opt_out_rate": _rate(opt_outs.get(cid, 0), n),
        })
    totals = {k: sum(i[k] for i in items) for k in ("targeted", "recipients", "sent", "delivered", "failed",
                                                      "converted", "opt_outs", "complaints")}
    totals["delivery_rate"] = _rate(totals["delivered"], totals["sent"])
    return {"at": now, "campaigns": items, "totals": totals}


def csv_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """The report as CSV rows, header first (``excluded`` is the total; by-reason stays in JSON)."""
    rows: list[list[Any]] = [list(CSV_COLUMNS)]
    for item in report["campaigns"]:
        flat = dict(item, excluded=item["excluded_total"], items_before=item["consolidated"]["items_before"],
                    messages=item["consolidated"]["messages_after"])
        rows.append([flat[c] for c in CSV_COLUMNS])
    return rows


def csv_text(report: Mapping[str, Any]) -> str:
    import csv

    out = io.StringIO()
    csv.writer(out).writerows(csv_rows(report))
    return out.getvalue()


def check_thresholds(session: Session, catalog: Any, now: float) -> list[Alert]:
    """Pause every active campaign whose complaint or opt-out rate reached its threshold; returns new alerts."""
    from notifier.campaigns import as_book

    book = as_book(catalog)
    report = {i["campaign"]: i for i in campaign_report(session, None, now)["campaigns"]}
    alerts = []
    for campaign in book.campaigns.values():
        item = report.get(campaign.id)
        if item is None or item["state"] != "active" or item["recipients"] < campaign.min_sent:
            continue
        crossed = [(name, item[f"{name}_rate"], limit) for name, limit in
                   (("complaint", campaign.complaint_rate), ("opt_out", campaign.opt_out_rate))
                   if item[f"{name}_rate"] >= limit]
        if crossed:
            alerts.append(_pause(session, campaign.id, item, crossed, now))
    return alerts


def _pause(session: Session, campaign_id: str, item: Mapping[str, Any], crossed: list, now: float) -> Alert:
    why = "; ".join(f"{name} rate {rate:.2%} >= threshold {limit:.2%}" for name, rate, limit in crossed)
    message = f"campaign {campaign_id} paused itself: {why} over {item['recipients']} recipients"
    set_state(session, campaign_id, "paused", now, why)
    cancelled = session.execute(
        update(OutboxMessage).where(OutboxMessage.campaign_id == campaign_id, OutboxMessage.kind == "campaign",
                                    OutboxMessage.state == "queued")
        .values(state="failed", done_at=now, last_error="campaign paused"),
        execution_options={"synchronize_session": False}).rowcount or 0
    alert = Alert(at=now, kind="campaign_paused", campaign_id=campaign_id, message=message,
                  details={"crossed": [list(c) for c in crossed], "recipients": item["recipients"],
                           "cancelled_queued": cancelled})
    session.add(alert)
    log.warning("%s; %d queued message(s) cancelled", message, cancelled)
    return alert


def render_plan(data: Mapping[str, Any]) -> str:
    """A plan (``Plan.as_dict()``) as readable rich tables, returned as text."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.StringIO(), width=110, record=True, force_terminal=False)
    head = Table(title=f"campaign {data['campaign']} ({data['name']}): {data['status']}", show_header=False)
    for key, value in (("kind / channel", f"{data['kind']} / {data['channel']}"), ("period", data["period"]),
                       ("window", f"{data['window']['start']} -> {data['window']['end']}"),
                       ("scanned / targeted", f"{data['scanned']} / {data['targeted']}"),
                       ("already sent", data["already_sent"]), ("recipients", data["recipients"]),
                       ("consolidated", f"{data['consolidated']['items_before']} promos -> "
                                        f"{data['consolidated']['messages_after']} messages "
                                        f"(partners: {', '.join(data['consolidated']['partners']) or 'none'})"),
                       ("held for quiet hours", data["held_for_quiet_hours"]),
                       ("rate", f"{data['rate']['per_s']} msg/s: {data['rate']['derivation']}"),
                       ("first / last", f"{data['first_at']} / {data['last_at']}"),
                       ("expected duration", f"{data['expected_duration_s']} s")):
        head.add_row(key, str(value))
    console.print(head)
    reasons = Table(title="excluded by reason")
    reasons.add_column("reason")
    reasons.add_column("subscribers", justify="right")
    for reason, n in data["excluded"].items():
        reasons.add_row(reason, str(n))
    console.print(reasons)
    sample = Table(title="first recipients")
    for col in ("msisdn", "not before", "parts", "campaigns", "text"):
        sample.add_column(col)
    for s in data["sample"]:
        sample.add_row(s["msisdn"], s["not_before"] or "", str(s["parts"]), ",".join(s["campaigns"]), s["text"])
    console.print(sample)
    return console.export_text()
