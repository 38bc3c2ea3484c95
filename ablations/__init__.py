"""The catalog of studies: one module per suspected cause of the reproduction gap.

A study is a name, a question, the hypothesis and where the suspicion comes from, a base
config, variants (name -> RunConfig overrides, the baseline first), default depths,
per-depth overrides (ResNet-110's warm-up) and the paper numbers it is compared with.
Every variant runs the same seeds, so comparisons between variants are paired.

`register` validates a study when its module is imported: a duplicate name, an unknown
field or an invalid value fails at import, not hours into a run.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from resnet_repro.config import RunConfig, apply_budget
from resnet_repro.reference import Published, paper_error


@dataclass(frozen=True)
class Cell:
    """One (variant, depth, seed) of a study and the config it trains."""

    study: str
    variant: str
    depth: int
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        return f"{self.variant}|{self.depth}|{self.seed}"

    @property
    def run_id(self) -> str:
        return self.config.run_id(self.seed)

    @property
    def train_id(self) -> str:
        return self.config.train_id(self.seed)


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    hypothesis: str
    source: str  # where the suspicion comes from
    variants: dict[str, dict[str, Any]]  # name -> overrides of `base`; baseline included
    baseline: str
    depths: tuple[int, ...] = (20, 56)
    base: RunConfig = field(default_factory=RunConfig)
    depth_overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    compare: str = "Table 6 (ResNet test error by depth)"
    factors: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # factorial designs

    def config(self, variant: str, depth: int, *, budget: str = "paper", **overrides) -> RunConfig:
        """The config of one variant at one depth: base, then the variant's overrides,
        the depth and its overrides (e.g. ResNet-110's warm-up), the budget, and finally
        the caller's overrides (`--set`, `--dataset`)."""
        if variant not in self.variants:
            raise ValueError(
                f"study {self.name!r} has no variant {variant!r}: allowed are {list(self.variants)}"
            )
        cfg = self.base.replace(**self.variants[variant], depth=depth)
        cfg = cfg.replace(**self.depth_overrides.get(depth, {}))
        cfg = apply_budget(cfg, budget)
        return cfg.replace(**overrides) if overrides else cfg

    def cells(
        self,
        seeds: range | list[int],
        depths: tuple[int, ...] | None = None,
        *,
        budget: str = "paper",
        **overrides: Any,
    ) -> list[Cell]:
        """Every (variant, depth, seed), variants in catalog order, seeds innermost."""
        return [
            Cell(self.name, v, d, s, self.config(v, d, budget=budget, **overrides))
            for d in depths or self.depths
            for v in self.variants
            for s in seeds
        ]

    def paper_number(self, variant: str, depth: int) -> Published | None:
        """The published number this variant is compared with at this depth."""
        return paper_error(self.config(variant, depth).arch, depth)


_REGISTRY: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add a study to the catalog; validate every variant at every default depth."""
    if study.name in _REGISTRY:
        raise ValueError(f"duplicate study name {study.name!r}")
    if study.baseline not in study.variants:
        raise ValueError(
            f"study {study.name!r}: baseline {study.baseline!r} is not among its variants "
            f"{list(study.variants)}"
        )
    if next(iter(study.variants)) != study.baseline:
        raise ValueError(f"study {study.name!r}: list the baseline {study.baseline!r} first")
    for variant in study.variants:
        for depth in study.depths:
            try:
                study.config(variant, depth)
            except ValueError as e:
                raise ValueError(f"study {study.name!r}, variant {variant!r}: {e}") from None
    _REGISTRY[study.name] = study
    return study


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def get(name: str) -> Study:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown study {name!r}{hint}: known studies are {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def all_studies() -> dict[str, Study]:
    _load_all()
    return dict(_REGISTRY)


def iter_studies() -> Iterator[Study]:
    return iter(all_studies().values())


def with_overrides(study: Study, **changes: Any) -> Study:
    return dataclasses.replace(study, **changes)
