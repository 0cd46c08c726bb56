"""Every workflow in workflows/ queued through a real ComfyUI 0.3.75 server (HTTP API) on a real image.

Tiny generated models replace the real ones; sizes and steps are reduced so the suite runs on a CPU, frame counts
are kept (the long video really is 121 frames through 15 windows).
"""
import io
import json
import os

import av
import pytest

import comfy_server
import tiny_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # pixels: 8x8 latent cells


def load_api(name):
    with open(os.path.join(REPO, "workflows", f"{name}_api.json")) as f:
        return json.load(f)


def nodes_of(prompt, class_type):
    return [node for node in prompt.values() if node["class_type"] == class_type]


def for_tiny_models(prompt, server, uploads=None, steps=2):
    """Point a shipped workflow at the tiny models, the uploaded media, a small size and few steps.

    `uploads` maps the workflow's image/video names to uploaded names (a plain string: every Load Image uses it).
    """
    tiny_models.point_at_tiny_models(prompt, server.models)
    for node in nodes_of(prompt, "LoadImage"):
        image = node["inputs"]["image"]
        node["inputs"]["image"] = uploads if isinstance(uploads, str) else uploads[image]
    for node in nodes_of(prompt, "LoadVideo"):
        node["inputs"]["file"] = uploads[node["inputs"]["file"]]
    for node in nodes_of(prompt, "ImageScale") + nodes_of(prompt, "EmptyLatentImage"):
        node["inputs"]["width"] = node["inputs"]["height"] = SIZE
    for node in nodes_of(prompt, "KSampler") + nodes_of(prompt, "MuseVParallelDenoiseSampler"):
        node["inputs"]["steps"] = steps
    for node in nodes_of(prompt, "MusePoseSampler"):  # the 16-frame excerpt in windows of 8: 3 per step
        node["inputs"].update(steps=steps, context_frames=8, context_overlap=2)
    for node in nodes_of(prompt, "MuseVDWPoseExtract"):
        node["inputs"]["resolution"] = SIZE
        node["inputs"]["detect_resolution"] = SIZE
    for node in nodes_of(prompt, "MuseVPoseAlign"):
        node["inputs"]["output_height"] = node["inputs"]["width"] = SIZE
    return prompt


