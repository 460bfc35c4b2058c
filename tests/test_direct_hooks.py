"""lumen.hook: the per-request hooks, called without pluggy's machinery, answer as pluggy's
own call does, whatever is registered and whenever."""

import pluggy
import pytest

from lumen import hookimpl, hookspecs
from lumen.plugins import PER_REQUEST_HOOKS, Hooks


def _manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("lumen")
    pm.add_hookspecs(hookspecs)
    return pm


class Answers:
    def __init__(self, value, **marks):
        self.value = value
        self.seen = []

        @hookimpl(**marks)
        def lumen_cached(lumen, key, tags, loader):
            self.seen.append((key, tags))
            return self.value

        @hookimpl(**marks)
        def lumen_prefetch(key, tags):  # a subset of the arguments, as pluggy allows
            self.seen.append(key)
            return self.value

        self.lumen_cached = lumen_cached
        self.lumen_prefetch = lumen_prefetch


def _both(pm, name, **kwargs):
    """The direct call's answer, and pluggy's own."""
    return getattr(Hooks(pm), name)(**kwargs), getattr(pm.hook, name)(**kwargs)


CACHED = {"lumen": None, "key": "photo:1", "tags": ("photo:1",), "loader": lambda: None}


@pytest.mark.unit
def test_per_request_hooks_are_direct_and_the_others_are_pluggys():
    pm = _manager()
    hooks = Hooks(pm)
    assert all(type(getattr(hooks, name)).__name__ == "DirectHook" for name in PER_REQUEST_HOOKS)
    assert hooks.lumen_startup is pm.hook.lumen_startup


@pytest.mark.unit
def test_firstresult_takes_the_last_registered_answer_that_is_not_none():
    pm = _manager()
    first, second, silent = Answers("first"), Answers("second"), Answers(None)
    for plugin in (first, second, silent):
        pm.register(plugin)
    assert _both(pm, "lumen_cached", **CACHED) == ("second", "second")
    assert first.seen == []  # stopped at the first answer, as pluggy stops
    assert len(silent.seen) == 2


@pytest.mark.unit
def test_tryfirst_and_no_implementation():
    pm = _manager()
    assert _both(pm, "lumen_cached", **CACHED) == (None, None)
    assert _both(pm, "lumen_prefetch", lumen=None, key="k", tags=()) == ([], [])
    pm.register(Answers("early", tryfirst=True))
    pm.register(Answers("late"))
    assert _both(pm, "lumen_cached", **CACHED) == ("early", "early")


@pytest.mark.unit
def test_a_hook_without_firstresult_collects_every_answer_with_its_own_arguments():
    pm = _manager()
    one, other = Answers(1), Answers(2)
    pm.register(one)
    pm.register(other)
    assert _both(pm, "lumen_prefetch", lumen=None, key="k", tags=()) == ([2, 1], [2, 1])
    assert one.seen == other.seen == ["k", "k"]


@pytest.mark.unit
def test_a_plugin_registered_after_the_app_was_built_is_called():
    pm = _manager()
    hooks = Hooks(pm)
    assert hooks.lumen_cached(**CACHED) is None
    late = Answers("late")
    pm.register(late)
    assert hooks.lumen_cached(**CACHED) == "late"
    pm.unregister(late)
    assert hooks.lumen_cached(**CACHED) is None


@pytest.mark.unit
def test_a_wrapper_still_wraps():
    pm = _manager()

    class Wrapper:
        @hookimpl(wrapper=True)
        def lumen_cached(self, key):
            answer = yield
            return f"wrapped {answer}"

    pm.register(Answers("value"))
    pm.register(Wrapper())
    assert _both(pm, "lumen_cached", **CACHED) == ("wrapped value", "wrapped value")


@pytest.mark.unit
def test_an_implementations_error_reaches_the_caller():
    pm = _manager()

    class Failing:
        @hookimpl
        def lumen_cached(self):
            raise LookupError("boom")

    pm.register(Failing())
    with pytest.raises(LookupError, match="boom"):
        Hooks(pm).lumen_cached(**CACHED)
