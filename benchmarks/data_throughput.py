"""Images/s of the data pipeline per source, next to the training images/s of a CIFAR-10 model.

    python -m benchmarks.data_throughput [--tfds_data_dir DIR --tfds_name fashion_mnist] [--train_config ...]

Each source is batched by datasets.Dataset exactly as training reads it (seeded shuffle, random flips,
uniform dequantization, batch 128) at 32x32x3 (CIFAR-10) and 64x64x3 (CelebA-64); the figure is
128 / the median time of one batch. Folders hold files already at the target size, except the
'CelebA-like' JPEGs (178x218, centre crop 140, resize to 64) that reproduce CelebA's real decode
cost. The training figure is batch / median time of one compiled optimizer step of --train_config
on this machine's devices, so the ratio compares like with like.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import datasets
from data_sources import ArraySource, ImageFormat, local, tfds_catalog


def images_per_second(source, batch: int, repeats: int) -> float:
    ds = datasets.Dataset(source, seed=0, random_flip=True, uniform_dequantization=True)
    stream = ds.batches(batch)
    next(stream)  # warm the file cache and the permutation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(stream)
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def write_files(folder: str, images: np.ndarray, ext: str) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for k, im in enumerate(images):
        Image.fromarray(im).save(os.path.join(folder, f"{k:05d}.{ext}"), quality=95)


def sources(size: int, n: int, workdir: str, tfds_dir: str, tfds_name: str):
    """(name, source) pairs at size x size x 3."""
    rng = np.random.default_rng(0)
    fmt = ImageFormat(size, 3)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    yield "in-memory arrays", ArraySource(images, np.zeros(n, np.int32))
    npz_path = os.path.join(workdir, f"images{size}.npz")
    np.savez(npz_path, image=images)
    config = argparse.Namespace(data=argparse.Namespace(dataset="npz", path=npz_path, eval_path=""))
    yield "npz (loaded whole)", local.npz(config, "train", fmt)
    for ext in ("png", "jpg"):
        folder = os.path.join(workdir, f"{ext}{size}")
        write_files(folder, images, ext)
        yield f"folder of {ext.upper()} {size}x{size}", local.folder_source(folder, fmt)
    if size == 64:
        folder = os.path.join(workdir, "celeba_like")
        smooth = np.repeat(np.repeat(rng.integers(0, 256, (n, 218 // 2, 178 // 2, 3), dtype=np.uint8), 2, 1), 2, 2)
        write_files(folder, smooth, "jpg")
        yield "folder of JPEG 178x218, crop 140", local.folder_source(folder, ImageFormat(size, 3, crop=140))
    if tfds_dir and tfds_catalog.prepared_dir(tfds_dir, tfds_name):
        yield f"TFDS array_record ({tfds_name})", tfds_catalog.open_split(tfds_dir, tfds_name, "train", fmt)


def training_images_per_second(config_name: str, batch: int, iters: int) -> tuple[float, int]:
    """(images/s, parameter count) of one compiled optimizer step of configs/<config_name>.py, as the train loop
    builds it (see benchmarks/train_throughput.py for the full report: FLOPs, memory, MFU)."""
    import jax

    import models
    import sde_lib
    from benchmarks import common
    from tasks import score as score_task
    from training import parallel
    from training import state as training_state
    from training.loop import fuse_steps

    config = common.load_config(config_name)
    mesh = parallel.make_mesh()
    sde, model, optimizer = sde_lib.from_config(config), models.get_model(config), training_state.get_optimizer(config.optim)
    variables = common.random_variables(config)
    state = parallel.replicate(training_state.create_train_state(jax.random.PRNGKey(0), variables, optimizer), mesh)
    step = fuse_steps(score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer,
                                                 scaler=datasets.get_data_scaler(config)), donate=True)
    d = config.data
    x = np.random.default_rng(0).random((1, batch, d.image_size, d.image_size, d.num_channels), np.float32)
    batch_arrays = parallel.shard_batch({"image": x}, mesh, batch_axis=1)
    compiled, _ = common.compile_timed(step, state, batch_arrays, None)
    holder = [state]

    def run():
        holder[0], step_losses = compiled(holder[0], batch_arrays, None)
        step_losses.block_until_ready()

    return batch / common.time_calls(run, iters), sum(v.size for v in jax.tree_util.tree_leaves(variables["params"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="examples per source")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tfds_data_dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--tfds_name", default="fashion_mnist")
    parser.add_argument("--train_config", default="vp/ddpmpp_cifar10_continuous", help="configs/<this>.py")
    parser.add_argument("--train_batch", type=int, default=4)
    parser.add_argument("--train_iters", type=int, default=3)
    parser.add_argument("--skip_train", action="store_true")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for size in (32, 64):
            for name, source in sources(size, args.n, workdir, args.tfds_data_dir, args.tfds_name):
                results[(name, size)] = images_per_second(source, args.batch, args.repeats)
                print(f"{size}x{size}x3  {name:36s} {results[(name, size)]:10.0f} images/s", flush=True)
    slowest32 = min(v for (_, size), v in results.items() if size == 32)
    print(f"slowest source at 32x32: {slowest32:.0f} images/s (batch {args.batch}, flips + dequantization)")
    if args.skip_train:
        return
    train_ips, n_params = training_images_per_second(args.train_config, args.train_batch, args.train_iters)
    print(f"training {args.train_config} ({n_params / 1e6:.1f}M params), batch {args.train_batch}: "
          f"{train_ips:.2f} images/s")
    print(f"slowest data source / training: {slowest32 / train_ips:.0f}x")


if __name__ == "__main__":
    main()
