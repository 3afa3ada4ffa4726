"""FAQ and emergency evaluation: `python bench/faq_eval.py`.

Prints the FAQ's top-1 accuracy on the tuning part, bot/conversation/faq_labelled.toml (the
union of `cases` and the retired held-out batches `was_held_out`, `was_held_out_3`,
`was_held_out_4`, `was_held_out_5`, `was_held_out_6`, `was_held_out_7`; each list's figure,
then the misses), a
k-fold cross-validation of the confidence threshold on the tuning part (the threshold is
chosen on k-1 folds, with the off-topic `none` messages, each class weighing the same, and
scored on the fold left out; the FAQ's classifier learned from all of them, so both figures only say nothing broke), then the
held-out figure: `held_out_8` in tests/faq_held_out.toml, written outside the tuning and
measured once (its misses are not printed, so that nobody tunes on them; `--show-held-out`
prints them when auditing; until the lead adds the batch it says "not measured"). Then the
off-topic messages it wrongly answers, the emergency detector's recall and false-alarm rate on
tests/emergency_labelled.toml (tuning and held-out parts apart), whether any emergency phrasing
would get an FAQ answer when the FAQ is asked first, jieba's load time, warm()'s (jieba, the
index and the classifier's fit) and the per-query latency.

`--by-batch` adds the leave-one-batch-out evaluation, the figure that predicts a new writer's
batch: each tuning list (each written by a different writer) is answered by a FAQ whose
classifier learned without it, at a threshold chosen without it (on the other lists' scores
from classifiers that learned without them too); each list's top-1, the mean, for the
classifier weight in use and for weight 0 (the rule score alone: the method before the
classifier) in one run; `--weights 0.3,0.5` tries more. The hand rules of faq.toml were written
looking at every list but the outside writers' batches (`was_held_out_5`, `was_held_out_6`,
`was_held_out_7`; the first two's misses were read a few times since), so those lists' figures
are the honest ones for the rule part: `was_held_out_7` is the validation batch (read its
misses rarely: `--hide was_held_out_7`).

`--tuning-only` leaves the held-out batch out (use only that while tuning). `--hide NAME`
prints a tuning list's figure without its misses (a validation split inside the tuning part,
looked at every few iterations). Exit 1 when the held-out batch is under 90%, or it is missing
(unless `--tuning-only`), or the emergency sets have a miss or a false alarm."""
from __future__ import annotations

import argparse
import random
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.conversation import emergency, faq  # noqa: E402

TARGET = 0.90  # held-out top-1 (issue 14)
# The tuning part: lists of bot/conversation/faq_labelled.toml, tuning cases first, then the retired
# held-out batches in the order they were written.
TUNING = ("cases", "was_held_out", "was_held_out_3", "was_held_out_4", "was_held_out_5",
          "was_held_out_6", "was_held_out_7")
HELD_OUT_FILE = ROOT / "tests" / "faq_held_out.toml"  # written outside the tuning; the lead merges it
HELD_OUT = "held_out_8"  # its key: a list of [text, entry_id]
FOLDS = 5
GRID = [round(0.10 + 0.01 * i, 2) for i in range(31)]  # thresholds tried, 0.10 to 0.40


def load(name: str) -> dict:
    return tomllib.loads((ROOT / "tests" / name).read_text(encoding="utf-8"))


def load_held_out() -> list | None:
    """The held-out batch (`held_out_8` of tests/faq_held_out.toml), or None without the file
    or without the key (the file holds only its header until the lead adds the batch)."""
    if not HELD_OUT_FILE.exists():
        return None
    return tomllib.loads(HELD_OUT_FILE.read_text(encoding="utf-8")).get(HELD_OUT)


def accuracy(f: faq.Faq, cases: list) -> tuple[float, list]:
    misses = [(text, want, f.best(text), f.search(text)) for text, want in cases
              if f.best(text) != want]
    return 1 - len(misses) / len(cases), misses


def _top(f: faq.Faq, text: str) -> tuple[str | None, float]:
    """The best entry and its score, as `Faq.best` sees them (a tie scores 0: no answer)."""
    return f.top(text)


def choose_threshold(top: list[tuple[str | None, float, str]], neg: list[float]) -> float:
    """The threshold of GRID with the best balanced outcome: the share of labelled phrasings
    answered by their entry plus the share of off-topic messages left unanswered (each class
    weighs the same: with 686 phrasings and 29 off-topic messages, counting outcomes alone
    would let the phrasings buy a threshold that answers chatter); ties go to the higher
    threshold."""
    def right(th: float) -> float:
        return (sum(got == want and score >= th for got, score, want in top) / max(len(top), 1)
                + sum(score < th for score in neg) / max(len(neg), 1))
    return max(reversed(GRID), key=right)


