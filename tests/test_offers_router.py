"""The whole 10086 conversation through Router.handle, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from core.db import session_factory
from core.settings import Settings
from offers.models import PendingOrder, ShelfView, Subscriber, Subscription
from offers.router import Inbound, Reply, Router, record_refusal
from offers.shelf import default_fits, shelf_json
from tests.test_offers_support import NOW, demo_catalog, load_demo, make_test_engine

USER = "13800000001"


@pytest.fixture
def factory(db_url):
    engine, drop = make_test_engine(db_url)
    load_demo(engine)
    yield session_factory(engine)
    drop()


@pytest.fixture
def router():
    return Router(demo_catalog, Settings())


class Phone:
    """One subscriber texting 10086; each message is its own transaction, like the gateway does."""

    def __init__(self, factory, router, msisdn=USER, channel="sms"):
        self.factory, self.router, self.msisdn, self.channel = factory, router, msisdn, channel
        self.now = NOW

    def send(self, text: str, after: float = 1.0) -> Reply:
        self.now += after
        with self.factory() as session, session.begin():
            reply = self.router.handle(session, Inbound(self.channel, self.msisdn, "10086", text), self.now)
        assert reply.source == "10086"
        return reply

    def active(self) -> list[str]:
        with self.factory() as s:
            return sorted(s.scalars(select(Subscription.offer_code).where(
                Subscription.msisdn == self.msisdn, Subscription.cancelled_at.is_(None))))


def test_full_conversation(factory, router):
    phone = Phone(factory, router)
    shelf = phone.send("200")
    assert shelf.action == "shelf"
    codes = shelf.details["offers"]
    assert 3 <= len(codes) <= 5 and "LL30" in codes
    for n, code in enumerate(codes, 1):
        assert re.search(rf"{n}\..*回KT{code}", shelf.text)
    assert default_fits(shelf.text, 3)

    prompt = phone.send("KTLL30")
    assert prompt.action == "confirm_prompt" and "回复Y确认" in prompt.text and "30元6GB流量包" in prompt.text
    done = phone.send("Y")
    assert done.action == "subscribed" and "成功订购30元6GB流量包" in done.text and "QXLL30" in done.text
    again = phone.send("Y")
    assert again.action == "order_already"
    assert phone.active() == ["LL30"]

    listing = phone.send("0000")
    assert listing.action == "list" and "QXLL30" in listing.text
    shelf2 = phone.send("200")
    assert "LL30" not in shelf2.details["offers"] and "LL20" not in shelf2.details["offers"]  # same group

    cancel = phone.send("QXLL30")
    assert cancel.action == "cancelled" and "取消30元6GB流量包" in cancel.text
    assert phone.active() == []
    assert phone.send("QXLL30").action == "cancel_unknown"
    assert phone.send("0000").action == "list" and "没有订购" in phone.send("0000").text

    balance = phone.send("CXYE")
    assert balance.action == "balance" and "58.30元" in balance.text
    usage = phone.send("CXLL")
    assert usage.action == "usage" and "9.42GB" in usage.text and "10.00GB" in usage.text

    out = phone.send("TD")
    assert out.action == "opt_out" and "KTYX" in out.text
    with factory() as s:
        assert s.get(Subscriber, USER).opted_out is True
    back = phone.send("KTYX")
    assert back.action == "opt_in"
    with factory() as s:
        assert s.get(Subscriber, USER).opted_out is False

    assert phone.send("hello there").action == "help"


@pytest.mark.parametrize("word", ["T", "N", "R", "退订", "td", "ｔｄ"])
def test_every_opt_out_keyword_sets_the_flag(factory, router, word):
    phone = Phone(factory, router, "13800000002")
    assert phone.send(word).action == "opt_out"
    with factory() as s:
        assert s.get(Subscriber, "13800000002").opted_out is True


@pytest.mark.parametrize("text", ["ＫＴＬＬ３０", "kt ll30", "Kt Ll30", "开通LL30"])
def test_keywords_are_case_and_width_insensitive(factory, router, text):
    phone = Phone(factory, router)
    reply = phone.send(text)
    assert reply.action == "confirm_prompt" and reply.details["offer"] == "LL30"
    assert phone.send("ｙ").action == "subscribed"


def test_full_width_200_and_balance(factory, router):
    phone = Phone(factory, router)
    assert phone.send("２００").action == "shelf"
    assert phone.send(" cxye ").action == "balance"


def test_lone_digit_orders_shelf_item_within_window(factory, router):
    phone = Phone(factory, router)
    codes = phone.send("200").details["offers"]
    reply = phone.send("2")
    assert reply.action == "confirm_prompt" and reply.details["offer"] == codes[1]
    assert phone.send("9").action == "help"  # out of range: says so
    assert "第9项" in phone.send("9").text
    phone.send("0000")
    assert phone.send("1", after=601).action == "help"  # the shelf prompt expired


def test_lone_digit_without_prompt_gets_help(factory, router):
    assert Phone(factory, router).send("3").action == "help"


def test_newest_prompt_wins_between_survey_and_shelf(factory, router):
    sent = {}
    answered = []

    def find_open(session, msisdn, now):
        at = sent.get(msisdn)
        return (at, {"survey": 7}) if at is not None and now - at < 86400 else None

    def answer(session, msg, prompt, now):
        answered.append((msg.text, prompt))
        return Reply("谢谢您的评价", "survey_score", "10086", {"score": int(msg.text)})

    router.register_prompt("survey", find_open, answer)
    phone = Phone(factory, router)
    phone.send("200")
    sent[USER] = phone.now + 5  # a survey SMS after the shelf
    assert phone.send("4", after=10).action == "survey_score"
    assert answered == [("4", {"survey": 7})]
    phone.send("200", after=10)  # now the shelf is newer
    assert phone.send("1").action == "confirm_prompt"
    assert phone.send("5", after=700).action == "survey_score"  # shelf expired, survey still open


def test_y_without_pending_and_after_window(factory, router):
    phone = Phone(factory, router)
    none = phone.send("Y")
    assert none.action == "confirm_none" and "待确认" in none.text
    phone.send("KTLL30")
    late = phone.send("Y", after=601)
    assert late.action == "confirm_expired"
    assert phone.active() == []
    with factory() as s:
        assert s.get(PendingOrder, USER) is None


def test_order_refusals(factory, router):
    phone = Phone(factory, router, "13800000018")  # has LL30 and QQW
    assert phone.send("KTLL30").action == "order_already"
    excluded = phone.send("KTLL20")
    assert excluded.action == "order_refused" and "QXLL30" in excluded.text
    assert phone.send("KTXYZ9").action == "order_unknown"
    unavailable = phone.send("KTLL618")  # ended
    assert unavailable.action == "order_refused" and "有效期" in unavailable.text
    assert Phone(factory, router, "13800000007").send("KTTC5G").action == "order_refused"  # not eligible


def test_refuse_keyword_and_record_refusal(factory, router):
    phone = Phone(factory, router)
    first = phone.send("200").details["offers"][0]
    assert phone.send(f"BX{first}").action == "refused"
    assert first not in phone.send("200").details["offers"]
    with factory() as s, s.begin():
        record_refusal(s, USER, "LL20", phone.now, source="campaign:c1")
    assert "LL20" not in phone.send("200").details["offers"]


def test_unknown_subscriber_gets_polite_reply(factory, router):
    reply = Phone(factory, router, "13999999999").send("200")
    assert reply.action == "not_subscriber" and "13999999999" in reply.text and "不是本服务的用户" in reply.text


def test_shelf_json_matches_the_200_sms(factory, router):
    for msisdn in ("13800000001", "13800000002", "13800000009", "13800000018", "13800000050"):
        phone = Phone(factory, router, msisdn)
        codes = phone.send("200").details["offers"]
        with factory() as s:
            data = shelf_json(s, demo_catalog(), msisdn, phone.now)
        assert [o["code"] for o in data["offers"]] == codes
        assert [o["rank"] for o in data["offers"]] == list(range(1, len(codes) + 1))
        assert all(o["order"] == "KT" + o["code"] for o in data["offers"])
        with factory() as s:
            assert s.get(ShelfView, msisdn).codes == codes
    with factory() as s:
        assert shelf_json(s, demo_catalog(), "13999999999", NOW) is None


def test_shelf_is_cut_to_the_sms_part_limit(factory):
    router = Router(demo_catalog, Settings({"router.max_sms_parts": 1}))
    reply = Phone(factory, router).send("200")
    assert default_fits(reply.text, 1) and 1 <= len(reply.details["offers"]) < 5


def test_repeated_y_does_not_double_even_after_reorder(factory, router):
    phone = Phone(factory, router)
    phone.send("KTLL30")
    phone.send("Y")
    assert phone.send("KTLL30").action == "order_already"
    assert phone.send("Y").action == "order_already"
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Subscription).where(Subscription.msisdn == USER)) == 1


def test_catalog_swap_is_atomic_per_message(factory):
    catalogs = [demo_catalog()]
    router = Router(lambda: catalogs[-1], Settings())
    phone = Phone(factory, router)
    assert phone.send("200").action == "shelf"
    catalogs.append(demo_catalog())  # a reload swaps the reference; the next message sees the new one whole
    assert phone.send("200").action == "shelf"


def test_survey_digit_from_a_non_subscriber_reaches_the_survey(factory, router):
    router.register_prompt("survey", lambda s, m, now: (now - 5, "sv") if m == "13999999999" else None,
                           lambda s, msg, prompt, now: Reply("谢谢", "survey_score", "10086", {}))
    phone = Phone(factory, router, "13999999999")
    assert phone.send("５").action == "survey_score"
    assert phone.send("200").action == "not_subscriber"
    assert phone.send("5", after=0).action == "survey_score"
    assert Phone(factory, router, "13999999998").send("5").action == "not_subscriber"


def test_subscriber_view_and_email_lookup(factory):
    from offers.queries import msisdn_by_email, subscriber_view

    with factory() as s:
        view = subscriber_view(s, USER, demo_catalog())
        assert view["balance_text"] == "58.30" and view["brand_name"] == "动感地带"
        assert view["segments"]["usage_class"] == "C" and "stale" not in view["segments"]
        assert view["segments"]["reasons"]["usage"] == ["data_usage_ratio 0.94 in [0.9, 1.2) -> C"]
        assert subscriber_view(s, "13800000018", None)["subscriptions"][0]["cancel"].startswith("QX")
        assert subscriber_view(s, "13999999999") is None
        someone = s.scalars(select(Subscriber).where(Subscriber.email.is_not(None)).limit(1)).one()
        assert msisdn_by_email(s, someone.email.upper()) == someone.msisdn
        assert msisdn_by_email(s, "nobody@example.org") is None


def test_explain_lists_every_offer_with_reasons(factory):
    from offers.shelf import explain

    with factory() as s:
        data = explain(s, demo_catalog(), "13800000018", NOW)
    decisions = {d["code"]: d for d in data["decisions"]}
    assert set(decisions) == {o.code for o in demo_catalog().offers}
    assert decisions["LL30"]["reasons"] == ["already subscribed"]
    assert decisions["LL20"]["reasons"] == ["excluded by active subscription LL30 (group data_pack)"]
    assert decisions["LL618"]["reasons"] == ["out of date (ended)"]
    assert decisions["HYJX"]["reasons"][0].startswith("not sold on channel sms")
    assert [o["code"] for o in data["offers"]] == [d["code"] for d in sorted(
        (d for d in data["decisions"] if d["included"]), key=lambda d: d["rank"])]
