"""FAQ retrieval: accuracy on the labelled customer phrasings, emergency-first precedence,
small talk, and every answer renders with the facts from rules.toml."""
from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from bot.conversation import emergency, faq
from bot.infra.texts import template_exists
from tests.support import ROOT

LABELLED = tomllib.loads((ROOT / "bot" / "conversation" / "faq_labelled.toml").read_text("utf-8"))
# The held-out batch: written outside the tuning, in its own file, merged by the lead; never
# read while tuning. Without it the held-out tests fail: the honest figure must be measured.
HELD_OUT_FILE = ROOT / "tests" / "faq_held_out.toml"
HELD_OUT = "held_out_8"
EMERGENCY = tomllib.loads((ROOT / "tests" / "emergency_labelled.toml").read_text("utf-8"))
# The measured figures (README, "Conversation quality"), so that a regression fails.
# held_out_8 measured once, 2026-12-06: 90.9% (1152/1268; README, "Conversation quality");
# issue 14's target is 0.90. held_out_7 was 88.9% (578/650).
FLOOR = 0.905
OFF_TOPIC_ANSWERED = 2
# Entries added after every labelled batch was written (2026-12-04: whether what binding asks
# for is kept); their own phrasings only, until a writer's batch covers them.
NEWER_THAN_THE_BATCHES = {"privacy"}
FACTS = faq.rules_facts(tomllib.loads((ROOT / "rules.toml").read_text("utf-8")))


@pytest.fixture(scope="module")
def f() -> faq.Faq:
    faq.warm()
    return faq.default()


# The tuning part: the tuning cases and the retired held-out batches (bot/conversation/faq_labelled.toml).
TUNING_LISTS = ("cases", "was_held_out", "was_held_out_3", "was_held_out_4", "was_held_out_5",
                "was_held_out_6", "was_held_out_7")
TUNING = [case for name in TUNING_LISTS for case in LABELLED[name]]


def held_out() -> list:
    """The held-out batch; without it the test fails, saying why."""
    batch = (tomllib.loads(HELD_OUT_FILE.read_text("utf-8")).get(HELD_OUT)
             if HELD_OUT_FILE.exists() else None)
    if batch is None:
        pytest.fail(f"no held-out batch ({HELD_OUT} in {HELD_OUT_FILE.relative_to(ROOT)}): "
                    "it is written outside the tuning and added by the lead before merging")
    return batch


def test_labelled_set_is_big_and_labels_exist(f):
    ids = {e.id for e in f.entries}
    assert len(TUNING) >= 200
    assert {want for _, want in TUNING} <= ids
    # Every entry has tuning phrasings in each retired batch (each was written over all the
    # entries of its day; entries added since are in none of them yet).
    for name in TUNING_LISTS[1:]:
        assert {want for _, want in LABELLED[name]} == ids - NEWER_THAN_THE_BATCHES, name
    # Labelled phrasings are not copies of the FAQ's own phrasings.
    own = {faq.normalize(p) for e in f.entries for p in (e.title, *e.phrasings)}
    assert not [t for t, _ in TUNING if faq.normalize(t) in own]


def test_held_out_batch_is_honest(f):
    """Issue 14: at least 30% of all labelled phrasings held out (this round's batch is six
    outside writers' work), every label an entry, no held-out phrasing in the tuning part nor
    among the FAQ's own phrasings."""
    held = held_out()
    assert len(held) >= 0.3 * (len(TUNING) + len(held))
    assert {want for _, want in held} <= {e.id for e in f.entries}
    tuning = {faq.normalize(t) for t, _ in TUNING}
    own = {faq.normalize(p) for e in f.entries for p in (e.title, *e.phrasings)}
    assert not [t for t, _ in held if faq.normalize(t) in tuning | own]


def test_top1_accuracy(f, capsys):
    cases = TUNING
    misses = [(t, want, f.best(t)) for t, want in cases if f.best(t) != want]
    accuracy = 1 - len(misses) / len(cases)
    with capsys.disabled():
        print(f"\nFAQ top-1 {accuracy:.1%} on {len(cases)} (tuning part); misses {misses}")
    # 99.0% measured (README, "Conversation quality"): the classifier learned from these, so
    # this says only that nothing broke; bench/faq_eval.py --by-batch is the honest figure.
    assert accuracy >= 0.98


