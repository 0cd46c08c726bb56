"""Single source of the example workflows: each graph is defined once here and written in both ComfyUI formats.

`python tests/workflow_graphs.py` rewrites workflows/*.json; tests/test_workflow_files.py checks the committed files
equal this output, so the UI graph and its API twin can never drift apart.
UI format: litegraph v0.4 (what the ComfyUI page saves and loads). API format: what the page's "Export (API)" and
`graphToPrompt` produce (class_type, inputs by name, links as [node_id, slot], _meta.title).
"""
from __future__ import annotations

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = os.path.join(REPO, "workflows")

SD15_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
# names as in the Hugging Face repo TMElyralab/MuseV, folder motion/ (MuseV ships its UNets as .bin files)
MUSEV_UNET = "musev/unet/diffusion_pytorch_model.bin"
REFERENCENET_UNET = "musev_referencenet/unet/diffusion_pytorch_model.bin"
REFERENCENET = "musev_referencenet/referencenet/diffusion_pytorch_model.bin"
IMAGE_PROJ = "musev_referencenet/ip_adapter_image_proj.bin"
CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
REFERENCENET_POSE_UNET = "musev_referencenet_pose/unet/diffusion_pytorch_model.bin"
IMAGE_PROJ_POSE = "musev_referencenet_pose/ip_adapter_image_proj.bin"
CONTROLNET_OPENPOSE = "control_v11p_sd15_openpose.pth"
DWPOSE_DETECTOR = "yolox_l.onnx"
DWPOSE_POSE = "dw-ll_ucoco_384.onnx"
IPADAPTER_PLUS_SD15 = "ip-adapter_sd15.safetensors"  # ComfyUI_IPAdapter_plus's plain SD1.5 model (models/ipadapter)
MUSEPOSE_FILES = {kind: f"{kind}.pth" for kind in ("denoising_unet", "motion_module", "reference_unet", "pose_guider")}
# MusePose's image encoder: sd-image-variations' CLIP ViT-L/14 with projection (a pickle, read with weights_only)
MUSEPOSE_IMAGE_ENCODER = "sd-image-variations_image_encoder.bin"
VAE_FT_MSE = "vae-ft-mse-840000-ema-pruned.safetensors"

_HF = "https://huggingface.co"
#: (ComfyUI model folder, file name as the widget holds it) -> download URL. The page's missing-models dialog lists
#: a node's `properties.models` entries whose file is not in the folder (ComfyUI_frontend app.loadGraphData).
MODEL_URLS = {
    ("checkpoints", SD15_CHECKPOINT):
        f"{_HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/{SD15_CHECKPOINT}",
    ("musev", MUSEV_UNET): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{MUSEV_UNET}",
    ("musev", REFERENCENET_UNET): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{REFERENCENET_UNET}",
    ("musev", REFERENCENET): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{REFERENCENET}",
    ("musev", IMAGE_PROJ): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{IMAGE_PROJ}",
    ("musev", REFERENCENET_POSE_UNET): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{REFERENCENET_POSE_UNET}",
    ("musev", IMAGE_PROJ_POSE): f"{_HF}/TMElyralab/MuseV/resolve/main/motion/{IMAGE_PROJ_POSE}",
    # the IP-Adapter image encoder (OpenCLIP ViT-H/14) under the name IPAdapter_plus users already have
    ("clip_vision", CLIP_VISION): f"{_HF}/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors",
    ("controlnet", CONTROLNET_OPENPOSE): f"{_HF}/lllyasviel/ControlNet-v1-1/resolve/main/{CONTROLNET_OPENPOSE}",
    ("dwpose", DWPOSE_DETECTOR): f"{_HF}/yzd-v/DWPose/resolve/main/{DWPOSE_DETECTOR}",
    ("dwpose", DWPOSE_POSE): f"{_HF}/yzd-v/DWPose/resolve/main/{DWPOSE_POSE}",
    **{("musepose", name): f"{_HF}/TMElyralab/MusePose/resolve/main/MusePose/{name}" for name in MUSEPOSE_FILES.values()},
    ("clip_vision", MUSEPOSE_IMAGE_ENCODER):
        f"{_HF}/lambdalabs/sd-image-variations-diffusers/resolve/main/image_encoder/pytorch_model.bin",
    ("vae", VAE_FT_MSE): f"{_HF}/stabilityai/sd-vae-ft-mse-original/resolve/main/{VAE_FT_MSE}",
    ("ipadapter", IPADAPTER_PLUS_SD15): f"{_HF}/h94/IP-Adapter/resolve/main/models/{IPADAPTER_PLUS_SD15}",
}
#: model widgets per node type -> the ComfyUI model folder they list
MODEL_WIDGETS = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "LoadMuseVUNet": {"unet_name": "musev"},
    "MuseVReferenceNetEncode": {"referencenet_name": "musev"},
    "MuseVIPAdapterEmbed": {"image_proj_name": "musev"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "MuseVDWPoseExtract": {"bbox_detector": "dwpose", "pose_estimator": "dwpose"},
    "IPAdapterModelLoader": {"ipadapter_file": "ipadapter"},
    "LoadMusePose": {"denoising_unet": "musepose", "motion_module": "musepose", "pose_guider": "musepose"},
    "MusePoseReferenceEncode": {"reference_unet": "musepose"},
    "VAELoader": {"vae_name": "vae"},
}
POSE_VIDEO = "video1_girl_poseseq.mp4"
DANCE_VIDEO = "musepose_dance.mp4"
CHARACTER_IMAGE = "musepose_ref.png"
POSE_VIDEO_CHARACTER = "cyber_girl.png"  # MuseV's pose2video example "dance2" pairs it with video1_girl_poseseq
# MuseV's "1girl" example prompt (configs/tasks/example.yaml); ComfyUI's CLIP Text Encode reads the (text:w) weights.
PROMPT_PORTRAIT = ("(masterpiece, best quality, highres:1),(1girl, solo:1),(beautiful face, soft skin, costume:1),"
                   "(eye blinks:1.8),(head wave:1.3)")
