"""A copy of rules.toml with one rule changed, for tests that a rule change reaches what people read."""
from __future__ import annotations

import pytest

from tests.support import ROOT


@pytest.fixture
def changed(request):
    """The (old, new) replacements this test makes in rules.toml (indirect parameter)."""
    return getattr(request, "param", ())


@pytest.fixture
def settings(settings, changed, tmp_path):
    """The test settings, reading a copy of rules.toml with `changed` applied."""
    if not changed:
        return settings
    text = (ROOT / "rules.toml").read_text(encoding="utf-8")
    for old, new in changed:
        assert text.count(old) == 1, f"{old!r} is not written once in rules.toml"
        text = text.replace(old, new)
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return settings.model_copy(update={"rules_file": path})


def change(*pairs):
    return pytest.mark.parametrize("changed", [pairs], indirect=True)
