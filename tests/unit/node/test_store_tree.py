"""The Merkle tree a ChainStore keeps: grown by group commits, checked or built on open."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.node import tree
from vledger.node.errors import NoSuchLedgerError, ProofError, StoreError, TreeMismatchError, TreeSizeError
from vledger.node.record import Record
from vledger.node.store import ChainStore, GrownTree, grow_kept, grow_kept_by
from vledger.node.storefile import DB_NAME, StoreReader

LEDGER = "ledger-a"
OTHER = "ledger-b"

OpenStore = Callable[..., ChainStore]


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[OpenStore]:
    opened: list[ChainStore] = []

    def open_(directory: Path | None = None, **kwargs: Any) -> ChainStore:
        kwargs.setdefault("origin", "node-1")
        store = ChainStore(directory or tmp_path / "s", **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def _leaves(store: ChainStore, ledger: str) -> list[bytes]:
    return [tree.leaf_hash(data) for _, data in store.range_raw(ledger)]


def _hash_at(leaves: list[bytes]) -> tree.HashAt:
    """``hash_at`` over a plain list of leaves, by recomputation (the pure reference)."""

    def hash_at(level: int, index: int) -> bytes:
        part = leaves[index << level : (index + 1) << level]
        assert len(part) == 1 << level
        return _mth(part)

    return hash_at


def _mth(leaves: list[bytes]) -> bytes:
    frontier = tree.Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _concurrent_appends(store: ChainStore, kit: Any, ledger: str, first: int, count: int, threads: int = 4) -> None:
    """Appends from several threads at once, so that they share group commits."""
    errors: list[BaseException] = []

    def write(part: range) -> None:
        try:
            futures = [store.submit_entry(kit.entry(i, ledger=ledger)) for i in part]
            for f in futures:
                f.result(timeout=30)
        except BaseException as e:  # reported below, on the test's thread
            errors.append(e)

    parts = [range(first + t, first + count, threads) for t in range(threads)]
    workers = [threading.Thread(target=write, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not errors and not any(w.is_alive() for w in workers)


def _filled(open_store: OpenStore, kit: Any, directory: Path | None = None, n: int = 300) -> ChainStore:
    store = open_store(directory)
    store.create_ledger(kit.genesis_entry(0))
    store.create_ledger(kit.genesis_entry(0, ledger=OTHER, request_id="create-b"))
    _concurrent_appends(store, kit, LEDGER, 1, n - 1)
    _concurrent_appends(store, kit, OTHER, 1, 39)
    return store


def test_the_tree_after_many_group_commits_is_the_tree_of_the_records(open_store: OpenStore, kit: Any) -> None:
    store = _filled(open_store, kit)
    assert store.stats.groups > 2 and store.stats.mean_group > 1  # the appends did share commits
    for ledger, n in ((LEDGER, 300), (OTHER, 40)):
        leaves = _leaves(store, ledger)
        assert store.tree_size(ledger) == store.size(ledger) == len(leaves) == n
        reference = _hash_at(leaves)
        assert store.root(ledger) == _mth(leaves) == tree.root_at(n, reference)
        for size in (1, 2, 7, 33, n - 1, n):
            assert store.root(ledger, size) == _mth(leaves[:size])
        for index, size in ((0, 1), (5, 7), (100, 257), (n - 1, n), (3, n)):
            if size > n:
                continue
            proof = store.inclusion_proof(ledger, index, size)
            assert proof == tree.inclusion_proof(index, size, reference)
            tree.verify_inclusion(store.leaf_hash(ledger, index), index, size, proof, store.root(ledger, size))
        for old, new in ((1, n), (7, 31), (n - 1, n), (n, n)):
            proof = store.consistency_proof(ledger, old, new)
            tree.verify_consistency(old, new, store.root(ledger, old), store.root(ledger, new), proof)


def test_index_of_and_leaf_hash(open_store: OpenStore, kit: Any) -> None:
    store = _filled(open_store, kit, n=10)
    record = store.get(LEDGER, 6)
    assert record is not None
    assert store.index_of(record.hash) == (LEDGER, 6)
    assert store.index_of(b"\x00" * 32) is None
    assert store.leaf_hash(LEDGER, 6) == tree.leaf_hash(record.encode())


def test_sizes_past_the_tree_are_refused(open_store: OpenStore, kit: Any) -> None:
    store = _filled(open_store, kit, n=10)
    with pytest.raises(TreeSizeError, match=r"11 is not in 0\.\.10"):
        store.inclusion_proof(LEDGER, 0, 11)
    with pytest.raises(TreeSizeError):
        store.consistency_proof(LEDGER, 3, 11)
    with pytest.raises(TreeSizeError):
        store.root(LEDGER, 11)
    with pytest.raises(ProofError):
        store.inclusion_proof(LEDGER, 10, 10)
    with pytest.raises(ProofError):
        store.consistency_proof(LEDGER, 0, 10)
    with pytest.raises(NoSuchLedgerError):
        store.root("nope")
    assert store.root(LEDGER, 0) == tree.EMPTY_ROOT


def test_tiles_are_the_stored_hashes_at_level_8l(open_store: OpenStore, kit: Any) -> None:
    store = _filled(open_store, kit, n=300)
    leaves = _leaves(store, LEDGER)
    assert store.tile(LEDGER, 0, 0) == b"".join(leaves[:256])
    assert store.tile(LEDGER, 0, 1) == b"".join(leaves[256:300])
    assert store.tile(LEDGER, 0, 1, width=10) == b"".join(leaves[256:266])
    assert store.tile(LEDGER, 1, 0) == _mth(leaves[:256])
    with pytest.raises(TreeSizeError):
        store.tile(LEDGER, 0, 1, width=45)
    with pytest.raises(TreeSizeError):
        store.tile(LEDGER, 0, 2)


def test_reopening_checks_the_tree_and_keeps_growing_it(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = _filled(open_store, kit, tmp_path / "s", n=100)
    root = store.root(LEDGER)
    store.close()
    again = open_store(tmp_path / "s")
    assert (again.tree_size(LEDGER), again.root(LEDGER)) == (100, root)
    _concurrent_appends(again, kit, LEDGER, 100, 30)
    assert again.root(LEDGER) == _mth(_leaves(again, LEDGER))
    tree.verify_consistency(100, 130, root, again.root(LEDGER), again.consistency_proof(LEDGER, 100, 130))


def test_a_group_that_fails_leaves_the_tree_as_it_was(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = _filled(open_store, kit, tmp_path / "s", n=20)
    before = store.frontier(LEDGER).encode()
    # Another connection holds the write lock past the busy timeout: the next group fails.
    blocker = sqlite3.connect(tmp_path / "s" / DB_NAME, isolation_level=None, timeout=0)
    store._write.execute("PRAGMA busy_timeout=50")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="write failed"):
            store.append(kit.entry(21))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.frontier(LEDGER).encode() == before
    store.append(kit.entry(21))
    assert store.root(LEDGER) == _mth(_leaves(store, LEDGER))


def _drop_tree(directory: Path) -> None:
    """Make the store look like one from before the tree: no table, no meta row."""
    with sqlite3.connect(directory / DB_NAME) as conn:
        conn.execute("DROP TABLE tree")
        conn.execute("DELETE FROM meta WHERE key = 'tree'")
    conn.close()


def test_an_old_store_without_a_tree_gets_one(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = _filled(open_store, kit, tmp_path / "s", n=50)
    roots = (store.root(LEDGER), store.root(OTHER))
    store.close()
    _drop_tree(tmp_path / "s")
    reader = StoreReader(tmp_path / "s")
    with pytest.raises(StoreError, match="no Merkle tree yet"):
        reader.tree(LEDGER)
    reader.close()

    again = open_store(tmp_path / "s")
    assert (again.root(LEDGER), again.root(OTHER)) == roots
    again.close()
    assert open_store(tmp_path / "s").root(LEDGER) == roots[0]  # and the built tree passes the check


def test_a_store_run_without_the_tree_gets_it_back(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = _filled(open_store, kit, tmp_path / "s", n=20)
    store.close()
    bare = open_store(tmp_path / "s", keep_tree=False)
    _concurrent_appends(bare, kit, LEDGER, 20, 10)
    with pytest.raises(StoreError, match="without its Merkle tree"):
        bare.root(LEDGER)
    bare.close()
    again = open_store(tmp_path / "s")
    assert again.tree_size(LEDGER) == 30
    assert again.root(LEDGER) == _mth(_leaves(again, LEDGER))


def test_the_read_only_reader_serves_the_same_tree(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = _filled(open_store, kit, tmp_path / "s", n=60)
    reader = StoreReader(tmp_path / "s")
    try:
        stored = reader.tree(LEDGER)
        assert stored.size == 60
        assert stored.root() == store.root(LEDGER)
        assert stored.inclusion_proof(7, 60) == store.inclusion_proof(LEDGER, 7, 60)
        assert stored.consistency_proof(9, 60) == store.consistency_proof(LEDGER, 9, 60)
        with pytest.raises(TreeSizeError):
            reader.tree("nope")
    finally:
        reader.close()


# --- tampering is found on open ---------------------------------------------------------


def _sql(directory: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(directory / DB_NAME) as conn:
        conn.execute(statement, args)
    conn.close()


def _flipped(directory: Path, select: str, *args: object) -> bytes:
    with sqlite3.connect(directory / DB_NAME) as conn:
        value = bytes(conn.execute(select, args).fetchone()[0])
    conn.close()
    return value[:-1] + bytes([value[-1] ^ 1])


@pytest.mark.parametrize(
    ("level", "index"),
    [(4, 2), (5, 1), (6, 0)],  # the lowest stored level, up to the largest complete subtree
)
def test_a_changed_tree_row_is_found_on_open(
    open_store: OpenStore, kit: Any, tmp_path: Path, level: int, index: int
) -> None:
    _filled(open_store, kit, tmp_path / "s", n=100).close()
    changed = _flipped(
        tmp_path / "s", "SELECT hash FROM tree WHERE ledger = ? AND level = ? AND idx = ?", LEDGER, level, index
    )
    _sql(
        tmp_path / "s",
        "UPDATE tree SET hash = ? WHERE ledger = ? AND level = ? AND idx = ?",
        changed,
        LEDGER,
        level,
        index,
    )
    with pytest.raises(TreeMismatchError, match=f"level {level}, index {index} does not match"):
        open_store(tmp_path / "s")
    # Nothing was rewritten: the changed row is still there.
    assert (
        _flipped(
            tmp_path / "s", "SELECT hash FROM tree WHERE ledger = ? AND level = ? AND idx = ?", LEDGER, level, index
        )
        != changed
    )


def test_a_missing_or_extra_tree_row_is_found_on_open(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    _filled(open_store, kit, tmp_path / "s", n=40).close()
    with sqlite3.connect(tmp_path / "s" / DB_NAME) as conn:
        good = conn.execute("SELECT hash FROM tree WHERE ledger = ? AND level = 4 AND idx = 1", (LEDGER,)).fetchone()[0]
    conn.close()
    _sql(tmp_path / "s", "DELETE FROM tree WHERE ledger = ? AND level = 4 AND idx = 1", LEDGER)
    with pytest.raises(TreeMismatchError, match="lacks its node at level 4, index 1"):
        open_store(tmp_path / "s")
    _sql(tmp_path / "s", "INSERT INTO tree VALUES (?, 4, 1, ?)", LEDGER, b"\x00" * 32)
    with pytest.raises(TreeMismatchError, match="level 4, index 1 does not match"):
        open_store(tmp_path / "s")
    _sql(tmp_path / "s", "UPDATE tree SET hash = ? WHERE ledger = ? AND level = 4 AND idx = 1", good, LEDGER)
    open_store(tmp_path / "s").close()  # repaired by hand, it opens again
    for extra in ((0, 40), (9, 0)):
        _sql(tmp_path / "s", "INSERT INTO tree VALUES (?, ?, ?, ?)", LEDGER, *extra, b"\x00" * 32)
        with pytest.raises(TreeMismatchError, match=f"level {extra[0]}, index {extra[1]} past its 40 records"):
            open_store(tmp_path / "s")
        _sql(tmp_path / "s", "DELETE FROM tree WHERE ledger = ? AND level = ? AND idx = ?", LEDGER, *extra)
    _sql(tmp_path / "s", "INSERT INTO tree VALUES ('ghost', 0, 0, ?)", b"\x00" * 32)
    with pytest.raises(TreeMismatchError, match="ledger 'ghost', which has no records"):
        open_store(tmp_path / "s")


def test_a_changed_record_is_found_on_open(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    _filled(open_store, kit, tmp_path / "s", n=100).close()
    # Height 10, far below the head: only the tree sees it at open (the chain check reads the head).
    changed = _flipped(tmp_path / "s", "SELECT data FROM records WHERE ledger = ? AND height = 10", LEDGER)
    _sql(tmp_path / "s", "UPDATE records SET data = ? WHERE ledger = ? AND height = 10", changed, LEDGER)
    with pytest.raises(TreeMismatchError, match="level 4, index 0 does not match the records up to 15"):
        open_store(tmp_path / "s")


def test_a_changed_record_or_edge_past_the_last_stored_node_is_found_on_open(
    open_store: OpenStore, kit: Any, tmp_path: Path
) -> None:
    _filled(open_store, kit, tmp_path / "s", n=100).close()
    # Records 96..99 are below every stored node: the stored edge covers those below its size
    # (the groups decide it: 96 to 100), the check of the records past it the others.
    changed = _flipped(tmp_path / "s", "SELECT data FROM records WHERE ledger = ? AND height = 97", LEDGER)
    _sql(tmp_path / "s", "UPDATE records SET data = ? WHERE ledger = ? AND height = 97", changed, LEDGER)
    with pytest.raises(TreeMismatchError, match=r"right edge does not match the records|record 97, past the stored"):
        open_store(tmp_path / "s")
    restored = _flipped(tmp_path / "s", "SELECT data FROM records WHERE ledger = ? AND height = 97", LEDGER)
    _sql(tmp_path / "s", "UPDATE records SET data = ? WHERE ledger = ? AND height = 97", restored, LEDGER)
    open_store(tmp_path / "s").close()
    edge = _flipped(tmp_path / "s", "SELECT frontier FROM tree_edge WHERE ledger = ?", LEDGER)
    _sql(tmp_path / "s", "UPDATE tree_edge SET frontier = ? WHERE ledger = ?", edge, LEDGER)
    with pytest.raises(TreeMismatchError, match="right edge does not match the records"):
        open_store(tmp_path / "s")


def test_a_changed_record_past_the_stored_edge_is_found_on_open(
    open_store: OpenStore, kit: Any, tmp_path: Path
) -> None:
    store = open_store(tmp_path / "s")
    store.create_ledger(kit.genesis_entry(0))
    for i in range(1, 100):
        store.append(kit.entry(i))  # lone puts: the last to write the edge completed 96 records
    store.close()
    with contextlib.closing(StoreReader(tmp_path / "s")) as reader:
        edge = reader.tree_edge(LEDGER)
        assert edge is not None and edge.size == 96
        assert reader.tree(LEDGER).size == 100  # a reader's tree reaches the records past the edge
    changed = _flipped(tmp_path / "s", "SELECT data FROM records WHERE ledger = ? AND height = 97", LEDGER)
    _sql(tmp_path / "s", "UPDATE records SET data = ? WHERE ledger = ? AND height = 97", changed, LEDGER)
    with pytest.raises(TreeMismatchError, match=r"record 97, past the stored tree's right edge \(96 records\)"):
        open_store(tmp_path / "s")


def test_a_placed_chain_gets_the_same_tree_as_its_home(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    home = _filled(open_store, kit, tmp_path / "home", n=80)
    replica = open_store(tmp_path / "replica")
    records: list[Record] = list(home.range(LEDGER))
    replica.append_records(records)
    assert replica.root(LEDGER) == home.root(LEDGER)
    assert replica.consistency_proof(LEDGER, 13, 80) == home.consistency_proof(LEDGER, 13, 80)


def _tree_rows(store: ChainStore) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            "SELECT ledger, typeof(ledger), level, typeof(level), idx, typeof(idx), hash, typeof(hash) FROM tree "
            "ORDER BY ledger, level, idx"
        ).fetchall()


def test_a_page_s_tree_rows_in_one_statement_are_those_of_small_groups(
    open_store: OpenStore, kit: Any, tmp_path: Path
) -> None:
    records: list[Record] = kit.chain(700, 0)
    small = open_store(tmp_path / "small", origin=None)
    for first in range(0, len(records), 10):  # a group of 10 records completes at most 2 stored subtrees
        small.submit_records(records[first : first + 10]).result(30)
    page = open_store(tmp_path / "page", origin=None)
    page.submit_records(records[:1]).result(30)
    given = [(record.encode(), tree.leaf_hash(record.encode())) for record in records[1:]]
    page.submit_records(records[1:], verified=True, given=given).result(30)  # one group: 82 tree rows
    rows = _tree_rows(page)
    assert len(rows) == 82 and rows == _tree_rows(small)
    page.close()
    assert open_store(tmp_path / "page", origin=None).root(LEDGER) == small.root(LEDGER)  # checked on open


def test_runs_handed_over_with_the_tree_their_caller_grew_store_that_tree(
    open_store: OpenStore, kit: Any, tmp_path: Path
) -> None:
    """A follower hands each page over with the tree it grew for it (grow_kept from the tree
    below the page; its root is the checkpoint's): pages queued into one group, and pages one
    group each, store the same tree rows and frontier as small groups grown by the store, and
    the store opens again (every stored node checked against the records)."""
    records: list[Record] = kit.chain(700, 0)
    small = open_store(tmp_path / "small", origin=None)
    for first in range(0, len(records), 10):
        small.submit_records(records[first : first + 10]).result(30)
    for name, together in (("together", True), ("apart", False)):
        page = open_store(tmp_path / name, origin=None)
        page.submit_records(records[:1]).result(30)
        frontier = page.frontier(LEDGER)
        futures = []
        held = page._committing if together else threading.Lock()
        with held:  # together: the committer waits, so the pages make one group
            for first in range(1, len(records), 100):
                run = records[first : first + 100]
                given = [(record.encode(), tree.leaf_hash(record.encode())) for record in run]
                frontier = frontier.copy()
                grown = GrownTree(frontier, grow_kept(frontier, [leaf for _, leaf in given]))
                futures.append(page.submit_records(run, verified=True, given=given, grown=grown, receipts=False))
        page.flush()
        assert [future.result(30) for future in futures] == [[]] * len(futures)  # none asked for: none made
        assert _tree_rows(page) == _tree_rows(small)
        assert page.frontier(LEDGER).root() == small.root(LEDGER)
        page.close()
        assert open_store(tmp_path / name, origin=None).root(LEDGER) == small.root(LEDGER)  # checked on open


def test_a_handed_tree_is_taken_only_where_it_stands_on_the_stored_one(
    open_store: OpenStore, kit: Any, tmp_path: Path
) -> None:
    """The store takes a run's tree as its caller grew it (its trust made visible: a marked
    frontier becomes the store's) only if its size is the stored tree's plus the run; one that
    does not stand there is ignored and the tree is grown from the leaves given."""
    records: list[Record] = kit.chain(40, 0)
    store = open_store(tmp_path / "replica", origin=None)
    store.submit_records(records[:1]).result(30)
    given = [(record.encode(), tree.leaf_hash(record.encode())) for record in records[1:]]
    with pytest.raises(ValueError):  # a tree comes with the leaves it was grown from
        store.submit_records(records[1:20], verified=True, grown=GrownTree(tree.Frontier(), []))
    marked = tree.Frontier()
    marked.append_all([b"\x01" * 32] * 20)  # 20 leaves: the one held and this run of 19
    store.submit_records(records[1:20], verified=True, given=given[:19], grown=GrownTree(marked, [])).result(30)
    assert store.frontier(LEDGER).root() == marked.root()
    wrong = tree.Frontier()
    wrong.append_all([b"\x02" * 32] * 7)  # not 20 + 20 leaves: not taken
    store.submit_records(records[20:], verified=True, given=given[19:], grown=GrownTree(wrong, [])).result(30)
    expected = marked.copy()
    expected.append_all([leaf for _, leaf in given[19:]])
    assert store.frontier(LEDGER).root() == expected.root()


@pytest.mark.parametrize("start", [0, 1, 15, 16, 17, 40])
@pytest.mark.parametrize("given", ["none", "all", "every other", "the first"])
def test_grow_kept_by_given_subtrees_is_grow_kept(start: int, given: str) -> None:
    """A follower's run grown with the 16-leaf subtrees its page checker hashed, where their
    leaves all lie in the run, and by leaves elsewhere: the frontier and kept subtrees of its
    leaves alone."""
    leaves = [tree.leaf_hash(n.to_bytes(4, "big")) for n in range(start + 100)]
    all_subtrees = dict(enumerate(tree.subtree_hashes(leaves[: len(leaves) // 16 * 16], 4)))
    subtrees = {
        "none": {},
        "all": all_subtrees,
        "every other": {i: h for i, h in all_subtrees.items() if i % 2},
        "the first": {i: h for i, h in all_subtrees.items() if i == min(all_subtrees)},
    }[given]
    expected, grown = tree.Frontier(), tree.Frontier()
    expected.grow(leaves[:start])
    grown.grow(leaves[:start])
    at = start
    for run in (3, 40, 1, 16, 33, 7):  # checkpoints' sizes anywhere, as a follower meets them
        assert grow_kept_by(grown, leaves[at : at + run], subtrees) == grow_kept(expected, leaves[at : at + run])
        assert grown.encode() == expected.encode()
        at += run