PROMPT_SCENE = ("(masterpiece, best quality, highres:1),(1girl, solo:1),(beautiful face, soft skin:1),"
                "(eye blinks:1.8),(head wave:1.3), peaceful beautiful sea scene")
# MuseV's negative preset V5 (= V2 without the two textual-inversion tokens, which ComfyUI would need as files).
NEGATIVE_V5 = ("(((multiple heads))), (((bad body))), (((two people))), ((extra arms)), ((deformed body)), (((sexy))), "
               "paintings,(((two heads))), ((big head)),sketches, (worst quality:2), (low quality:2), "
               "(normal quality:2), lowres, ((monochrome)), ((grayscale)), skin spots, acnes, skin blemishes, age spot, "
               "glans, (((nsfw))), nipples, extra fingers, (extra legs), (long neck), mutated hands, (fused fingers), "
               "(too many fingers)")

MODELS_NOTE = (
    "Models this workflow needs:\n"
    f"- models/checkpoints/{SD15_CHECKPOINT}: any SD1.5 checkpoint (MuseV used majicmixRealv6Fp16 or "
    "fantasticmix_v10); LoRAs via Load LoRA work.\n"
    f"- models/musev/{MUSEV_UNET}: MuseV motion UNet from huggingface.co/TMElyralab/MuseV (its motion/musev/unet "
    "folder; copy motion/* into models/musev/).\n"
    "The VAE comes from the checkpoint (MuseV used sd-vae-ft-mse; swap in with Load VAE if you like).\n"
    "The seed changes after every run (control after generate: randomize); set it to fixed to repeat a video.")

