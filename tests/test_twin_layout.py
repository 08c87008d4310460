"""A twin kept in a shared layout's arrays says exactly what a twin kept per property says."""

from __future__ import annotations

from citytwin.gateway.twins import Layout, Twin


def _feed(twin: Twin) -> None:
    twin.update_reported({"a": (1, 100, "good"), "b": (None, 100, "bad"), "x": (7, 100, "good")}, 1000)
    twin.update_reported({"a": (1, 200, "good"), "b": (2.5, 200, "uncertain")}, 2000)  # a: same value
    twin.patch_desired({"a": 3}, 2500)


def test_layout_twin_renders_the_same_document_as_a_twin_without_one() -> None:
    plain, laid_out = Twin("d"), Twin("d", Layout(("a", "b", "c")))  # "x" is outside the layout
    _feed(plain)
    _feed(laid_out)
    assert laid_out.document() == plain.document()
    assert laid_out.version == plain.version == 3
    doc = laid_out.document()
    assert doc["reported"] == {"a": 1, "b": 2.5, "x": 7}
    assert doc["metadata"]["reported"]["a"] == {"ts": 200, "quality": "good", "changed": 1000}
    assert doc["metadata"]["reported"]["b"] == {"ts": 200, "quality": "uncertain", "changed": 2000}
    assert doc["delta"] == {"a": 3}
    assert "c" not in laid_out.reported and laid_out.meta("c") is None
    assert laid_out.reported == {"a": 1, "b": 2.5, "x": 7} and len(laid_out.reported) == 3
    assert laid_out.reported_meta["b"] == (200, "uncertain", 2000)


def test_an_unchanged_poll_does_not_bump_the_version() -> None:
    twin = Twin("d", Layout(("a",)))
    twin.update_reported({"a": (1, 100, "good")}, 1000)
    twin.update_reported({"a": (1, 200, "good")}, 2000)
    assert twin.version == 1 and twin.meta("a") == (200, "good", 1000)
    twin.update_reported({"a": (1, 300, "bad")}, 3000)  # same value, worse quality: a change
    assert twin.version == 2 and twin.meta("a") == (300, "bad", 3000)


def test_restore_and_a_new_layout_keep_every_property() -> None:
    old = Twin("d")
    _feed(old)
    restored = Twin.restore("d", old.document(), Layout(("b", "a")))
    assert restored.document()["reported"] == old.document()["reported"]
    assert restored.document()["metadata"] == old.document()["metadata"]
    restored.use_layout(Layout(("x", "c")))  # the device's point map changed under a reload
    assert restored.document()["reported"] == old.document()["reported"]
    assert restored.document()["metadata"] == old.document()["metadata"]
    restored.update_reported({"x": (8, 300, "good")}, 3000)
    assert restored.value("x") == 8 and restored.meta("x") == (300, "good", 3000)
