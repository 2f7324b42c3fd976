"""Every registry: short kebab-case names, help text, and the unknown-name message."""

from __future__ import annotations

import re

import pytest

from langadapt.corpus.filters import FILTERS
from langadapt.errors import ConfigError
from langadapt.recipe import CorpusConfig, SourceConfig
from langadapt.registry import load_all

REGISTRIES = load_all()


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
    cfg = CorpusConfig(target=SourceConfig(path="x", language="nya"), min_chars=3, max_chars=50)
    fn = FILTERS.get(name)
    assert fn("a normal document", cfg) is None  # keeps ordinary text
    for text in ("", "ab", "x" * 60):
        reason = fn(text, cfg)
        assert reason is None or (isinstance(reason, str) and re.fullmatch(r"[a-z_]+", reason))
