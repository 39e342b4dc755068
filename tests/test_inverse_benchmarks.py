"""benchmarks/inpainting.py's pieces (issue 20): the masked PSNR's closed form, and PC replacement inpainting in
chunks keeping every image's own known pixels, with the masks the concat inpaint model is conditioned on."""
import numpy as np
import pytest

import models
import sde_lib
from benchmarks import inpainting, superresolution
from benchmarks.common import random_variables
from data_sources import conditions
from evaluation.metrics import image_psnr
from tasks import concat
from test_concat import concat_config, digits
from training import parallel


def test_masked_psnr_counts_only_the_masked_pixels():
    x = np.zeros((2, 4, 4, 3), np.float32)
    m = np.zeros((2, 4, 4, 1), np.float32)
    m[:, :2] = 1  # the top half
    x_hat = x.copy()
    x_hat[:, :2] = 0.1  # wrong by 0.1 inside the mask
    x_hat[:, 2:] = 0.5  # and by 0.5 outside it
    np.testing.assert_allclose(image_psnr(x, x_hat, m), 20.0, atol=1e-4)  # 10 log10(1 / 0.01)
    np.testing.assert_allclose(image_psnr(x, x_hat), -10 * np.log10((0.01 + 0.25) / 2), atol=1e-4)


@pytest.mark.slow  # compiles a PC sampler twice (a chunk's masks each): ~10 s on 2 cores
def test_pc_inpainting_keeps_each_images_known_pixels_across_chunks(monkeypatch):
    config = concat_config("inpaint")  # a tiny 8x8 DDPM; its concat section gives the masks
    config.eval.batch_size = 2  # 3 images: a chunk of 2 and a padded 1
    config.sampling.update(method="pc", predictor="euler_maruyama", corrector="none", num_steps=3)
    config.concat.kind = ""  # the unconditional model
    model = models.get_model(config)
    monkeypatch.setattr(superresolution, "restore_ema", lambda c, workdir, step: (
        model, random_variables(c), sde_lib.from_config(c), parallel.make_mesh(), 7))

    truth = digits(3)
    condition = np.asarray(concat.condition_fn(concat_config("inpaint"))(truth, np.arange(3)))
    np.testing.assert_array_equal(condition[..., -1:], np.stack([conditions.inpaint_mask(8, config.seed, i)
                                                                 for i in range(3)]))
    x, step = inpainting.pc_inpainting(config, "unused", truth, condition)
    known = 1 - condition[..., -1:]
    assert step == 7 and x.shape == truth.shape and len({m.tobytes() for m in known}) > 1
    np.testing.assert_allclose(known * x, known * truth, atol=1e-6)  # each image its own known pixels
    unknown = condition[..., -1:] > 0
    assert np.abs(x - truth)[np.broadcast_to(unknown, x.shape)].max() > 0.05  # the rest is sampled


def test_report_scores_completed_images(capsys):
    truth = digits(2)
    condition = conditions.inpaint(truth, np.arange(2), seed=0)
    wrong = 1 - truth  # wrong everywhere: completion restores the known pixels, the raw error stays
    inpainting.report([("truth (floor)", truth, 0.0, ""), ("inverted", wrong, 1.5, "x")], truth, condition,
                      lambda images: float(np.mean(images)))
    lines = capsys.readouterr().out.splitlines()
    truth_row, wrong_row = lines[-2].split(), lines[-1].split()
    assert truth_row[3:7] == ["0", "0.0e+00", "0.0000", "inf"]  # "truth (floor)" is two words
    assert wrong_row[1] == f"{np.mean(concat.complete(condition, wrong)):.3f}" and wrong_row[2] == "0"
    assert float(wrong_row[3]) > 0.5 and float(wrong_row[5]) < 10
