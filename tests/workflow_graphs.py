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
MUSEV_UNET = "musev/unet/diffusion_pytorch_model.safetensors"
REFERENCENET_UNET = "musev_referencenet/unet/diffusion_pytorch_model.safetensors"
REFERENCENET = "musev_referencenet/referencenet/diffusion_pytorch_model.safetensors"
IMAGE_PROJ = "musev_referencenet/ip_adapter_image_proj.bin"
CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
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
    "The VAE comes from the checkpoint (MuseV used sd-vae-ft-mse; swap in with Load VAE if you like).")

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
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "Note": ["text"],
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
                                     ("ip_tokens", "MUSEV_IP_TOKENS")], [("latent", "LATENT")]),
    "CLIPVisionLoader": ([], [("CLIP_VISION", "CLIP_VISION")]),
    "MuseVIPAdapterEmbed": ([("clip_vision", "CLIP_VISION"), ("image", "IMAGE")],
                            [("ip_tokens", "MUSEV_IP_TOKENS")]),
    "MuseVReferenceNetEncode": ([("vae", "VAE"), ("image", "IMAGE"), ("ip_tokens", "MUSEV_IP_TOKENS"),
                                 ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                [("reference", "MUSEV_REFERENCE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "Note": ([], []),
}
TITLES = {"CheckpointLoaderSimple": "Load Checkpoint", "LoadMuseVUNet": "Load MuseV UNet",
          "CLIPTextEncode": "CLIP Text Encode (Prompt)", "LoadImage": "Load Image", "ImageScale": "Upscale Image",
          "VAEEncode": "VAE Encode", "VAEDecode": "VAE Decode", "EmptyLatentImage": "Empty Latent Image",
          "KSampler": "KSampler", "MuseVParallelDenoiseSampler": "MuseV Parallel Denoise Sampler",
          "CreateVideo": "Create Video", "SaveVideo": "Save Video", "Note": "Note",
          "CLIPVisionLoader": "Load CLIP Vision", "MuseVIPAdapterEmbed": "MuseV IP-Adapter Embed",
          "MuseVReferenceNetEncode": "MuseV ReferenceNet Encode"}
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
                widget_values.append("fixed" if kind != "LoadImage" else "image")
            else:
                widget_values.append(values[name])
        inputs, outputs = SOCKETS[kind]
        self.nodes.append({
            "id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
            "mode": 0, "title": title,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": kind}, "widgets_values": widget_values,
        })
        return node_id

    def connect(self, source: int, slot: int, target: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        src, dst = self.nodes[source - 1], self.nodes[target - 1]
        kind = src["outputs"][slot]["type"]
        dst_slot = [i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name][0]
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
                prefix: str, x: int) -> int:
    sampler = g.add("MuseVParallelDenoiseSampler", {
        "frames": frames, "seed": 1234, "steps": 10, "cfg": 3.5, "sampler_name": "euler", "scheduler": "normal",
        "context_frames": 12, "context_overlap": 4, "fuse_method": "flat", "motion_speed": 8.0, "w_ind_noise": 0.5,
        "img_weight": 0.001, "denoise": 1.0, "width": 0, "height": 0}, pos=(x, 80), size=(340, 470))
    g.connect(model, 0, sampler, "model")
    g.connect(positive, 0, sampler, "positive")
    g.connect(negative, 0, sampler, "negative")
    if condition is not None:
        g.connect(condition, 0, sampler, "condition")
    decode = g.add("VAEDecode", pos=(x + 380, 80), size=(210, 50))
    g.connect(sampler, 0, decode, "samples")
    g.connect(ckpt, 2, decode, "vae")
    video = g.add("CreateVideo", {"fps": 12.0}, pos=(x + 380, 180), size=(270, 80))
    g.connect(decode, 0, video, "images")
    save = g.add("SaveVideo", {"filename_prefix": prefix, "format": "mp4", "codec": "h264"}, pos=(x + 380, 300),
                 size=(320, 360))
    g.connect(video, 0, save, "video")
    return sampler


def _loaders(g: Graph, positive_text: str, unet_name: str = MUSEV_UNET):
    ckpt = g.add("CheckpointLoaderSimple", {"ckpt_name": SD15_CHECKPOINT}, pos=(20, 80), size=(330, 100))
    musev = g.add("LoadMuseVUNet", {"unet_name": unet_name}, pos=(380, 20), size=(380, 60))
    g.connect(ckpt, 0, musev, "model")
    positive = g.add("CLIPTextEncode", {"text": positive_text}, pos=(380, 120), size=(380, 160), title="Prompt")
    g.connect(ckpt, 1, positive, "clip")
    negative = g.add("CLIPTextEncode", {"text": NEGATIVE_V5}, pos=(380, 320), size=(380, 160),
                     title="Negative prompt")
    g.connect(ckpt, 1, negative, "clip")
    return ckpt, musev, positive, negative


def _image_condition(g: Graph, ckpt: int, width: int, height: int, with_image: bool = False):
    image = g.add("LoadImage", {"image": "Mona_Lisa.jpg"}, pos=(20, 520), size=(320, 320))
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


def image2video_referencenet() -> Graph:
    g = Graph("image2video_referencenet",
              "MuseV image-to-video with the musev_referencenet UNet: ReferenceNet features and IP-Adapter tokens of "
              "the image keep the identity in every window.",
              models=[("checkpoints", SD15_CHECKPOINT), ("musev", REFERENCENET_UNET), ("musev", REFERENCENET),
                      ("musev", IMAGE_PROJ), ("clip_vision", CLIP_VISION)])
    ckpt, musev, positive, negative = _loaders(g, PROMPT_PORTRAIT, REFERENCENET_UNET)
    condition, image = _image_condition(g, ckpt, 512, 768, with_image=True)
    clip_vision = g.add("CLIPVisionLoader", {"clip_name": CLIP_VISION}, pos=(20, 900), size=(330, 60))
    ip = g.add("MuseVIPAdapterEmbed", {"image_proj_name": IMAGE_PROJ, "scale": 1.0, "crop": "center"},
               pos=(380, 800), size=(380, 130))
    g.connect(clip_vision, 0, ip, "clip_vision")
    g.connect(image, 0, ip, "image")
    reference = g.add("MuseVReferenceNetEncode", {"referencenet_name": REFERENCENET, "width": 0, "height": 0},
                      pos=(380, 980), size=(380, 170))
    g.connect(ckpt, 2, reference, "vae")
    g.connect(image, 0, reference, "image")
    g.connect(ip, 0, reference, "ip_tokens")
    sampler = _video_tail(g, musev, positive, negative, ckpt, condition, 12, "musev/image2video_referencenet", 800)
    g.connect(reference, 0, sampler, "reference")
    g.connect(ip, 0, sampler, "ip_tokens")
    g.add("Note", {"text": REFERENCENET_NOTE + "\nOutput: the image + 12 generated frames (13 frames, 12 fps)."},
          pos=(20, 1200), size=(740, 220))
    return g


GRAPHS = {"image2video": image2video, "text2image2video": text2image2video, "long_video": long_video,
          "image2video_referencenet": image2video_referencenet}


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
