"""The arena's leaderboard: per configuration its tally, a Bradley-Terry rating, and how sure that rating is.

Bradley-Terry says configuration i beats j with probability p_i / (p_i + p_j). It is
fitted by maximum likelihood (Newton's method), ties (and both-bad) counting as half a
win each way. With a handful of votes the plain fit runs off to infinity for a configuration
that never lost, so every configuration also plays one virtual tied game against a
fixed reference of strength 1: a weak prior that keeps every rating finite and pulls
thin evidence toward the middle, and that a few real votes outweigh.

Ratings are shown on the Elo scale (1000 = the reference, +400 = ten times the odds).
The 95% interval is the 2.5-97.5 percentile range of the ratings refitted on votes
resampled with replacement (a fixed seed, so one set of votes always shows the same
table). Two configurations are ranked apart only when the interval of their rating
*difference*, from the same resamples, leaves out zero: that is the question a reader
asks, and it is sharper than asking whether two separate intervals overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chatbot.eval.votes import Outcome, Vote

RESAMPLES = 1000
SEED = 0
PRIOR_GAMES = 1.0  # virtual tied games against the reference, per configuration
# Below this many votes a configuration is not ranked whatever its interval says: with unanimous votes every
# resample is the same and the bootstrap interval collapses to a point (5 wins out of 5 is still a coin
# flip's 1 in 16 for the pair, both ways).
MIN_VOTES = 10
ELO = 400 / np.log(10)
BASE_RATING = 1000.0


@dataclass(frozen=True)
class Standing:
    """One configuration's row of the leaderboard."""

    label: str
    votes: int
    wins: int
    losses: int
    ties: int
    both_bad: int
    rating: float
    low: float
    high: float

    @property
    def win_rate(self) -> float:
        """Share of its votes won, a tie or both-bad counting half."""
        return (self.wins + (self.ties + self.both_bad) / 2) / self.votes if self.votes else 0.0


@dataclass(frozen=True)
class Leaderboard:
    """Standings, best rating first, and the note that says what the votes can rank."""

    standings: list[Standing]
    apart: set[tuple[str, str]]  # (better, worse) label pairs whose difference's interval leaves out 0
    votes: int
    note: str

    def rows(self) -> list[dict[str, object]]:
        """The table as plain rows (for a data frame or JSON)."""
        return [
            {
                "rank": 1 + sum(worse == s.label for _, worse in self.apart),  # 1 + how many are surely better
                "configuration": s.label,
                "votes": s.votes,
                "wins": s.wins,
                "losses": s.losses,
                "ties": s.ties,
                "both bad": s.both_bad,
                "win rate": round(s.win_rate, 3),
                "rating": round(s.rating),
                "95% interval": f"{s.low:.0f} to {s.high:.0f}",
            }
            for s in self.standings
        ]


def fit(wins: np.ndarray, *, prior: float = PRIOR_GAMES, tolerance: float = 1e-9, limit: int = 100) -> np.ndarray:
    """Bradley-Terry log-strengths from `wins[..., i, j]` (what i scored against j); any leading batch axes.

    Newton's method on the log-likelihood (concave; strictly so with the prior games), steps capped at 1
    so a lopsided start cannot overshoot: a dozen steps, where the MM iteration takes thousands once the
    ratings spread out.
    """
    games = wins + np.swapaxes(wins, -1, -2)
    scored = wins.sum(axis=-1) + prior / 2
    theta = np.zeros(wins.shape[:-1])
    ridge = 1e-9 * np.eye(wins.shape[-1])  # without a prior only differences are defined: pin the common shift
    for _ in range(limit):
        beats = 1 / (1 + np.exp(theta[..., None, :] - theta[..., :, None]))  # P(i beats j)
        vs_reference = 1 / (1 + np.exp(-theta))
        gradient = scored - (games * beats).sum(axis=-1) - prior * vs_reference
        weight = games * beats * (1 - beats)
        curvature = weight.sum(axis=-1) + prior * vs_reference * (1 - vs_reference)
        hessian = weight - np.einsum("...i,ij->...ij", curvature, np.eye(wins.shape[-1])) - ridge
        step = np.clip(np.linalg.solve(hessian, gradient[..., None])[..., 0], -1, 1)
        theta = theta - step
        if np.max(np.abs(step)) < tolerance:
            break
    return theta