def cross_validate(f: faq.Faq, cases: list, off_topic: list, folds: int = FOLDS,
                   seed: int = 14) -> tuple[float, float, list[float], float]:
    """k-fold cross-validation of the threshold on the tuning part: (accuracy on the folds
    left out, share of their off-topic messages answered, the thresholds the folds chose,
    the threshold chosen on the whole tuning part)."""
    top = [(*_top(f, t), want) for t, want in cases]
    neg = [_top(f, t)[1] for t in off_topic]
    order = list(range(len(top)))
    random.Random(seed).shuffle(order)
    neg_order = list(range(len(neg)))
    random.Random(seed).shuffle(neg_order)
    right = answered = 0
    chosen = []
    for k in range(folds):
        test = {i for j, i in enumerate(order) if j % folds == k}
        ntest = {i for j, i in enumerate(neg_order) if j % folds == k}
        th = choose_threshold([top[i] for i in range(len(top)) if i not in test],
                              [neg[i] for i in range(len(neg)) if i not in ntest])
        chosen.append(th)
        right += sum(top[i][0] == top[i][2] and top[i][1] >= th for i in test)
        answered += sum(neg[i] >= th for i in ntest)
    return (right / len(top), answered / max(len(neg), 1), chosen,
            choose_threshold(top, neg))


