"""FAQ retrieval and small talk.

Retrieval: each FAQ entry (faq.toml) has a title and several phrasings; each is one short
document. A query is normalised, its variants read as canonical words (faq.toml's synonyms),
segmented with jieba (with a user dictionary of domain words), stripped of fillers, and a word
the index never saw is read as the known words it hides (没升 -> 升级). It is scored with BM25
(rank-bm25's idf and term factors, over inverted indexes) against every document; an entry's
score is its best document's. That is blended with a character-bigram overlap (which survives
typos and segmentation slips); then the entry's shape of question weighs in (`requires`,
`excludes`, `cues`: see faq.toml's header). That rule score is blended with a learned one: a
linear classifier (ridge regression on one-hot labels, solved in its dual form with numpy) over
TF-IDF features (character 1-3-grams of the normalised, synonym-read text and the query's
words), trained on the entries' titles and phrasings and on every labelled phrasing of
bot/conversation/faq_labelled.toml (customers' phrasings by several writers; `none`, the off-topic
chatter, is not trained on). Hand rules written from past batches did not carry over to a new
writer (bench/faq_eval.py --by-batch measures that). An entry a `requires`/`excludes` rules out
stays out, the customer's tier still weighs in, and the result is compared with a confidence
threshold: below it, or when two entries tie, `best` answers None and the caller falls back to
suggestions.

Start-up: jieba loads its dictionary (about 1 s) on first use. Call `warm()` once at start-up
(it loads jieba, builds the index, fits the classifier and builds the emergency vocabulary) so
no customer waits for it.

Answers: `Faq.answer(entry_id, **facts)` renders bot/templates/faq/<id>.j2. Values that live in
rules.toml (thresholds, weights, quotas, packages) come from the caller as facts;
`rules_facts(rules)` builds them from the parsed rules.toml mapping.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import tomllib
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

with warnings.catch_warnings():  # jieba 0.42 imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import jieba
import numpy as np
from rank_bm25 import BM25Okapi

from bot.infra.texts import render

DATA = Path(__file__).with_name("faq.toml")
# The labelled customer phrasings the classifier learns from (every list but `none`); they ship
# with the package. Without the file, it learns from faq.toml's phrasings alone, and says so in
# the log.
LABELLED = Path(__file__).with_name("faq_labelled.toml")

# Domain words jieba should keep whole (word, frequency); also the tier names.
USER_WORDS = [
    "洁牙", "洗牙", "体检", "钻石", "铂金", "黄金", "明珠", "大众", "保费贡献值", "贡献值",
    "犹豫期", "探视", "住院探视", "客服节", "客户服务节", "健康顾问", "专家门诊", "特种检查", "特检",
    "核磁共振", "胃肠镜", "趸交", "期交", "缴费期", "层级", "等级", "升级", "降级", "快升缓降",
    "绑定", "解绑", "陪诊", "陪同", "三甲", "热线", "挂号费", "直系亲属", "被保险人", "投保人",
    "绿色通道", "续期", "回访", "补发", "爽约", "改期", "全景片", "喷砂", "心脑血管", "工作日",
    "增值服务", "基础服务", "有效期", "次数", "权益", "身份证", "预约", "微信", "微信号", "解绑",
]

# Particles and filler that carry no meaning for retrieval.
STOPWORDS = frozenset(
    "的 了 吗 呢 啊 呀 吧 嘛 哦 哈 么 是 我 你 您 他 她 我们 你们 请问 一下 下 个 这 那 就 都 也 还 和 "
    "与 及 在 有 没 想 要 能 可以 会 请 麻烦 问 问下 一个 这个 那个 咋 怎 如何 怎么 怎么样 什么 啥 "
    "哪些 哪里 哪个 哪 多少 几 什么时候 时候 啥时候 "
    # everyday verbs and fillers that any message may have
    "帮 帮忙 我要 要 个 去 到 做 谁 给 让 把 对 跟 能不能 可不可以 有没有 是不是 会不会 不 没有 "
    "需要 一般 现在 自己 这些 那些 啥 咋 么 呗 啦 得 过 着 呀 嘛 怎么办 咋办 办 弄 咋弄 怎么弄 怎么搞 怎么整 咋整 咋个 啥子 神马 肿么 咯 哇 嘞 哟 撒 噻 呐 滴 行不行 成不 好不好 "
    # fillers of chatty messages (一直, 原来那个, 要是…的话, 有点): no question is about them
    "一直 原来 有点 有些 一些 某个 那种 这种 要是 如果 的话 一遍 已经 然后 到底 究竟 其实 就是 都是 "
    "反正 总是 老是 好像 应该 是否 能否 可否 问问 非常 特别 比较 真的 一点 大概 不会 被 想问 问下 想问下 "
    "请教 你好 您好 打扰 打扰一下 那边 这边 过去 找 他 她 它 他们 人家 是不是 为啥 为什么 为何 干嘛 干啥 不能 "
    # dialect, voice input and formal letters: 整 (do), 中 (all right), 嗯/呃, 难道, 此/该/届时
    "整 中 嗯 呃 额 哎 唉 诶 欸 噢 喔 难道 凭什么 此 该 则 届时 其 之".split()
)

_USER_WORD_SET = frozenset(USER_WORDS)
# One-character words jieba glues to the next or previous word (能查, 没升, 会酸, 我加): a query
# word the index never saw is read without them when the rest is a word it knows.
_GLUE_CHARS = frozenset("能会要我没不被想可还就都也在有是的了吗呢啊把给让跟和很太再又才先")
_GLUE = sorted((w for w in STOPWORDS if len(w) >= 2), key=len, reverse=True)

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)

log = logging.getLogger(__name__)


def normalize(text: str) -> str:
    """Full-width to half-width, lower case, no spaces or punctuation."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text or "").lower())


