

def test_a_latent_model_sees_the_condition_at_its_resolution_with_the_pixels_channels():
    config = concat_config("lowres")
    arch = {"kind": "kl", "block_out_channels": [8, 8], "latent_channels": 4}
    fake = latent.Latents("ae", None, {}, {"image_size": 8, "architecture": arch})
    net = latent.score_config(config, fake)
    assert (net.data.image_size, net.data.num_channels, concat.channels(net)) == (4, 4, 1)
    assert concat.init_inputs(net)["concat"].shape == (1, 4, 4, 1)
    c = conditions.lowres(digits(2), 2)
    np.testing.assert_allclose(concat.to_denoiser(c, net), conditions.area_downsample(digits(2), 2), atol=1e-6)
