"""The models a worker knows: their configuration, reference profile and sketch spec.

Every worker builds the same catalog from the same configuration and reference files, so
every partition sketches a model's windows on the same bin edges and categories, which is
what keeps partial aggregates mergeable across workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftline.detectors.aggregates import AggregateSpec
from driftline.platform.config import Config, ModelConfig

__all__ = ["ModelCatalog", "build_profiles", "spec_from_profile"]


def build_profiles(
    rows: Sequence[Mapping[str, Any]], model_id: str, cfg: ModelConfig
) -> dict[tuple[str, str], Any]:
    """The model's reference profile, plus one per segment value found in the rows'
    ``segments``: a segment is compared with the same segment of the reference, never with the
    whole population (a slice defined by ``channel=web`` always differs from all channels)."""
    from driftline.detectors.profile import build_profile

    def profile(subset: Sequence[Mapping[str, Any]], grids: Mapping[str, Any] | None = None) -> Any:
        return build_profile(
            subset,
            model_id=model_id,
            model_version="*",
            task=cfg.task,
            feature_types=dict(cfg.feature_types) or None,
            positive_label=cfg.positive_label,
            grids=grids,
        )

    whole = profile(rows)
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
    for segment, subset in sorted(by_segment.items()):
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
    )


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
    ) -> None:
        """``profiles`` maps a model id, or a ``(model_id, segment)`` pair for per-segment
        references (segment ``"dim=value"``), to its reference profile; ``sources`` says where
        a model's profiles came from, for results to name (default: its configured file)."""
        self.config = config
        self.profiles: dict[tuple[str, str], Any] = {
            (key if isinstance(key, tuple) else (key, "")): value for key, value in (profiles or {}).items()
        }
        self._sources = {m: f"file:{cfg.reference}" for m, cfg in config.models.items() if cfg.reference}
        self._sources.update(sources or {})
        self._specs: dict[str, AggregateSpec] = {}
        self._admitted: set[str] = set(config.models)

    @classmethod
    def load(
        cls, config: Config, extra_profiles: Mapping[Any, Any] | None = None, *, extra_source: str = "profile"
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
        return cls(config, profiles, sources=sources)

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