_jieba_lock = threading.Lock()
_jieba_ready = False


def _load_jieba() -> float:
    """Load jieba's dictionary and the user words once; return the seconds it took."""
    global _jieba_ready
    import time
    with _jieba_lock:
        if _jieba_ready:
            return 0.0
        start = time.perf_counter()
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        for word in USER_WORDS:
            jieba.add_word(word, freq=200000)
        _jieba_ready = True
        return time.perf_counter() - start


class _Synonyms:
    """Variant -> canonical word. Variants of 2+ characters are replaced in the text before
    segmenting (so character bigrams see them too); one-character variants only when jieba
    yields them as whole words. Fillers (dialect and voice-input words that say nothing: 中不中,
    嗯, 俺; polite formulae: 烦请告知) are dropped from the text wherever they are."""

    def __init__(self, table: Mapping[str, list[str]] | None = None, fillers: list[str] = ()):
        self.long: dict[str, str] = {}
        self.short: dict[str, str] = {}
        for canonical, variants in (table or {}).items():
            for v in variants:
                v = normalize(v)
                (self.long if len(v) > 1 else self.short)[v] = normalize(canonical)
        for w in fillers:
            self.long[normalize(w)] = ""
        self._pattern = (re.compile("|".join(map(re.escape, sorted(self.long, key=len, reverse=True))))
                         if self.long else None)

    def text(self, norm: str) -> str:
        """The text with its variants replaced, each canonical word between spaces so that jieba
        keeps it whole (媳妇 -> 家人 in 我媳妇 is not read 我家/人)."""
        return self._pattern.sub(lambda m: f" {self.long[m.group()]} ", norm) if self._pattern else norm

    def word(self, word: str) -> str:
        return self.short.get(word, word)


_NO_SYNONYMS = _Synonyms()


def tokens(text: str, synonyms: _Synonyms = _NO_SYNONYMS) -> list[str]:
    """Meaningful jieba words of the normalised text, variants read as canonical words."""
    _load_jieba()
    norm = synonyms.text(normalize(text))
    words = (_trim(w) for w in jieba.lcut(norm, HMM=True))
    return [synonyms.word(w) for w in words if w.strip() and w not in STOPWORDS]


