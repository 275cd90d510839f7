"""Group offloading (t2vlab.group_offload) on the UNet: the same numbers bit for bit, the weights resident during
a forward with ``offload_to_disk_path`` (about one group), switching off restores the model exactly and removes
only our files, and the argument checks. The CUDA stream path runs only where a GPU is.

How the resident weights are measured: ``resident_bytes(unet)`` (``storage_bytes`` of its tensors) adds up the
storage bytes of the UNet's parameters and buffers that hold memory (each storage once; a weight at rest in a
file is a one-element placeholder), read by a forward pre-hook and a forward hook on every module without
children (the layers that compute), so at each layer's start and end; the largest reading is the peak.
"""

from __future__ import annotations

import pytest
import torch

from t2vlab import group_offload
from t2vlab.group_offload import FOLDER_PREFIX, GroupOffloadError, resident_bytes, storage_bytes
from t2vlab.lora import add_lora, lora_targets
from t2vlab.unet.model import UNet3DConditionModel
from t2vlab.weights import TINY_UNET
from tests.helpers import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")
TYPES = ("block_level", "leaf_level")


def tiny_unet(cfg=TINY_UNET, seed=0):
    return randomize_(UNet3DConditionModel.from_config(cfg), seed=seed).eval()


def inputs(cfg=TINY_UNET, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([999, 10]),
            torch.randn(2, 7, cfg["cross_attention_dim"], generator=g))


def run(unet, x):
    with torch.no_grad():
        return unet(*x)


@pytest.fixture(scope="module")
def plain():
    unet = tiny_unet()
    return unet, run(unet, inputs())


def snapshot(unet):
    """Everything 'restored exactly' means: the same parameter objects, values (bits), dtypes and devices."""
    return {n: (id(t), t.detach().clone(), t.device) for n, t in [*unet.named_parameters(), *unet.named_buffers()]}


def same(a, b):
    return a.keys() == b.keys() and all(a[k][0] == b[k][0] and a[k][2] == b[k][2] and a[k][1].dtype == b[k][1].dtype
                                        and torch.equal(a[k][1], b[k][1]) for k in a)


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("offload_type", TYPES)
def test_same_numbers_bit_for_bit_and_restored_exactly(plain, tmp_path, offload_type, disk):
    unet, expected = plain
    before = snapshot(unet)
    unet.enable_group_offload("cpu", offload_type=offload_type, offload_to_disk_path=tmp_path if disk else None)
    try:
        assert torch.equal(run(unet, inputs()), expected)
        assert torch.equal(run(unet, inputs()), expected)  # again, after the first call recorded the order
        if disk:
            assert resident_bytes(unet) < 0.01 * sum(b[1].nbytes for b in before.values())  # at rest: in files
            state = unet.state_dict()  # read from the files, not the placeholders
            assert all(torch.equal(state[k], before[k][1]) for k in state)
    finally:
        unet.disable_group_offload()
    assert same(snapshot(unet), before)
    assert not any(m._forward_pre_hooks or m._forward_hooks or m._state_dict_hooks for m in unet.modules())
    assert list(tmp_path.iterdir()) == []  # our folder and files are gone


def peak_resident(unet, x):
    """The largest ``resident_bytes(unet)`` at the start and end of every layer during one forward."""
    peak, tensors = [0], [*unet.parameters(), *unet.buffers()]

    def measure(*_):  # = resident_bytes(unet), without walking the modules at every layer
        peak[0] = max(peak[0], storage_bytes(tensors))

    layers = [m for m in unet.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(measure) for m in layers] + [m.register_forward_hook(measure) for m in layers]
    out = run(unet, x)
    for h in hooks:
        h.remove()
    return peak[0], out