def test_held_out_accuracy_does_not_fall_below_the_reported_figure(f):
    """The honest figure (README, "Conversation quality"): phrasings never tuned on. Neither
    it nor its misses are printed here: bench/faq_eval.py reports it."""
    held = held_out()
    right = sum(f.best(t) == want for t, want in held)
    assert right / len(held) >= FLOOR


def test_off_topic_gets_no_answer(f):
    """Off-topic chatter gets the fallback; the threshold's cross-validation accepts a few
    short ones with one FAQ word (今天星期几 reads as a booking-date question)."""
    assert not [t for t in LABELLED["none"][:5] if f.best(t)]
    assert len([t for t in LABELLED["none"] if f.best(t)]) <= OFF_TOPIC_ANSWERED


def test_emergency_first_never_reaches_the_faq(f):
    """The caller checks emergencies before the FAQ (DOMAIN precedence 2 before 6)."""

    def reply(text):
        return "emergency" if emergency.is_emergency(text) else f.best(text)

    assert {reply(t) for t in EMERGENCY["emergency"]} == {"emergency"}


def test_search_shape_and_k(f):
    hits = f.search("洗牙要钱吗", k=2)
    assert len(hits) == 2 and all(isinstance(i, str) and isinstance(s, float) for i, s in hits)
    assert hits[0][1] >= hits[1][1]
    assert f.search("") == [] and f.best("   ") is None


def test_tier_targets_the_customers_own_tier(f):
    assert f.best("我这个级别有什么福利", tier="gold") == "tier_gold"
    assert f.best("我这个级别有什么福利", tier="diamond") == "tier_diamond"
    # A tier named in the question wins over the customer's own.
    assert f.best("钻石客户有什么权益", tier="gold") == "tier_diamond"


@pytest.mark.parametrize("text,want", [
    ("谢谢", "thanks"), ("谢谢啦！", "thanks"), ("再见", "bye"), ("拜拜~", "bye"),
    ("你好", "hello"), ("在吗？", "hello"), ("你是机器人吗", "robot"), ("好的", "ok"),
    ("好的好的", "ok"), ("ＯＫ", "ok"),
])
def test_smalltalk(f, text, want):
    assert f.smalltalk(text) == want
    assert faq.smalltalk_answer(want)


@pytest.mark.parametrize("text", ["谢谢你们的体检服务怎么预约", "洗牙要钱吗", "好的那我怎么取消预约"])
def test_not_smalltalk(f, text):
    assert f.smalltalk(text) is None


def test_every_entry_has_a_template_and_renders_with_rules_facts(f):
    for entry in f.entries:
        assert template_exists(entry.template), entry.id
        assert f.answer(entry.id, **FACTS).strip(), entry.id


def test_answers_follow_the_facts_not_the_template(f):
    facts = dict(FACTS, tiers=[dict(t, threshold=t["threshold"] * 2) for t in FACTS["tiers"]])
    assert "2,000,000" in f.answer("upgrade", **facts)
    assert "1,000,000" in f.answer("upgrade", **FACTS)


def test_missing_facts_are_named(f):
    with pytest.raises(KeyError, match="tiers"):
        f.answer("upgrade")


def test_answers_say_what_domain_says(f):
    a = lambda i: f.answer(i, **FACTS)  # noqa: E731
    assert "6月30日" in a("tier_change") and "12月31日" in a("tier_change") and "即刻降级" in a("tier_change")
    assert "95359" in a("hotline") and "95359-8-1" in a("hotline")
    assert "7月" in a("festival") and "8月" in a("festival")
    assert "95359" in a("hospital_visit") and "轻症" in a("hospital_visit")
    assert "×100%" in a("contribution") and "×10%" in a("contribution")
    assert "特种检查预约" in a("tier_diamond") and "特种检查" not in a("tier_platinum")
    assert "洁牙" in a("tier_gold") and "体检" not in a("tier_gold")
    assert "2个工作日" in a("lead_time") and "12点" in a("cancellation")
    assert "自行承担" in a("fees") and "三甲" in a("escort") and "心理咨询" in a("health_advisor")
    assert "配偶" in a("family_use") and "3年" in a("validity") and "1年" in a("validity")


def test_search_is_fast(f):
    texts = [t for t, _ in TUNING]
    passes = []
    for _ in range(3):  # the best of three passes: a busy machine slows one, not the search
        start = time.perf_counter()
        for t in texts:
            f.search(t)
        passes.append((time.perf_counter() - start) * 1000 / len(texts))
    assert min(passes) < 5  # about 0.6 ms on an idle machine; generous for slow CI machines


