"""MuseV's IP-Adapter beside ComfyUI_IPAdapter_plus, in-process (issue 10 §4).

The real IPAdapter_plus (unpacked at test time from ../shared/hosts) runs as a second custom node with a tiny plain
IP-Adapter file generated here. On SD1.5 its Attn2Replace patches sit on the blocks' 2-tuple `attn2` keys, which
ComfyUI's lookup ranks below MuseV's per-transformer keys; MuseV's patch runs them inside its own, so both orders
(IPAdapter_plus after or before Load MuseV UNet) give the same video, each adapter's effect visible.
"""
import os

import pytest
import torch

import comfy_env
import ipadapter_plus_host
import tiny_models
from test_parity_musev import rel_err
from test_reference_inprocess import renv, sample  # noqa: F401  (module fixture)

IPADAPTER_FILE = "tiny_ip-adapter_sd15.safetensors"


@pytest.fixture(scope="module")
def ipa(renv, shared_dir, tmp_path_factory):  # noqa: F811
    import folder_paths
    root = ipadapter_plus_host.unpack(shared_dir, str(tmp_path_factory.mktemp("custom_nodes")))
    pack = ipadapter_plus_host.import_in_process(root)
    folder = str(tmp_path_factory.mktemp("ipadapter"))
    tiny_models.write_tiny_ipadapter_plus_model(os.path.join(folder, IPADAPTER_FILE))
    folder_paths.add_model_folder_path("ipadapter", folder)
    nodes = pack.NODE_CLASS_MAPPINGS
    ipadapter = nodes["IPAdapterModelLoader"]().load_ipadapter_model(IPADAPTER_FILE)[0]
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(7))  # another image than MuseV's

    def apply(model):
        with torch.inference_mode():
            return nodes["IPAdapterAdvanced"]().apply_ipadapter(model, ipadapter, weight=1.0, image=image,
                                                               clip_vision=renv["clip_vision"])[0]

    after = apply(renv["ref_model"])  # IPAdapter_plus after Load MuseV UNet
    before = renv["loader"].load(apply(renv["model"]), renv["names"]["referencenet_unet"])[0]  # ... and before
    return {"pack": pack, "after": after, "before": before}


@pytest.fixture(scope="module")
def videos(renv, ipa):  # noqa: F811
    tokens = renv["tokens"]
    return {"neither": sample(renv, renv["ref_model"]), "musev_ip": sample(renv, renv["ref_model"], ip_tokens=tokens),
            "ipadapter_plus": sample(renv, ipa["after"]),
            "both_after": sample(renv, ipa["after"], ip_tokens=tokens),
            "both_before": sample(renv, ipa["before"], ip_tokens=tokens)}


def _attn2(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def test_both_adapters_patch_the_same_cross_attentions(ipa):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    for model in (ipa["after"], ipa["before"]):
        patches = _attn2(model)
        ours = patches[("input", 1, 0)]
        assert isinstance(ours, musev_model._IPAdapterAttention2)
        assert type(patches[("input", 1)]).__name__ == "Attn2Replace"  # IPAdapter_plus's own object, untouched
        assert len(patches[("input", 1)].callback) == 1


def test_both_orders_give_the_same_video_and_each_adapter_shows(videos):
    both, neither = videos["both_after"], videos["neither"]
    assert rel_err(videos["both_before"], both) < 1e-5
    for alone in ("musev_ip", "ipadapter_plus"):
        assert (both[1:] - videos[alone][1:]).abs().mean() > 1e-3, alone  # the other adapter shows
        assert (videos[alone][1:] - neither[1:]).abs().mean() > 1e-3, alone  # this one alone shows too
    assert torch.equal(both[:1], neither[:1])  # the condition frame stays the input


def test_contributions_add_up_in_one_cross_attention(renv, ipa):  # noqa: F811
    """At one cross-attention: MuseV's patch output = text attention + IPAdapter_plus term + MuseV IP term."""
    import comfy.ldm.modules.attention as attention
    musev_model = comfy_env.pack_module("nodes.musev_model")
    patches = _attn2(ipa["after"])
    ours, theirs = patches[("input", 1, 0)], patches[("input", 1)]
    motion = ipa["after"].get_additional_models_with_key(musev_model.KEY)[0].model
    frames, heads = 3, 8
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2 * frames, 64, 320, generator=generator)
    k, v = torch.randn(2, 2 * frames, 77, 320, generator=generator)
    tokens = renv["tokens"]
    rows = tokens.rows([0, 1], frames, device=q.device, dtype=q.dtype)
    extra = {"n_heads": heads, "dim_head": 320 // heads, "block": ("input", 1), "block_index": 0,
             "transformer_index": 0, "cond_or_uncond": [0, 1], "original_shape": [2 * frames, 4, 8, 8],
             "sigmas": torch.full((2 * frames,), 5.0)}

    def run(patch, attn2_patches, ip_tokens):
        call = musev_model.MuseVCall(frames, None, [0], False, ip_tokens=ip_tokens, motion=motion,
                                     attn2_patches=attn2_patches)
        with torch.inference_mode():
            return patch(q, k, v, dict(extra, **{musev_model.CALL_KEY: call}))

    text = attention.optimized_attention(q, k, v, heads)
    ipadapter_term = theirs(q, k, v, extra) - text
    musev_term = run(ours, None, rows) - text
    combined = run(ours, patches, rows)
    assert ipadapter_term.abs().mean() > 1e-3 and musev_term.abs().mean() > 1e-3
    assert torch.allclose(combined, text + ipadapter_term + musev_term, atol=1e-5)
    assert torch.allclose(run(ours, patches, None), text + ipadapter_term, atol=1e-5)