def _trim(word: str) -> str:
    """A word jieba glued to a question word, without it (哪些项目 -> 项目, 多少钱 stays: a
    stopword only comes off a word of three or more characters that is not a domain word)."""
    if len(word) < 3 or word in _USER_WORD_SET:
        return word
    for sw in _GLUE:
        if word.startswith(sw) and len(word) - len(sw) >= 2:
            return word[len(sw):]
        if word.endswith(sw) and len(word) - len(sw) >= 2:
            return word[:-len(sw)]
    return word


def _repair(word: str, vocab: Mapping, synonyms: _Synonyms) -> list[str]:
    """A query word the index never saw, as the known words it hides: without a glue character
    at either end (能查 -> 查), or split in two known words (微信号码 -> 微信, 号码); else as is."""
    if word in vocab or len(word) < 2:
        return [word]
    def known(w: str) -> bool:
        # one character only as a variant (没升 -> 升级, 会酸 -> 疼): 年会 is not 年
        return synonyms.word(w) in vocab and (len(w) > 1 or w in synonyms.short)

    if word[0] in _GLUE_CHARS and known(word[1:]):
        return [synonyms.word(word[1:])]
    if word[-1] in _GLUE_CHARS and known(word[:-1]):
        return [synonyms.word(word[:-1])]
    for i in range(1, len(word)):
        head, tail = word[:i], word[i:]
        if known(head) and known(tail):
            return [synonyms.word(head), synonyms.word(tail)]
    return [word]


def _bigrams(norm: str) -> frozenset[str]:
    return frozenset(norm[i:i + 2] for i in range(len(norm) - 1)) or frozenset([norm])


def labelled_phrasings(path: Path = LABELLED) -> list[tuple[str, str]]:
    """Every labelled (text, entry_id) of the file but the off-topic `none`; [] without it."""
    if not Path(path).exists():
        log.warning("no labelled FAQ phrasings at %s: the classifier learns from faq.toml alone", path)
        return []
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return [(text, want) for name, cases in data.items() if name != "none" for text, want in cases]


