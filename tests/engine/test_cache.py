"""The Belady cache: bounded bytes, evicts the chunk needed furthest ahead."""

from __future__ import annotations

from earthstream.engine import ChunkCache


def loaded(cache: ChunkCache, key: str, nbytes: int, until: float) -> list[str] | None:
    victims = cache.reserve(key, nbytes, until)
    if victims is not None:
        cache.fulfil(key, key.upper(), nbytes)
    return victims


def test_evicts_furthest_next_use() -> None:
    cache = ChunkCache(300)
    for key, uses in {"a": [1, 5], "b": [2], "c": [3, 9]}.items():
        for use in uses:
            cache.add_use(key, use)
    for key in "abc":
        assert loaded(cache, key, 100, 0) == []
    assert cache.used == 300
    cache.add_use("d", 4)
    # d is needed at 4; c's next use (3) is sooner, a's (1) too, b (2) too: nothing to evict
    assert cache.reserve("d", 100, 4) is None
    cache.consume("a")  # a's next use is now 5: later than 4, so a may go
    assert loaded(cache, "d", 100, 4) == ["a"]
    assert "a" not in cache and cache.used == 300 and cache.peak == 300


def test_unused_chunks_go_first_and_reservations_count() -> None:
    cache = ChunkCache(250)
    cache.add_use("keep", 10)
    loaded(cache, "keep", 100, 0)
    loaded(cache, "idle", 100, 0)  # no recorded use
    assert cache.reserve("new", 100, 5) == ["idle"]
    assert cache.is_reserved("new") and cache.used == 200
    assert cache.reserve("more", 100, 20) is None  # keep is needed at 10 < 20? no: 10 < 20
    cache.cancel("new")
    assert cache.used == 100
