"""The models a worker knows: their configuration, reference profile and sketch spec.

Every worker builds the same catalog from the same configuration and reference files, so
every partition sketches a model's windows on the same bin edges and categories, which is
what keeps partial aggregates mergeable across workers.

A model *version* can also have a reference profile in the SQL store (``driftline models
follow`` records the one of a version an alias moved to; ``driftline baseline create
--store-url --version V`` saves one): :class:`StoredProfiles` reads those, and the evaluator
judges the version's windows against it before anything else (the precedence is in
docs/retraining.md, "Which reference a window is judged against"). The sketch spec stays the
model's: partials of one window must sketch alike on every worker, whenever each looked at the
store, so a stored profile changes what a window is compared with, never how it is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.detectors.aggregates import AggregateSpec
from driftline.platform.config import Config, ModelConfig

__all__ = ["ModelCatalog", "StoredProfile", "StoredProfiles", "build_profiles", "spec_from_profile"]

log = logging.getLogger(__name__)


def build_profiles(
    rows: Sequence[Mapping[str, Any]], model_id: str, cfg: ModelConfig
) -> dict[tuple[str, str], Any]:
    """The model's reference profile, plus one per segment value found in the rows'
    ``segments``: a segment is compared with the same segment of the reference, never with the
    whole population (a slice defined by ``channel=web`` always differs from all channels)."""
    from driftline.detectors.profile import build_profile

    def profile(
        subset: Sequence[Mapping[str, Any]],
        grids: Mapping[str, Any] | None = None,
        multivariate: bool = False,
        encodings: Any = None,
    ) -> Any:
        return build_profile(
            subset,
            model_id=model_id,
            model_version="*",
            task=cfg.task,
            feature_types=dict(cfg.feature_types) or None,
            positive_label=cfg.positive_label,
            grids=grids,
            multivariate=multivariate,
            encodings=encodings,
        )

    try:
        whole = profile(rows, multivariate=cfg.multivariate)
    except ValueError as exc:
        if not cfg.multivariate:
            raise
        raise ValueError(
            f"models.{model_id}.multivariate: the reference cannot fit multivariate drift: {exc}; "
            "give a reference with more rows or varying features, or set multivariate: false"
        ) from exc
    # a segment slice's windows count on the model's grid (one spec per model), so its
    # reference must count on that grid too for the whole-window tests to compare bin for bin
    model_grids = {
        name: f.grid for name, f in whole.features.items() if getattr(f, "grid", None) is not None
    }
    out: dict[tuple[str, str], Any] = {(model_id, ""): whole}
    by_segment: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        for dim, value in (row.get("segments") or {}).items():
            by_segment.setdefault(f"{dim}={value}", []).append(row)
    # a segment's PCA is fitted in its model's encoding: the windows keep one encoding a model
    encodings = whole.reconstruction.encodings if whole.reconstruction is not None else None
    for segment, subset in sorted(by_segment.items()):
        try:
            out[(model_id, segment)] = profile(subset, model_grids, encodings is not None, encodings)
        except ValueError:
            # too few rows of the segment to fit its own PCA: its slices get no multivariate
            # result (the whole model's slice still sees their rows)
            out[(model_id, segment)] = profile(subset, model_grids)
    return out


def spec_from_profile(cfg: ModelConfig, profile: Any | None) -> AggregateSpec:
    """The sketch spec of a model: bin edges and pinned categories come from its reference."""
    numeric: dict[str, np.ndarray] = {}
    grids: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    if profile is not None:
        for name, feature in profile.features.items():
            if feature.kind == "numeric":
                numeric[name] = np.asarray(feature.edges, dtype=np.float64)
                if feature.grid is not None:
                    grids[name] = np.asarray(feature.grid, dtype=np.float64)
            else:
                categories[name] = sorted(feature.counts)
    for name, kind in cfg.feature_types.items():
        if kind == "numeric" and name not in numeric:
            numeric[name] = np.array([0.0, 0.0])
        elif kind == "categorical" and name not in categories:
            categories[name] = []
    return AggregateSpec(
        task=cfg.task,
        positive_label=cfg.positive_label,
        numeric_edges=numeric,
        categories=categories,
        sample_size=cfg.sample_size,
        calibrator=None if profile is None else getattr(profile, "calibrator", None),
        loss_model=None if profile is None else getattr(profile, "loss_model", None),
        numeric_grids=grids,
        class_calibrator=None if profile is None else getattr(profile, "class_calibrator", None),
        moment_encodings=_moment_encodings(cfg, profile),
    )


def _moment_encodings(cfg: ModelConfig, profile: Any | None) -> Any:
    """What the windows' moment sketches encode by: the reference's, when the model asks for
    multivariate drift (its profile then has them, see :meth:`ModelCatalog.check`)."""
    model = None if profile is None or not cfg.multivariate else getattr(profile, "reconstruction", None)
    return None if model is None else model.encodings


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """The newest profile the store holds of one model version: per segment ("" the whole
    model; a baseline document keeps its segments' profiles inside, baseline_cli.py)."""

    created_ms: int
    source: str
    profiles: Mapping[str, Any]

    @property
    def name(self) -> str:
        """How window results name it: where it came from and which profile of the version."""
        from driftline.schemas.timefmt import ms_to_rfc3339

        return f"store:{self.source} [{ms_to_rfc3339(self.created_ms)}]"


class StoredProfiles:
    """Reference profiles per (model, version) from the SQL store, re-read at most every
    ``refresh_s`` seconds: one indexed query (the newest ``created_ms`` per version) per
    interval for the whole worker, and a profile document loaded only when it is new. A
    profile saved while the worker runs is therefore used from the first window evaluated at
    most ``refresh_s`` later, without a restart. A store that cannot be read keeps what was
    read before (logged once per failure streak): the stream never stops for it."""

    def __init__(
        self, url: str, *, refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from driftline.platform.store import make_engine, session_factory

        self.url = url
        self.refresh_s = refresh_s
        self._clock = clock
        self._engine = make_engine(url)
        self._sessions = session_factory(self._engine)
        self._newest: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], StoredProfile] = {}
        self._read_at: float | None = None
        self._failing = False
        #: profiles that could not be read or parsed: not tried again for every window
        self._unreadable: set[tuple[str, str, int]] = set()

    def get(self, model_id: str, version: str) -> StoredProfile | None:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            self._read_at = now
            self._refresh()
        created = self._newest.get((model_id, version))
        if created is None:
            return None
        held = self._held.get((model_id, version))
        stale = held is None or held.created_ms != created
        if stale and (model_id, version, created) not in self._unreadable:
            held = self._load(model_id, version, created) or held
        return held

    def _refresh(self) -> None:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        from driftline.platform.store.models import ReferenceProfileRow as p

        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(p.model_id, p.model_version, func.max(p.created_ms)).group_by(
                        p.model_id, p.model_version
                    )
                ).all()
        except SQLAlchemyError as exc:
            if not self._failing:
                log.warning("stored reference profiles: cannot read the store (%s); keeping what it had", exc)
            self._failing = True
            return
        self._failing = False
        self._newest = {(str(m), str(v)): int(c) for m, v, c in rows if v != "*"}

    def _load(self, model_id: str, version: str, newest: int) -> StoredProfile | None:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        from driftline.detectors.profile import ReferenceProfile
        from driftline.platform.store.models import ReferenceProfileRow as p

        try:
            with self._sessions() as session:
                row = session.execute(
                    select(p.created_ms, p.source, p.profile)
                    .where(p.model_id == model_id, p.model_version == version)
                    .order_by(p.created_ms.desc(), p.id.desc())
                    .limit(1)
                ).first()
        except SQLAlchemyError as exc:  # tried again at the next refresh
            log.warning("stored reference profile of %r version %r: unreadable (%s)", model_id, version, exc)
            self._newest.pop((model_id, version), None)
            return None
        if row is None:
            return None
        created, source, doc = row
        try:
            profiles = {"": ReferenceProfile.from_dict(doc)}
            segments = doc.get("segments") or {}
            profiles.update({str(k): ReferenceProfile.from_dict(v) for k, v in segments.items()})
        except (KeyError, TypeError, ValueError) as exc:
            self._unreadable.add((model_id, version, newest))
            log.error(
                "stored reference profile of %r version %r (%s) is unreadable (%s): not used",
                model_id, version, source, exc,
            )
            return None
        found = StoredProfile(int(created), str(source), profiles)
        self._held[(model_id, version)] = found
        log.info(
            "%r version %r: judged against the stored reference profile %s from now on "
            "(it takes precedence over reference files and bootstrapping)",
            model_id, version, found.name,
        )
        return found

    def describe(self) -> str:
        from driftline.platform.store import safe_url

        return f"{safe_url(self.url)} (re-read every {self.refresh_s:g} s)"

    def close(self) -> None:
        self._engine.dispose()