def test_a_tie_is_no_answer(f):
    """A word several entries share equally (服务: 陪同服务, 基础服务) gets the suggestions, not
    whichever entry sorts first nor the one the classifier leans to; one more word decides."""
    assert f.search("服务", k=1)[0][1] >= f.THRESHOLD
    assert f.best("服务") is None
    assert f.best("陪同服务有吗") == "escort"


@pytest.mark.parametrize("text,want", [
    # The kind of question wins over the service it names (cues in faq.toml).
    ("去体检的时候要带啥", "what_to_bring"),
    ("洗牙的时候有人陪着吗", "escort"),
    ("给我妈约的体检要带什么", "what_to_bring"),
    ("预约的体检能推迟几天吗", "cancellation"),
    ("洁牙那天能不能改到下礼拜", "cancellation"),
    # A word jieba glued to a particle is read as the word it hides (没升 -> 升级).
    ("我的级别咋还没升", "tier_change"),
    # A variant stays one word (媳妇 -> 家人, not 我家/人).
    ("帮我媳妇约个洗牙行吗", "family_use"),
])
def test_questions_written_for_the_mechanisms_not_in_the_labelled_set(f, text, want):
    """Phrasings written for the retrieval's mechanisms (none is in bot/conversation/faq_labelled.toml or
    faq.toml): what a customer would notice is the answer they get."""
    labelled = {faq.normalize(t) for t, _ in TUNING}
    assert faq.normalize(text) not in labelled
    assert f.best(text) == want


@pytest.mark.parametrize("text,want", [
    # Dialect, voice input's fillers and polite formulae say nothing (faq.toml's [fillers]).
    ("俺想给俺老伴约个体检中不中", "family_use"),
    ("嗯那个就是体检报告多久能出来", "report_time"),
    ("烦请告知贵公司的客服热线", "hotline"),
    # Typos and homophones of the domain words and the tiers, and English words.
    ("白金客户有哪些福利", "tier_platinum"),
    ("我老爸想问问体简套餐有哪些", "checkup_packages"),
    ("vip洗牙free吗", "fees"),
    # A relative who is a tier's customer asks about that tier, not about using mine.
    ("帮我儿子问一下，他是黄金客户能体检吗", "tier_has_service"),
    # Who may use a service, may I, and where: answered, not suggestions.
    ("体检谁能用", "checkup_packages"),
    ("我能预约体检吗", "tier_has_service"),
    ("洗牙在哪里洗", "institutions"),
])
def test_new_writers_ways_of_asking(f, text, want):
    """Ways of asking the next writers' personas use (dialect, voice input, abbreviations and
    English, asking for a relative, formal letters), written for the mechanisms; none is in
    bot/conversation/faq_labelled.toml or faq.toml."""
    labelled = {faq.normalize(t) for t, _ in TUNING}
    own = {faq.normalize(p) for e in f.entries for p in (e.title, *e.phrasings)}
    assert faq.normalize(text) not in labelled | own
    assert f.best(text) == want


@pytest.mark.parametrize("text", ["帮我儿子问一下，他是黄金客户能体检吗", "我老公是钻石客户，他能洗牙吗"])
def test_a_relative_who_is_a_tiers_customer_is_not_using_mine(f, text):
    """A relative said to be a tier's customer asks what that tier has, not whether they may use
    my services: family_use is not even among the suggestions."""
    assert f.best(text) == "tier_has_service"
    assert "family_use" not in dict(f.search(text))


@pytest.mark.parametrize("text,plain", [
    ("俺想给俺老伴约个体检中不中", "我想给老伴约个体检"),
    ("嗯那个就是体检报告多久能出来", "体检报告多久能出来"),
    ("烦请告知贵公司的客服热线", "客服热线"),
])
def test_fillers_say_nothing(f, text, plain):
    """Dialect words, voice input's fillers and polite formulae are read as if not typed."""
    assert f.words(text) == f.words(plain)


@pytest.mark.parametrize("text", ["明天去哪玩", "下周六有空吗", "今天股市怎么样", "星期天去爬山"])
def test_a_day_word_alone_is_not_a_booking_question(f, text):
    """今天/明天/周末 without a booking word or a service is chatter, not "how early to book"."""
    assert f.best(text) is None