# widget names per node type, in the order the page stores widgets_values (frontend-only widgets as None)
WIDGETS = {
    "CheckpointLoaderSimple": ["ckpt_name"],
    "LoadMuseVUNet": ["unet_name"],
    "CLIPTextEncode": ["text"],
    "LoadImage": ["image", None],  # + the page's upload button
    "ImageScale": ["upscale_method", "width", "height", "crop"],
    "VAEEncode": [],
    "VAEDecode": [],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "MuseVParallelDenoiseSampler": ["frames", "seed", None, "steps", "cfg", "sampler_name", "scheduler",
                                    "context_frames", "context_overlap", "fuse_method", "motion_speed",
                                    "w_ind_noise", "img_weight", "denoise", "width", "height"],
    "CLIPVisionLoader": ["clip_name"],
    "MuseVIPAdapterEmbed": ["image_proj_name", "scale", "crop"],
    "MuseVReferenceNetEncode": ["referencenet_name", "width", "height"],
    "LoadVideo": ["file", None],  # + the page's upload button
    "GetVideoComponents": [],
    "GetImageSize": [],
    "PreviewAny": ["preview"],  # the page's own text widget; its Export (API) writes it too (ComfyUI ignores it)
    "ImageFromBatch": ["batch_index", "length"],
    "ImageBatch": [],
    "ControlNetLoader": ["control_net_name"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
    "MuseVDWPoseExtract": ["bbox_detector", "pose_estimator", "detect_body", "detect_hand", "detect_face",
                           "detect_resolution", "resolution", "provider"],
    "MuseVPoseAlign": ["align_frame", "max_frame", "mode", "output_height", "draw_hands", "draw_face", "width"],
    "IPAdapterModelLoader": ["ipadapter_file"],
    "IPAdapterAdvanced": ["weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "Note": ["text"],
    "VAELoader": ["vae_name"],
    "CLIPVisionEncode": ["crop"],
    "LoadMusePose": ["denoising_unet", "motion_module", "pose_guider"],
    "MusePoseImageConditioning": [],
    "MusePoseReferenceEncode": ["reference_unet", "width", "height"],
    "MusePoseSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "context_frames",
                        "context_overlap", "pad_to_windows"],
}
# socket inputs (required and optional) and outputs per node type
SOCKETS = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "LoadMuseVUNet": ([("model", "MODEL")], [("model", "MODEL")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "ImageScale": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "MuseVParallelDenoiseSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                     ("condition", "LATENT"), ("reference", "MUSEV_REFERENCE"),
                                     ("ip_tokens", "MUSEV_IP_TOKENS"), ("video", "LATENT")], [("latent", "LATENT")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "GetImageSize": ([("image", "IMAGE")], [("width", "INT"), ("height", "INT"), ("batch_size", "INT")]),
    "PreviewAny": ([("source", "*")], []),
    "ImageFromBatch": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")]),
    "ControlNetApplyAdvanced": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                 ("control_net", "CONTROL_NET"), ("image", "IMAGE"), ("vae", "VAE")],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "MuseVDWPoseExtract": ([("image", "IMAGE")], [("pose_image", "IMAGE"), ("pose_keypoint", "POSE_KEYPOINT")]),
    "MuseVPoseAlign": ([("ref_pose", "POSE_KEYPOINT"), ("video_pose", "POSE_KEYPOINT")],
                       [("pose_image", "IMAGE"), ("pose_keypoint", "POSE_KEYPOINT"), ("report", "STRING")]),
    "CLIPVisionLoader": ([], [("CLIP_VISION", "CLIP_VISION")]),
    "MuseVIPAdapterEmbed": ([("clip_vision", "CLIP_VISION"), ("image", "IMAGE")],
                            [("ip_tokens", "MUSEV_IP_TOKENS")]),
    "MuseVReferenceNetEncode": ([("vae", "VAE"), ("image", "IMAGE"), ("ip_tokens", "MUSEV_IP_TOKENS"),
                                 ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                [("reference", "MUSEV_REFERENCE")]),
    "IPAdapterModelLoader": ([], [("IPADAPTER", "IPADAPTER")]),
    "IPAdapterAdvanced": ([("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("image", "IMAGE"),
                           ("image_negative", "IMAGE"), ("attn_mask", "MASK"), ("clip_vision", "CLIP_VISION")],
                          [("MODEL", "MODEL")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "Note": ([], []),
    "VAELoader": ([], [("VAE", "VAE")]),
    "CLIPVisionEncode": ([("clip_vision", "CLIP_VISION"), ("image", "IMAGE")],
                         [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")]),
    "LoadMusePose": ([], [("model", "MODEL")]),
    "MusePoseImageConditioning": ([("clip_vision_output", "CLIP_VISION_OUTPUT")],
                                  [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "MusePoseReferenceEncode": ([("vae", "VAE"), ("image", "IMAGE"), ("positive", "CONDITIONING")],
                                [("reference", "MUSEPOSE_REFERENCE")]),
    "MusePoseSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                         ("reference", "MUSEPOSE_REFERENCE"), ("pose_images", "IMAGE")], [("latent", "LATENT")]),
}
TITLES = {"CheckpointLoaderSimple": "Load Checkpoint", "LoadMuseVUNet": "Load MuseV UNet",
          "CLIPTextEncode": "CLIP Text Encode (Prompt)", "LoadImage": "Load Image", "ImageScale": "Upscale Image",
          "VAEEncode": "VAE Encode", "VAEDecode": "VAE Decode", "EmptyLatentImage": "Empty Latent Image",
          "KSampler": "KSampler", "MuseVParallelDenoiseSampler": "MuseV Parallel Denoise Sampler",
          "CreateVideo": "Create Video", "SaveVideo": "Save Video", "Note": "Note",
          "CLIPVisionLoader": "Load CLIP Vision", "MuseVIPAdapterEmbed": "MuseV IP-Adapter Embed",
          "MuseVReferenceNetEncode": "MuseV ReferenceNet Encode", "LoadVideo": "Load Video",
          "GetVideoComponents": "Get Video Components", "ImageFromBatch": "ImageFromBatch",
          "ImageBatch": "Batch Images", "ControlNetLoader": "Load ControlNet Model",
          "ControlNetApplyAdvanced": "Apply ControlNet", "GetImageSize": "Get Image Size",
          "PreviewAny": "Preview Any", "MuseVDWPoseExtract": "MuseV DWPose Extract",
          "MuseVPoseAlign": "MuseV Pose Align", "IPAdapterModelLoader": "IPAdapter Model Loader",
          "IPAdapterAdvanced": "IPAdapter Advanced", "VAELoader": "Load VAE", "CLIPVisionEncode": "CLIP Vision Encode",
          "LoadMusePose": "Load MusePose", "MusePoseImageConditioning": "MusePose Image Conditioning",
          "MusePoseReferenceEncode": "MusePose Reference Encode", "MusePoseSampler": "MusePose Sampler"}
VIRTUAL = {"Note"}


class Graph:
    """A workflow under construction: nodes with widget values and links between sockets."""

    def __init__(self, name: str, description: str, models: list[tuple[str, str]] | None = None):
        self.name = name
        self.description = description
        self.models = models or [("checkpoints", SD15_CHECKPOINT), ("musev", MUSEV_UNET)]
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, kind: str, values: dict | None = None, pos=(0, 0), title: str | None = None, size=(320, 120)) -> int:
        values = values or {}
        node_id = len(self.nodes) + 1
        widget_values = []
        for name in WIDGETS[kind]:
            if name is None:  # frontend-only widget: seed's "control after generate", LoadImage's upload button
                # a new seed after every run, as ComfyUI's own templates ship (the API twin keeps the seed)
                widget_values.append("randomize" if kind != "LoadImage" else "image")
            else:
                widget_values.append(values[name])
        inputs, outputs = SOCKETS[kind]
        properties = {"Node name for S&R": kind}
        models = [{"name": values[widget], "url": MODEL_URLS[(folder, values[widget])], "directory": folder}
                  for widget, folder in MODEL_WIDGETS.get(kind, {}).items() if (folder, values[widget]) in MODEL_URLS]
        if models:
            properties["models"] = models
        self.nodes.append({
            "id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
            "mode": 0, "title": title,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": properties, "widgets_values": widget_values,
        })
        return node_id

    def connect(self, source: int, slot: int, target: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        src, dst = self.nodes[source - 1], self.nodes[target - 1]
        kind = src["outputs"][slot]["type"]
        slots = [i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name]
        if not slots:  # a widget driven by a link: the page saves it as an input with a `widget` entry
            assert input_name in WIDGETS[dst["type"]], (dst["type"], input_name)
            dst["inputs"].append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
            slots = [len(dst["inputs"]) - 1]
        dst_slot = slots[0]
        dst["inputs"][dst_slot]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, source, slot, target, dst_slot, kind])

    def ui(self) -> dict:
        nodes = []
        for node in self.nodes:
            node = json.loads(json.dumps(node))
            if node["title"] is None:
                node.pop("title")
            nodes.append(node)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"musev": {"workflow": self.name, "description": self.description,
                                    "models": [{"folder": f, "name": n} for f, n in self.models]}},
                "version": 0.4}

    def api(self) -> dict:
        prompt = {}
        for node in self.nodes:
            if node["type"] in VIRTUAL:
                continue
            inputs = {}
            for name, value in zip(WIDGETS[node["type"]], node["widgets_values"]):
                if name is not None:
                    inputs[name] = value
            for socket in node["inputs"]:
                if socket["link"] is not None:
                    link = self.links[socket["link"] - 1]
                    inputs[socket["name"]] = [str(link[1]), link[2]]
            prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                       "_meta": {"title": node.get("title") or TITLES[node["type"]]}}
        return prompt


def _video_tail(g: Graph, model: int, positive: int, negative: int, ckpt: int, condition: int | None, frames: int,
                prefix: str, x: int, positive_slot: int = 0, negative_slot: int = 0, frames_from: int | None = None,
                fps_from: int | None = None) -> int:
    """Sampler -> VAE Decode -> Create Video -> Save Video. `frames_from`: a Get Image Size node whose batch_size
    drives the sampler's frames (so one input decides the length); `fps_from`: a Get Video Components node whose fps
    drives Create Video (the output plays at the input video's rate)."""
    sampler = g.add("MuseVParallelDenoiseSampler", {
        "frames": frames, "seed": 1234, "steps": 10, "cfg": 3.5, "sampler_name": "euler", "scheduler": "normal",
        "context_frames": 12, "context_overlap": 4, "fuse_method": "flat", "motion_speed": 8.0, "w_ind_noise": 0.5,
        "img_weight": 0.001, "denoise": 1.0, "width": 0, "height": 0}, pos=(x, 80), size=(340, 470))
    g.connect(model, 0, sampler, "model")
    if frames_from is not None:
        g.connect(frames_from, 2, sampler, "frames")
    g.connect(positive, positive_slot, sampler, "positive")
    g.connect(negative, negative_slot, sampler, "negative")
    if condition is not None:
        g.connect(condition, 0, sampler, "condition")
    decode = g.add("VAEDecode", pos=(x + 380, 80), size=(210, 50))
    g.connect(sampler, 0, decode, "samples")
    g.connect(ckpt, 2, decode, "vae")
    video = g.add("CreateVideo", {"fps": 12.0}, pos=(x + 380, 180), size=(270, 80))
    g.connect(decode, 0, video, "images")
    if fps_from is not None:
        g.connect(fps_from, 2, video, "fps")
    save = g.add("SaveVideo", {"filename_prefix": prefix, "format": "mp4", "codec": "h264"}, pos=(x + 380, 300),
                 size=(320, 360))
    g.connect(video, 0, save, "video")
    return sampler


def _loaders(g: Graph, positive_text: str, unet_name: str = MUSEV_UNET):
    ckpt = g.add("CheckpointLoaderSimple", {"ckpt_name": SD15_CHECKPOINT}, pos=(20, 80), size=(330, 100))
    musev = g.add("LoadMuseVUNet", {"unet_name": unet_name}, pos=(380, 20), size=(410, 60))
    g.connect(ckpt, 0, musev, "model")
    positive = g.add("CLIPTextEncode", {"text": positive_text}, pos=(380, 120), size=(380, 160), title="Prompt")
    g.connect(ckpt, 1, positive, "clip")
    negative = g.add("CLIPTextEncode", {"text": NEGATIVE_V5}, pos=(380, 320), size=(380, 160),
                     title="Negative prompt")
    g.connect(ckpt, 1, negative, "clip")
    return ckpt, musev, positive, negative


def _image_condition(g: Graph, ckpt: int, width: int, height: int, with_image: bool = False,
                     image_name: str = "Mona_Lisa.jpg"):
    image = g.add("LoadImage", {"image": image_name}, pos=(20, 520), size=(320, 320))
    scale = g.add("ImageScale", {"upscale_method": "lanczos", "width": width, "height": height, "crop": "center"},
                  pos=(380, 520), size=(320, 130), title="Video size (center crop)")
    g.connect(image, 0, scale, "image")
    encode = g.add("VAEEncode", pos=(380, 700), size=(210, 50), title="Condition frame")
    g.connect(scale, 0, encode, "pixels")
    g.connect(ckpt, 2, encode, "vae")
    return (encode, scale) if with_image else encode


def image2video() -> Graph:
    g = Graph("image2video", "MuseV image-to-video: the image is the first frame and every window's condition.")
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT)
    condition = _image_condition(g, ckpt, 512, 768)
    _video_tail(g, musev, positive, negative, ckpt, condition, 12, "musev/image2video", 800)
    g.add("Note", {"text": MODELS_NOTE + "\nOutput: the image + 12 generated frames (13 frames, 12 fps)."},
          pos=(20, 880), size=(700, 170))
    return g


def text2image2video() -> Graph:
    g = Graph("text2image2video", "MuseV text2image2video: an SD1.5 KSampler makes the first frame, MuseV animates it.")
    ckpt, musev, positive, negative = _loaders(g, PROMPT_SCENE)
    empty = g.add("EmptyLatentImage", {"width": 512, "height": 768, "batch_size": 1}, pos=(20, 520), size=(320, 110),
                  title="Video size")
    first = g.add("KSampler", {"seed": 1234, "steps": 30, "cfg": 7.5, "sampler_name": "euler",
                               "scheduler": "normal", "denoise": 1.0}, pos=(380, 520), size=(320, 270),
                  title="First frame (MuseV's text-to-image pass)")
    g.connect(musev, 0, first, "model")
    g.connect(positive, 0, first, "positive")
    g.connect(negative, 0, first, "negative")
    g.connect(empty, 0, first, "latent_image")
    _video_tail(g, musev, positive, negative, ckpt, first, 11, "musev/text2image2video", 800)
    g.add("Note", {"text": MODELS_NOTE + "\nThe first frame is sampled with the MuseV MODEL on one image (temporal "
                                         "layers off, as MuseV's text-to-image pass does); output 1 + 11 = 12 frames."},
          pos=(20, 880), size=(700, 190))
    return g


def long_video() -> Graph:
    g = Graph("long_video", "MuseV long video in one run: 120 frames through parallel windows, all conditioned on "
                            "the image.")
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT)
    condition = _image_condition(g, ckpt, 512, 768)
    _video_tail(g, musev, positive, negative, ckpt, condition, 120, "musev/long_video", 800)
    g.add("Note", {"text": MODELS_NOTE + "\nOne run of 120 generated frames (+ the image = 121 frames, 10 s at 12 "
                                         "fps). Windows of 12 frames overlapping by 4 all see the clean image, so "
                                         "nothing drifts and memory stays that of one window."},
          pos=(20, 880), size=(700, 190))
    return g


REFERENCENET_NOTE = (
    "Models this workflow needs (MuseV's best checkpoint, with ReferenceNet and IP-Adapter):\n"
    f"- models/checkpoints/{SD15_CHECKPOINT}: any SD1.5 checkpoint.\n"
    f"- models/musev/{REFERENCENET_UNET}, models/musev/{REFERENCENET} and models/musev/{IMAGE_PROJ}: from "
    "huggingface.co/TMElyralab/MuseV, folder motion/musev_referencenet (musev_referencenet_pose works the same).\n"
    f"- models/clip_vision/{CLIP_VISION}: the IP-Adapter image encoder (OpenCLIP ViT-H/14, MuseV's "
    "IP-Adapter/models/image_encoder; the same file IPAdapter_plus uses).\n"
    "As in MuseV's example tasks, the condition image is also the reference image and the IP-Adapter image.")


def _reference_nodes(g: Graph, ckpt: int, image: int, image_proj: str) -> tuple[int, int]:
    """Load CLIP Vision -> MuseV IP-Adapter Embed and MuseV ReferenceNet Encode of `image` (IP tokens as context)."""
    clip_vision = g.add("CLIPVisionLoader", {"clip_name": CLIP_VISION}, pos=(20, 900), size=(330, 60))
    ip = g.add("MuseVIPAdapterEmbed", {"image_proj_name": image_proj, "scale": 1.0, "crop": "center"},
               pos=(380, 800), size=(380, 130))
    g.connect(clip_vision, 0, ip, "clip_vision")
    g.connect(image, 0, ip, "image")
    reference = g.add("MuseVReferenceNetEncode", {"referencenet_name": REFERENCENET, "width": 0, "height": 0},
                      pos=(380, 980), size=(380, 170))
    g.connect(ckpt, 2, reference, "vae")
    g.connect(image, 0, reference, "image")
    g.connect(ip, 0, reference, "ip_tokens")
    return ip, reference


def image2video_referencenet() -> Graph:
    g = Graph("image2video_referencenet",
              "MuseV image-to-video with the musev_referencenet UNet: ReferenceNet features and IP-Adapter tokens of "
              "the image keep the identity in every window.",
              models=[("checkpoints", SD15_CHECKPOINT), ("musev", REFERENCENET_UNET), ("musev", REFERENCENET),
                      ("musev", IMAGE_PROJ), ("clip_vision", CLIP_VISION)])
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT, REFERENCENET_UNET)
    condition, image = _image_condition(g, ckpt, 512, 768, with_image=True)
    ip, reference = _reference_nodes(g, ckpt, image, IMAGE_PROJ)
    sampler = _video_tail(g, musev, positive, negative, ckpt, condition, 12, "musev/image2video_referencenet", 800)
    g.connect(reference, 0, sampler, "reference")
    g.connect(ip, 0, sampler, "ip_tokens")
    g.add("Note", {"text": REFERENCENET_NOTE + "\nOutput: the image + 12 generated frames (13 frames, 12 fps)."},
          pos=(20, 1200), size=(740, 220))
    return g


def image2video_ipadapter_plus() -> Graph:
    g = Graph("image2video_ipadapter_plus",
              "MuseV image-to-video (musev_referencenet) beside ComfyUI_IPAdapter_plus: MuseV's own IP-Adapter keeps "
              "the portrait's identity, IPAdapter_plus adds the look of a second image; both act in the same "
              "cross-attentions.",
              models=[("checkpoints", SD15_CHECKPOINT), ("musev", REFERENCENET_UNET), ("musev", REFERENCENET),
                      ("musev", IMAGE_PROJ), ("clip_vision", CLIP_VISION), ("ipadapter", IPADAPTER_PLUS_SD15)])
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT, REFERENCENET_UNET)
    condition, image = _image_condition(g, ckpt, 512, 768, with_image=True)
    ip, reference = _reference_nodes(g, ckpt, image, IMAGE_PROJ)
    clip_vision = [i + 1 for i, n in enumerate(g.nodes) if n["type"] == "CLIPVisionLoader"][0]
    loader = g.add("IPAdapterModelLoader", {"ipadapter_file": IPADAPTER_PLUS_SD15}, pos=(800, 620), size=(330, 60))
    style = g.add("LoadImage", {"image": POSE_VIDEO_CHARACTER}, pos=(800, 720), size=(320, 320),
                  title="IPAdapter_plus image")
    adapter = g.add("IPAdapterAdvanced", {"weight": 0.6, "weight_type": "linear", "combine_embeds": "concat",
                                          "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"},
                    pos=(1160, 620), size=(320, 280))
    g.connect(musev, 0, adapter, "model")
    g.connect(loader, 0, adapter, "ipadapter")
    g.connect(style, 0, adapter, "image")
    g.connect(clip_vision, 0, adapter, "clip_vision")
    sampler = _video_tail(g, adapter, positive, negative, ckpt, condition, 8, "musev/image2video_ipadapter_plus",
                          1520)
    g.connect(reference, 0, sampler, "reference")
    g.connect(ip, 0, sampler, "ip_tokens")
    g.add("Note", {"text": REFERENCENET_NOTE + "\nAlso needs the custom node ComfyUI_IPAdapter_plus (cubiq) and "
                   f"models/ipadapter/{IPADAPTER_PLUS_SD15} (IP-Adapter's plain SD1.5 model; it shares the CLIP "
                   "vision file). IPAdapter Advanced may also come before Load MuseV UNet: the result is the same."
                   "\nOutput: the image + 8 generated frames (9 frames, 12 fps)."},
          pos=(20, 1200), size=(740, 260))
    return g


