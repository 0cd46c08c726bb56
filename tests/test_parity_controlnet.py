"""Parity of the pose2video path: `musev_referencenet` + ReferenceNet + IP-Adapter + a ControlNet per window.

The fixture's ControlNet is loaded into ComfyUI's own ControlNet class (comfy.cldm) and run by ComfyUI's ControlNet
object (comfy.controlnet.ControlNet) exactly as ControlNetApplyAdvanced attaches it; only its hint embedding is
built for the fixture's geometry (conditioning_embedding_out_channels (16, 32): one stride-2 convolution, factor 2,
where ComfyUI's SD1.5 hint block has factor 8). The hints are sliced per window by the pack's context handler.
Settings from report.json; MUSEV_PARITY_DIR honoured.
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_env
from test_parity_musev import (_CallRecorder, assert_first_call_matches, assert_steps_match,
                               comfy_config_from_diffusers, final_latents, rel_err, run_fixture_pipeline)
from test_parity_referencenet import load, refparity  # noqa: F401  (module fixture)

TOLERANCE = 1e-4


def build_fixture_controlnet(root: str):
    """The fixture ControlNet as a ComfyUI ControlNet object (compression ratio 2, like the tiny VAE)."""
    import comfy.cldm.cldm as cldm
    import comfy.controlnet
    import comfy.ops
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential
    configs = json.load(open(os.path.join(root, "tiny_configs.json")))
    kwargs = configs["controlnet"]["constructor_kwargs"]
    unet_like = dict(kwargs, cross_attention_dim=kwargs["cross_attention_dim"])
    config = comfy_config_from_diffusers(unet_like)
    ops = comfy.ops.disable_weight_init
    model = cldm.ControlNet(hint_channels=kwargs["conditioning_channels"], operations=ops, device="cpu", **config)
    widths = kwargs["conditioning_embedding_out_channels"]
    layers = [ops.Conv2d(kwargs["conditioning_channels"], widths[0], 3, padding=1), torch.nn.SiLU()]
    for i in range(len(widths) - 1):
        layers += [ops.Conv2d(widths[i], widths[i], 3, padding=1), torch.nn.SiLU(),
                   ops.Conv2d(widths[i], widths[i + 1], 3, padding=1, stride=2), torch.nn.SiLU()]
    layers.append(ops.Conv2d(widths[-1], config["model_channels"], 3, padding=1))
    model.input_hint_block = TimestepEmbedSequential(*layers)
    # diffusers -> ComfyUI names, the same rules as comfy.controlnet.load_controlnet_state_dict
    weights = safetensors.torch.load_file(os.path.join(root, "tiny_controlnet.safetensors"))
    names = dict(comfy.utils.unet_to_diffusers(config))
    names["controlnet_mid_block.weight"] = "middle_block_out.0.weight"
    names["controlnet_mid_block.bias"] = "middle_block_out.0.bias"
    for key in weights:
        parts = key.split(".")
        if key.startswith("controlnet_down_blocks."):
            names[key] = f"zero_convs.{parts[1]}.0.{parts[-1]}"
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            names[key] = f"input_hint_block.0.{parts[-1]}"
        elif key.startswith("controlnet_cond_embedding.blocks."):
            names[key] = f"input_hint_block.{(int(parts[2]) + 1) * 2}.{parts[-1]}"
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            names[key] = f"input_hint_block.{(len(widths) - 1) * 2 * 2 + 2}.{parts[-1]}"
    converted = {names[k]: v for k, v in weights.items() if k in names}
    assert len(converted) == len(weights), sorted(set(weights) - set(names))[:5]
    model.load_state_dict(converted, strict=True)
    model.eval()
    return comfy.controlnet.ControlNet(model, compression_ratio=2, load_device=torch.device("cpu"))


@pytest.fixture(scope="module")
def cnpipeline(refparity):  # noqa: F811
    import comfy.patcher_extension
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    referencenet = comfy_env.pack_module("nodes.referencenet")
    data = load(refparity, "pipeline_musev_referencenet_controlnet")
    settings = refparity["report"]["pipeline_settings"]
    model = refparity["model"].clone()
    recorder = _CallRecorder(musev_model.WINDOW_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "parity_recorder", recorder)

    control = build_fixture_controlnet(refparity["root"])
    hints = torch.cat([data["controlnet_condition_image"], data["control_frames"]], dim=2)[0]  # c (1+L) H W
    hints = hints.permute(1, 0, 2, 3) / 255.0  # (1+L) c H W, [0, 1] as ComfyUI IMAGE hints
    control = control.copy().set_cond_hint(hints, settings["controlnet"]["controlnet_conditioning_scale"],
                                           (settings["controlnet"]["control_guidance_start"],
                                            settings["controlnet"]["control_guidance_end"]))
    residuals = []
    original = control.get_control

    def recording(x_noisy, t, cond, batched_number, transformer_options):
        out = original(x_noisy, t, cond, batched_number, transformer_options)
        residuals.append({"chunks": list(transformer_options["cond_or_uncond"]),
                          "output": [o.detach().clone() for o in out["output"]],
                          "middle": [m.detach().clone() for m in out["middle"]],
                          "hint": control.cond_hint.detach().clone()})
        return out

    control.get_control = recording  # this test's own ControlNet object only

    cond_tokens, uncond_tokens = reference.ip_tokens(refparity["projection"], data["ip.image_embeds"])
    tokens = reference.IPTokens(cond=cond_tokens, uncond=uncond_tokens, scale=settings["ip_adapter_scale"])
    features = referencenet.encode_reference(refparity["ref_patcher"], data["refer.vae_latents"][1:2], tokens.cond,
                                             tokens.uncond)
    run = run_fixture_pipeline(model, data, settings, {"control": control}, {"control": control},
                               reference=features, ip_tokens=tokens)
    return dict(run, calls=recorder.calls, residuals=residuals, hints=hints,
                report=refparity["report"]["pipeline_musev_referencenet_controlnet"])


def test_each_window_gets_its_own_hints_condition_hint_first(cnpipeline):
    expected = cnpipeline["report"]["controlnet_frame_index_per_window"]
    windows = len(expected)
    residuals = cnpipeline["residuals"]
    assert len(residuals) == windows * cnpipeline["settings"]["num_inference_steps"]
    for k, call in enumerate(residuals):
        per_chunk = call["hint"].shape[0] // len(call["chunks"])
        assert torch.equal(call["hint"][:per_chunk], cnpipeline["hints"][expected[k % windows]])
        # the fixture's ControlNet input images for window k of step 0 are the same hints
        if k < windows:
            fixture = cnpipeline["data"][f"ctrl_call{k}.controlnet_cond"]
            assert rel_err(call["hint"][:per_chunk], fixture[:per_chunk]) < 1e-6


def test_controlnet_residuals_of_every_window_match_reference(cnpipeline):
    data = cnpipeline["data"]
    for k, call in enumerate(cnpipeline["residuals"][:len(cnpipeline["report"]["controlnet_frame_index_per_window"])]):
        t = call["hint"].shape[0] // len(call["chunks"])
        order = {chunk: i for i, chunk in enumerate(call["chunks"])}
        outputs = call["output"]  # conv_in first, in UNet skip order (the UNet pops them from the end)
        for i in range(12):
            ours = outputs[i].reshape(len(call["chunks"]), t, *outputs[i].shape[1:])
            expected = data[f"ctrl_call{k}.down.{i}"].reshape(2, t, *outputs[i].shape[1:])
            for half, chunk in ((0, 1), (1, 0)):  # fixture [uncond, cond]
                assert rel_err(ours[order[chunk]], expected[half]) < TOLERANCE, f"window {k} down {i}"
        mid = call["middle"][0].reshape(len(call["chunks"]), t, *call["middle"][0].shape[1:])
        expected_mid = data[f"ctrl_call{k}.mid"].reshape(2, t, *call["middle"][0].shape[1:])
        for half, chunk in ((0, 1), (1, 0)):
            assert rel_err(mid[order[chunk]], expected_mid[half]) < TOLERANCE, f"window {k} mid"


def test_pipeline_first_call_per_step_and_final_latents_match(cnpipeline):
    assert_first_call_matches(cnpipeline, check_input=False)
    assert_steps_match(cnpipeline)
    assert rel_err(final_latents(cnpipeline), cnpipeline["data"]["final_latents"]) < TOLERANCE


def test_the_controlnet_changes_the_result(cnpipeline, refparity):  # noqa: F811
    plain = load(refparity, "pipeline_musev_referencenet")["final_latents"]
    assert (cnpipeline["data"]["final_latents"] - plain).abs().mean() > 1.0
    assert (final_latents(cnpipeline) - plain).abs().mean() > 1.0