def test_a_pack_meeting_musev_on_its_own_key_adds_its_term(renv):  # noqa: F811
    """The Attn2Replace protocol on MuseV's object: `.add()` (IPAdapter_plus on SDXL-style 3-tuple keys) and a
    patch that was on the key before MuseV (kept as the inner attention)."""
    import comfy.ldm.modules.attention as attention
    musev_model = comfy_env.pack_module("nodes.musev_model")
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 16, 320, generator=generator)
    k, v = torch.randn(2, 2, 77, 320, generator=generator)
    extra = {"n_heads": 8, "block": ("input", 1), "sigmas": torch.tensor([5.0, 5.0])}
    text = attention.optimized_attention(q, k, v, 8)

    def term(out, q, k, v, extra_options, weight=1.0, **kwargs):
        return weight * torch.ones_like(out)

    patch = musev_model._IPAdapterAttention2("down_blocks.0.attentions.0.transformer_blocks.0.attn2")
    patch.add(term, weight=2.0, sigma_start=10.0, sigma_end=1.0)
    patch.add(term, weight=100.0, sigma_start=1.0, sigma_end=0.0)  # outside this step's sigma: not applied
    assert torch.allclose(patch(q, k, v, extra), text + 2.0, atol=1e-6)

    class OtherPack:  # another pack's replace patch speaking the Attn2Replace protocol
        def __init__(self):
            self.terms = []

        def add(self, callback, **kwargs):
            self.terms.append((callback, kwargs))

        def __call__(self, q, k, v, extra_options):
            out = attention.optimized_attention(q, k, v, extra_options["n_heads"]) + 3.0
            for callback, kwargs in self.terms:
                out = out + callback(out, q, k, v, extra_options, **kwargs)
            return out

    wrapping = musev_model._IPAdapterAttention2("down_blocks.0.attentions.0.transformer_blocks.0.attn2", OtherPack())
    wrapping.add(term, weight=4.0)  # forwarded to the inner patch's protocol
    assert len(wrapping.inner.terms) == 1 and not wrapping.added
    assert torch.allclose(wrapping(q, k, v, extra), text + 7.0, atol=1e-6)
    # a patch on MuseV's key before Load MuseV UNet keeps running inside MuseV's, also when MuseV is applied twice
    model = renv["model"].clone()
    model.set_model_attn2_replace(OtherPack(), "input", 1, 0)
    loader, name = renv["loader"], renv["names"]["referencenet_unet"]
    again = loader.load(loader.load(model, name)[0], name)[0]
    patch = _attn2(again)[("input", 1, 0)]
    assert isinstance(patch, musev_model._IPAdapterAttention2) and type(patch.inner).__name__ == "OtherPack"
    assert torch.allclose(patch(q, k, v, extra), text + 3.0, atol=1e-6)