def _video_frames(g: Graph, file: str, first: int, count: int, width: int, height: int, pos, title: str):
    """Load Video -> frames [first, first + count) (fewer when the video is shorter) -> centre-crop resize.

    Returns (ImageScale node, Get Video Components node): the scaled frames, and the source of the video's fps.
    """
    video = g.add("LoadVideo", {"file": file}, pos=pos, size=(320, 300))
    parts = g.add("GetVideoComponents", pos=(pos[0], pos[1] + 330), size=(250, 70))
    g.connect(video, 0, parts, "video")
    pick = g.add("ImageFromBatch", {"batch_index": first, "length": count}, pos=(pos[0] + 360, pos[1]),
                 size=(270, 90), title=title)
    g.connect(parts, 0, pick, "image")
    scale = g.add("ImageScale", {"upscale_method": "lanczos", "width": width, "height": height, "crop": "center"},
                  pos=(pos[0] + 360, pos[1] + 130), size=(270, 130), title="Video size (center crop)")
    g.connect(pick, 0, scale, "image")
    return scale, parts


def _frame_count(g: Graph, images: int, pos, after_first: bool = False) -> tuple[int, int]:
    """Get Image Size of `images` (or of all but its first frame): its batch_size drives the sampler's frames.

    Returns (Get Image Size node, the node whose frames it counts)."""
    if after_first:  # ImageFromBatch clamps the length to what is there: 4096 = "all the rest"
        rest = g.add("ImageFromBatch", {"batch_index": 1, "length": 4096}, pos=pos, size=(270, 90),
                     title="All frames after the first")
        g.connect(images, 0, rest, "image")
        images, pos = rest, (pos[0], pos[1] + 130)
    size = g.add("GetImageSize", pos=pos, size=(250, 90), title="Frames to generate")
    g.connect(images, 0, size, "image")
    return size, images


