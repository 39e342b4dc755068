"""The CLIP pair as a task of the one loop: exact resume, the tokenizer saved with the run, the held-out metrics
computed by losses.contrastive's functions and logged, and the exported text tower."""
import json
import os

import jax
import numpy as np

import tasks
from configs.clip import mnist_pairs
from data_sources.tokenizer import WordTokenizer
from losses import contrastive
from tasks import text
from tasks.clip import ClipTask
from training import loop


def tiny_config(n_iters=4, num_pairs=64):
    config = mnist_pairs.get_config()
    config.data.image_size, config.data.num_pairs = 8, num_pairs
    t = config.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 8, n_iters, 2, 0
    t.snapshot_freq, t.snapshot_freq_for_preemption = 4, 2
    config.eval.batch_size = 8
    config.text.update(width=16, layers=1, heads=2, projection_dim=8, eval_examples=40)
    return config


def test_resume_equals_the_straight_run_and_keeps_the_tokenizer(tmp_path):
    straight = loop.train(tasks.get_task(tiny_config(), str(tmp_path / "straight")))
    loop.train(ClipTask(tiny_config(n_iters=2), str(tmp_path / "resumed")))
    resumed_task = ClipTask(tiny_config(), str(tmp_path / "resumed"))
    resumed = loop.train(resumed_task)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the saved vocabulary is read back, not rebuilt: other captions would have given other ids
    other = ClipTask(tiny_config(num_pairs=24), str(tmp_path / "resumed"))
    rebuilt = WordTokenizer.build(other.train_data.source.captions, context_length=8)
    assert rebuilt.vocab != resumed_task.tokenizer.vocab
    captions = resumed_task.train_data.source.captions[:20]
    np.testing.assert_array_equal(other.tokenizer(captions), resumed_task.tokenizer(captions))
    assert other.tokenizer.vocab == WordTokenizer.load(str(tmp_path / "resumed" / text.TOKENIZER_FILE)).vocab


def test_metrics_come_from_losses_contrastive_and_are_logged(tmp_path, monkeypatch):
    calls = {"retrieval": 0, "order": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(contrastive, "retrieval_accuracy", counting("retrieval", contrastive.retrieval_accuracy))
    monkeypatch.setattr(contrastive, "prefers_caption", counting("order", contrastive.prefers_caption))
    task = ClipTask(tiny_config(), str(tmp_path / "run"))
    state = loop.train(task)
    assert calls == {"retrieval": 1, "order": 1}  # one snapshot, one batch of 40 examples
    measured = task.evaluate(state)
    assert set(measured) == {"retrieval_i2t", "retrieval_t2i", "order_accuracy"}
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        logged = [r for r in map(json.loads, f) if "retrieval_i2t" in r]
    assert [r["step"] for r in logged] == [4]
    for name, value in measured.items():
        np.testing.assert_allclose(logged[-1][name], value, rtol=1e-6)
    # the exported tower holds the trained text tower
    module, params, record = text.load_tower(str(tmp_path / "run"), task.tokenizer)
    assert record["step"] == 4 and os.path.isabs(record["text_tower"])
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params["text_model"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