def video_excerpt(source: str, target: str, frames: int = 16, width: int = 96) -> str:
    """The first `frames` frames of a real video, scaled to `width` (even height), as an h264 mp4 (keeps CI fast:
    Load Video decodes whole files into memory)."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        height = int(round(stream.codec_context.height * width / stream.codec_context.width / 2)) * 2
        images = []
        for frame in container.decode(video=0):
            images.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
            if len(images) == frames:
                break
    with av.open(target, "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for image in images:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return target


@pytest.fixture(scope="module")
def uploads(server, shared_dir, tmp_path_factory):
    """Every image and video the shipped workflows name, uploaded (videos as short excerpts of the real files)."""
    names = {}
    for image in ("Mona_Lisa.jpg", "musepose_ref.png", "cyber_girl.png"):
        names[image] = server.upload_image(os.path.join(shared_dir, "data", "images", image))
    folder = tmp_path_factory.mktemp("videos")
    for video in ("video1_girl_poseseq.mp4", "musepose_dance.mp4"):
        excerpt = video_excerpt(os.path.join(shared_dir, "data", "videos", video), str(folder / video))
        names[video] = server.upload_image(excerpt)
    return names


def video_frames(data: bytes):
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames


@pytest.fixture(scope="module")
def uploaded_image(server, shared_dir):
    return server.upload_image(os.path.join(shared_dir, "data", "images", "Mona_Lisa.jpg"))


def test_pack_imports_cleanly_and_registers_its_nodes(server):
    log = server.log()
    assert "IMPORT FAILED" not in log, log
    info = server.get_json("/object_info/MuseVParallelDenoiseSampler")["MuseVParallelDenoiseSampler"]
    assert info["display_name"] == "MuseV Parallel Denoise Sampler"
    assert info["input"]["required"]["steps"][1]["default"] == 10
    assert info["input"]["required"]["cfg"][1]["default"] == 3.5
    assert all("tooltip" in spec[1] for spec in info["input"]["required"].values())
    loader = server.get_json("/object_info/LoadMuseVUNet")["LoadMuseVUNet"]
    assert server.models["musev_unet"] in loader["input"]["required"]["unet_name"][0]


@pytest.mark.parametrize("name, expected_frames", [("image2video", 13), ("text2image2video", 12),
                                                     ("long_video", 121), ("image2video_referencenet", 13),
                                                     ("pose2video", 13), ("pose2video_align", 13),
                                                     ("video2video", 13), ("musepose_pose2video", 16)])
def test_workflow_makes_an_mp4(server, uploads, name, expected_frames):
    prompt = for_tiny_models(load_api(name), server, uploads)
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", comfy_server.error_message(history)
    videos = [item for item in comfy_server.saved_files(history) if item["filename"].endswith(".mp4")]
    assert len(videos) == 1, history["outputs"]
    assert videos[0]["subfolder"] == "musev"
    frames = video_frames(server.view(videos[0]))
    assert len(frames) == expected_frames
    assert frames[0].shape == (SIZE, SIZE, 3)


def test_bad_inputs_are_refused_at_queue_time(server, uploaded_image):
    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    sampler_id = [k for k, v in prompt.items() if v["class_type"] == "MuseVParallelDenoiseSampler"][0]
    prompt[sampler_id]["inputs"]["context_overlap"] = 12
    status, body = server.queue(prompt)
    assert status == 400
    errors = body["node_errors"][sampler_id]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"
    assert "context_overlap (12) must be smaller than context_frames (12)" in errors[0]["details"]

    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    loader_id = [k for k, v in prompt.items() if v["class_type"] == "LoadMuseVUNet"][0]
    prompt[loader_id]["inputs"]["unet_name"] = "missing/unet.safetensors"
    status, body = server.queue(prompt)
    assert status == 400 and body["node_errors"][loader_id]["errors"][0]["type"] == "value_not_in_list"

    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    prompt[sampler_id]["inputs"]["frames"] = 0
    status, body = server.queue(prompt)
    assert status == 400
    assert body["node_errors"][sampler_id]["errors"][0]["details"].endswith("frames must be at least 1, got 0")


def test_size_mismatch_is_a_clear_error_not_a_traceback(server, uploaded_image):
    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    sampler_id = [k for k, v in prompt.items() if v["class_type"] == "MuseVParallelDenoiseSampler"][0]
    prompt[sampler_id]["inputs"]["width"] = 2 * SIZE
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    message = comfy_server.error_message(history)
    assert "the condition latent is 64x64 px (8x8 latent cells) but width x height ask for 128x0 px" in message


def test_cancel_during_sampling_leaves_the_server_healthy(server, uploaded_image):
    import time
    slow = for_tiny_models(load_api("long_video"), server, uploaded_image, steps=50)
    log_start = len(server.log())
    status, body = server.queue(slow)
    assert status == 200
    prompt_id = body["prompt_id"]
    deadline = time.time() + 120
    while "/50 [" not in server.log()[log_start:]:  # the sampler's progress bar has started
        assert time.time() < deadline, server.log()[log_start:]
        time.sleep(0.2)
    started = time.time()
    assert server.post("/interrupt", {})[0] == 200
    history = server.wait(prompt_id, timeout=120)
    assert time.time() - started < 60
    assert history["status"]["status_str"] == "error"
    assert any(event == "execution_interrupted" for event, _ in history["status"]["messages"])
    after = server.run(for_tiny_models(load_api("image2video"), server, uploaded_image))
    assert after["status"]["status_str"] == "success"


def test_musepose_wrong_file_and_bad_windows_are_clear_errors(server, uploads):
    prompt = for_tiny_models(load_api("musepose_pose2video"), server, uploads)
    sampler_id = [k for k, v in prompt.items() if v["class_type"] == "MusePoseSampler"][0]
    prompt[sampler_id]["inputs"]["context_overlap"] = 8
    status, body = server.queue(prompt)
    assert status == 400
    assert body["node_errors"][sampler_id]["errors"][0]["details"].endswith(
        "context_overlap (8) must be smaller than context_frames (8): windows would never advance")

    prompt = for_tiny_models(load_api("musepose_pose2video"), server, uploads)
    loader = [v for v in prompt.values() if v["class_type"] == "LoadMusePose"][0]
    loader["inputs"]["motion_module"] = server.models["musepose_pose_guider"]
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    assert "pose_guider.pth is not MusePose's motion_module.pth" in comfy_server.error_message(history)