def by_batch(lists: dict[str, list], off_topic: list, weights: list[float]) -> dict:
    """Leave-one-batch-out evaluation: each labelled batch (each written by a different writer)
    is scored by a FAQ whose classifier learned without it, at the threshold chosen (as
    `choose_threshold` does) on the other batches' out-of-batch scores (from classifiers that
    learned without the batch and without that other batch) and the off-topic messages. That
    predicts a new writer's batch; a random k-fold, whose folds share their writers, does not.
    The hand rules (faq.toml) cannot be refitted: they were written looking at every batch but
    the outside writers' `was_held_out_5`, `was_held_out_6` and `was_held_out_7`, which is why
    those are the honest ones. Returns, for each weight of the
    classifier (0: the rule score alone, the old method), {batch: (top-1, threshold, share of
    off-topic answered)}, and under "chosen" the threshold the out-of-batch scores of all the
    batches choose."""
    names = list(lists)
    def build(leave: set[str]) -> faq.Faq:
        return faq.Faq(training=[c for n in names if n not in leave for c in lists[n]])
    outer = {b: build({b}) for b in names}
    inner = {(b, o): build({b, o}) for b in names for o in names if o != b}
    results: dict = {}
    for w in weights:
        for model in [*outer.values(), *inner.values()]:
            model.CLASSIFIER_WEIGHT = w
        res = {}
        for b in names:
            rows = [(*_top(inner[b, o], t), want) for o in names if o != b for t, want in lists[o]]
            neg = [_top(outer[b], t)[1] for t in off_topic]
            th = choose_threshold(rows, neg)
            top = [(*_top(outer[b], t), want) for t, want in lists[b]]
            res[b] = (sum(got == want and score >= th for got, score, want in top) / len(top), th,
                      sum(score >= th for score in neg) / max(len(neg), 1))
        full = faq.Faq(training=[c for n in names for c in lists[n]])
        full.CLASSIFIER_WEIGHT = w
        res["chosen"] = choose_threshold(
            [(*_top(outer[b], t), want) for b in names for t, want in lists[b]],
            [_top(full, t)[1] for t in off_topic])
        results[w] = res
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show-held-out", action="store_true",
                    help="also print the held-out misses (for audits, never for tuning)")
    ap.add_argument("--tuning-only", action="store_true",
                    help="leave the held-out batch out (while tuning)")
    ap.add_argument("--hide", action="append", default=[], choices=TUNING, metavar="NAME",
                    help="print this tuning list's figure but not its misses (a validation split)")
    ap.add_argument("--by-batch", action="store_true",
                    help="leave-one-batch-out: each tuning list scored by what was fitted without it")
    ap.add_argument("--weights", default="",
                    help="with --by-batch, also try these classifier weights (comma-separated)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    jieba_s = faq.warm()
    warm_s = time.perf_counter() - start
    f = faq.default()

    labelled = tomllib.loads(faq.LABELLED.read_text(encoding="utf-8"))
    lists = {name: labelled[name] for name in TUNING}
    tuning, off_topic = [case for cases in lists.values() for case in cases], labelled.get("none", [])
    held = [] if args.tuning_only else load_held_out()
    print(f"FAQ: {len(tuning)} tuning phrasings ({', '.join(f'{n} {len(c)}' for n, c in lists.items())}); "
          + ("held-out batch left out (--tuning-only)" if args.tuning_only else
             f"no held-out batch ({HELD_OUT} in {HELD_OUT_FILE.relative_to(ROOT)})" if held is None else
             f"{len(held)} held out ({HELD_OUT}, {HELD_OUT_FILE.relative_to(ROOT)})")
          + f"; threshold {f.THRESHOLD}, {len(f.entries)} entries")
    tune_acc, tune_misses = accuracy(f, tuning)
    print(f"FAQ top-1, tuning part:   {tune_acc:.1%} ({len(tuning) - len(tune_misses)}/{len(tuning)})")
    for name, cases in lists.items():
        acc, misses = accuracy(f, cases)
        print(f"  {name}: {acc:.1%} ({len(cases) - len(misses)}/{len(cases)})"
              + (" (misses hidden)" if name in args.hide else ""))
        for text, want, got, hits in ([] if name in args.hide else misses):
            print(f"  miss: {text!r}: want {want}, got {got}; {hits}")
    cv_acc, cv_off, chosen, whole = cross_validate(f, tuning, off_topic)
    print(f"Threshold by {FOLDS}-fold cross-validation on the tuning part: folds chose {chosen}; "
          f"top-1 on the folds left out {cv_acc:.1%}, their off-topic answered {cv_off:.1%}; "
          f"the whole tuning part chooses {whole} (in use: {f.THRESHOLD}); the classifier learned "
          f"from these phrasings, so only the leave-one-batch-out figures (--by-batch) are honest")
    if args.by_batch:
        weights = sorted({0.0, f.CLASSIFIER_WEIGHT,
                          *(float(w) for w in args.weights.split(",") if w.strip())})
        t0 = time.perf_counter()
        results = by_batch(lists, off_topic, weights)
        print(f"Leave-one-batch-out ({len(lists)} batches, {len(lists) * len(lists)} fits, "
              f"{time.perf_counter() - t0:.0f} s): top-1 of each batch by what was fitted without it "
              f"[threshold chosen, off-topic answered]; weight 0 is the rule score alone (the old method)")
        for w, res in results.items():
            figures = [res[b][0] for b in lists]
            print(f"  classifier weight {w:g}{' (in use)' if w == f.CLASSIFIER_WEIGHT else ''}: "
                  + "; ".join(f"{b} {res[b][0]:.1%} [{res[b][1]}, {res[b][2]:.1%}]" for b in lists)
                  + f"; mean {sum(figures) / len(figures):.1%}; all batches choose threshold {res['chosen']}")
    held_acc = None
    if held is None:
        print(f"FAQ top-1, held out: not measured: no held-out batch "
              f"({HELD_OUT_FILE.relative_to(ROOT)}, key {HELD_OUT})")
    elif held:
        held_acc, held_misses = accuracy(f, held)
        print(f"FAQ top-1, held out ({HELD_OUT}): {held_acc:.1%} ({len(held) - len(held_misses)}/{len(held)})"
              f"  <- the honest figure (target {TARGET:.0%})")
        if args.show_held_out:
            for text, want, got, hits in held_misses:
                print(f"  held-out miss: {text!r}: want {want}, got {got}; {hits}")
    answered = [(t, f.best(t)) for t in off_topic if f.best(t)]
    print(f"Off-topic answered: {len(answered)}/{len(off_topic)} {answered}")

    cases_e = load("emergency_labelled.toml")
    ok_emergency = True
    parts = [("tuning", cases_e["emergency"], cases_e["not_emergency"]),
             ("held-out", cases_e.get("held_out_emergency", []),
              cases_e.get("held_out_not_emergency", []))]
    for name, pos, neg in parts:
        missed = [t for t in pos if not emergency.is_emergency(t)]
        false_pos = [(t, emergency.matches(t)) for t in neg if emergency.is_emergency(t)]
        print(f"Emergency, {name} part: recall {1 - len(missed) / len(pos):.1%} ({len(pos)}), "
              f"false alarms {len(false_pos) / len(neg):.1%} ({len(neg)})"
              + (f"; missed {missed}, false alarms {false_pos}"
                 if (missed or false_pos) and (name == "tuning" or args.show_held_out) else ""))
        ok_emergency = ok_emergency and not missed and not false_pos
    pos = cases_e["emergency"] + cases_e.get("held_out_emergency", [])
    neg = cases_e["not_emergency"] + cases_e.get("held_out_not_emergency", [])
    leaked = [t for t in pos if not emergency.is_emergency(t) and f.best(t)]
    faq_would = [(t, f.best(t)) for t in pos if f.best(t)]
    print(f"Emergency phrasings answered by the FAQ when checked emergency-first: {len(leaked)}")
    print(f"  (had the FAQ been asked first, it would have answered {len(faq_would)}: {faq_would})")

    texts = [t for t, _ in tuning + (held or [])] + pos + neg
    rounds = 5
    t0 = time.perf_counter()
    for _ in range(rounds):
        for t in texts:
            f.search(t)
    faq_ms = (time.perf_counter() - t0) * 1000 / (rounds * len(texts))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for t in texts:
            emergency.is_emergency(t)
    em_ms = (time.perf_counter() - t0) * 1000 / (rounds * len(texts))
    print(f"jieba load {jieba_s:.2f} s; warm() total {warm_s:.2f} s; "
          f"{len(f.entries)} entries, {len(f.index.doc_entry)} documents")
    print(f"Per query: FAQ search {faq_ms:.3f} ms, emergency check {em_ms:.3f} ms")
    ok_held = args.tuning_only or (held_acc is not None and held_acc >= TARGET)
    return 0 if ok_held and ok_emergency and not leaked else 1


if __name__ == "__main__":
    raise SystemExit(main())
