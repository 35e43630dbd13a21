"""hnswlib's graph file, read into and written from the core's graph (``_core.GraphSearch``).

hnswlib's loader trusts its input: an entry point or a link out of range, or a header that
disagrees with the dimension, makes searches read outside the graph. ``read_graph`` reads the
layout that ``HierarchicalNSW::saveIndex`` writes (a fixed header, every element's level-0 record,
then each element's upper-level links) and refuses any file a search could not walk safely;
``write_graph`` writes that layout, so that hnswlib reads what this package saves.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GraphFile",
    "file_size",
    "graph_arrays",
    "insertion_order",
    "read_graph",
    "write_graph",
]

# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset, offsetData
# (size_t), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t)
_HEADER = struct.Struct("<6QiI3QdQ")
_DELETED = 1 << 16  # hnswlib's mark, in the third byte of an element's level-0 count word
_MAX_LEVEL = 255  # a level is ~ln(n)/ln(M): far below this for any index that fits in memory


@dataclass(frozen=True)
class GraphFile:
    """A graph file's content: ``arrays`` for ``_core.GraphSearch`` (None when empty), the label
    of each element, and hnswlib's settings."""

    arrays: dict | None
    labels: np.ndarray  # int64, one per element
    max_elements: int
    M: int
    ef_construction: int


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def read_graph(buf: bytes, dim: int) -> GraphFile:
    """The graph of an hnswlib file of ``dim``-dimensional float vectors, checked first:
    ValueError says what is wrong."""
    if len(buf) < _HEADER.size:
        raise ValueError(f"the graph is {len(buf)} bytes, shorter than its header")
    (level0_offset, max_elements, count, record, label_offset, data_offset, max_level, entry,
     max_m, max_m0, m, mult, ef_construction) = _HEADER.unpack_from(buf)  # fmt: skip
    links0 = max_m0 * 4 + 4
    layout = (level0_offset, data_offset, label_offset, record)
    # hnswlib sets maxM = M, maxM0 = 2 M and mult = 1 / ln M; an add trusts all three
    if not 2 <= m <= 1 << 15 or (max_m, max_m0) != (m, 2 * m):
        raise ValueError(f"the graph has M = {m}, maxM = {max_m}, maxM0 = {max_m0}")
    if not abs(mult * math.log(m) - 1) < 1e-6 or not m <= ef_construction <= 1 << 24:
        raise ValueError(f"the graph has mult = {mult:.6g}, ef_construction = {ef_construction}")
    if layout != (0, links0, links0 + 4 * dim, links0 + 4 * dim + 8):
        raise ValueError(f"the graph's element layout {layout} is not that of dimension {dim}")
    if count > max_elements or max_elements * record > _memory_bytes():
        raise ValueError(f"the graph claims {count} of {max_elements} elements of {record} bytes")
    end0 = _HEADER.size + count * record
    if len(buf) < end0 + 4 * count:
        raise ValueError(f"the graph is {len(buf)} bytes, too short for {count} elements")
    if count == 0:
        if len(buf) != end0:
            raise ValueError("an empty graph has trailing bytes")
        return GraphFile(None, np.empty(0, np.int64), max_elements, m, ef_construction)
    if entry >= count or not 0 <= max_level <= _MAX_LEVEL:
        raise ValueError(f"the graph's entry point {entry} / top level {max_level} is invalid")

    level0 = np.frombuffer(buf, np.uint32, count * record // 4, _HEADER.size).reshape(count, -1)
    sizes, links = level0[:, 0] & 0xFFFF, level0[:, 1 : 1 + max_m0]
    _check_links(sizes, links, count, max_m0, "level 0")
    deleted = (level0[:, 0] & _DELETED != 0).astype(np.uint8)
    lo, hi = level0[:, label_offset // 4], level0[:, label_offset // 4 + 1]
    labels = (lo.astype(np.uint64) | (hi.astype(np.uint64) << np.uint64(32))).astype(np.int64)

    # Upper levels: per element a byte count, then `level` blocks of (count, maxM links).
    block = max_m * 4 + 4
    levels = np.zeros(count, np.int64)
    upper: list[tuple[int, np.ndarray]] = []  # (element, its blocks as (level, maxM + 1))
    pos = end0
    for i in range(count):
        if pos + 4 > len(buf):
            raise ValueError("the graph's upper levels are truncated")
        size = int.from_bytes(buf[pos : pos + 4], "little")
        pos += 4
        if size:
            if size % block or size // block > max_level or pos + size > len(buf):
                raise ValueError(f"element {i} has an invalid upper-level record")
            levels[i] = size // block
            upper.append((i, np.frombuffer(buf, np.uint32, size // 4, pos).reshape(-1, max_m + 1)))
            pos += size
    if pos != len(buf):
        raise ValueError("the graph has trailing bytes")
    if levels[entry] != max_level:
        raise ValueError(f"the entry point has level {levels[entry]}, the graph {max_level}")
    for i, blocks in upper:
        _check_links(blocks[:, 0] & 0xFFFF, blocks[:, 1:], count, max_m, f"element {i}")
        # A link on level l must lead to an element that has level l.
        used = np.arange(max_m) < (blocks[:, :1] & 0xFFFF)
        targets = blocks[:, 1:][used]
        link_levels = np.broadcast_to(np.arange(1, len(blocks) + 1)[:, None], used.shape)[used]
        if (levels[targets] < link_levels).any():
            raise ValueError(f"element {i} links to an element below that level")
    upper_offsets = np.zeros(count, np.int64)
    np.cumsum(levels[:-1] * block // 4, out=upper_offsets[1:])
    links0 = level0[:, : 1 + max_m0].copy()
    links0[:, 0] &= 0xFFFF  # the count alone: the deleted mark is kept apart
    arrays = {
        "keys": np.ascontiguousarray(level0[:, data_offset // 4 : label_offset // 4]).view("f4"),
        "links0": links0,
        "upper": np.concatenate([b.ravel() for _, b in upper] or [np.empty(0, np.uint32)]),
        "upper_offsets": upper_offsets,
        "levels": levels.astype(np.int32),
        "max_m": max_m,
        "entry": entry,
        "deleted": deleted,
    }
    return GraphFile(arrays, labels, max_elements, m, ef_construction)


def _record_bytes(m: int, dim: int) -> int:
    """An element's level-0 record: its count word and 2 M links, its key, its label."""
    return 4 * (2 * m + 1) + 4 * dim + 8


def file_size(graph) -> int:
    """Bytes of the hnswlib file of ``graph`` (a ``_core.GraphSearch`` that keeps its keys)."""
    return (
        _HEADER.size
        + graph.size * (_record_bytes(graph.max_m, graph.dim) + 4)
        + 4 * graph.upper_words
    )


def write_graph(f, graph, labels: np.ndarray, max_elements: int, ef_construction: int) -> None:
    """Write ``graph`` (a ``_core.GraphSearch`` that keeps its keys) to the binary file ``f`` in
    hnswlib's layout, element i labelled ``labels[i]``."""
    m, dim, count = graph.max_m, graph.dim, graph.size
    width, record = 2 * m + 1, _record_bytes(m, dim)
    arrays = graph.arrays() if count else None
    entry = 0 if arrays is None else arrays["entry"]
    top = 0 if arrays is None else int(arrays["levels"][entry])
    header = (0, max_elements, count, record, 4 * width + 4 * dim, 4 * width, top, entry, m,
              2 * m, m, 1 / math.log(m), ef_construction)  # fmt: skip
    f.write(_HEADER.pack(*header))
    if arrays is None:
        return
    links0 = arrays["links0"]
    step = 1 << 14  # elements per write: a few MB at a time
    for first in range(0, count, step):
        rows = slice(first, first + step)
        block = np.empty((len(links0[rows]), record // 4), np.uint32)
        block[:, :width] = links0[rows]
        block[:, 0] = (links0[rows, 0] & 0xFFFF) | (arrays["deleted"][rows].astype(np.uint32) << 16)
        block[:, width : width + dim] = arrays["keys"][rows].view(np.uint32)
        block[:, width + dim :] = labels[rows].astype(np.int64).view(np.uint32).reshape(-1, 2)
        f.write(block.tobytes())
    # per element: its upper levels' byte count, then their blocks
    levels, upper = arrays["levels"].astype(np.int64), arrays["upper"]
    words = np.empty(count + len(upper), np.uint32)
    starts = np.arange(count) + np.concatenate(([0], np.cumsum(levels * (m + 1))[:-1]))
    words[starts] = levels * 4 * (m + 1)
    is_link = np.ones(len(words), bool)
    is_link[starts] = False
    words[is_link] = upper
    f.write(words.tobytes())


def _check_links(sizes: np.ndarray, links: np.ndarray, count: int, width: int, where: str):
    if (sizes > width).any():
        raise ValueError(f"{where}: a link list is longer than {width}")
    used = np.arange(width) < sizes[:, None]
    if (links[used] >= count).any():
        raise ValueError(f"{where}: a link leads outside the {count} elements")


def graph_arrays(index) -> tuple[dict, np.ndarray]:
    """The arguments of ``_core.GraphSearch`` for the graph of a live ``hnswlib.Index``,
    and the label of each of its elements (int64). Reads hnswlib's own state (``__getstate__``):
    every element's level-0 record (count word, links, vector, label) and the concatenated
    upper-level blocks."""
    state = index.__getstate__()[0]
    count, record = state["cur_element_count"], state["size_data_per_element"]
    width, data = state["max_M0"] + 1, state["offset_data"]
    if count == 0 or data != 4 * width or state["label_offset"] != data + 4 * index.dim:
        raise ValueError(f"an hnswlib graph of {count} elements with an unexpected layout")
    level0 = state["data_level0"].view(np.uint8)[: count * record].reshape(count, record)
    links0 = np.ascontiguousarray(level0[:, :data]).view(np.uint32)
    keys = np.ascontiguousarray(level0[:, data : state["label_offset"]]).view(np.float32)
    label_bytes = level0[:, state["label_offset"] : state["label_offset"] + 8]
    labels = np.ascontiguousarray(label_bytes).view(np.uint64).ravel().astype(np.int64)
    levels = np.ascontiguousarray(state["element_levels"][:count], dtype=np.int32)
    block_words = state["size_links_per_element"] // 4
    upper_offsets = np.zeros(count, np.int64)
    np.cumsum(levels[:-1].astype(np.int64) * block_words, out=upper_offsets[1:])
    arrays = {
        "keys": keys,
        "links0": links0,
        "upper": state["link_lists"].view(np.uint32),
        "upper_offsets": upper_offsets,
        "levels": levels,
        "max_m": int(state["max_M"]),
        "entry": int(state["enterpoint_node"]),
        "deleted": (links0[:, 0] & _DELETED != 0).astype(np.uint8),
    }
    return arrays, labels


def insertion_order(keys: np.ndarray) -> np.ndarray:
    """Rows of ``keys`` (n, d) by descending norm, the order to insert them into an
    inner-product graph: large-norm keys answer most queries, and linking them first builds a
    better graph (Vespa saw the same); voyager's inner product needs it outright."""
    return np.argsort(-np.einsum("ij,ij->i", keys, keys), kind="stable")
