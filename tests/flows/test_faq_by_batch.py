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
           "was_held_out_6", "was_held_out_7")
# Measured at the threshold in use (0.30), 2026-12-06: mean 96.2%, was_held_out_5 96.2%,
# was_held_out_6 93.3%, was_held_out_7 90.0% (the outside writers' batches; was_held_out_7, the
# validation batch, is the one whose misses were not read); before this round's tuning: 94.5%,
# 91.6%, 86.7%, 88.9%. README, "Conversation quality", has the bench's figures.
MEAN_FLOOR = 0.955
VALIDATION_FLOORS = {"was_held_out_5": 0.955, "was_held_out_6": 0.925, "was_held_out_7": 0.89}


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
    for batch, floor in VALIDATION_FLOORS.items():
        assert by_batch[batch] >= floor, batch


def test_what_a_writer_left_out_gets_is_not_memorised(by_batch):
    """The batch left out is not what the classifier learned: the default FAQ (which learned
    from every batch) answers the validation batch better than the FAQ that did not."""
    everything = faq.default()
    for batch in VALIDATION_FLOORS:
        cases = LABELLED[batch]
        seen = sum(everything.best(text) == want for text, want in cases) / len(cases)
        assert seen > by_batch[batch], batch
