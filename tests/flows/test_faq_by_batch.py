"""FAQ retrieval judged the way a new writer's batch judges it: each labelled batch of
bot/conversation/faq_labelled.toml (each written by a different writer) is answered by a FAQ whose
classifier learned without it. A random split, whose parts share their writers, over-promises;
this is the proxy for the next held-out batch (bench/faq_eval.py --by-batch also refits the
threshold without the batch; here the threshold in use is kept, so one fit per batch)."""
from __future__ import annotations

import tomllib

import pytest

from bot.conversation import faq
from tests.support import ROOT

LABELLED = tomllib.loads((ROOT / "bot" / "conversation" / "faq_labelled.toml").read_text("utf-8"))
BATCHES = ("cases", "was_held_out", "was_held_out_3", "was_held_out_4", "was_held_out_5",
           "was_held_out_6")
# Measured at the threshold in use (0.32): mean 96.3%, was_held_out_5 88.1% (the one batch the
# hand rules of faq.toml were never written from); the rule score alone (classifier weight 0)
# 87.8% and 73.0% here. README, "Conversation quality", has the bench's figures.
MEAN_FLOOR = 0.95
VALIDATION_FLOOR = 0.86


@pytest.fixture(scope="module")
def by_batch() -> dict[str, float]:
    """Each batch's top-1, answered by a FAQ that learned from every other batch."""
    faq.warm()
    figures = {}
    for batch in BATCHES:
        model = faq.Faq(training=[case for other in BATCHES if other != batch
                                  for case in LABELLED[other]])
        cases = LABELLED[batch]
        figures[batch] = sum(model.best(text) == want for text, want in cases) / len(cases)
    return figures


def test_every_writer_is_a_batch():
    """Every labelled list but the off-topic chatter is a batch here (a new list is a new
    writer's, and must be judged without itself too)."""
    assert set(LABELLED) - {"none"} == set(BATCHES)


def test_a_writer_left_out_is_still_answered(by_batch, capsys):
    mean = sum(by_batch.values()) / len(by_batch)
    with capsys.disabled():
        print("\nFAQ leave-one-batch-out top-1: "
              + ", ".join(f"{b} {a:.1%}" for b, a in by_batch.items()) + f"; mean {mean:.1%}")
    assert mean >= MEAN_FLOOR
    assert by_batch["was_held_out_5"] >= VALIDATION_FLOOR


def test_what_a_writer_left_out_gets_is_not_memorised(by_batch):
    """The batch left out is not what the classifier learned: the default FAQ (which learned
    from every batch) answers the validation batch better than the FAQ that did not."""
    cases = LABELLED["was_held_out_5"]
    everything = faq.default()
    seen = sum(everything.best(text) == want for text, want in cases) / len(cases)
    assert seen > by_batch["was_held_out_5"]