class ModelCatalog:
    """Configuration, reference profile and sketch spec per model, with admission control.

    Unconfigured models are admitted with the defaults (so nothing goes unmonitored by
    accident) unless ``allow_unknown_models`` is off; ``max_models`` bounds the memory a flood
    of bogus model ids could take.
    """

    def __init__(
        self,
        config: Config,
        profiles: Mapping[Any, Any] | None = None,
        *,
        sources: Mapping[str, str] | None = None,
        stored: StoredProfiles | None = None,
    ) -> None:
        """``profiles`` maps a model id, or a ``(model_id, segment)`` pair for per-segment
        references (segment ``"dim=value"``), to its reference profile; ``sources`` says where
        a model's profiles came from, for results to name (default: its configured file);
        ``stored`` reads model versions' profiles from the store (they come first)."""
        self.config = config
        self.stored = stored
        self.profiles: dict[tuple[str, str], Any] = {
            (key if isinstance(key, tuple) else (key, "")): value for key, value in (profiles or {}).items()
        }
        self._sources = {m: f"file:{cfg.reference}" for m, cfg in config.models.items() if cfg.reference}
        self._sources.update(sources or {})
        self._specs: dict[str, AggregateSpec] = {}
        self._admitted: set[str] = set(config.models)
        self.check()

    def check(self) -> None:
        """Refuse, at start-up, a model that asks for what its references cannot give."""
        for model_id, cfg in self.config.models.items():
            if not cfg.multivariate:
                continue
            profile = self.profiles.get((model_id, ""))
            if profile is None:
                raise ValueError(
                    f"models.{model_id}.multivariate: true needs a reference profile (set "
                    f"models.{model_id}.reference: PATH, or replay --reference), or set multivariate: false"
                )
            if getattr(profile, "reconstruction", None) is None:
                raise ValueError(
                    f"models.{model_id}.multivariate: true, but the reference profile of {model_id} has "
                    "no multivariate model: build it with multivariate: true in the model's config "
                    "(driftline baseline create reads it), or set multivariate: false"
                )

    @classmethod
    def load(
        cls,
        config: Config,
        extra_profiles: Mapping[Any, Any] | None = None,
        *,
        extra_source: str = "profile",
        stored: StoredProfiles | None = None,
    ) -> ModelCatalog:
        """Load every configured model's reference profile file; ``extra_profiles`` (from
        ``extra_source``, e.g. ``file:PATH`` of ``replay --reference``) come on top."""
        from driftline.platform.files import load_rows

        profiles: dict[Any, Any] = {}
        for model_id, cfg in config.models.items():
            if cfg.reference:
                profiles.update(build_profiles(list(load_rows(cfg.reference)), model_id, cfg))
        extra = dict(extra_profiles or {})
        profiles.update(extra)
        sources = {(key[0] if isinstance(key, tuple) else key): extra_source for key in extra}
        return cls(config, profiles, sources=sources, stored=stored)

    def stored_profile(self, model_id: str, version: str) -> StoredProfile | None:
        """The store's newest profile of the model version, when the catalog reads a store."""
        return None if self.stored is None else self.stored.get(model_id, version)

    def reference_source(self, model_id: str) -> str:
        """Where the model's reference profiles came from, as window results name it."""
        return self._sources.get(model_id, "profile")

    def model(self, model_id: str) -> ModelConfig:
        return self.config.model(model_id)

    def positive_label(self, model_id: str) -> str:
        """The class whose probability is an event's score when it sends only ``scores``."""
        return self.config.model(model_id).positive_label

    def profile(self, model_id: str, segment: str = "") -> Any | None:
        return self.profiles.get((model_id, segment))

    def slice_count(self, model_id: str) -> int:
        """How many slices (the model and its segments) the model's reference names, at least
        1: what the drift CUSUMs' false-alert budget is split over (detectors/sequential.py).
        A bootstrapped model's segments are not known in advance and are not counted."""
        return max(1, sum(m == model_id for m, _ in self.profiles))

    def has_reference(self, model_id: str) -> bool:
        return (model_id, "") in self.profiles

    def admit(self, model_id: str) -> bool:
        """Whether events of ``model_id`` are processed (False sends them to dead-letter)."""
        if model_id in self._admitted:
            return True
        if not self.config.allow_unknown_models or len(self._admitted) >= self.config.max_models:
            return False
        self._admitted.add(model_id)
        return True

    def spec(self, model_id: str) -> AggregateSpec:
        spec = self._specs.get(model_id)
        if spec is None:
            spec = self._specs[model_id] = spec_from_profile(self.model(model_id), self.profile(model_id))
        return spec
