"""Semantic drift of production questions: a kernel two-sample test on embeddings, explained by topic clusters.

Pure statistics, no storage (`DriftMonitor` in ``_drift_monitor.py`` is the stored side):

>>> detector = DriftDetector()                                              # doctest: +SKIP
>>> result = detector.test(reference_vecs, reference_texts, current_vecs, current_texts)  # doctest: +SKIP
>>> result.summary()                                                        # doctest: +SKIP
"drift (p=0.002): grew 'password, laptop, security' +38% (new)"
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DriftDetector", "DriftResult", "TopicCluster", "explain_drift", "mmd_permutation_test"]

Matrix = npt.NDArray[np.floating[Any]]

MIN_ROWS = 10  # fewer points per sample and neither the test nor the clusters mean anything
NEW_SHARE = 0.02  # a cluster holding less than this share of the reference window is a new topic
NEIGHBOURS = 10  # nearest neighbours that decide whether a question belongs to an emerging topic
_WORD = re.compile(r"[a-z][a-z0-9]+")
# Words of questions in general that scikit-learn's English stop words lack.
_QUESTION_WORDS = frozenset({"does", "did", "doing", "get", "gets", "got", "need", "needs", "use", "used", "happens"})


def mmd_permutation_test(
    reference: Matrix, current: Matrix, *, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The unbiased MMD² between two samples and its permutation p-value ``(b + 1) / (B + 1)``.

    The kernel is Gaussian, ``exp(-‖x - y‖² / (2σ²))``, with σ the median pairwise distance of the pooled sample
    (the median heuristic). The pooled kernel matrix is computed once; each permutation is a relabelling, evaluated
    for all permutations at once as quadratic forms of 0/1 membership rows (300 + 100 points of 384 dimensions with
    500 permutations take 15-40 ms on two busy cores).
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"two samples of the same dimension are needed, got shapes {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"each sample needs at least 2 points, got {n} and {m}")
    pooled = np.concatenate([x, y])
    squared = np.einsum("ij,ij->i", pooled, pooled)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * (pooled @ pooled.T), 0.0)
    off_diagonal = distances[np.triu_indices(n + m, k=1)]
    median = float(np.median(off_diagonal))
    if median <= 0.0:  # most points coincide: fall back to the mean so the kernel is not degenerate
        median = float(off_diagonal.mean()) or 1.0
    kernel = np.exp(-distances / (2.0 * median))
    row_sums = kernel.sum(axis=1)
    total = float(row_sums.sum())

    def statistics(members: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # members: (P, n + m) rows with 1 where a point is in the first sample, a. With r = K·1 and T = 1ᵀK1:
        # Σ_xx = aᵀKa, Σ_xy = aᵀr - aᵀKa, Σ_yy = T - 2aᵀr + aᵀKa; the Gaussian kernel's diagonal (1) is left out
        # of the within-sample sums. One matrix product serves every permutation.
        within_x = np.einsum("pi,pi->p", members @ kernel, members)
        to_all = members @ row_sums
        result: npt.NDArray[np.float64] = (
            (within_x - n) / (n * (n - 1))
            + (total - 2.0 * to_all + within_x - m) / (m * (m - 1))
            - 2.0 * (to_all - within_x) / (n * m)
        )
        return result

    labelling = np.zeros(n + m)
    labelling[:n] = 1.0
    observed = float(statistics(labelling[None, :])[0])
    if permutations <= 0:
        return observed, 1.0
    exceed = 0
    for start in range(0, permutations, 256):  # bounded memory for large permutation counts
        members = rng.permuted(np.tile(labelling, (min(256, permutations - start), 1)), axis=1)
        exceed += int(np.count_nonzero(statistics(members) >= observed - 1e-12))
    return observed, (exceed + 1) / (permutations + 1)


@dataclass
class TopicCluster:
    """A topic of the pooled questions: its words, its share of each window, and typical current questions."""

    terms: list[str]
    reference_share: float
    current_share: float
    growth: float  # current_share - reference_share
    new: bool  # (almost) absent from the reference window
    examples: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftResult:
    """The outcome of one drift test; ``clusters`` (sorted by growth, largest first) only when it drifted."""

    statistic: float
    p_value: float
    alpha: float
    drifted: bool
    reference_size: int
    window_size: int
    clusters: list[TopicCluster] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "drifted": self.drifted,
            "significant": self.significant,
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "clusters": [c.to_dict() for c in self.clusters],
            "summary": self.summary(),
        }

    @property
    def significant(self) -> bool:
        """This test alone rejects "same distribution" at ``alpha`` (a repeated check also needs confirming)."""
        return self.p_value < self.alpha

    def summary(self) -> str:
        """One line: ``drift (p=0.002): grew 'password, laptop, security' +38% (new)`` or ``no drift (p=0.41)``."""
        if not self.drifted:
            if self.significant:
                return f"possible drift (p={self.p_value:.2g}), not yet confirmed by the next check"
            return f"no drift (p={self.p_value:.2g})"
        head = f"drift (p={self.p_value:.2g})"
        if not self.clusters or self.clusters[0].growth <= 0:
            return head
        top = self.clusters[0]
        terms = ", ".join(top.terms[:3]) or "(no distinctive words)"
        return f"{head}: grew '{terms}' {top.growth * 100:+.0f}%" + (" (new)" if top.new else "")


class DriftDetector:
    """Tests whether the current window of questions comes from the same distribution as the reference window.

    A test is *significant* when the permutation MMD test (`mmd_permutation_test`) gives ``p_value < alpha``. A
    one-off test has drifted when it is significant. A monitor that checks a sliding window again and again passes
    ``prior_significant`` (how many checks just before this one were significant): the stream has drifted only once
    ``confirmations`` checks in a row were significant. When it drifted, the pooled questions are clustered and each
    topic's growth reported (`explain_drift`). Results are deterministic: every test draws its permutations from a
    generator seeded with ``seed``.

    Why confirmation: a monitor spends the false-alarm probability again at every check. Measured with the bundled
    MiniLM embedder on the 110 handbook questions (reference 150, window 50, a check every 20 questions;
    ``tests/integration/test_drift_simulation.py``): false alarms over 300 streams of 1,000 questions drawn from five
    topics (999 permutations); detection over 200 streams whose last 200 of 600 questions are 40% a sixth topic
    (500 permutations, the delay counted from the shift):

    ======================  ===============  ===================  ==========================================
    rule                    false alarms     runs of 41 checks    new topic reported within 100 / 200
                            per check        with a false alarm   questions (median delay)
    ======================  ===============  ===================  ==========================================
    p < 0.01, once          0.86%            25.7%                99.0% / 99.5% (40)
    p < 0.005, once         0.42%            12.0%                93.5% / 97.0% (40)
    p < 0.01, twice in row  0.10%            2.7%                 88.5% / 93.5% (60)  <- the default
    p < 0.02, twice in row  0.23%            6.0%                 92.5% / 96.5% (60)
    ======================  ===============  ===================  ==========================================

    Two in a row is far rarer than one (overlapping windows make successive tests correlated, so not alpha²), at the
    price of one more check of delay. Confirmation assumes successive checks see fresh questions: `DriftMonitor`
    counts a check that sees fewer than a fifth of its window new as a repeat of the previous one. One MMD test of
    300 + 100 questions of 384 dimensions with 500 permutations takes 15-40 ms; an explanation 0.1-0.4 s.
    """

    def __init__(self, alpha: float = 0.01, permutations: int = 500, seed: int = 0, confirmations: int = 2) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        if permutations < 1:
            raise ValueError(f"permutations must be at least 1, got {permutations}")
        if 1.0 / (permutations + 1) >= alpha:
            raise ValueError(f"{permutations} permutations cannot give a p-value below alpha={alpha}; use more")
        if confirmations < 1:
            raise ValueError(f"confirmations must be at least 1, got {confirmations}")
        self.alpha = alpha
        self.permutations = permutations
        self.seed = seed
        self.confirmations = confirmations

    def test(
        self,
        reference_vecs: Matrix,
        reference_texts: list[str],
        current_vecs: Matrix,
        current_texts: list[str],
        *,
        prior_significant: int | None = None,
    ) -> DriftResult:
        """Test the current window against the reference; explain it with topic clusters if it drifted.

        ``prior_significant``: for a repeated check, how many checks of the same stream just before this one were
        significant (``None``, the default, for a one-off test, which drifted when it is significant).
        """
        reference = _validated("reference", reference_vecs, reference_texts)
        current = _validated("current", current_vecs, current_texts)
        if reference.shape[1] != current.shape[1]:
            raise ValueError(
                f"reference vectors have {reference.shape[1]} dimensions and current vectors {current.shape[1]}: "
                "both windows must come from the same embedding model"
            )
        rng = np.random.default_rng(self.seed)
        statistic, p_value = mmd_permutation_test(reference, current, permutations=self.permutations, rng=rng)
        significant = p_value < self.alpha
        drifted = significant and (prior_significant is None or prior_significant + 1 >= self.confirmations)
        clusters = explain_drift(reference, reference_texts, current, current_texts, seed=self.seed) if drifted else []
        return DriftResult(
            statistic=statistic,
            p_value=p_value,
            alpha=self.alpha,
            drifted=drifted,
            reference_size=len(reference),
            window_size=len(current),
            clusters=clusters,
        )


def explain_drift(
    reference_vecs: Matrix,
    reference_texts: list[str],
    current_vecs: Matrix,
    current_texts: list[str],
    *,
    max_clusters: int = 8,
    examples: int = 3,
    seed: int = 0,
) -> list[TopicCluster]:
    """Cluster the pooled questions into topics and say how each topic's share changed, largest growth first.

    Plain k-means over the pooled questions rarely isolates what is new: a new topic is a small part of the pool
    and its questions are spread out, so k-means shares it out among the old topics. So the questions that sit
    among more current neighbours than chance allows (of their 10 nearest neighbours, a count a binomial tail puts
    below 10%) are grouped apart, as the *emerging* topic; the others are clustered by k-means (k up to
    ``max_clusters - 1``, chosen by silhouette); then every question joins its nearest topic centre once. Measured
    at the 187 detections of the handbook simulation (see `DriftDetector`), against k-means alone this raised the
    growing cluster's share of new-topic questions from 56% to 80%, its growth from 0.20 to 0.30 (of a true 0.4),
    and the detections whose top three words include two that only the new topic's questions use from 51% to 80%.

    A topic's ``terms`` are its five most distinctive words (lower-cased, stop words removed): words of many of its
    distinct questions and few of the others'. Its ``examples`` are the distinct current questions nearest its
    centre.
    """
    reference = _validated("reference", reference_vecs, reference_texts)
    current = _validated("current", current_vecs, current_texts)
    pooled = _unit(np.concatenate([reference, current]))
    texts = [*reference_texts, *current_texts]
    in_reference = np.arange(len(pooled)) < len(reference)
    labels, centres = _topics(pooled, ~in_reference, max(max_clusters, 2), seed)
    terms = _distinctive_terms(texts, labels, len(centres))
    clusters: list[TopicCluster] = []
    for c, centre in enumerate(centres):
        members = labels == c
        reference_share = float(np.count_nonzero(members & in_reference)) / len(reference)
        current_share = float(np.count_nonzero(members & ~in_reference)) / len(current)
        clusters.append(
            TopicCluster(
                terms=terms[c],
                reference_share=round(reference_share, 4),
                current_share=round(current_share, 4),
                growth=round(current_share - reference_share, 4),
                new=reference_share < NEW_SHARE,
                examples=_examples(pooled, texts, members & ~in_reference, centre, examples),
            )
        )
    clusters.sort(key=lambda cluster: cluster.growth, reverse=True)
    return clusters


def _validated(name: str, vectors: Matrix, texts: list[str]) -> npt.NDArray[np.float64]:
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} vectors must be a 2-D array (one row per question), got shape {array.shape}")
    if len(array) < MIN_ROWS:
        raise ValueError(f"the {name} window needs at least {MIN_ROWS} questions, got {len(array)}")
    if len(texts) != len(array):
        raise ValueError(f"{len(array)} {name} vectors but {len(texts)} {name} texts: they must pair up")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} vectors hold NaN or infinite values")
    return array


def _unit(vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: npt.NDArray[np.float64] = vectors / np.where(norms == 0.0, 1.0, norms)
    return unit


def _topics(
    vectors: npt.NDArray[np.float64], current: npt.NDArray[np.bool_], max_clusters: int, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Labels and unit centres: the emerging group (if any), k-means of the rest, one nearest-centre pass."""
    emerging = _emerging(vectors, current)
    if emerging.sum() < 2 or (~emerging).sum() < 2:
        emerging[:] = False
    labels = np.zeros(len(vectors), dtype=np.intp)
    rest, _ = _kmeans(vectors[~emerging], max_clusters - int(emerging.any()), seed)
    labels[~emerging] = rest + int(emerging.any())
    centres = _centres(vectors, labels)
    labels = np.argmax(vectors @ centres.T, axis=1).astype(np.intp)
    kept = np.unique(labels)  # a centre that lost all its questions is dropped
    labels = np.searchsorted(kept, labels).astype(np.intp)
    return labels, _centres(vectors, labels)


