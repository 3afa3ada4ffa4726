"""FAQ and emergency evaluation: `python bench/faq_eval.py`.

Prints the FAQ's top-1 accuracy on tests/faq_labelled.toml (with the misses), the off-topic
messages it wrongly answers, the emergency detector's recall and false-positive rate on
tests/emergency_labelled.toml, whether any emergency phrasing would get an FAQ answer when
the FAQ is asked first, jieba's load time and the per-query latency."""
from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.conversation import emergency, faq  # noqa: E402


def load(name: str) -> dict:
    return tomllib.loads((ROOT / "tests" / name).read_text(encoding="utf-8"))


def main() -> int:
    start = time.perf_counter()
    jieba_s = faq.warm()
    warm_s = time.perf_counter() - start
    f = faq.default()

    labelled = load("faq_labelled.toml")
    cases, off_topic = labelled["cases"], labelled.get("none", [])
    misses = [(text, want, f.best(text), f.search(text)) for text, want in cases if f.best(text) != want]
    top1 = 1 - len(misses) / len(cases)
    print(f"FAQ top-1 accuracy: {top1:.1%} ({len(cases) - len(misses)}/{len(cases)}), "
          f"threshold {f.THRESHOLD}")
    for text, want, got, hits in misses:
        print(f"  miss: {text!r}: want {want}, got {got}; {hits}")
    answered = [(t, f.best(t)) for t in off_topic if f.best(t)]
    print(f"Off-topic answered: {len(answered)}/{len(off_topic)} {answered}")

    cases_e = load("emergency_labelled.toml")
    pos, neg = cases_e["emergency"], cases_e["not_emergency"]
    missed = [t for t in pos if not emergency.is_emergency(t)]
    false_pos = [(t, emergency.matches(t)) for t in neg if emergency.is_emergency(t)]
    print(f"Emergency recall: {1 - len(missed) / len(pos):.1%} ({len(pos)}), missed {missed}")
    print(f"Emergency false positives: {len(false_pos) / len(neg):.1%} ({len(neg)}) {false_pos}")
    leaked = [t for t in pos if not emergency.is_emergency(t) and f.best(t)]
    faq_would = [(t, f.best(t)) for t in pos if f.best(t)]
    print(f"Emergency phrasings answered by the FAQ when checked emergency-first: {len(leaked)}")
    print(f"  (had the FAQ been asked first, it would have answered {len(faq_would)}: {faq_would})")

    texts = [t for t, _ in cases] + pos + neg
    rounds = 20
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
    ok = top1 >= 0.90 and not missed and not false_pos and not leaked
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