@pytest.mark.parametrize("offload_type", TYPES)
def test_resident_weights_during_a_forward_stay_within_about_one_group(tmp_path, offload_type):
    """block_level: the rest group (conv_in, time embedding, transformer_in, mid block, head) on for the whole
    forward, plus one level at a time; leaf_level: one layer at a time. Measured on the tiny UNet (9.71 MB of
    float32 weights): block level peak 5.13 MB (52.9%: the rest 22.8% + the largest level, up_blocks.1, 30.0%),
    leaf level 0.30 MB (3.1%: its largest layer). For the published UNet the same grouping bounds block level
    at 43% (the rest 12.8% + up_blocks.1 30.3%) and leaf level at 2.1%."""
    unet = tiny_unet()
    x = inputs()
    total, expected = resident_bytes(unet), run(unet, x)
    plan = group_offload.enable_group_offload(unet, "cpu", offload_type=offload_type, offload_to_disk_path=tmp_path)
    at_rest = resident_bytes(unet)
    peak, out = peak_resident(unet, x)
    assert torch.equal(out, expected)
    sizes = sorted(g.nbytes() for g in plan.groups)
    if offload_type == "block_level":
        rest = plan.groups[-1].nbytes()  # the rest group is on for the whole forward, the levels one at a time
        bound = rest + max(g.nbytes() for g in plan.groups[:-1])
    else:
        bound = sizes[-1]
    assert at_rest + 0.9 * sizes[-1] <= peak <= at_rest + bound  # a group was there, never more than the bound
    assert peak < (0.55 if offload_type == "block_level" else 0.035) * total
    assert resident_bytes(unet) == at_rest  # and all of it went back after the forward
    unet.disable_group_offload()


def test_disable_removes_only_our_files(plain, tmp_path):
    unet, _ = plain
    theirs = tmp_path / "notes.txt"
    theirs.write_text("not ours")
    unet.enable_group_offload("cpu", offload_to_disk_path=tmp_path)
    (ours,) = [p for p in tmp_path.iterdir() if p.name.startswith(FOLDER_PREFIX)]
    files = sorted(ours.iterdir())
    assert len(files) == len(unet._group_offload.groups) and all(f.suffix == ".safetensors" for f in files)
    stranger = ours / "stranger.bin"
    stranger.write_bytes(b"put here by someone else")
    with pytest.warns(UserWarning, match="holds files t2vlab did not write"):
        unet.disable_group_offload()
    assert theirs.read_text() == "not ours" and stranger.exists()  # theirs stay (and the folder holding one)
    assert sorted(ours.iterdir()) == [stranger]  # ours are gone


def test_deepcache_running_part_of_a_level_still_finds_its_weights(tmp_path):
    """DeepCache's shallow step runs the layers of one down level without the level's forward: any module of a
    group brings the group in, so the numbers stay exact (with the files, a missing group would give NaN)."""
    unet = tiny_unet()
    x = inputs()
    calls = [(x[0], torch.tensor([999, 999]), x[2]), (x[0] * 0.9, torch.tensor([900, 900]), x[2])]
    unet.enable_deepcache(cache_interval=3, cache_branch=1)
    expected = [run(unet, c) for c in calls]
    unet.disable_deepcache()
    unet.enable_group_offload("cpu", offload_to_disk_path=tmp_path)
    unet.enable_deepcache(cache_interval=3, cache_branch=1)
    got = [run(unet, c) for c in calls]
    assert unet.deepcache.shallow_calls == 1
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    unet.disable_deepcache()
    unet.disable_group_offload()


@pytest.mark.parametrize("offload_type", TYPES)
def test_with_layerwise_casting_and_lora(tmp_path, offload_type):
    """Casting first, then offloading: the files hold float8, the numbers are casting's alone, exactly; a LoRA
    layer travels with its adapters (leaf level: one group)."""
    unet = tiny_unet()
    add_lora(unet, lora_targets(unet, "both"), rank=2)
    randomize_(unet, seed=4)
    unet.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32)
    expected = run(unet, inputs())
    unet.enable_group_offload("cpu", offload_type=offload_type, offload_to_disk_path=tmp_path)
    assert torch.equal(run(unet, inputs()), expected)
    with pytest.raises(ValueError, match="disable_group_offload"):
        unet.disable_layerwise_casting()
    unet.disable_group_offload()
    assert unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(run(unet, inputs()), expected)