def leaderboard(votes: Sequence[Vote], *, resamples: int = RESAMPLES, seed: int = SEED) -> Leaderboard:
    """The leaderboard of `votes`: tallies, ratings, 95% bootstrap intervals and what can be ranked."""
    labels = sorted({side.label for vote in votes for side in (vote.a, vote.b)})
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    # One k x k matrix per vote: what each side scored against the other (a vote of a label against itself
    # says nothing about it and is left out).
    per_vote = np.zeros((len(votes), k, k))
    for n, vote in enumerate(votes):
        i, j = index[vote.a.label], index[vote.b.label]
        if i != j:
            per_vote[n, i, j], per_vote[n, j, i] = vote.outcome.score_a, 1 - vote.outcome.score_a
    if not votes:
        return Leaderboard([], set(), 0, "No votes yet: vote on a few questions to rank the configurations.")
    ratings = BASE_RATING + ELO * fit(per_vote.sum(axis=0))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(votes), np.full(len(votes), 1 / len(votes)), size=resamples)
    resampled = BASE_RATING + ELO * fit(np.einsum("bn,nij->bij", counts, per_vote))
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    standings = [
        Standing(label, *_tally(votes, label), float(ratings[i]), float(low[i]), float(high[i]))
        for i, label in enumerate(labels)
    ]
    standings.sort(key=lambda s: -s.rating)
    apart = set()
    for better in standings:
        for worse in standings:
            ahead = resampled[:, index[better.label]] - resampled[:, index[worse.label]]
            enough = min(better.votes, worse.votes) >= MIN_VOTES
            if enough and better.rating > worse.rating and np.percentile(ahead, 2.5) > 0:
                apart.add((better.label, worse.label))
    return Leaderboard(standings, apart, len(votes), ranking_note(standings, apart, len(votes)))


def _tally(votes: Sequence[Vote], label: str) -> tuple[int, int, int, int, int]:
    """(votes, wins, losses, ties, both bad) of `label`, over the votes where it met another label."""
    wins = losses = ties = both_bad = 0
    for vote in votes:
        if vote.a.label == vote.b.label or label not in (vote.a.label, vote.b.label):
            continue
        if vote.outcome is Outcome.TIE:
            ties += 1
        elif vote.outcome is Outcome.BOTH_BAD:
            both_bad += 1
        elif (vote.outcome is Outcome.A) == (vote.a.label == label):
            wins += 1
        else:
            losses += 1
    return wins + losses + ties + both_bad, wins, losses, ties, both_bad


def ranking_note(standings: Sequence[Standing], apart: set[tuple[str, str]], votes: int) -> str:
    """In words: which configurations the votes rank apart, and which are too close to call."""
    few = [s.label for s in standings if s.votes < MIN_VOTES]
    short = f" Fewer than {MIN_VOTES} votes: {', '.join(map(repr, few))}." if few else ""
    if len(standings) < 2:
        return "One configuration only: pick at least two to compare."
    if not apart:
        return (
            f"Too wide to rank: with {votes} vote{'s' if votes != 1 else ''} no two configurations are apart at 95% "
            f"(the bootstrap interval of their rating difference holds 0, or one has too few votes).{short} "
            "Vote more to tell them apart."
        )
    order = [s.label for s in standings]
    close = [(x, y) for n, x in enumerate(order) for y in order[n + 1 :] if (x, y) not in apart]
    if not close:
        return "Ranked at 95%: " + " > ".join(map(repr, order)) + "." + short
    ahead = [(x, [y for y in order[n + 1 :] if (x, y) in apart]) for n, x in enumerate(order)]
    ranked = "; ".join(f"{x!r} is ahead of {', '.join(map(repr, below))}" for x, below in ahead if below)
    pairs = "; ".join(f"{x!r} and {y!r}" for x, y in close)
    return f"Ranked at 95%: {ranked}. Too close to rank: {pairs} (their intervals overlap too much: vote more).{short}"


__all__ = ["Leaderboard", "Standing", "fit", "leaderboard", "ranking_note"]
