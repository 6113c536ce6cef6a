"""False integration-health alerts per model per 30 days, and detection delays, of the default
``health:`` configuration.

Pure: seeded window counts are shown to the real :class:`~driftline.streams.integration_health.ModelHealth`
(``judge_counts`` at the provisional phase, ``judge_labels`` at the final one, exactly what
``HealthMonitor.judge`` calls per closed window), and its verdicts go through the alert
lifecycle's rule for health alerts (``for_windows`` and ``clear_windows`` of 1: an alert fires
at a verdict with an event after one without, per alert and slice). No broker, no merger.

Rows:

* false alerts per model per 30 days (8640 windows of 5 minutes, 1000 predictions a window),
  counting every slice and every health alert, on stationary traffic: Poisson counts,
  overdispersed (negative binomial, variance 3x the mean) and a daily cycle (Poisson at a rate
  1000 · (1 + 0.3 sin(2 pi t / 1 day))); with the model as one slice, and with two segment
  dimensions of two values each (5 slices; each prediction's values drawn independently, so a
  segment value gets about 500); every prediction labelled with probability 0.9;
* detection delay (windows from the first changed window to the model's first alert) of a
  drop to 50 % and to 0 % of the volume (``volume-out-of-band`` or ``no-predictions``), a
  doubling, and a coverage fall from 0.9 to 0.5 (``label-coverage-low`` or
  ``label-coverage-falling``, counted in final windows), on the overdispersed and the daily
  traffic with 5 slices, at a seeded random point of the day after a day of history.

    .venv/bin/python benchmarks/health_alarms.py [--trials 3] [--delay-trials 40] [--seed 17]

Prints a Markdown table (committed as ``benchmarks/HEALTH.md``).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from driftline.platform.config import HealthConfig
from driftline.streams.integration_health import ModelHealth, alert_of

WINDOW_MS = 300_000
WINDOWS_PER_DAY = 86_400_000 // WINDOW_MS  # 288
DAYS = 30
EVENTS = 1000
COVERAGE = 0.9
#: slice keys of the 2 x 2 cells (region, channel) each with two values
CELLS = (("eu", "web"), ("eu", "app"), ("us", "web"), ("us", "app"))

Rate = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def poisson(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    return g.poisson(EVENTS, t.size)


def overdispersed(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    # negative binomial of mean m and variance 3 m: p = 1/3, r = m p / (1 - p)
    return g.negative_binomial(EVENTS * 0.5, 1 / 3, t.size)


def diurnal(g: np.random.Generator, t: np.ndarray) -> np.ndarray:
    return g.poisson(EVENTS * (1 + 0.3 * np.sin(2 * np.pi * t / WINDOWS_PER_DAY)))


TRAFFIC: dict[str, Rate] = {
    "Poisson": poisson,
    "overdispersed (var 3x)": overdispersed,
    "daily cycle ±30 %": diurnal,
}


def slices(g: np.random.Generator, totals: np.ndarray, coverage: np.ndarray, segmented: bool):
    """Per window, ({slice key: predictions}, {slice key: labelled})."""
    for n, cov in zip(totals.tolist(), coverage.tolist(), strict=True):
        if not segmented:
            yield {"": n}, {"": int(g.binomial(n, cov))}
            continue
        cells = g.multinomial(n, [0.25] * 4)
        labelled = g.binomial(cells, cov)
        counts: dict[str, int] = {"": n}
        labels: dict[str, int] = {"": int(labelled.sum())}
        for dim, at in (("region", 0), ("channel", 1)):
            for value in sorted({c[at] for c in CELLS}):
                idx = [i for i, c in enumerate(CELLS) if c[at] == value]
                key = f"{dim}={value}"
                counts[key] = int(cells[idx].sum())
                labels[key] = int(labelled[idx].sum())
        yield counts, labels


def run(
    g: np.random.Generator,
    totals: np.ndarray,
    coverage: np.ndarray,
    segmented: bool,
    policy: HealthConfig,
    *,
    watch_from: int = 0,
) -> list[tuple[int, str, str]]:
    """(window, alert, slice key) of every alert that fires, from window ``watch_from`` on."""
    health = ModelHealth(WINDOW_MS, WINDOW_MS, policy)
    firing: dict[tuple[str, str], bool] = {}
    fired: list[tuple[int, str, str]] = []

    def see(w: int, alert: str, key: str, event: object) -> None:
        was = firing.get((alert, key), False)
        now = event is not None and getattr(event, "kind", "") != "predictions_resumed"
        if now and not was and w >= watch_from:
            fired.append((w, alert, key))
        firing[(alert, key)] = now

    for w, (counts, labels) in enumerate(slices(g, totals, coverage, segmented)):
        start = w * WINDOW_MS
        shown = {k: v for k, v in counts.items() if v > 0}
        for key, e, *_ in health.judge_counts(start, shown):
            see(w, alert_of(e.kind) if e is not None else "volume-out-of-band", key, e)
        for key, n in shown.items():
            for alert, e, *_ in health.judge_labels(start, key, n, labels[key]):
                see(w, alert, key, e)
    return fired


#: the values before they were calibrated (on today's band), for comparison
PREVIOUS = HealthConfig(volume_k=4.0, volume_alpha=0.001, coverage_alpha=0.001)


def false_alerts(seed: int, trials: int, policy: HealthConfig) -> list[tuple[str, str, float, int, str]]:
    rows: list[tuple[str, str, float, int, str]] = []
    windows = DAYS * WINDOWS_PER_DAY
    for name, rate in TRAFFIC.items():
        for segmented in (False, True):
            alerts: list[tuple[int, str, str]] = []
            for trial in range(trials):
                g = np.random.default_rng([seed, trial, segmented, len(rows)])
                t = np.arange(windows + WINDOWS_PER_DAY) + g.integers(WINDOWS_PER_DAY)
                # a day of history first: the 30 days counted start with a learnt band
                alerts += run(g, rate(g, t), np.full(t.size, COVERAGE), segmented, policy,
                              watch_from=WINDOWS_PER_DAY)
            kinds = sorted({a for _, a, _ in alerts})
            seen = ", ".join(kinds) or "-"
            rows.append((name, "5" if segmented else "1", len(alerts) / max(trials, 1), trials, seen))
    return rows


CHANGES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    # name: (volume factor, coverage after, alerts that count)
    "volume to 50 %": (0.5, COVERAGE, ("volume-out-of-band", "no-predictions")),
    "volume to 0 %": (0.0, COVERAGE, ("volume-out-of-band", "no-predictions")),
    "volume doubled": (2.0, COVERAGE, ("volume-out-of-band",)),
    "coverage 0.9 -> 0.5": (1.0, 0.5, ("label-coverage-low", "label-coverage-falling")),
}


def delays(
    seed: int, trials: int, policy: HealthConfig, horizon: int = 20
) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for name, rate in (("overdispersed (var 3x)", overdispersed), ("daily cycle ±30 %", diurnal)):
        for change, (factor, after, counted) in CHANGES.items():
            found: list[int] = []
            segment: list[int] = []
            for trial in range(trials):
                g = np.random.default_rng([seed, trial, len(rows), 1])
                history = WINDOWS_PER_DAY + int(g.integers(WINDOWS_PER_DAY))
                t = np.arange(history + horizon)
                totals = rate(g, t)
                totals[history:] = np.round(totals[history:] * factor).astype(totals.dtype)
                coverage = np.full(t.size, COVERAGE)
                coverage[history:] = after
                alerts = run(g, totals, coverage, True, policy, watch_from=history)
                for key, at in (("", found), ("region=eu", segment)):
                    fired = [w for w, a, k in alerts if a in counted and k == key]
                    at.append(fired[0] - history + 1 if fired else horizon + 1)
            d, s = np.array(found), np.array(segment)
            missed = int((d > horizon).sum())
            rows.append((
                name, change, f"{np.median(d[d <= horizon]) if missed < trials else float('nan'):.0f}",
                f"{int(d.max()) if not missed else f'> {horizon}'}", f"{(d <= 2).mean():.0%}",
                f"{(s <= 2).mean():.0%}",
            ))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="30-day runs per traffic kind and slicing")
    parser.add_argument("--delay-trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    policy = HealthConfig()
    began = time.perf_counter()
    before = false_alerts(args.seed, 1, PREVIOUS)
    fa = false_alerts(args.seed, args.trials, policy)
    dl = delays(args.seed, args.delay_trials, policy)
    took = time.perf_counter() - began
    print("# Integration-health alerts: false alerts per 30 days and detection delays\n")
    print(f"`.venv/bin/python benchmarks/health_alarms.py --trials {args.trials} --delay-trials "
          f"{args.delay_trials} --seed {args.seed}`\n")
    print(f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, Python "
          f"{platform.python_version()}; {took:.0f} s. Default `health:` configuration "
          f"(volume_k {policy.volume_k}, volume_alpha {policy.volume_alpha:g}, coverage_alpha "
          f"{policy.coverage_alpha:g}, trend_windows {policy.trend_windows}, min_drop {policy.min_drop}).\n")
    print("## False alerts per model per 30 days (8640 windows, 1000 predictions a window, coverage 0.9)\n")
    print("| traffic | slices | false alerts / model / 30 days | 30-day runs | alerts seen |")
    print("|---|---|---|---|---|")
    for name, n, rate, trials, kinds in fa:
        print(f"| {name} | {n} | {rate:.2f} | {trials} | {kinds} |")
    print("\nThe same with the values before calibration (volume_k 4, volume_alpha and coverage_alpha "
          "0.001), one 30-day run each:\n")
    print("| traffic | slices | false alerts / model / 30 days | alerts seen |")
    print("|---|---|---|---|")
    for name, n, rate, _trials, kinds in before:
        print(f"| {name} | {n} | {rate:.0f} | {kinds} |")
    print("\n## Detection delay (windows from the first changed window to the model's alert; 5 slices)\n")
    print(f"{args.delay_trials} trials each, the change at a random point of the second day; "
          "coverage in final windows.\n")
    print("| traffic | change | median delay | worst | model within 2 windows | a segment value within 2 |")
    print("|---|---|---|---|---|---|")
    for row in dl:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