def _controlnet(g: Graph, positive: int, negative: int, hints: int, pos) -> int:
    loader = g.add("ControlNetLoader", {"control_net_name": CONTROLNET_OPENPOSE}, pos=pos, size=(330, 60))
    apply = g.add("ControlNetApplyAdvanced", {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
                  pos=(pos[0] + 360, pos[1]), size=(300, 170))
    g.connect(positive, 0, apply, "positive")
    g.connect(negative, 0, apply, "negative")
    g.connect(loader, 0, apply, "control_net")
    g.connect(hints, 0, apply, "image")
    return apply


LENGTH_NOTE = ("Length: set it once, in the 'length' of the frames-used node (video frame 0 pairs with the "
               "condition frame; a shorter video gives fewer frames). The video plays at the input video's fps.")

POSE_NOTE = (
    f"- models/controlnet/{CONTROLNET_OPENPOSE}: the SD1.5 OpenPose ControlNet (lllyasviel/ControlNet-v1-1), as "
    "MuseV's dwpose_body_hand.\n"
    "ControlNet hints: one per video frame, the condition frame's pose first. The MuseV sampler gives every context "
    "window the hints of its own frames (condition hint in front), not the first hints of the video.")


def pose2video() -> Graph:
    frames = 12
    g = Graph("pose2video",
              "MuseV pose2video: a character image moves like a pose video (OpenPose renders as ControlNet hints, "
              "sliced per window), with MuseV's musev_referencenet_pose UNet, ReferenceNet and IP-Adapter.",
              models=[("checkpoints", SD15_CHECKPOINT), ("musev", REFERENCENET_POSE_UNET), ("musev", REFERENCENET),
                      ("musev", IMAGE_PROJ_POSE), ("clip_vision", CLIP_VISION), ("controlnet", CONTROLNET_OPENPOSE)])
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT, REFERENCENET_POSE_UNET)
    condition, image = _image_condition(g, ckpt, 512, 768, with_image=True, image_name=POSE_VIDEO_CHARACTER)
    ip, reference = _reference_nodes(g, ckpt, image, IMAGE_PROJ_POSE)
    # pose video frame 0 pairs with the condition frame, frames 1..12 with the generated ones (MuseV §5)
    hints, parts = _video_frames(g, POSE_VIDEO, 0, frames + 1, 512, 768, (20, 1200),
                                 "Pose frames used (sets the length)")
    count, _ = _frame_count(g, hints, (720, 1200), after_first=True)
    control = _controlnet(g, positive, negative, hints, (800, 700))
    sampler = _video_tail(g, musev, control, control, ckpt, condition, frames, "musev/pose2video", 1200,
                          positive_slot=0, negative_slot=1, frames_from=count, fps_from=parts)
    g.connect(reference, 0, sampler, "reference")
    g.connect(ip, 0, sampler, "ip_tokens")
    note = ("Models this workflow needs (MuseV's pose model):\n"
            f"- models/checkpoints/{SD15_CHECKPOINT}: any SD1.5 checkpoint (MuseV recommends fantasticmix_v10).\n"
            f"- models/musev/{REFERENCENET_POSE_UNET} and models/musev/{IMAGE_PROJ_POSE}, with the ReferenceNet "
            f"models/musev/{REFERENCENET}: huggingface.co/TMElyralab/MuseV, motion/.\n"
            f"- models/clip_vision/{CLIP_VISION}: the IP-Adapter image encoder (ViT-H/14).\n" + POSE_NOTE +
            f"\nThe pose video {POSE_VIDEO} (already OpenPose renders) is used as hints directly. With the plain "
            "musev UNet, delete the IP-Adapter and ReferenceNet nodes.\n" + LENGTH_NOTE)
    g.add("Note", {"text": note}, pos=(20, 1700), size=(740, 300))
    return g


