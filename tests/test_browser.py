"""The shipped UI workflows in the real ComfyUI page (headless Chromium driven by Playwright).

For every workflow: the page loads it with no missing nodes and its own conversion (`app.graphToPrompt`) equals the
shipped `_api.json` twin. image2video and text2image2video are also queued from the page (with the tiny models)
and must succeed. Needs Debian's chromium (tests/run_tests.sh installs it when it can) and the `playwright` package;
skipped with the reason when the browser is not installable on the machine.
"""
import json
import os
import shutil
import tempfile

import pytest

import workflow_graphs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 800})
        context.route(lambda url: not url.startswith(server.url), lambda route: route.abort())
        context.request.post(server.url + "/api/settings", data={"Comfy.TutorialCompleted": True})
        context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        tab = context.pages[0] if context.pages else context.new_page()
        tab.goto(server.url + "/", wait_until="domcontentloaded")
        tab.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.app.vueAppReady && window.LiteGraph"
            " && ('MuseVParallelDenoiseSampler' in window.LiteGraph.registered_node_types)", timeout=90000)
        yield tab
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


LOAD_AND_CONVERT = """async (graph) => {
    const app = window.app; let missing = null; const original = app.showMissingNodesError.bind(app);
    app.showMissingNodesError = (types) => { missing = types; };
    await app.loadGraphData(graph);
    app.showMissingNodesError = original;
    const unregistered = app.graph.nodes.filter(n => !(n.type in window.LiteGraph.registered_node_types)).map(n => n.type);
    const prompt = await app.graphToPrompt();
    return {missing, unregistered, output: prompt.output};
}"""

QUEUE = """async (graph) => {
    const app = window.app;
    await app.loadGraphData(graph);
    const prompt = await app.graphToPrompt();
    const queued = await app.api.queuePrompt(0, prompt);
    for (let i = 0; i < 3000; i++) {
        const history = await (await app.api.fetchApi('/history/' + queued.prompt_id)).json();
        if (history[queued.prompt_id]) return history[queued.prompt_id].status;
        await new Promise(r => setTimeout(r, 100));
    }
    return null;
}"""


def load_ui(name):
    with open(os.path.join(workflow_graphs.WORKFLOWS, f"{name}.json")) as f:
        return json.load(f)


#: display-only widgets of core nodes that some frontends put into the API prompt and others do not (frontend 1.35.9
#: of ComfyUI 0.7.0 adds Preview Any's `previewMode`; 1.32.9 of 0.3.75 does not); the server ignores them
DISPLAY_ONLY_INPUTS = {"PreviewAny": {"previewMode"}}


def without_display_only_inputs(prompt: dict) -> dict:
    for node in prompt.values():
        for name in DISPLAY_ONLY_INPUTS.get(node["class_type"], ()):
            node["inputs"].pop(name, None)
    return prompt


@pytest.mark.parametrize("name", sorted(workflow_graphs.GRAPHS))
def test_page_loads_workflow_and_converts_it_to_the_shipped_api_file(page, name):
    result = page.evaluate(LOAD_AND_CONVERT, load_ui(name))
    assert not result["missing"], result["missing"]
    assert result["unregistered"] == ["Note"] or result["unregistered"] == []
    with open(os.path.join(workflow_graphs.WORKFLOWS, f"{name}_api.json")) as f:
        assert without_display_only_inputs(result["output"]) == json.load(f)


def tiny_ui(name, server, image_name):
    """The UI graph with widget values pointing at the tiny models, a small size and 2 steps."""
    graph = load_ui(name)
    for node in graph["nodes"]:
        widgets = workflow_graphs.WIDGETS[node["type"]]
        values = node["widgets_values"]

        def put(widget, value):
            values[widgets.index(widget)] = value
        if node["type"] == "CheckpointLoaderSimple":
            put("ckpt_name", server.models["checkpoint"])
        elif node["type"] == "LoadMuseVUNet":
            put("unet_name", server.models["musev_unet"])
        elif node["type"] == "LoadImage":
            put("image", image_name)
        elif node["type"] in ("ImageScale", "EmptyLatentImage"):
            put("width", 64)
            put("height", 64)
        elif node["type"] in ("KSampler", "MuseVParallelDenoiseSampler"):
            put("steps", 2)
    return graph


@pytest.mark.parametrize("name", ["image2video", "text2image2video"])
def test_workflow_queued_from_the_page_succeeds(page, server, shared_dir, name):
    image = server.upload_image(os.path.join(shared_dir, "data", "images", "The-Laughing-Cavalier.jpg"))
    status = page.evaluate(QUEUE, tiny_ui(name, server, image))
    assert status is not None and status["status_str"] == "success", status


LABELS = """async (graph) => {
    const app = window.app;
    await app.loadGraphData(graph);
    const node = app.graph.nodes.find(n => n.type === 'LoadMuseVUNet');
    const widget = node.widgets.find(w => w.name === 'unet_name');
    const sampler = app.graph.nodes.find(n => n.type === 'MuseVParallelDenoiseSampler');
    const overlap = sampler.widgets.find(w => w.name === 'context_overlap');
    return {unet: widget.label ?? null, overlap: overlap.label ?? null};
}"""


def test_long_input_names_show_short_labels_in_the_page(page):
    labels = page.evaluate(LABELS, load_ui("image2video"))
    assert labels == {"unet": "unet", "overlap": "overlap"}, labels
