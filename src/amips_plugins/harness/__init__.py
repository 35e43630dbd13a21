"""The measuring harness: data sets, match rate and recall against compute, the methods compared
(faiss, hnswlib and ours) and the ``amips`` command. Needs ``pip install "amips_plugins[harness]"``;
the search library never imports it."""

from .datasets import MipsDataset, builtin, from_files, glove50, load_vectors, wordnet_minilm
from .evaluation import format_table, match_rate, plot_curves, recall_at_k, sweep

__all__ = [
    "MipsDataset",
    "builtin",
    "format_table",
    "from_files",
    "glove50",
    "load_vectors",
    "match_rate",
    "plot_curves",
    "recall_at_k",
    "sweep",
    "wordnet_minilm",
]