def test_num_blocks_per_group_and_the_sequential_offload(plain, tmp_path):
    unet, expected = plain
    plan = group_offload.enable_group_offload(unet, "cpu", num_blocks_per_group=2, offload_to_disk_path=tmp_path)
    assert [g.name for g in plan.groups] == ["down_blocks.0-1", "down_blocks.2-2", "up_blocks.0-1", "up_blocks.2-2",
                                             "UNet3DConditionModel (the rest)"]
    assert torch.equal(run(unet, inputs()), expected)
    unet.disable_group_offload()
    unet.enable_sequential_cpu_offload("cpu")
    assert unet._group_offload.offload_type == "leaf_level" and unet._group_offload.stream is None
    assert torch.equal(run(unet, inputs()), expected)
    unet.disable_group_offload()


def test_a_stream_without_cuda_says_so_and_copies_synchronously(plain):
    unet, expected = plain
    with pytest.warns(UserWarning, match="not a CUDA device.*copied synchronously"):
        unet.enable_group_offload("cpu", use_stream=True)
    assert unet._group_offload.stream is None
    assert torch.equal(run(unet, inputs()), expected)
    unet.disable_group_offload()


def test_argument_checks_name_the_argument(plain, tmp_path):
    unet, _ = plain
    before = snapshot(unet)
    for kwargs, message in [(dict(offload_type="block"), "offload_type must be one of"),
                            (dict(num_blocks_per_group=0), "num_blocks_per_group must be a positive integer"),
                            (dict(use_stream=1), "use_stream must be True or False"),
                            (dict(record_stream=True), "record_stream=True needs use_stream=True"),
                            (dict(offload_to_disk_path=3), "offload_to_disk_path must be a folder path"),
                            (dict(offload_device="gpu"), "offload_device must be a device")]:
        with pytest.raises(ValueError, match=message):
            unet.enable_group_offload("cpu", **kwargs)
    with pytest.raises(ValueError, match="onload_device must be a device"):
        unet.enable_group_offload("nowhere")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(OSError):  # the files cannot be written: nothing changes
        unet.enable_group_offload("cpu", offload_to_disk_path=not_a_folder)
    assert getattr(unet, "_group_offload", None) is None and same(snapshot(unet), before)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())
    unet.enable_group_offload("cpu")
    with pytest.raises(GroupOffloadError, match="already on"):
        unet.enable_group_offload("cpu")
    unet.disable_group_offload()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA stream path needs a GPU")
@pytest.mark.parametrize("offload_type", TYPES)
@pytest.mark.parametrize("record_stream", [False, True])
def test_cuda_stream_prefetch_gives_the_same_numbers_with_less_gpu_memory(offload_type, record_stream):
    unet = tiny_unet()
    x = tuple(t.cuda() for t in inputs())
    expected = run(unet.cuda(), x)
    unet.enable_group_offload("cuda", offload_type=offload_type, use_stream=True, record_stream=record_stream)
    assert resident_bytes(unet, "cuda") == 0
    for _ in range(3):  # the first call records the order, the next ones prefetch along it
        assert torch.equal(run(unet, x), expected)
    assert all(g.next is not None for g in unet._group_offload.order[:-1])
    unet.disable_group_offload()
    assert unet.conv_in.weight.is_cuda  # back where it was


def test_a_group_that_never_runs_is_named_once(plain, tmp_path):
    """The text encoder reads its position embedding's weight without calling the layer: at leaf level that
    weight stays in its file (NaN), and the first forward names the group; the UNet runs every group (no
    warning), and block level serves the text encoder exactly."""
    import warnings

    from t2vlab.text_encoder import CLIPTextEncoder
    from t2vlab.weights import TINY_TEXT

    unet, expected = plain
    unet.enable_group_offload("cpu", offload_type="leaf_level", offload_to_disk_path=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(unet, inputs())
    unet.disable_group_offload()
    text = randomize_(CLIPTextEncoder.from_config(TINY_TEXT)).eval()
    ids = torch.randint(0, 99, (1, 77), generator=torch.Generator().manual_seed(0))
    reference = run(text, (ids,))
    text.enable_group_offload("cpu", offload_type="leaf_level", offload_to_disk_path=tmp_path)
    with pytest.warns(UserWarning, match=r"1 group\(s\) never ran .*text_model.embeddings.position_embedding"):
        assert torch.isnan(run(text, (ids,))).all()
    text.disable_group_offload()
    text.enable_group_offload("cpu", offload_type="block_level", offload_to_disk_path=tmp_path)
    assert torch.equal(run(text, (ids,)), reference)
    text.disable_group_offload()
