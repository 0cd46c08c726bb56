"""Hostile or empty tensors into the pack's nodes: a message saying what is wrong and what to do, refused before
any model is loaded (they used to surface as raw torch/numpy errors or an allocator failure)."""
import pytest
import torch

import comfy_env


def node(module, name):
    return getattr(comfy_env.pack_module(module), name)()


def test_referencenet_encode_refuses_tiny_empty_and_huge_unresized_images(comfy):
    encode = node("nodes.reference_nodes", "MuseVReferenceNetEncode").encode
    with pytest.raises(ValueError) as error:
        encode("any.safetensors", None, torch.zeros(1, 1, 1, 3))
    assert str(error.value) == ("the reference image is 1x1 px, the ReferenceNet needs at least 8x8 px: use a larger "
                                "image or set width and height (the video's size, e.g. 512x768) to resize it")
    with pytest.raises(ValueError, match=r"^the image input holds no frames: connect the reference image"):
        encode("any.safetensors", None, torch.zeros(0, 64, 64, 3))
    with pytest.raises(ValueError, match=r"^the reference image is 4x64 px, the ReferenceNet needs at least 8x8 px"):
        encode("any.safetensors", None, torch.zeros(1, 64, 64, 3), width=4)
    huge = torch.zeros(1, 8000, 8000, 3).expand(1, 8000, 8000, 3)
    with pytest.raises(ValueError) as error:
        encode("any.safetensors", None, huge)
    assert str(error.value) == ("the reference image is 8000x8000 px (width 8000 px, height 8000 px taken from the "
                                "image, over 2048 px): set width and height to the video's size (e.g. 512x768) so it "
                                "is resized first")
    with pytest.raises(ValueError, match=r"\(height 8000 px taken from the image, over 2048 px\)"):
        encode("any.safetensors", None, huge, width=512)


def test_dwpose_refuses_an_empty_image_batch(comfy):
    extract = node("nodes.pose_nodes", "MuseVDWPoseExtract").extract
    with pytest.raises(ValueError) as error:
        extract(torch.zeros(0, 64, 64, 3), "yolox_l.onnx", "dw-ll_ucoco_384.onnx", True, True, False, 512, 512, "auto")
    assert str(error.value) == ("the image input is empty (0 frames of 64x64 px): connect at least one frame (Load "
                                "Image, or the images of Get Video Components)")


def test_ip_adapter_refuses_an_empty_image_batch(comfy):
    embed = node("nodes.reference_nodes", "MuseVIPAdapterEmbed").embed
    with pytest.raises(ValueError, match=r"^the image input holds no frames: connect the image prompt"):
        embed(None, torch.zeros(0, 64, 64, 3), "x/ip_adapter_image_proj.bin", 1.0, "center")


@pytest.mark.parametrize("name", ["condition", "video"])
def test_sampler_refuses_a_latent_with_no_frames(comfy, name):
    sampler = node("nodes.sampler", "MuseVParallelDenoiseSampler")
    empty = {"samples": torch.zeros(0, 4, 8, 8)}
    with pytest.raises(ValueError) as error:
        sampler.sample(None, [], [], 4, 0, 2, 3.5, "euler", "normal", 4, 1, "flat", 8.0, 0.5, 0.001, 1.0,
                       **{name: empty})
    assert str(error.value) == (f"the {name} latent holds no frames (0 rows): connect a VAE Encode of at least one "
                                f"image, or disconnect {name}")
