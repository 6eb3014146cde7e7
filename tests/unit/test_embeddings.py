"""The embedder: the model from its wheel, offline, unit vectors that rank a paraphrase
above an unrelated sentence."""

from __future__ import annotations

import numpy as np

from eventlog.embeddings import DIM, MODEL_ID, shared_embedder


def test_paraphrase_scores_above_unrelated_and_vectors_are_unit() -> None:
    emb = shared_embedder()
    assert emb is shared_embedder()  # loaded once per process
    assert emb.model_id == MODEL_ID
    v = emb.embed(["How do I reset my password?", "What is the way to change my password?",
                   "What's the weather in Paris tomorrow?"])
    assert v.shape == (3, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.75
    assert sims[0, 2] < 0.3
    assert emb.embed([]).shape == (0, DIM)