def _emerging(vectors: npt.NDArray[np.float64], current: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Questions with more current questions among their nearest neighbours than chance (binomial tail < 10%)."""
    neighbours = min(NEIGHBOURS, len(vectors) - 1)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, neighbours - 1, axis=1)[:, :neighbours]
    counts = current[nearest].sum(axis=1)
    chance = (current.sum() - current.astype(float)) / (len(vectors) - 1)  # a point is not its own neighbour
    threshold = np.array([_binomial_threshold(neighbours, float(b), 0.1) for b in chance])
    emerging: npt.NDArray[np.bool_] = counts >= threshold
    return emerging


def _binomial_threshold(trials: int, probability: float, tail: float) -> int:
    """The smallest count c with P(Binomial(trials, probability) >= c) < tail."""
    survival = 1.0
    for c in range(trials + 1):
        if survival < tail:
            return c
        survival -= math.comb(trials, c) * probability**c * (1 - probability) ** (trials - c)
    return trials + 1


def _centres(vectors: npt.NDArray[np.float64], labels: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    centres = np.stack([vectors[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
    return _unit(centres)


def _kmeans(vectors: npt.NDArray[np.float64], max_clusters: int, seed: int) -> tuple[npt.NDArray[np.intp], int]:
    """k-means for each k in 2..max_clusters; the labelling with the best silhouette wins."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    distinct = len(np.unique(vectors.round(6), axis=0))
    best: tuple[float, npt.NDArray[np.intp], int] | None = None
    # One OpenMP thread: a few hundred points cluster in milliseconds, and on a busy machine k-means' thread pool
    # spinning against other work made it ten times slower (measured: 0.3 s against 0.03 s per fit on 2 cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        for k in range(2, min(max_clusters, distinct - 1) + 1):
            model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
            labels = np.asarray(model.labels_, dtype=np.intp)
            score = float(silhouette_score(vectors, labels))
            if best is None or score > best[0]:
                best = (score, labels, k)
    if best is None:  # too few distinct questions to split: one topic
        return np.zeros(len(vectors), dtype=np.intp), 1
    return best[1], best[2]


def _words(text: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS and w not in _QUESTION_WORDS}


def _distinctive_terms(texts: list[str], labels: npt.NDArray[np.intp], k: int, top: int = 5) -> list[list[str]]:
    """Per cluster, the words with the highest ``p_in · log(p_in / p_out)`` (document frequencies, smoothed).

    Each distinct question counts once: a question asked ten times would otherwise make its rare words look like
    the words of a topic.
    """
    distinct = dict.fromkeys(zip(texts, labels.tolist(), strict=True))
    documents = [_words(text) for text, _ in distinct]
    owners = [label for _, label in distinct]
    total = Counter(w for d in documents for w in d)
    result: list[list[str]] = []
    for c in range(k):
        members = [d for d, label in zip(documents, owners, strict=True) if label == c]
        inside = Counter(w for d in members for w in d)
        size, rest = len(members), len(documents) - len(members)
        scored: list[tuple[float, str]] = []
        for word, count in inside.items():
            if count < 2 and size > 2:
                continue  # a word of a single question says nothing about a topic
            p_in = count / size
            p_out = (total[word] - count + 0.5) / (rest + 1.0)
            scored.append((p_in * np.log(p_in / p_out), word))
        scored.sort(key=lambda item: (-item[0], item[1]))
        result.append([word for score, word in scored[:top] if score > 0])
    return result


def _examples(
    vectors: npt.NDArray[np.float64], texts: list[str], members: npt.NDArray[np.bool_], centre: Matrix, count: int
) -> list[str]:
    """The distinct member texts nearest the centre."""
    indices = np.flatnonzero(members)
    order = indices[np.argsort(np.linalg.norm(_unit(vectors[indices]) - centre, axis=1), kind="stable")]
    chosen: list[str] = []
    for i in order:
        if texts[i] not in chosen:
            chosen.append(texts[i])
        if len(chosen) == count:
            break
    return chosen
