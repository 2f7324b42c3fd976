"""Every registry: short kebab-case names, help text, and the unknown-name message."""

from __future__ import annotations

import re

import pytest

from langadapt.catalog import registries
from langadapt.corpus.filters import FILTERS
from langadapt.errors import ConfigError

REGISTRIES = registries()


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_entries_are_named_and_documented(kind):
    registry = REGISTRIES[kind]
    assert registry.names(), f"{kind} is empty"
    for entry in registry.entries():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.name), entry.name
        assert len(entry.help) > 15, f"{kind}/{entry.name} needs a help text"
    with pytest.raises(ConfigError, match=f"unknown {kind} 'zzz'; valid: "):
        registry.get("zzz")


@pytest.mark.parametrize("name", FILTERS.names())
def test_filter_conformance(name):
    """Every corpus step runs somewhere known, and a quality step bounds only thresholds that exist."""
    from dataclasses import fields

    from langadapt.corpus.config import Thresholds
    from langadapt.corpus.filters import ENGLISH

    step = FILTERS.get(name)
    assert step.kind in {"read", "lid", "quality", "dedup", "format", "url"}
    assert (step.kind == "quality") == bool(step.thresholds)
    known = {f.name for f in fields(Thresholds)}
    for threshold in step.thresholds:
        assert threshold in known and threshold in ENGLISH, f"{name}: {threshold}"
