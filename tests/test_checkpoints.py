"""The family of checkpoints (issue 18): model_index.json as other tools write it, each known checkpoint's
trained size and length as its defaults (also from the Hub cache, offline), and the README's table.

The Hub is never reached: a checkpoint is placed in a temporary folder laid out as huggingface_hub's
cache (models--OWNER--NAME/snapshots/<hash>/..., refs/main) with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from t2vlab import AutoencoderKL, CLIPTextEncoder, TextToVideoPipeline, UNet3DConditionModel
from t2vlab.__main__ import main
from t2vlab.original import make_tiny_original_checkpoint, tiny_models
from t2vlab.weights import (
    KNOWN_CHECKPOINTS,
    REAL_CHECKPOINT,
    TINY_SIZES,
    hub_allow_patterns,
    hub_id_of,
    load_components,
    make_tiny_checkpoint,
)
from tests.helpers import SNAPSHOT, hub_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", variants=(None,))


@pytest.fixture()
def copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "ckpt")


def test_the_tiny_checkpoint_is_its_seeds_models_written(tiny):
    """The numbers every test on the tiny checkpoint sees: the seed, then the UNet, the VAE and the text encoder
    drawn by from_config in that order (both layouts' makers draw them with original.tiny_models)."""
    torch.manual_seed(0)  # the fixture's seed
    expected = {"unet": UNet3DConditionModel.from_config(TINY_SIZES["unet"]),
                "vae": AutoencoderKL.from_config(TINY_SIZES["vae"]),
                "text_encoder": CLIPTextEncoder.from_config(TINY_SIZES["text_encoder"])}
    loaded, built = load_components(tiny), tiny_models(TINY_SIZES, seed=0)
    for name, model in expected.items():
        a = model.state_dict()
        for other in (loaded[name].state_dict(), built[name].state_dict()):
            assert a.keys() == other.keys() and all(torch.equal(a[k], other[k]) for k in a), name


# ------------------------------------------------------------------------ model_index.json variants
@pytest.mark.parametrize("unet_entry", [["models.unet_3d_condition", "UNet3DConditionModel"],  # zeroscope_v2_XL
                                        [None, "UNet3DConditionModel"]],  # the ExponentialML trainer
                         ids=["module-path", "null-library"])
def test_model_index_written_by_other_tools_loads(copy, unet_entry):
    index = json.loads((copy / "model_index.json").read_text())
    index["unet"] = unet_entry
    (copy / "model_index.json").write_text(json.dumps(index))
    pipe = TextToVideoPipeline.from_pretrained(copy)
    assert pipe.unet.config.block_out_channels == (32, 64, 64)


def test_model_index_of_another_unet_is_still_refused(copy):
    index = json.loads((copy / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        TextToVideoPipeline.from_pretrained(copy)


# ------------------------------------------------------------------------ known checkpoints' defaults
@pytest.mark.parametrize("repo_id, size, frames", [("cerspense/zeroscope_v2_576w", (320, 576), 24),
                                                   ("strangeman3107/animov-0.1.1", (384, 448), 16)])
def test_a_known_hub_id_gets_its_trained_size_from_the_offline_cache(tiny, offline_cache, repo_id, size, frames):
    snapshot = hub_cache(offline_cache, repo_id, tiny)
    for name in (repo_id, snapshot):  # by id, and by the cache folder itself
        pipe = TextToVideoPipeline.from_pretrained(name)
        rec = pipe.recommended
        assert ((rec.height, rec.width), rec.num_frames) == (size, frames), name
        assert pipe.unet.config.sample_size == 8  # the config is not what sets the size of a known checkpoint


def test_an_unknown_checkpoint_keeps_the_sample_size_default(tiny, offline_cache):
    hub_cache(offline_cache, "someone/my-finetune", tiny)
    rec = TextToVideoPipeline.from_pretrained("someone/my-finetune").recommended
    assert (rec.height, rec.width, rec.num_frames) == (64, 64, 16)  # sample_size 8 x 8; the base model's frames


def test_cli_takes_a_known_checkpoints_size_and_frames(tiny, offline_cache, tmp_path, capsys):
    hub_cache(offline_cache, "cerspense/zeroscope_v2_dark_30x448x256", tiny)
    rec = KNOWN_CHECKPOINTS["cerspense/zeroscope_v2_dark_30x448x256"]
    assert (rec.width, rec.height, rec.num_frames) == (448, 256, 30)
    out = tmp_path / "v.gif"  # the real size is too slow here: check the defaults reach the call
    import t2vlab.__main__ as cli

    seen = {}

    class Stop(Exception):
        pass

    def fake_call(self, prompt, **kw):
        seen.update(kw)
        raise Stop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.TextToVideoPipeline, "__call__", fake_call)
        with pytest.raises(Stop):
            main(["a lighthouse", "--model", "cerspense/zeroscope_v2_dark_30x448x256", "--out", str(out)])
    assert (seen["height"], seen["width"], seen["num_frames"]) == (256, 448, 30)


def test_hub_id_of_reads_ids_and_cache_paths(tmp_path):
    assert hub_id_of("cerspense/zeroscope_v2_XL") == "cerspense/zeroscope_v2_XL"
    assert hub_id_of(f"/x/hub/models--camenduru--potat1/snapshots/{SNAPSHOT}") == "camenduru/potat1"
    assert hub_id_of(f"/x/hub/models--o--name--with--dashes/snapshots/{SNAPSHOT}") == "o/name--with--dashes"
    assert hub_id_of(tmp_path) is None


def test_hub_files_of_an_original_layout_repository():
    files = ["README.md", "configuration.json", "text2video_pytorch_model.pth", "VQGAN_autoencoder.pth",
             "open_clip_pytorch_model.bin", "samples/000.gif"]
    assert hub_allow_patterns(files) == ["configuration.json", "VQGAN_autoencoder.pth", "open_clip_pytorch_model.bin",
                                         "text2video_pytorch_model.pth"]


def test_every_known_checkpoint_is_sane_and_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Checkpoints"):]
    for repo_id, rec in KNOWN_CHECKPOINTS.items():
        assert rec.height % 8 == 0 and rec.width % 8 == 0 and rec.num_frames > 0, repo_id
        row = next((line for line in table.splitlines() if f"`{repo_id}`" in line), None)
        assert row is not None, f"{repo_id} is missing from the README's Checkpoints table"
        assert re.search(rf"\b{rec.width}x{rec.height}\b", row) and f"| {rec.num_frames} " in row, row
    assert REAL_CHECKPOINT in KNOWN_CHECKPOINTS


# ------------------------------------------------------------------------ the CLI takes every layout
def test_cli_generates_from_an_original_layout_folder(tmp_path, capsys):
    original = make_tiny_original_checkpoint(tmp_path / "original")
    out = tmp_path / "v.gif"
    assert main(["a panda", "--model", str(original), "--steps", "1", "--frames", "2", "--size", "32",
                 "--out", str(out)]) == 0
    assert out.is_file()
    assert "original layout" in capsys.readouterr().out