def pose2video_align() -> Graph:
    frames = 12
    g = Graph("pose2video_align",
              "RGB dance video -> DWPose -> MusePose pose alignment to the character -> ControlNet hints per window "
              "-> MuseV (plain musev UNet).",
              models=[("checkpoints", SD15_CHECKPOINT), ("musev", MUSEV_UNET), ("controlnet", CONTROLNET_OPENPOSE),
                      ("dwpose", DWPOSE_DETECTOR), ("dwpose", DWPOSE_POSE)])
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT)
    condition, image = _image_condition(g, ckpt, 512, 768, with_image=True, image_name=CHARACTER_IMAGE)
    dwpose = {"bbox_detector": DWPOSE_DETECTOR, "pose_estimator": DWPOSE_POSE, "detect_body": True,
              "detect_hand": True, "detect_face": False, "detect_resolution": 512, "resolution": 512,
              "provider": "auto"}
    character_pose = g.add("MuseVDWPoseExtract", dwpose, pos=(20, 900), size=(330, 290), title="Character pose")
    g.connect(image, 0, character_pose, "image")
    dance, parts = _video_frames(g, DANCE_VIDEO, 0, frames, 512, 768, (20, 1250),
                                 "Dance frames used (sets the length)")
    count, _ = _frame_count(g, dance, (380, 1640))
    video_pose = g.add("MuseVDWPoseExtract", dwpose, pos=(720, 1250), size=(330, 290), title="Dance poses")
    g.connect(dance, 0, video_pose, "image")
    align = g.add("MuseVPoseAlign", {"align_frame": 0, "max_frame": 0, "mode": "robust", "output_height": 768,
                                     "draw_hands": True, "draw_face": False, "width": 512},
                  pos=(1080, 1250), size=(330, 250))
    g.connect(character_pose, 1, align, "ref_pose")
    g.connect(video_pose, 1, align, "video_pose")
    # the condition frame's hint is the character's own pose, then the aligned dance poses
    hints = g.add("ImageBatch", pos=(1440, 1250), size=(210, 50), title="Hints: character pose + aligned poses")
    g.connect(character_pose, 0, hints, "image1")
    g.connect(align, 0, hints, "image2")
    control = _controlnet(g, positive, negative, hints, (800, 700))
    report = g.add("PreviewAny", {"preview": ""}, pos=(1440, 1350), size=(330, 200), title="Pose Align report")
    g.connect(align, 2, report, "source")
    _video_tail(g, musev, control, control, ckpt, condition, frames, "musev/pose2video_align", 1200,
                positive_slot=0, negative_slot=1, frames_from=count, fps_from=parts)
    g.add("Note", {"text": MODELS_NOTE + "\n" + POSE_NOTE + "\nLoad Video decodes the whole file (a 12 s 1080p "
                   "clip is several GB as IMAGE): trim long videos first." + f"\n- models/dwpose/{DWPOSE_DETECTOR} and "
                   f"models/dwpose/{DWPOSE_POSE}: DWPose's ONNX files (yzd-v/DWPose, as comfyui_controlnet_aux "
                   "uses). Any POSE_KEYPOINT source works for Pose Align (e.g. comfyui_controlnet_aux's DWPose).\n"
                   "Length: the 'length' of 'Dance frames used' (one generated frame per dance frame). The Pose Align "
                   "report (frames without a person or with missing keypoints) shows in 'Pose Align report'. The "
                   "video plays at the dance video's fps."},
          pos=(20, 1700), size=(740, 260))
    return g


