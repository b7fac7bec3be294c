"""The order in which Kamailio walks its destination sets.

Kamailio keeps sets in an AVL tree keyed by set id, inserted in the order
the ids first appear, and every walk (``dispatcher.list``, ``dispatcher.add``
re-adding entries) visits left subtree, right subtree, then the node. To
print ``dispatcher.list`` in Kamailio's exact order sipfleet rebuilds that
tree shape: a port of ``ds_avl_insert`` and its rotations (dispatch.c).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["avl_postorder"]

_NEITHER = -1


class _Node:
    __slots__ = ("id", "longer", "next")

    def __init__(self, id: int) -> None:
        self.id = id
        self.longer = _NEITHER
        self.next: list[_Node | None] = [None, None]


class _Ref:
    """A ``ds_set_t **``: the root slot, or one child slot of a node."""

    __slots__ = ("holder", "index")

    def __init__(self, holder: list[_Node | None], index: int) -> None:
        self.holder = holder
        self.index = index

    def get(self) -> _Node | None:
        return self.holder[self.index]

    def set(self, node: _Node | None) -> None:
        self.holder[self.index] = node


def _rebalance_path(path: _Node | None, id: int) -> None:
    while path is not None and id != path.id:
        step = int(id > path.id)
        path.longer = step
        path = path.next[step]


def _rotate_2(top: _Ref, dir: int) -> _Node | None:
    b = top.get()
    assert b is not None
    d = b.next[dir]
    assert d is not None
    c = d.next[1 - dir]
    e = d.next[dir]
    top.set(d)
    d.next[1 - dir] = b
    b.next[dir] = c
    b.longer = _NEITHER
    d.longer = _NEITHER
    return e


def _rotate_3(top: _Ref, dir: int, third: int) -> _Node | None:
    b = top.get()
    assert b is not None
    f = b.next[dir]
    assert f is not None
    d = f.next[1 - dir]
    assert d is not None
    c = d.next[1 - dir]
    e = d.next[dir]
    top.set(d)
    d.next[1 - dir] = b
    d.next[dir] = f
    b.next[dir] = c
    f.next[1 - dir] = e
    d.longer = _NEITHER
    b.longer = f.longer = _NEITHER
    if third == _NEITHER:
        return None
    if third == dir:
        b.longer = 1 - dir
        return e
    f.longer = dir
    return c


def _rebalance(top: _Ref, id: int) -> None:
    path = top.get()
    assert path is not None
    if path.longer < 0:
        _rebalance_path(path, id)
        return
    first = int(id > path.id)
    if path.longer != first:
        path.longer = _NEITHER
        _rebalance_path(path.next[first], id)
        return
    child = path.next[first]
    assert child is not None
    second = int(id > child.id)
    if first == second:
        _rebalance_path(_rotate_2(top, first), id)
        return
    grand = child.next[second]
    assert grand is not None
    third = _NEITHER if id == grand.id else int(id > grand.id)
    _rebalance_path(_rotate_3(top, first, third), id)


def _insert(root: list[_Node | None], id: int) -> None:
    rotation_top = ref = _Ref(root, 0)
    node = ref.get()
    while node is not None and id != node.id:
        step = int(id > node.id)
        if node.longer >= 0:
            rotation_top = ref
        ref = _Ref(node.next, step)
        node = ref.get()
    if node is None:
        ref.set(_Node(id))
        _rebalance(rotation_top, id)


def avl_postorder(ids: Iterable[int]) -> list[int]:
    """Set ids in Kamailio's walk order, given the order they were inserted."""
    root: list[_Node | None] = [None]
    for id in ids:
        _insert(root, id)
    out: list[int] = []
    # Iterative post-order: left, right, node.
    stack: list[tuple[_Node, bool]] = []
    if root[0] is not None:
        stack.append((root[0], False))
    while stack:
        node, visited = stack.pop()
        if visited:
            out.append(node.id)
            continue
        stack.append((node, True))
        right, left = node.next[1], node.next[0]
        if right is not None:
            stack.append((right, False))
        if left is not None:
            stack.append((left, False))
    return out