def _features(read: str, words: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """A text's character 1-3-grams (of its normalised, synonym-read form) and its words, each
    with its sublinear term frequency (1 + log tf)."""
    grams: dict[str, int] = {}
    for n in (1, 2, 3):
        for i in range(len(read) - n + 1):
            grams[read[i:i + n]] = grams.get(read[i:i + n], 0) + 1
    counted: dict[str, int] = {}
    for w in words:
        counted[w] = counted.get(w, 0) + 1
    return ({g: 1 + math.log(c) for g, c in grams.items()},
            {"w:" + w: 1 + math.log(c) for w, c in counted.items()})


@dataclass
class _Classifier:
    """A linear classifier over TF-IDF features: score of entry e = x . weights[:, e] + bias[e],
    about 1 for the entry a text asks about and 0 for the others."""
    feature: dict[str, int]   # feature -> column
    idf: np.ndarray
    weights: np.ndarray       # features x entries
    bias: np.ndarray          # entries

    RIDGE = 0.3  # the ridge penalty (bench/faq_eval.py --by-batch chose it, with BALANCE)
    BALANCE = 1.0  # 1: each entry weighs the same in the fit; 0: each phrasing does

    @classmethod
    def fit(cls, docs: list[tuple[str, list[str]]], labels: list[int], entries: int) -> "_Classifier":
        """Weighted ridge regression of one-hot labels (as -1/+1) on the documents' TF-IDF
        vectors, each entry's documents weighing the same in all, in its dual form: with fewer
        documents than features, the documents' Gram matrix is small."""
        raw = [_features(read, words) for read, words in docs]
        feature: dict[str, int] = {}
        for parts in raw:
            for part in parts:
                for g in part:
                    feature.setdefault(g, len(feature))
        n = len(docs)
        rows, cols, vals = [], [], []
        for d, parts in enumerate(raw):
            for part in parts:
                rows += [d] * len(part)
                cols += [feature[g] for g in part]
                vals += list(part.values())
        rows_a, cols_a, vals_a = np.array(rows), np.array(cols), np.array(vals)
        df = np.bincount(cols_a, minlength=len(feature))
        idf = np.log((1 + n) / (1 + df)) + 1
        vals_a = vals_a * idf[cols_a]
        # Each part (characters, words) of a document has unit length.
        part_of = np.array([0 if not f.startswith("w:") else 1 for f in feature])[cols_a]
        norms = np.zeros((n, 2))
        np.add.at(norms, (rows_a, part_of), vals_a ** 2)
        vals_a = vals_a / np.sqrt(np.maximum(norms[rows_a, part_of], 1e-12))
        # The Gram matrix: every pair of documents sharing a feature, feature by feature.
        order = np.argsort(cols_a, kind="stable")
        r, c, v = rows_a[order], cols_a[order], vals_a[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        sizes = np.diff(np.r_[starts, len(c)])
        size_of = np.repeat(sizes, sizes)            # each nonzero: its feature's document count
        start_of = np.repeat(starts, sizes)
        left = np.repeat(np.arange(len(c)), size_of)  # each nonzero paired with its feature's
        offsets = np.repeat(np.cumsum(size_of) - size_of, size_of)
        right = start_of[left] + (np.arange(len(left)) - offsets)
        gram = np.bincount(r[left] * n + r[right], weights=v[left] * v[right],
                           minlength=n * n).reshape(n, n)
        targets = -np.ones((n, entries))
        targets[np.arange(n), labels] = 1.0
        # A constant feature (the bias, penalised like the rest): every pair shares it.
        # Each entry weighs the same whatever the number of its phrasings (a document's weight
        # is the mean count over its entry's count: the ridge penalty grows by the inverse), so
        # that an entry many writers asked about does not win another's borderline questions.
        counts = np.bincount(labels, minlength=entries).astype(float)[labels]
        penalty = cls.RIDGE * (counts / counts.mean()) ** cls.BALANCE
        dual = np.linalg.solve(gram + 1.0 + np.diag(penalty), targets)
        weights = np.zeros((len(feature), entries))
        np.add.at(weights, c, v[:, None] * dual[r])
        return cls(feature=feature, idf=idf, weights=weights, bias=dual.sum(axis=0))

    def scores(self, read: str, words: list[str]) -> np.ndarray:
        """Each entry's score for a text, mapped to about [0, 1]."""
        out = self.bias.copy()
        for part in _features(read, words):
            cols = [self.feature[g] for g in part if g in self.feature]
            if not cols:
                continue
            x = np.array([t for g, t in part.items() if g in self.feature]) * self.idf[cols]
            out += (x / np.linalg.norm(x)) @ self.weights[cols]
        return (out + 1) / 2


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    phrasings: tuple[str, ...]
    tier: tuple[str, ...] = ()
    template: str = ""
    facts: tuple[str, ...] = ()
    lookups: tuple[str, ...] = ()  # what the caller reads from the database for the answer
    # The entry answers only a question with a word of each group and none of `excludes`
    # (a yes/no about a tier's service names a tier and a service); such a question favours it.
    requires: tuple[tuple[str, ...], ...] = ()
    excludes: tuple[str, ...] = ()
    # Question-type cues (regular expressions on the normalised text, as typed and as the
    # synonyms read it): a question of the entry's kind (带什么 asks what_to_bring, whatever
    # service it names) favours it.
    cues: tuple[re.Pattern, ...] = ()
    fit_boost: float | None = None  # how much fitting `requires` favours it (None: FIT_BOOST)
    group: str = ""  # entries of one kind of question, one per tier: they share the learned score

    def fits(self, text: str) -> bool | None:
        """For an entry with `requires`: whether the (normalised, synonym-read) text fits it."""
        if not self.requires:  # only `excludes`: a question naming another tier
            return False if any(w in text for w in self.excludes) else None
        return (all(any(w in text for w in group) for group in self.requires)
                and not any(w in text for w in self.excludes))


@dataclass
class _Index:
    bm25: BM25Okapi
    doc_entry: list[int]            # document -> entry index
    doc_bigrams: list[frozenset[str]]
    max_idf: float
    entry_count: int
    # Inverted indexes (numpy arrays), so a query only touches the documents that share a word
    # or a bigram: word -> (documents, their BM25 term factors), bigram -> documents; each
    # document's bigram count, and where each entry's documents start (they are contiguous).
    postings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    bigram_docs: dict[str, np.ndarray] = field(default_factory=dict)
    doc_gram_count: np.ndarray = field(default_factory=lambda: np.zeros(0))
    entry_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    smalltalk: dict[str, str] = field(default_factory=dict)  # normalised word -> id
    classifier: _Classifier | None = None


class Faq:
    """FAQ search over faq.toml. Build once (module-level `default()`), search many times."""

    # Blend weights and the confidence threshold, tuned on bot/conversation/faq_labelled.toml.
    BM25_WEIGHT = 0.6
    BIGRAM_WEIGHT = 0.4
    # The learned score's share of the final score (the rule score has the rest), and the
    # confidence threshold: chosen by the leave-one-batch-out evaluation (bench/faq_eval.py
    # --by-batch), each batch scored by what was fitted without it.
    CLASSIFIER_WEIGHT = 0.4
    GROUP_OWN = 0.25  # how much of its own learned score a group's entry keeps (see `group`)
    RULE_TIES = True  # a tie of the rule score is no answer (see `top`)
    # 2026-12-06, seven batches: all batches choose 0.30, each batch 0.24-0.35 (bench/faq_eval.py
    # --by-batch); 0.33 would leave one off-topic message fewer answered and cost the validation
    # batch 2.6 points (90.0% -> 87.4%).
    THRESHOLD = 0.30
    TIER_BOOST = 1.1
    FIT_BOOST = 1.5  # a question of the shape an entry `requires`
    CUE_BOOST = 1.2  # a question with one of an entry's `cues`...
    CUE_BONUS = 0.1  # ...and what it adds (a cue lifts an entry the words barely found)
    UNKNOWN_WEIGHT = 1.0  # share of the highest idf a word the index never saw costs

    def __init__(self, path: Path = DATA, *, training: list[tuple[str, str]] | None = None):
        """`training`: the labelled (text, entry_id) phrasings the classifier learns from besides
        the entries' own (default: bot/conversation/faq_labelled.toml's, `labelled_phrasings`)."""
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        self.entries: list[Entry] = [
            Entry(id=e["id"], title=e["title"], phrasings=tuple(e.get("phrasings", ())),
                  tier=tuple(e.get("tier", ())), template=e.get("template", f"faq/{e['id']}"),
                  facts=tuple(e.get("facts", ())), lookups=tuple(e.get("lookups", ())),
                  requires=tuple(tuple(normalize(w) for w in g) for g in e.get("requires", ())),
                  excludes=tuple(normalize(w) for w in e.get("excludes", ())),
                  cues=tuple(re.compile(c) for c in e.get("cues", ())),
                  fit_boost=e.get("fit_boost"), group=e.get("group", ""))
            for e in data.get("entry", [])
        ]
        ids = [e.id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate FAQ ids in {path}")
        self._by_id = {e.id: e for e in self.entries}
        self._smalltalk_words = {normalize(w): s["id"] for s in data.get("smalltalk", [])
                                 for w in s["words"]}
        self.synonyms = _Synonyms(data.get("synonyms", {}), data.get("fillers", {}).get("words", []))
        self.training = labelled_phrasings() if training is None else list(training)
        unknown = {want for _, want in self.training} - set(self._by_id)
        if unknown:
            raise ValueError(f"labelled phrasings for unknown FAQ ids {sorted(unknown)}")
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.entries):
            if e.group:
                groups.setdefault(e.group, []).append(i)
        self._groups = [np.array(members) for members in groups.values()]
        self._index: _Index | None = None
        self._lock = threading.Lock()

    # -- index -----------------------------------------------------------------------------

    def _build(self) -> _Index:
        corpus, doc_entry, doc_bigrams = [], [], []
        seen: dict[str, list[str]] = {}  # text -> its tokens, for the classifier's fit
        for i, entry in enumerate(self.entries):
            for text in (entry.title, *entry.phrasings):
                toks = seen[text] = tokens(text, self.synonyms)
                if not toks:
                    continue
                corpus.append(toks)
                doc_entry.append(i)
                doc_bigrams.append(_bigrams(self.synonyms.text(normalize(text)).replace(" ", "")))
        bm25 = BM25Okapi(corpus)
        n = len(corpus)
        max_idf = math.log((n + 0.5) / 0.5)
        postings: dict[str, list[tuple[int, float]]] = {}
        for d, freqs in enumerate(bm25.doc_freqs):  # rank_bm25's per-document term factor
            norm_len = bm25.k1 * (1 - bm25.b + bm25.b * bm25.doc_len[d] / bm25.avgdl)
            for word, tf in freqs.items():
                postings.setdefault(word, []).append((d, tf * (bm25.k1 + 1) / (tf + norm_len)))
        bigram_docs: dict[str, list[int]] = {}
        for d, grams in enumerate(doc_bigrams):
            for g in grams:
                bigram_docs.setdefault(g, []).append(d)
        starts = [d for d in range(n) if d == 0 or doc_entry[d] != doc_entry[d - 1]]
        if [doc_entry[d] for d in starts] != list(range(len(self.entries))):
            raise ValueError("every FAQ entry needs a title with a word")
        position = {e.id: i for i, e in enumerate(self.entries)}
        learned = [(text, i) for i, e in enumerate(self.entries) for text in (e.title, *e.phrasings)]
        learned += [(text, position[want]) for text, want in self.training]
        classifier = _Classifier.fit(
            [(self._read(normalize(text)),
              self._repaired(seen[text] if text in seen else tokens(text, self.synonyms), bm25.idf))
             for text, _ in learned],
            [i for _, i in learned], len(self.entries))
        return _Index(classifier=classifier, 
            bm25=bm25, doc_entry=doc_entry, doc_bigrams=doc_bigrams, max_idf=max_idf,
            entry_count=len(self.entries),
            postings={w: (np.array([d for d, _ in p]), np.array([x for _, x in p]))
                      for w, p in postings.items()},
            bigram_docs={g: np.array(ds) for g, ds in bigram_docs.items()},
            doc_gram_count=np.array([len(g) for g in doc_bigrams], dtype=float),
            entry_start=np.array(starts))

    @property
    def index(self) -> _Index:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build()
        return self._index

    # -- search ----------------------------------------------------------------------------

    def words(self, text: str) -> list[str]:
        """The query's words as the index reads them (tokens, then repaired against its
        vocabulary)."""
        return self._repaired(tokens(text, self.synonyms), self.index.bm25.idf)

    def _repaired(self, toks: list[str], idf: Mapping) -> list[str]:
        return [w for word in toks for w in _repair(word, idf, self.synonyms)
                if w in idf or not w.isdigit() or len(w) > 2]  # 12月, 1月 say nothing; 120 or a phone does

    def _read(self, norm: str) -> str:
        """The normalised text with its variants read as canonical words, spaces dropped."""
        return self.synonyms.text(norm).replace(" ", "")

    def search(self, text: str, k: int = 3, *, tier: str | None = None) -> list[tuple[str, float]]:
        """The k best entries for the text, as (entry_id, score), best first. The score is
        roughly in [0, 1]; `tier` (the customer's tier code) slightly favours entries about it.
        Only entries the text shares a word, a bigram or a cue with are listed (the classifier
        alone scores every entry a little, chatter too)."""
        scored = self._scores(text, tier)
        if scored is None:
            return []
        best, rule = scored
        ranked = [i for i in sorted(range(len(best)), key=lambda i: -best[i])
                  if best[i] > 0 and rule[i] > 0][:k]
        return [(self.entries[i].id, round(best[i], 4)) for i in ranked]

    def top(self, text: str, *, tier: str | None = None) -> tuple[str | None, float]:
        """The best entry and its score, or (None, 0.0) when two entries tie, on the final
        score or on the rule score (服务 alone matches 陪同服务 and 基础服务 alike: what the
        classifier leans to does not settle it)."""
        scored = self._scores(text, tier)
        if scored is None:
            return None, 0.0
        best, rule = scored
        first, second = sorted(range(len(best)), key=lambda i: -best[i])[:2]
        if best[first] <= 0 or best[second] >= best[first]:
            return None, 0.0
        if self.RULE_TIES:
            top_rule = max(rule)
            tied = [i for i, r in enumerate(rule) if r == top_rule]
            if top_rule > 0 and len(tied) > 1:
                return None, 0.0
        return self.entries[first].id, round(best[first], 4)

    def _scores(self, text: str, tier: str | None) -> tuple[list[float], list[float]] | None:
        """Each entry's final score and its rule score (words, bigrams, cues, shapes)."""
        idx = self.index
        norm = normalize(text)
        if not norm:
            return None
        query = self.words(text)
        k1 = idx.bm25.k1
        # The best a document could score on this query: every word found once in a short
        # document. Words the index has never seen count at the highest idf, so a query
        # about something else scores low instead of being judged on its one known word.
        ceiling = sum(idx.bm25.idf.get(w, idx.max_idf * self.UNKNOWN_WEIGHT) for w in query) * (k1 + 1) / (1 + k1 * 0.75) \
            if query else 1.0
        n = len(idx.doc_entry)
        bm25 = np.zeros(n)
        for w in query:  # BM25Okapi.get_scores, over the documents that have the word
            if w in idx.postings:
                docs, factors = idx.postings[w]
                bm25[docs] += (idx.bm25.idf.get(w) or 0.0) * factors
        qgrams = _bigrams(self.synonyms.text(norm).replace(" ", ""))
        hit = [idx.bigram_docs[g] for g in qgrams if g in idx.bigram_docs]
        common = np.bincount(np.concatenate(hit), minlength=n) if hit else np.zeros(n)
        overlap = 2 * common / (len(qgrams) + idx.doc_gram_count)
        scores = (self.BM25_WEIGHT * np.minimum(bm25 / ceiling, 1.0)
                  + self.BIGRAM_WEIGHT * overlap)
        rule = np.maximum.reduceat(scores, idx.entry_start)
        learned = (idx.classifier.scores(self._read(norm), query) if idx.classifier is not None
                   else np.zeros(idx.entry_count))
        for members in self._groups:  # which tier: the rule's and the customer's to say first
            top = learned[members].max()
            learned[members] = top - self.GROUP_OWN * (top - learned[members])
        # What `requires` reads: the text with its long variants replaced, and its words with
        # the one-character variants read too (痛 as 疼 when jieba yields it whole).
        read = self._read(norm) + "|" + "|".join(query)
        cue_text = norm + "|" + read
        best, rules = [0.0] * idx.entry_count, [0.0] * idx.entry_count
        for i, entry in enumerate(self.entries):
            r = float(rule[i])
            if any(c.search(cue_text) for c in entry.cues):
                r = r * self.CUE_BOOST + self.CUE_BONUS
            fits = entry.fits(read)
            if fits is not None:
                r *= self.FIT_BOOST if entry.fit_boost is None else entry.fit_boost
            score = (1 - self.CLASSIFIER_WEIGHT) * r + self.CLASSIFIER_WEIGHT * float(learned[i])
            if fits is False:  # a question of another shape (a tier named, no service)
                r = score = 0.0
            if tier and tier in entry.tier:
                score, r = score * self.TIER_BOOST, r * self.TIER_BOOST
            best[i], rules[i] = score, round(r, 9)
        return best, rules

    def best(self, text: str, *, tier: str | None = None) -> str | None:
        """The entry that answers the text, or None when no entry is confident enough or two
        entries tie (`top`), or when the message names nothing (什么意思？: small talk "vague")."""
        if self.smalltalk(text) == "vague":
            return None
        entry_id, score = self.top(text, tier=tier)
        return entry_id if entry_id is not None and score >= self.THRESHOLD else None

    # -- small talk ------------------------------------------------------------------------

    def smalltalk(self, text: str) -> str | None:
        """The small-talk id (thanks, bye, hello, robot, ok, vague) when the whole message is small
        talk (trailing particles and repeats allowed: 谢谢啦, 好的好的), else None."""
        norm = normalize(text)
        if not norm or len(norm) > 12:
            return None
        if norm in self._smalltalk_words:
            return self._smalltalk_words[norm]
        stripped = norm.rstrip("啊呀啦哈哦呢吧嘛~")
        if stripped in self._smalltalk_words:
            return self._smalltalk_words[stripped]
        for word in sorted(self._smalltalk_words, key=len, reverse=True):
            if len(word) >= 2 and norm.replace(word, "") == "":
                return self._smalltalk_words[word]
        return None

    # -- answers ---------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Every entry's id, in the file's order."""
        return list(self._by_id)

    def entry(self, entry_id: str) -> Entry:
        return self._by_id[entry_id]

    def titles(self, entry_ids: list[str]) -> list[str]:
        return [self._by_id[i].title for i in entry_ids]

    def answer(self, entry_id: str, **facts) -> str:
        """The rendered answer. Facts the entry lists (`facts` in faq.toml) must be supplied;
        see `rules_facts`. The entry's own `tier` codes are passed as `entry_tiers`."""
        entry = self._by_id[entry_id]
        missing = [f for f in entry.facts if f not in facts]
        if missing:
            raise KeyError(f"FAQ {entry_id} needs facts {missing}")
        return render(entry.template, entry_tiers=list(entry.tier),
                      **{**asked("", facts), **facts})


def smalltalk_answer(smalltalk_id: str, **ctx) -> str:
    return render(f"smalltalk/{smalltalk_id}", **ctx)


def rules_facts(rules: Mapping) -> dict:
    """The facts FAQ answers need, from the parsed rules.toml mapping (tomllib.load)."""
    tiers = [{"code": t["code"], "name": t["name"], "threshold": t["threshold"]}
             for t in rules.get("tiers", [])]
    contribution = rules.get("contribution", {})
    reviews = []
    for mmdd in rules.get("reviews", {}).get("downgrade_dates", []):
        month, day = mmdd.split("-")
        reviews.append(f"{int(month)}月{int(day)}日")
    services = []
    for s in rules.get("services", []):
        services.append({
            "code": s["code"], "name": s["name"], "tiers": list(s.get("tiers", [])),
            "quota": s.get("quota"), "family": bool(s.get("family")),
            "packages": [dict(p) for p in s.get("packages", [])],
            "choices": list(s.get("choices", [])),
            "named_expert_tiers": list(s.get("named_expert_tiers", [])),
        })
    basic = rules.get("basic_services", {})
    return {
        "tiers": tiers,
        "weights": {k: float(v) for k, v in contribution.get("weights", {}).items()},
        "tail_years": contribution["tail_years"],
        "single_years": contribution["single_premium_payment_years"],
        "reviews": reviews,
        "services": services,
        "basic_services": {"tiers": list(basic.get("tiers", [])), "items": list(basic.get("items", []))},
        "festival_months": list(rules["festival"]["months"]),
    }


_CAN = re.compile(r"能|可以|可不可以|可否|让不让|允许")


def asked(text: str, facts: Mapping, *, held: str | None = None,
          service: str | None = None) -> dict:
    """What a question names, for the answers that depend on it (a tier has a service,
    tiers compared): the tier codes in the order the text names them (黄金, 铂金…), the held
    tier, the service code the caller read from it, and whether it asks "can" (能/可以:
    the answer then starts with 可以/不可以 rather than 有/没有)."""
    norm = normalize(text)
    found = sorted(((norm.find(t["name"]), t["code"]) for t in facts.get("tiers", [])
                    if t["name"] and t["name"] in norm), key=lambda hit: hit[0])
    return {"asked_tiers": [code for _, code in found], "held_tier": held,
            "asked_service": service, "asked_can": bool(_CAN.search(norm))}


@lru_cache(maxsize=1)
def default() -> Faq:
    """The FAQ built from faq.toml, shared by the process."""
    return Faq()


def warm() -> float:
    """Load jieba, build the FAQ index and the emergency vocabulary; return jieba's load time.
    Call once at start-up."""
    from bot.conversation import emergency
    seconds = _load_jieba()
    default().index
    emergency.warm()
    return seconds
