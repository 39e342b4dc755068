"""`--mode sample` of a ControlNet (modes/controlnet_sample.py): condition files and conditioning scales."""
import numpy as np
import pytest
from PIL import Image

from models import controlnet, unet2d_condition
from modes import controlnet_sample
from training.validation import ConfigError


def test_conditioning_scale_is_one_number_or_one_per_output():
    spec = unet2d_condition.UNetSpec(block_out_channels=(8, 16), layers_per_block=(1, 1), heads=(2, 2),
                                     transformer_layers_per_block=(1, 1), down_block_types=("DownBlock2D",) * 2,
                                     up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
    model = controlnet.ControlNetModel(controlnet.ControlNetSpec(spec, 1, (8,)))
    n = controlnet.num_outputs(controlnet.param_shapes(model))
    assert n == 5  # conv_in, level 0's resnet and downsampler, level 1's resnet, the mid block
    assert controlnet_sample.parse_scale("0.5", n) == 0.5
    assert controlnet_sample.parse_scale("1,1,0.5,0,2", n) == (1.0, 1.0, 0.5, 0.0, 2.0)
    with pytest.raises(ConfigError, match="has 2 numbers; give one, or 5"):
        controlnet_sample.parse_scale("1,2", n)
    with pytest.raises(ConfigError, match="must be a number"):
        controlnet_sample.parse_scale("strong", n)


def test_condition_file_resized_matched_or_refused(tmp_path, caplog):
    edges = np.zeros((16, 16), np.uint8)
    edges[4:12, 4:6] = 255
    Image.fromarray(edges).save(tmp_path / "edges.png")
    with caplog.at_level("INFO"):
        cond = controlnet_sample.load_condition_file(str(tmp_path / "edges.png"), 8, 1)
    assert cond.shape == (1, 8, 8, 1) and cond.max() > 0.5 and "is 16x16; resized to 8x8" in caplog.text
    Image.fromarray(np.stack([edges] * 3, -1)).save(tmp_path / "gray_rgb.png")  # gray saved as RGB: matched
    np.testing.assert_array_equal(controlnet_sample.load_condition_file(str(tmp_path / "gray_rgb.png"), 16, 1)[0, ..., 0],
                                  edges / np.float32(255))
    assert controlnet_sample.load_condition_file(str(tmp_path / "edges.png"), 16, 3).shape == (1, 16, 16, 3)
    color = np.stack([edges, 255 - edges, edges], -1)
    Image.fromarray(color).save(tmp_path / "color.png")
    with pytest.raises(ConfigError, match="color.png has 3 distinct channels; this ControlNet takes 1"):
        controlnet_sample.load_condition_file(str(tmp_path / "color.png"), 16, 1)
    with pytest.raises(ConfigError, match="is not a file"):
        controlnet_sample.load_condition_file(str(tmp_path / "missing.png"), 16, 1)