def video2video() -> Graph:
    frames = 12
    g = Graph("video2video", "MuseV video2video: an RGB video's frames, noised, are the start; the first frame is "
                             "the condition. Lower denoise keeps more of the video.")
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT)
    clip, parts = _video_frames(g, DANCE_VIDEO, 0, frames + 1, 512, 768, (20, 520),
                                "Video frames used (sets the length)")
    first = g.add("ImageFromBatch", {"batch_index": 0, "length": 1}, pos=(380, 900), size=(270, 90),
                  title="Condition: frame 0")
    g.connect(clip, 0, first, "image")
    condition = g.add("VAEEncode", pos=(380, 1030), size=(210, 50), title="Condition frame")
    g.connect(first, 0, condition, "pixels")
    g.connect(ckpt, 2, condition, "vae")
    count, rest = _frame_count(g, clip, (680, 900), after_first=True)
    start = g.add("VAEEncode", pos=(680, 1160), size=(210, 50), title="Video latents (start)")
    g.connect(rest, 0, start, "pixels")
    g.connect(ckpt, 2, start, "vae")
    sampler = _video_tail(g, musev, positive, negative, ckpt, condition, frames, "musev/video2video", 1000,
                          frames_from=count, fps_from=parts)
    g.connect(start, 0, sampler, "video")
    sampler_node = g.nodes[sampler - 1]
    sampler_node["widgets_values"][WIDGETS["MuseVParallelDenoiseSampler"].index("denoise")] = 0.7
    g.add("Note", {"text": MODELS_NOTE + "\nOutput: frame 0 + 12 frames redrawn from the video (denoise 0.7; 1.0 "
                                         "is MuseV's own behaviour, which ignores its strength setting).\n" +
                   LENGTH_NOTE},
          pos=(20, 1200), size=(700, 190))
    return g


