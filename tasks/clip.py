"""The CLIP-style contrastive pair (models.clip.CLIPPair) as a task of the training loop (training/loop.py).

Train step: one optimizer step (config.optim, no EMA) on the symmetric InfoNCE loss of a batch of B captioned
images (losses.contrastive.contrastive_loss):

    L = -(1 / 2B) sum_i [ log softmax_j(l_ij)|_{j=i} + log softmax_j(l_ji)|_{j=i} ],  l_ij = e^s <u_i, v_j>.

Eval step: the same loss on a held-out batch. Captions reach the steps as token ids: the word vocabulary is
built from the training captions on the first start and saved with the run (tasks/text.py), so a resumed
run encodes every caption to the same ids.

Snapshot (every periodic checkpoint, the last included): measured on the first config.text.eval_examples
held-out pairs, written to metrics.jsonl / TensorBoard and the log, by losses.contrastive's functions:

- retrieval top-1, image -> text and text -> image, among batches of 100, a text of the same caption
  counting as right (`retrieval_accuracy` with the label as group);
- order accuracy (for 'mnist_pairs'): over pairs of two different digits, the fraction whose image scores
  its caption above the order-swapped one, "a 7 left of a 3" for "a 3 left of a 7" (`prefers_caption`).
  A bag of words cannot tell them apart and scores 0.

Finish: the text tower is exported (tasks/text.py) for a text-conditioned score model to use frozen.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
from data_sources.captioned import DigitPairSource, pair_caption
from losses import contrastive
from models.clip import CLIPPair
from tasks import text
from training.loop import Schedule
from training.state import TrainState, apply_gradients, create_train_state, get_optimizer, learning_rate_schedule
from training.validation import ConfigError
from training.writers import MetricWriter

RETRIEVAL_BATCH = 100


def clip_metrics(encode, data, tokenizer, num_examples: int) -> dict[str, float]:
    """Retrieval top-1 both ways (averaged over the examples) and, for 'mnist_pairs', order accuracy (module
    docstring) of encode(images, token ids) -> (f, g) on the first num_examples of `data` (a datasets.Dataset
    with a tokenizer); num_examples 0 measures all."""
    i2t, t2i, order, seen, counted = [], [], [], 0, 0
    pairs = isinstance(data.source, DigitPairSource)
    num_examples = num_examples or len(data)
    for batch in data.ordered_batches(RETRIEVAL_BATCH):
        keep = min(RETRIEVAL_BATCH, num_examples - seen)
        if keep <= 0:
            break
        seen += keep
        batch = {k: v[:keep] for k, v in batch.items()}
        real = batch["mask"] > 0
        counted += int(real.sum())
        f, g = encode(batch["image"], batch["tokens"])
        a, b = contrastive.retrieval_accuracy(f[real], g[real], groups=jnp.asarray(batch["label"][real]))
        i2t.append(float(a) * real.sum())
        t2i.append(float(b) * real.sum())
        if pairs:
            left, right = np.divmod(batch["label"], 10)
            _, swapped = encode(batch["image"], tokenizer([pair_caption(r, l) for l, r in zip(left, right)]))
            order += list(np.asarray(contrastive.prefers_caption(f, g, swapped))[real & (left != right)])
    out = {"retrieval_i2t": sum(i2t) / counted, "retrieval_t2i": sum(t2i) / counted}
    return out | ({"order_accuracy": float(np.mean(order))} if order else {})


class ClipTask:
    """config.text's tower and an image tower on config.data's captioned images (see the module docstring)."""

    frozen, frozen_record, augment = None, {}, False

    def __init__(self, config, workdir: str):
        t = config.training
        if config.data.random_flip:
            raise ConfigError("config.data.random_flip mirrors images but not their captions; set it to False.")
        self.config, self.workdir = config, workdir
        self.schedule = Schedule.from_config(config)
        train, test = datasets.get_dataset(config)
        if getattr(train.source, "captions", None) is None:
            raise ConfigError(f"config.training.task='clip' needs captioned images; config.data.dataset="
                              f"{config.data.dataset!r} has no captions (use 'mnist_pairs', 'caption_folder' or "
                              f"'caption_table').")
        self.tokenizer = text.run_tokenizer(config, workdir, train.source.captions)
        self.train_data = dataclasses.replace(train, tokenizer=self.tokenizer)
        self.eval_data = dataclasses.replace(test, tokenizer=self.tokenizer) if t.eval_freq else None
        self.test_data = dataclasses.replace(test, tokenizer=self.tokenizer, host_index=0, host_count=1)
        self.model = CLIPPair(text.text_config(text.tower_fields(config), self.tokenizer),
                              projection_dim=config.text.projection_dim, text_tower=config.text.tower)
        text.text_tower(text.tower_fields(config), self.tokenizer)  # a bad tower name is refused now
        self.optimizer = get_optimizer(config.optim)
        self.learning_rate = learning_rate_schedule(config.optim)
        self.scaler = datasets.get_data_scaler(config)
        self._encode = jax.jit(lambda params, images, ids: self.model.apply({"params": params}, self.scaler(images),
                                                                            ids)[:2])

    def init_state(self) -> TrainState:
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
        d = self.config.data
        images = jnp.zeros((1, d.image_size, d.image_size, d.num_channels))
        ids = jnp.asarray(self.tokenizer([""]))
        return create_train_state(state_rng, self.model.init(init_rng, images, ids), self.optimizer, ema=False)

    def _loss(self, params, batch):
        return contrastive.contrastive_loss(*self.model.apply({"params": params}, self.scaler(batch["image"]),
                                                               batch["tokens"]))

    def train_step(self, state: TrainState, batch, frozen=None):
        rng, _ = jax.random.split(state.rng)
        loss, grads = jax.value_and_grad(self._loss)(state.params, batch)
        return apply_gradients(state, loss, grads, self.optimizer, rng)

    def eval_step(self, state: TrainState, batch, frozen=None):
        return self._loss(state.params, batch)

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """The held-out metrics of the module docstring."""
        return clip_metrics(lambda images, ids: self._encode(state.params, images, ids), self.test_data,
                            self.tokenizer, self.config.text.eval_examples)

    def snapshot(self, state: TrainState, step: int) -> None:
        metrics = self.evaluate(state)
        logging.info("Step %d: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        writer = MetricWriter(self.workdir)
        writer.write(step, **metrics)
        writer.close()

    def finish(self, state: TrainState) -> str:
        """Export the text tower (tasks/text.py); its path."""
        return text.export_tower(self.workdir, text.tower_fields(self.config), state.params["text_model"],
                                 int(state.step))