def musepose_pose2video() -> Graph:
    frames = 72
    g = Graph("musepose_pose2video",
              "MusePose: a character image dances like an RGB dance video (DWPose -> MusePose pose alignment -> "
              "MusePose's own model over context windows).",
              models=[("musepose", MUSEPOSE_FILES["denoising_unet"]), ("musepose", MUSEPOSE_FILES["motion_module"]),
                      ("musepose", MUSEPOSE_FILES["pose_guider"]), ("musepose", MUSEPOSE_FILES["reference_unet"]),
                      ("clip_vision", MUSEPOSE_IMAGE_ENCODER), ("vae", VAE_FT_MSE), ("dwpose", DWPOSE_DETECTOR),
                      ("dwpose", DWPOSE_POSE)])
    model = g.add("LoadMusePose", {k: MUSEPOSE_FILES[k] for k in ("denoising_unet", "motion_module", "pose_guider")},
                  pos=(20, 20), size=(330, 130))
    vae = g.add("VAELoader", {"vae_name": VAE_FT_MSE}, pos=(20, 190), size=(330, 60))
    image = g.add("LoadImage", {"image": CHARACTER_IMAGE}, pos=(20, 290), size=(320, 320), title="Character")
    scale = g.add("ImageScale", {"upscale_method": "lanczos", "width": 512, "height": 768, "crop": "center"},
                  pos=(380, 290), size=(320, 130), title="Video size (center crop)")
    g.connect(image, 0, scale, "image")
    clip_vision = g.add("CLIPVisionLoader", {"clip_name": MUSEPOSE_IMAGE_ENCODER}, pos=(380, 20), size=(380, 60))
    clip_encode = g.add("CLIPVisionEncode", {"crop": "none"}, pos=(380, 120), size=(270, 80))
    g.connect(clip_vision, 0, clip_encode, "clip_vision")
    g.connect(scale, 0, clip_encode, "image")
    conditioning = g.add("MusePoseImageConditioning", pos=(700, 120), size=(300, 70))
    g.connect(clip_encode, 0, conditioning, "clip_vision_output")
    reference = g.add("MusePoseReferenceEncode", {"reference_unet": MUSEPOSE_FILES["reference_unet"], "width": 0,
                                                   "height": 0}, pos=(700, 240), size=(330, 170))
    g.connect(vae, 0, reference, "vae")
    g.connect(scale, 0, reference, "image")
    g.connect(conditioning, 0, reference, "positive")
    dwpose = {"bbox_detector": DWPOSE_DETECTOR, "pose_estimator": DWPOSE_POSE, "detect_body": True,
              "detect_hand": True, "detect_face": True, "detect_resolution": 512, "resolution": 512,
              "provider": "auto"}
    character_pose = g.add("MuseVDWPoseExtract", dwpose, pos=(380, 460), size=(330, 290), title="Character pose")
    g.connect(scale, 0, character_pose, "image")
    video = g.add("LoadVideo", {"file": DANCE_VIDEO}, pos=(20, 800), size=(320, 300))
    parts = g.add("GetVideoComponents", pos=(20, 1130), size=(250, 70))
    g.connect(video, 0, parts, "video")
    pick = g.add("ImageFromBatch", {"batch_index": 0, "length": frames}, pos=(380, 800), size=(270, 90),
                 title=f"Dance frames 0-{frames - 1}")
    g.connect(parts, 0, pick, "image")
    video_pose = g.add("MuseVDWPoseExtract", dwpose, pos=(380, 930), size=(330, 290), title="Dance poses")
    g.connect(pick, 0, video_pose, "image")
    align = g.add("MuseVPoseAlign", {"align_frame": 0, "max_frame": 0, "mode": "robust", "output_height": 768,
                                     "draw_hands": True, "draw_face": True, "width": 512},
                  pos=(740, 800), size=(330, 250))
    g.connect(character_pose, 1, align, "ref_pose")
    g.connect(video_pose, 1, align, "video_pose")
    sampler = g.add("MusePoseSampler", {"seed": 99, "steps": 20, "cfg": 3.5, "sampler_name": "musepose_ddim",
                                        "scheduler": "musepose_trailing", "context_frames": 48,
                                        "context_overlap": 4, "pad_to_windows": True},
                    pos=(1100, 80), size=(340, 330))
    g.connect(model, 0, sampler, "model")
    g.connect(conditioning, 0, sampler, "positive")
    g.connect(conditioning, 1, sampler, "negative")
    g.connect(reference, 0, sampler, "reference")
    g.connect(align, 0, sampler, "pose_images")
    decode = g.add("VAEDecode", pos=(1480, 80), size=(210, 50))
    g.connect(sampler, 0, decode, "samples")
    g.connect(vae, 0, decode, "vae")
    create = g.add("CreateVideo", {"fps": 12.0}, pos=(1480, 180), size=(270, 80))
    g.connect(decode, 0, create, "images")
    g.connect(parts, 2, create, "fps")
    report = g.add("PreviewAny", {"preview": ""}, pos=(740, 1080), size=(330, 160), title="Pose Align report")
    g.connect(align, 2, report, "source")
    save = g.add("SaveVideo", {"filename_prefix": "musev/musepose_pose2video", "format": "mp4", "codec": "h264"},
                 pos=(1480, 300), size=(320, 360))
    g.connect(create, 0, save, "video")
    note = ("Models this workflow needs:\n"
            f"- models/musepose/{MUSEPOSE_FILES['denoising_unet']}, {MUSEPOSE_FILES['motion_module']}, "
            f"{MUSEPOSE_FILES['pose_guider']}, {MUSEPOSE_FILES['reference_unet']}: huggingface.co/TMElyralab/MusePose "
            "(its MusePose/ folder).\n"
            f"- models/clip_vision/{MUSEPOSE_IMAGE_ENCODER}: the sd-image-variations image encoder "
            "(lambdalabs/sd-image-variations-diffusers, image_encoder/: CLIP ViT-L/14 with projection).\n"
            f"- models/vae/{VAE_FT_MSE}: sd-vae-ft-mse (stabilityai), as MusePose.\n"
            f"- models/dwpose/{DWPOSE_DETECTOR} and models/dwpose/{DWPOSE_POSE}: DWPose's ONNX files (yzd-v/DWPose).\n"
            "MusePose's own script uses every second frame of a 30 fps dance (skip 1): pick frames with a step of 2 "
            "or a 15 fps video for its look. Load Video decodes the whole file: trim long videos first. Output: one "
            "frame per pose, at the dance video's fps; the length is the 'length' of the dance frames node. The Pose "
            "Align report (frames without a person or with missing keypoints) shows in 'Pose Align report'.")
    g.add("Note", {"text": note}, pos=(20, 1250), size=(760, 260))
    return g


GRAPHS = {"image2video": image2video, "text2image2video": text2image2video, "long_video": long_video,
          "image2video_referencenet": image2video_referencenet, "pose2video": pose2video,
          "pose2video_align": pose2video_align, "video2video": video2video,
          "image2video_ipadapter_plus": image2video_ipadapter_plus, "musepose_pose2video": musepose_pose2video}


def rendered() -> dict[str, str]:
    """`{file name: JSON text}` for every workflow file."""
    files = {}
    for name, build in GRAPHS.items():
        graph = build()
        files[f"{name}.json"] = json.dumps(graph.ui(), indent=1) + "\n"
        files[f"{name}_api.json"] = json.dumps(graph.api(), indent=1) + "\n"
    return files


if __name__ == "__main__":
    os.makedirs(WORKFLOWS, exist_ok=True)
    for file_name, text in rendered().items():
        with open(os.path.join(WORKFLOWS, file_name), "w") as f:
            f.write(text)
        print("wrote", os.path.join("workflows", file_name))
